"""Shared plumbing for population methods (ensembles, interacting particles, reverse diffusions).

Every population method in :mod:`samplax.interacting` is a pure function
``run_chain(key, x0, target) -> (draws [num_samples, d], stats {name: [num_samples]})``
acting on ONE independent population (one "chain" of the Result).  It owns
its particle axis explicitly and vmaps the single-point target inside.
:func:`population_plan` turns it into a :class:`~samplax.core.method.PopulationPlan`
that the run engine maps over chains (chain ``c`` uses ``fold_in(keys.run, c)``,
so 8 chains reproduce the first 8 of 64), shards, compiles once and turns into
a :class:`~samplax.core.result.Result`.

Costs are exact counts supplied by each method: how many single-point
log-density and gradient evaluations its program performs (the programs have
static shapes, so the count is a closed-form function of the settings).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core import nonfinite
from samplax.core.method import PopulationOutput, PopulationPlan
from samplax.core.target import Target


def flat_logdensity(target: Target) -> Callable:
    """Log-density of a flat point ``[d]`` (the target acts on ``event_shape``)."""
    return target.flat_logdensity()


def safe_logdensity(lp: Callable) -> Callable:
    """``lp`` with NaN mapped to ``-inf`` (a NaN log-density is treated as zero density)."""

    def f(x):
        v = lp(x)
        return jnp.where(jnp.isnan(v), -jnp.inf, v)

    return f


def initial_particles(target: Target, ctx, num_particles: int, gradient_based: bool) -> jax.Array:
    """Initial particles ``[num_chains, num_particles, d]``.

    Default (``init=None``): Stan's rule per particle, uniform(-2, 2) in
    unconstrained space (``target.initial_point``), retried up to 100 times
    until the log-density (and gradient, for gradient-based methods) is finite.
    Particle ``p`` of chain ``c`` uses ``fold_in(key, c * num_particles + p)``.

    ``init`` may be a full population ``[num_chains, num_particles, *event]``
    or ``[num_particles, *event]`` (used as given), or a point ``[*event]`` /
    ``[num_chains, *event]``, which is spread to a population by adding
    independent uniform(-2, 2) offsets to every coordinate.
    """
    key, num_chains, init, method = ctx.init_key, ctx.num_chains, ctx.init, ctx.method
    d = target.dim
    ev = tuple(target.event_shape)
    dtype = jnp.result_type(float)
    if init is None:
        x = ctx.initial_points(key, num_chains * num_particles, gradient_based)
        return jnp.reshape(x, (num_chains, num_particles, d))
    a = np.asarray(init, dtype=np.float64)
    if a.shape == (num_chains, num_particles) + ev:
        x = a.reshape(num_chains, num_particles, d)
    elif a.shape == (num_particles,) + ev:
        x = np.broadcast_to(a.reshape(1, num_particles, d), (num_chains, num_particles, d))
    elif a.shape in (ev, (num_chains,) + ev):
        centre = np.broadcast_to(a.reshape(-1, d), (num_chains, d))
        off = jax.vmap(lambda c: jax.random.uniform(jax.random.fold_in(key, c), (num_particles, d),
                                                    minval=-2.0, maxval=2.0))(jnp.arange(num_chains))
        x = centre[:, None, :] + np.asarray(off)
    else:
        raise ValueError(
            f"{method}: init must have shape {ev} or {(num_chains,) + ev} (a point per chain, spread by "
            f"uniform(-2, 2) offsets) or {(num_particles,) + ev} / {(num_chains, num_particles) + ev} "
            f"(a full population of {num_particles} particles), got {a.shape}")
    x = jnp.asarray(x, dtype=dtype)
    lp = flat_logdensity(target)
    v = np.asarray(jax.jit(jax.vmap(jax.vmap(lp)))(x))
    if not np.all(np.isfinite(v)):
        c, p = map(int, np.argwhere(~np.isfinite(v))[0])
        raise ValueError(f"{method}: init gives a non-finite log-density ({v[c, p]}) for chain {c}, "
                         f"particle {p} on target {target.name!r}; choose points inside the support")
    return x


def population_plan(target: Target, ctx, run_chain: Callable, *, num_particles: int, gradient_based: bool,
                    cost_per_chain: dict, extra: Optional[dict] = None, extra_warnings: Optional[list] = None,
                    init_fn: Optional[Callable] = None, finalize: Optional[Callable] = None,
                    checked_evals: Optional[int] = None) -> PopulationPlan:
    """``run_chain`` on ``ctx.num_chains`` independent populations, as a plan for the run engine.

    Args:
      run_chain: ``run_chain(key, x0 [num_particles, d], target) -> (draws [num_samples, d],
        stats {name: [num_samples]})``; ``target`` arrives as an argument so its arrays
        are traced (new data never retraces).
      num_particles: how many initial points each population needs.
      cost_per_chain: ``{"num_logdensity_evals": int, "num_grad_evals": int}``: every evaluation
        ``run_chain`` computes for one chain (the initial particles' search is counted by the run
        engine, the check of a user's ``init`` here).
      init_fn: optional ``init_fn(key, num_chains) -> x0 [num_chains, num_particles, d]``
        replacing the default initial particles (e.g. draws from a reference Gaussian).
      finalize: optional ``finalize(draws, stats) -> (draws, stats, warnings)`` on host arrays.
      checked_evals: how many log-density evaluations of one chain's run the stat ``nonfinite_evals`` covers.

    Non-finite log-densities: a ``run_chain`` whose stats hold ``"nonfinite_evals"`` (per draw: the NaN or
    ``+inf`` evaluations made for it, treated as zero density) gets their per-chain sums in
    ``extra["num_nonfinite_runs"]``, the total in ``extra["num_nonfinite"]`` and the ``nonfinite`` run
    warning (:func:`samplax.core.nonfinite.report`); a chain in which all ``checked_evals`` evaluations
    were non-finite is a ``ValueError`` (nothing finite to sample from).
    """
    if init_fn is not None and ctx.init is None:
        x0 = init_fn(ctx.init_key, ctx.num_chains)
    else:
        x0 = initial_particles(target, ctx, num_particles, gradient_based)

    def run(key, run_id, tgt, x0):
        del run_id
        return run_chain(key, x0, tgt)

    # a user's init is checked on the host: one log-density per particle (initial_particles)
    n_init_check = ctx.num_chains * num_particles if ctx.init is not None else 0

    def finish(out):
        draws, stats = out
        draws = np.asarray(draws)
        stats = {k: np.asarray(v) for k, v in stats.items()}
        warnings = list(extra_warnings or [])
        info = dict(extra or {})
        if "nonfinite_evals" in stats:
            per_chain = stats["nonfinite_evals"].reshape(ctx.num_chains, -1).sum(axis=1)
            if checked_evals:
                dead = np.flatnonzero(per_chain >= checked_evals)
                if dead.size:
                    raise nonfinite.everywhere_error(ctx.method, target.name,
                                                     f"all {checked_evals} log-density evaluations of the chain",
                                                     dead, ctx.num_chains)
            nonfinite.report(ctx.method, per_chain, info, warnings)
        if finalize is not None:
            draws, stats, w = finalize(draws, stats)
            warnings += w
        return PopulationOutput(
            samples=draws, stats=stats,
            num_logdensity_evals=int(cost_per_chain["num_logdensity_evals"]) * ctx.num_chains + n_init_check,
            num_grad_evals=int(cost_per_chain["num_grad_evals"]) * ctx.num_chains,
            extra=info, warnings=warnings, config={"num_particles": num_particles})

    return PopulationPlan(run, finish, inputs=(x0,))


def pairwise_sq_dists(x: jax.Array, y: jax.Array) -> jax.Array:
    """``[n, m]`` squared Euclidean distances between rows of ``x`` [n, d] and ``y`` [m, d]."""
    diff = x[:, None, :] - y[None, :, :]
    return jnp.sum(diff * diff, axis=-1)
