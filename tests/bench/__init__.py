"""System benchmark (`make bench`): 50 cameras through the full streaming stack; measures, does not assert."""
