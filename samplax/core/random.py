"""Key handling.

samplax derives all randomness of draw ``i`` of chain ``c`` from
``fold_in(fold_in(key, c), i)`` so that results are invariant to the number of
chains run together (8 chains reproduce the first 8 of 64) and a resumed run
reproduces an uninterrupted one bit for bit.
"""
from __future__ import annotations

import jax


def as_key(seed_or_key) -> jax.Array:
    """Turn an int seed or a typed/raw key into a typed key."""
    if isinstance(seed_or_key, int):
        return jax.random.key(seed_or_key)
    key = seed_or_key
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return key


def chain_key(key: jax.Array, chain: int | jax.Array) -> jax.Array:
    """Key of chain ``chain`` (independent of how many chains run)."""
    return jax.random.fold_in(key, chain)


def chain_step_key(key: jax.Array, chain, step) -> jax.Array:
    """Key for step ``step`` of chain ``chain``: ``fold_in(fold_in(key, chain), step)``."""
    return jax.random.fold_in(jax.random.fold_in(key, chain), step)
