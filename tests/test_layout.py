"""The test tree itself: pytest must be able to collect every test module."""
import collections
import pathlib


def test_test_module_basenames_are_unique():
    # tests/ folders have no __init__.py (rootdir-relative imports), so two test modules with the same
    # file name make collection fail with "import file mismatch" (it happened with two test_auto.py).
    root = pathlib.Path(__file__).parent
    names = collections.Counter(p.name for p in root.rglob("test_*.py"))
    dupes = sorted(n for n, c in names.items() if c > 1)
    assert not dupes, f"test modules with the same file name: {dupes}"
