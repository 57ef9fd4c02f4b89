"""Deterministic, fast generation of realistic game data with planted integrity problems."""
