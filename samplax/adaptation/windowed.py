"""Stan-style windowed adaptation of ``(step_size, inverse_mass_matrix)`` for a batch of chains.

One adapter, :func:`windowed_adapter`, with a pluggable :class:`MetricEstimator`
(how the inverse mass matrix is estimated from a slow window's draws, and
optionally their log-density gradients).  Per iteration ``i < num_warmup``
(schedule: :mod:`samplax.adaptation.window`, Stan Reference Manual, "HMC
algorithm parameters"):

- dual averaging on the acceptance statistic (Hoffman & Gelman 2014, Alg. 5;
  non-finite statistics count as 0);
- in slow windows the estimator absorbs the new positions (and gradients);
- at the end of each slow window the inverse mass matrix becomes the
  estimator's ``finalize`` of that window, the estimator restarts empty, and
  dual averaging restarts from the current step size (``mu = log(10 e)``);
- at the last warm-up iteration the step size becomes the dual-averaging
  average ``exp(log e_bar)``.  After warm-up nothing changes.

Estimators: :func:`welford_estimator` (Stan: regularized Welford variance or
covariance of the positions), and in :mod:`samplax.adaptation.fisher` the
Fisher-divergence diagonal ``sqrt(Var x / Var grad)`` (Tran & Kleppe 2024;
nutpie) and nutpie's low-rank + diagonal metric.

``pooled=False`` adapts every chain on its own (Stan; draws of chain ``c`` then
do not depend on the other chains).  ``pooled=True`` shares one step size and
mass matrix across chains, fed by the mean acceptance statistic and every
chain's positions (faster warm-up with many chains).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplax.adaptation.mass_matrix import welford_covariance, welford_init, welford_update
from samplax.adaptation.step_size import DualAveragingState, da_init, da_update, find_reasonable_step_size
from samplax.adaptation.window import window_ends
from samplax.core.method import Adapter, fixed_adapter  # noqa: F401  (the adapter protocol lives in core)


def select(pred, on_true, on_false):
    """``jnp.where(pred, a, b)`` leaf by leaf over two pytrees of the same structure."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


class MetricEstimator(NamedTuple):
    """How a slow window's draws become an inverse mass matrix.

    ``init(dim, dtype) -> est`` (empty accumulator), ``update(est, positions[b, d],
    grads[b, d] or None) -> est`` (merge a batch), ``finalize(est) -> inverse mass
    matrix`` (an array, ``[d]`` or ``[d, d]``, or a pytree the kernel understands),
    ``initial(dim, dtype)`` (the metric before the first window ends: identity).
    ``uses_grads``: ``update`` needs the log-density gradients of the positions
    (kernel states must then carry them; see ``grad_fn`` of :func:`windowed_adapter`).
    """

    init: Callable
    update: Callable
    finalize: Callable
    initial: Callable
    uses_grads: bool = False


def identity_metric(dense: bool) -> Callable:
    """``initial`` of a :class:`MetricEstimator`: ``I`` (``[d, d]``) if ``dense`` else ones (``[d]``)."""

    def initial(dim, dtype):
        return jnp.eye(dim, dtype=dtype) if dense else jnp.ones((dim,), dtype)

    return initial


def welford_estimator(dense: bool = False) -> MetricEstimator:
    """Stan's estimate: regularized Welford variance (``dense``: covariance) of the window's positions.

    ``C = n/(n+5) S/(n-1) + 1e-3 * 5/(n+5)`` (:mod:`samplax.adaptation.mass_matrix`).
    """
    return MetricEstimator(
        init=lambda dim, dtype: welford_init(dim, dense, dtype),
        update=lambda est, positions, grads: welford_update(est, positions),
        finalize=welford_covariance,
        initial=identity_metric(dense),
    )


class WindowSchedule(NamedTuple):
    """Stan's slow windows as device constants: slow windows cover ``[slow_start, slow_end)``; ``ends`` lists their last iterations (padded with -1)."""

    num_warmup: jax.Array
    slow_start: jax.Array
    slow_end: jax.Array
    ends: jax.Array

    def in_slow(self, i):
        """Is iteration ``i`` inside a slow window?"""
        return (i >= self.slow_start) & (i < self.slow_end)

    def is_end(self, i):
        """Is iteration ``i`` the last of a slow window?"""
        return jnp.any(self.ends == i)


def window_schedule(num_warmup: int, adapt_mass_matrix: bool = True) -> WindowSchedule:
    """:func:`~samplax.adaptation.window.window_ends` of ``num_warmup``; no slow window if not ``adapt_mass_matrix``."""
    slow_start, slow_end, ends = window_ends(num_warmup)
    if not adapt_mass_matrix:
        ends = -np.ones_like(ends)
        slow_start = slow_end = num_warmup
    return WindowSchedule(jnp.asarray(num_warmup, jnp.int32), jnp.asarray(slow_start, jnp.int32),
                          jnp.asarray(slow_end, jnp.int32), jnp.asarray(ends))


def window_metric_update(schedule: WindowSchedule, estimator: MetricEstimator, i, est, inverse_mass_matrix,
                         da: DualAveragingState, step_size, positions, grads=None):
    """The mass-matrix part of one windowed warm-up iteration ``i``; returns ``(est, inverse_mass_matrix, da)``.

    In a slow window ``est`` absorbs ``positions`` (``[b, d]``) and ``grads``; at a
    window's end the inverse mass matrix becomes ``finalize(est)``, ``est``
    restarts empty and dual averaging restarts from ``step_size``.
    """
    est = select(schedule.in_slow(i), estimator.update(est, positions, grads), est)
    is_end = schedule.is_end(i)
    inverse_mass_matrix = select(is_end, estimator.finalize(est), inverse_mass_matrix)
    est = select(is_end, estimator.init(positions.shape[-1], positions.dtype), est)
    da = select(is_end, da_init(step_size), da)
    return est, inverse_mass_matrix, da


class WindowState(NamedTuple):
    step_size: jax.Array
    inverse_mass_matrix: Any
    da: DualAveragingState
    estimator: Any  # the MetricEstimator's accumulator


def windowed_adapter(logdensity_fn: Callable, params_cls, dim: int, num_warmup: int, estimator: MetricEstimator, *,
                     target_accept: float, pooled: bool = False, adapt_step_size: bool = True,
                     adapt_mass_matrix: bool = True, initial_step_size=None, find_initial_step_size: bool = True,
                     position_fn: Callable = lambda s: s.position,
                     grad_fn: Callable = lambda s: s.logdensity_grad, num_chains: int = 1) -> Adapter:
    """Stan's windowed warm-up (module docstring) with the mass matrix from ``estimator``.

    Kernels' params are ``params_cls(step_size, inverse_mass_matrix)``.  The
    initial step size is ``initial_step_size`` (default 1), refined by Stan's
    heuristic (:func:`~samplax.adaptation.step_size.find_reasonable_step_size`)
    when ``find_initial_step_size`` and no ``initial_step_size`` is given;
    pooled chains start from the median chain's.  ``position_fn`` / ``grad_fn``
    read a kernel state's position / log-density gradient (the latter only if
    ``estimator.uses_grads``).
    """
    schedule = window_schedule(num_warmup, adapt_mass_matrix)
    target = jnp.asarray(target_accept)

    def init_one(key, state):
        pos = position_fn(state)
        imm = estimator.initial(dim, pos.dtype)
        eps0 = jnp.asarray(1.0 if initial_step_size is None else initial_step_size, pos.dtype)
        n = jnp.asarray(0, jnp.int32)
        if find_initial_step_size and initial_step_size is None:
            eps0, n = find_reasonable_step_size(key, logdensity_fn, pos, imm, eps0)
        return WindowState(eps0, imm, da_init(eps0), estimator.init(dim, pos.dtype)), n

    def init(keys, states):
        ws, n = jax.vmap(init_one)(keys, states)
        if pooled:
            # one shared state: start from the median chain's initial step size
            eps0 = jnp.median(ws.step_size)
            one = jax.tree.map(lambda a: a[0], ws)
            ws = WindowState(eps0, one.inverse_mass_matrix, da_init(eps0), one.estimator)
        return ws, n

    def update_one(ws: WindowState, i, accept_stat, positions, grads):
        da = da_update(ws.da, accept_stat, target) if adapt_step_size else ws.da
        step_size = jnp.exp(da.log_step_size) if adapt_step_size else ws.step_size
        est, imm, da = window_metric_update(schedule, estimator, i, ws.estimator, ws.inverse_mass_matrix, da,
                                            step_size, positions, grads)
        if adapt_step_size:
            step_size = jnp.where(i == schedule.num_warmup - 1, jnp.exp(da.log_step_size_avg), step_size)
        return select(i < schedule.num_warmup, WindowState(step_size, imm, da, est), ws)

    def update(ws, i, states, infos):
        accept = jnp.where(jnp.isfinite(infos.acceptance_rate), infos.acceptance_rate, 0.0)
        positions = jax.vmap(position_fn)(states)
        grads = jax.vmap(grad_fn)(states) if estimator.uses_grads else None
        if pooled:
            return update_one(ws, i, jnp.mean(accept), positions, grads)
        per_chain = (lambda a: None if a is None else a[:, None, :])
        return jax.vmap(update_one, in_axes=(0, None, 0, 0, 0))(ws, i, accept, per_chain(positions),
                                                                per_chain(grads))

    def params(ws):
        p = params_cls(ws.step_size, ws.inverse_mass_matrix)
        if pooled:
            p = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_chains,) + a.shape), p)
        return p

    return Adapter(init, update, params, per_chain=not pooled)


def window_adapter(logdensity_fn: Callable, params_cls, dim: int, num_warmup: int, *,
                   target_accept: float, dense: bool = False, pooled: bool = False,
                   adapt_step_size: bool = True, adapt_mass_matrix: bool = True,
                   initial_step_size=None, find_initial_step_size: bool = True,
                   position_fn: Callable = lambda s: s.position,
                   num_chains: int = 1) -> Adapter:
    """Stan's windowed adapter with the regularized Welford (co)variance (:func:`welford_estimator`).

    ``dense``: full covariance instead of the diagonal.  Other arguments as in
    :func:`windowed_adapter`.
    """
    return windowed_adapter(
        logdensity_fn, params_cls, dim, num_warmup, welford_estimator(dense), target_accept=target_accept,
        pooled=pooled, adapt_step_size=adapt_step_size, adapt_mass_matrix=adapt_mass_matrix,
        initial_step_size=initial_step_size, find_initial_step_size=find_initial_step_size,
        position_fn=position_fn, num_chains=num_chains)


class EpsImm(NamedTuple):
    """``(step_size, inverse_mass_matrix)`` as produced by the window adapter."""

    step_size: jax.Array
    inverse_mass_matrix: jax.Array


def warmup_flag_adapter(inner: Adapter, num_warmup: int, make_params: Callable) -> Adapter:
    """Wrap an adapter whose params are ``(step_size, inverse_mass_matrix)`` and add a warm-up flag.

    ``make_params(inner_params, in_warmup) -> params``; ``in_warmup`` (bool, one per
    chain) is true for the first ``num_warmup`` iterations.  Unadjusted kernels
    use it to Metropolize their moves during warm-up only: dual averaging then
    explores step sizes without the chain diverging; sampling is unadjusted.
    """
    n_w = jnp.asarray(num_warmup, jnp.int32)

    def init(keys, states):
        a, n = inner.init(keys, states)
        # one counter per chain: the driver splits adapter state into blocks of chains
        return (a, jnp.zeros((keys.shape[0],), jnp.int32)), n

    def update(astate, i, states, infos):
        a, count = astate
        return inner.update(a, i, states, infos), count + 1

    def params(astate):
        a, count = astate
        p = inner.params(a)
        return make_params(p, jnp.broadcast_to(count < n_w, jnp.shape(p.step_size)))

    return Adapter(init, update, params)
