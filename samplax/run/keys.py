"""Key derivation: the one place where a run's keys come from its seed (or the user's key).

``root = key(seed)`` (or the user's ``key=``); then ``init = fold_in(root, 0)``,
``adapt = fold_in(root, 2)`` and ``run = fold_in(root, spec.run_stream)`` (1 for
chain methods).  Chain ``c`` (or run / particle ``c``) folds its index into
these, and step ``i`` folds ``i`` into that, so draws depend only on
``(seed, chain, step)``: 8 chains reproduce the first 8 of 64, and a resumed run
reproduces an uninterrupted one.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import numpy as np

from samplax.core.random import as_key


class RunKeys(NamedTuple):
    """The three root keys of a run (typed keys)."""

    init: jax.Array
    run: jax.Array
    adapt: jax.Array


def root_key(seed: Optional[int], key=None) -> jax.Array:
    """The root key: ``jax.random.key(seed)``, or the user's ``key`` (typed or raw) when given."""
    if key is not None:
        try:
            k = as_key(key)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"sample: key must be a JAX PRNG key (jax.random.key(...)), got {key!r}") from e
        if k.shape != ():
            raise ValueError(f"sample: key must be a single key (shape ()), got a key array of shape {k.shape}")
        return k
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"sample: seed must be an int >= 0, got {seed!r}")
    return jax.random.key(int(seed))


def run_keys(root: jax.Array, run_stream: int = 1) -> RunKeys:
    """``RunKeys(init=fold_in(root, 0), run=fold_in(root, run_stream), adapt=fold_in(root, 2))``."""
    return RunKeys(jax.random.fold_in(root, 0), jax.random.fold_in(root, run_stream), jax.random.fold_in(root, 2))


def batch_keys(key: jax.Array, n: int) -> jax.Array:
    """``[fold_in(key, c) for c in range(n)]`` as one key array."""
    return jax.vmap(lambda c: jax.random.fold_in(key, c))(jax.numpy.arange(n))


def key_digest(key: jax.Array) -> str:
    """A short stable text for a key (for run configurations and checkpoints)."""
    return ",".join(str(int(v)) for v in np.asarray(jax.random.key_data(key)).ravel())
