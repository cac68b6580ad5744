"""Compiled programs of recent runs, keyed by everything structural about a run.

The key holds the method, its options, the target's static part and array
shapes, chains, run lengths and chunking.  A second run that differs only in
seed, data values or initial points reuses the programs and compiles nothing.
"""
from __future__ import annotations

import jax

from samplax.core.caches import register

#: Programs kept (oldest dropped first).
CACHE_SIZE = 32


class ProgramCache:
    """A bounded ``dict`` of compiled programs."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._entries: dict = {}
        register(self)

    def get(self, key):
        return None if key is None else self._entries.get(key)

    def put(self, key, value) -> None:
        if key is None:
            return
        self._entries[key] = value
        while len(self._entries) > self.size:
            self._entries.pop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


#: The engine's cache (one per process).
PROGRAMS = ProgramCache()


def program_key(name, build_id, options: dict, static_target, dyn_target, *rest):
    """A hashable key for a run's programs, or ``None`` when a static part is unhashable (no caching)."""
    try:
        leaves = tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in jax.tree.leaves(dyn_target))
        key = (name, build_id, repr(sorted(options.items())), static_target, jax.tree.structure(dyn_target), leaves,
               tuple(str(r) for r in rest))
        hash(key)
        return key
    except TypeError:
        return None
