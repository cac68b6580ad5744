"""Per-chain warm-up of the centre and scales of a whitening ``x = c + s z`` (the slice samplers'
adapter): Welford estimates in Stan's slow windows, fixed after warm-up."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from samplax.adaptation.mass_matrix import welford_covariance, welford_init, welford_update
from samplax.adaptation.windowed import Adapter, select, window_schedule


def moment_adapter(dim: int, num_warmup: int, num_chains: int, make_params: Callable, *,
                   adapt: bool = True, position_fn: Callable = lambda s: s.position) -> Adapter:
    """Per-chain warm-up of a centre ``c`` and scales ``s`` (Stan's slow windows).

    In each slow window of :func:`~samplax.adaptation.window.window_ends` the
    positions feed a Welford estimate; at the end of the window
    ``c = mean`` and ``s = sqrt(var_hat)`` (unregularized: Stan's shrinkage
    towards 1e-3 would make an elliptical-slice reference too narrow; a zero
    variance, e.g. a stuck chain, keeps the previous scale).  Before the first window ends
    ``c = 0``, ``s = 1``; after warm-up nothing changes.
    ``make_params(center, scale) -> params`` (one chain).
    """
    schedule = window_schedule(num_warmup, adapt)
    num_warmup_a = schedule.num_warmup

    def init(keys, states):
        n = keys.shape[0]  # the batch of chains the driver passes (may be a block)
        pos = jax.vmap(position_fn)(states)
        dtype = pos.dtype
        c = jnp.zeros((n, dim), dtype)
        s = jnp.ones((n, dim), dtype)
        w = jax.vmap(lambda _: welford_init(dim, False, dtype))(jnp.arange(n))
        return (c, s, w), jnp.zeros((n,), jnp.int32)

    def update_one(c, s, w, i, x):
        in_slow = schedule.in_slow(i) & (i < num_warmup_a)
        w = select(in_slow, welford_update(w, x[None, :]), w)
        is_end = schedule.is_end(i) & (i < num_warmup_a)
        c = jnp.where(is_end, w.mean, c)
        var = welford_covariance(w, regularize=False)
        s = jnp.where(is_end & (var > 0), jnp.sqrt(var), s)
        w = select(is_end, welford_init(dim, False, x.dtype), w)
        return c, s, w

    def update(astate, i, states, infos):
        del infos
        c, s, w = astate
        x = jax.vmap(position_fn)(states)
        return jax.vmap(update_one, in_axes=(0, 0, 0, None, 0))(c, s, w, i, x)

    def params(astate):
        c, s, _ = astate
        return jax.vmap(make_params)(c, s)

    return Adapter(init, update, params)
