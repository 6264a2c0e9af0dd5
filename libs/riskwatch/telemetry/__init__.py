"""Prometheus metrics and logging set-up shared by every service."""
