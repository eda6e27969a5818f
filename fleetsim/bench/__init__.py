"""Benchmark harness: discovery, bounded child runs, results files and BENCHMARKS.md."""
