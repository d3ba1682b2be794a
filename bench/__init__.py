"""Benchmarks. Each module runs as `python -m bench.<name>`, prints a table and writes it to bench/results/."""
