"""Stan-style windowed adaptation of ``(step_size, inverse_mass_matrix)`` for a batch of chains.

Per iteration ``i < num_warmup`` (see :mod:`samplax.adaptation.window`):
dual averaging on the acceptance statistic; in slow windows a Welford update
with the new positions; at the end of each slow window the inverse mass matrix
becomes the regularized Welford (co)variance and dual averaging restarts from
the current step size; at the last warm-up iteration the step size becomes the
dual-averaging average ``exp(log e_bar)``.  After warm-up nothing changes.

``pooled=False`` adapts every chain on its own (Stan; draws of chain ``c`` then
do not depend on the other chains).  ``pooled=True`` shares one step size and
mass matrix across chains, fed by the mean acceptance statistic and every
chain's positions (faster warm-up with many chains).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplax.adaptation.mass_matrix import WelfordState, welford_covariance, welford_init, welford_update
from samplax.adaptation.step_size import DualAveragingState, da_init, da_update, find_reasonable_step_size
from samplax.adaptation.window import window_ends


class WindowState(NamedTuple):
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    da: DualAveragingState
    welford: WelfordState


class Adapter(NamedTuple):
    """Warm-up over a batch of chains.

    ``init(keys[C], states[C]) -> (astate, num_grad_evals[C])``,
    ``update(astate, i, states[C], infos[C]) -> astate``,
    ``params(astate) -> params`` with a leading chain axis.
    """

    init: Callable
    update: Callable
    params: Callable
    #: True when chains adapt independently (the state has a leading chain axis
    #: and ``update`` on a batch of one chain equals that chain's slice of the
    #: batched update).  The driver then may run chains one by one
    #: (``chain_method="sequential"``), which makes draws bitwise independent of
    #: the number of chains.  Pooled adapters set False.
    per_chain: bool = True
    #: The update during sampling (iterations ``i >= num_warmup``), same signature as
    #: ``update``.  ``None`` (the usual case) means the state is frozen after warm-up,
    #: so the driver skips the update there (``lax.cond``) instead of computing it and
    #: throwing it away.  ChEES sets it to advance its jitter counter.
    sampling_update: Optional[Callable] = None


def window_adapter(logdensity_fn: Callable, params_cls, dim: int, num_warmup: int, *,
                   target_accept: float, dense: bool = False, pooled: bool = False,
                   adapt_step_size: bool = True, adapt_mass_matrix: bool = True,
                   initial_step_size=None, find_initial_step_size: bool = True,
                   position_fn: Callable = lambda s: s.position,
                   num_chains: int = 1) -> Adapter:
    """Build the windowed adapter for kernels whose params are ``params_cls(step_size, inverse_mass_matrix)``."""
    slow_start, slow_end, ends = window_ends(num_warmup)
    if not adapt_mass_matrix:
        ends = -np.ones_like(ends)
        slow_start = slow_end = num_warmup
    ends = jnp.asarray(ends)
    num_warmup_a = jnp.asarray(num_warmup, jnp.int32)
    slow_start_a = jnp.asarray(slow_start, jnp.int32)
    slow_end_a = jnp.asarray(slow_end, jnp.int32)
    target = jnp.asarray(target_accept)

    def init_one(key, state):
        pos = position_fn(state)
        imm = jnp.eye(dim, dtype=pos.dtype) if dense else jnp.ones((dim,), pos.dtype)
        eps0 = jnp.asarray(1.0 if initial_step_size is None else initial_step_size, pos.dtype)
        n = jnp.asarray(0, jnp.int32)
        if find_initial_step_size and initial_step_size is None:
            eps0, n = find_reasonable_step_size(key, logdensity_fn, pos, imm, eps0)
        ws = WindowState(eps0, imm, da_init(eps0), welford_init(dim, dense, pos.dtype))
        return ws, n

    def init(keys, states):
        ws, n = jax.vmap(init_one)(keys, states)
        if pooled:
            # one shared state: start from the median chain's initial step size
            eps0 = jnp.median(ws.step_size)
            one = jax.tree.map(lambda a: a[0], ws)
            ws = WindowState(eps0, one.inverse_mass_matrix, da_init(eps0), one.welford)
        return ws, n

    def update_one(ws: WindowState, i, accept_stat, positions):
        da = da_update(ws.da, accept_stat, target) if adapt_step_size else ws.da
        step_size = jnp.exp(da.log_step_size) if adapt_step_size else ws.step_size
        in_slow = (i >= slow_start_a) & (i < slow_end_a)
        welford = jax.tree.map(lambda a, b: jnp.where(in_slow, a, b), welford_update(ws.welford, positions), ws.welford)
        is_end = jnp.any(ends == i)
        imm = jnp.where(is_end, welford_covariance(welford), ws.inverse_mass_matrix)
        welford = jax.tree.map(lambda a, b: jnp.where(is_end, a, b),
                               welford_init(dim, dense, positions.dtype), welford)
        da = jax.tree.map(lambda a, b: jnp.where(is_end, a, b), da_init(step_size), da)
        is_last = i == num_warmup_a - 1
        if adapt_step_size:
            step_size = jnp.where(is_last, jnp.exp(da.log_step_size_avg), step_size)
        new = WindowState(step_size, imm, da, welford)
        return jax.tree.map(lambda a, b: jnp.where(i < num_warmup_a, a, b), new, ws)

    def update(ws, i, states, infos):
        accept = infos.acceptance_rate
        positions = jax.vmap(position_fn)(states)
        if pooled:
            return update_one(ws, i, jnp.mean(jnp.where(jnp.isfinite(accept), accept, 0.0)), positions)
        return jax.vmap(update_one, in_axes=(0, None, 0, 0))(ws, i, accept, positions[:, None, :])

    def params(ws):
        p = params_cls(ws.step_size, ws.inverse_mass_matrix)
        if pooled:
            p = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_chains,) + a.shape), p)
        return p

    return Adapter(init, update, params, per_chain=not pooled)


def fixed_adapter(params_fn: Callable, num_chains: int) -> Adapter:
    """No adaptation: ``params_fn()`` (one chain's params), copied to every chain of the batch.

    The state is the per-chain params themselves (leading chain axis), so the
    adapter works on any batch of chains (``per_chain=True``).
    """
    del num_chains  # the batch size comes from the keys

    def init(keys, states):
        del states
        n = keys.shape[0]
        p = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (n,) + jnp.shape(a)), params_fn())
        return p, jnp.zeros((n,), jnp.int32)

    def update(astate, i, states, infos):
        del i, states, infos
        return astate

    def params(astate):
        return astate

    return Adapter(init, update, params)
