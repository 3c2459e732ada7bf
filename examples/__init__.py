"""Runnable examples of actr_trio: ``python -m examples.<name> [--local]`` from the repo root.

See ``examples/README.md``. Every example is also run by ``tests/integration/test_examples.py``.
"""
