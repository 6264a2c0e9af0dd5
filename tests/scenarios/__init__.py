"""Scenarios with analytic ground truth for near-miss measurement: road users on a ground plane with known motion,
seen through a known camera with detector noise, and the true TTC/PET the system's measures are scored against."""
