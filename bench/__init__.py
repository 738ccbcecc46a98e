"""Benchmarks: ``python -m bench NAME``; results in docs/benchmarks.md."""
