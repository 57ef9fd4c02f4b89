"""Observability of the maintenance service: the Prometheus metrics behind /metrics."""
