"""Fuzzing of every parser of outside input (issue 8, item 3)."""
