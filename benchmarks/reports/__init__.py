"""The Markdown reports of the benchmark scenarios: each a pure function of a run's results.

A scenario script (``benchmarks/bench_*.py``) declares its load, measures and judges; its
report module here turns the results it wrote into the Markdown beside them, so a report can
be rendered again from a committed JSON file.
"""
