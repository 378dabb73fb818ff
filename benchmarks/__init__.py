"""edgeopt's benchmark suite: each benchmark answers one question, named by it, and writes one versioned
result (``edgeopt.benchmark/1``: JSON and Markdown). Run ``python -m benchmarks --list``."""
