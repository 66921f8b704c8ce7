"""Benchmarks (not tests): each module runs with ``python -m bench.<name>``; see bench/README.md."""
