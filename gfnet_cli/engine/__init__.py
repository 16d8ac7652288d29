"""Loops over data: evaluation (and, with its own module, training)."""
