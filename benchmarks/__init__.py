"""`make bench`: the performance harness (PostgreSQL only; not part of the tests)."""
