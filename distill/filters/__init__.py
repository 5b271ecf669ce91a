"""Rejection sampling: correctness, readability and language checks of teacher traces; selection."""
