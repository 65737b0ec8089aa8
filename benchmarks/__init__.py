"""Benchmark scripts that print tables (run with `python -m benchmarks.NAME`)."""
