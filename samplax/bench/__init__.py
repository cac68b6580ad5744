"""Benchmark harness: suites of (method, target) runs scored against ground truth."""
from samplax.bench.harness import evaluate, load_suite, run_suite, suite_names  # noqa: F401
