"""The hypothesis settings of the property tests: reproducible (derandomized, no example
database), no deadline (real databases and processes vary), and function-scoped fixtures
allowed (each example resets what it uses)."""

from hypothesis import HealthCheck, settings

HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
