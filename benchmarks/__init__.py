"""Benchmarks of actr_trio beside its baselines (issue 5). Run ``python -m benchmarks.run``."""
