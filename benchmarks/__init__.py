"""Benchmarks for fal-mcp's design targets; see BENCHMARKS.md. Run ``python benchmarks/run.py --all``."""
