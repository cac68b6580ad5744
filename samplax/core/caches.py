"""The process's caches of compiled programs, and one call that empties them all.

Every compiled XLA executable that stays alive holds its machine code in memory
mappings of its own.  A long process that builds many different programs (a notebook
session, a test run, a sweep over targets) keeps them in JAX's ``jit`` caches and in
samplax's program caches; :func:`clear_caches` drops all of them at once, so the next
run compiles afresh.  Caches register themselves here when they are created.
"""
from __future__ import annotations

import weakref

import jax

_CACHES: "weakref.WeakSet" = weakref.WeakSet()


def register(cache):
    """Add ``cache`` (anything with a ``clear()`` method) to those :func:`clear_caches` empties; returns it."""
    _CACHES.add(cache)
    return cache


def clear_caches() -> None:
    """Empty samplax's caches of compiled programs and JAX's own (``jax.clear_caches``).

    Nothing computed changes: a later run with the same structure compiles its programs
    again instead of reusing them.
    """
    for cache in list(_CACHES):
        cache.clear()
    jax.clear_caches()
