"""Shared plumbing for population methods (ensembles, interacting particles, reverse diffusions).

Every population method in :mod:`samplax.particles` is a pure function
``run_chain(key, x0, target) -> (draws [num_samples, d], stats {name: [num_samples]})``
acting on ONE independent population (one "chain" of the Result).  It owns
its particle axis explicitly and vmaps the single-point target inside.
:func:`run_population` vmaps it over chains (chain ``c`` uses
``fold_in(key_run, c)``, so 8 chains reproduce the first 8 of 64), compiles
once (timed separately), and assembles a :class:`~samplax.core.result.Result`
with :func:`samplax.postprocess.finish_result`.

Costs are exact counts supplied by each method: how many single-point
log-density and gradient evaluations its program performs (the programs have
static shapes, so the count is a closed-form function of the settings).
"""
from __future__ import annotations

import hashlib
import time
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import Target


def flat_logdensity(target: Target) -> Callable:
    """Log-density of a flat point ``[d]`` (the target acts on ``event_shape``)."""
    shape = tuple(target.event_shape)

    def lp(x):
        return target.logdensity(jnp.reshape(x, shape))

    return lp


def safe_logdensity(lp: Callable) -> Callable:
    """``lp`` with NaN mapped to ``-inf`` (a NaN log-density is treated as zero density)."""

    def f(x):
        v = lp(x)
        return jnp.where(jnp.isnan(v), -jnp.inf, v)

    return f


def initial_particles(target: Target, key, num_chains: int, num_particles: int, init, gradient_based: bool,
                      method: str) -> jax.Array:
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
    from samplax.driver import _find_initial_points  # reuse Stan-style retries

    d = target.dim
    ev = tuple(target.event_shape)
    dtype = jnp.result_type(float)
    if init is None:
        x, _ = _find_initial_points(target, key, num_chains * num_particles, gradient_based, dtype)
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


def run_population(target: Target, method: str, run_chain: Callable, *, seed: int, num_chains: int,
                   num_particles: int, init, gradient_based: bool, options: dict, num_warmup: int,
                   num_samples: int, cost_per_chain: dict, extra: Optional[dict] = None,
                   extra_warnings: Optional[list] = None, init_fn: Optional[Callable] = None,
                   finalize: Optional[Callable] = None):
    """Run ``run_chain`` on ``num_chains`` independent populations and build the Result.

    Args:
      run_chain: ``run_chain(key, x0 [num_particles, d], target) -> (draws [num_samples, d],
        stats {name: [num_samples]})``; ``target`` arrives as an argument so its arrays
        are traced (new data never retraces).
      num_particles: how many initial points each population needs.
      cost_per_chain: ``{"num_logdensity_evals": int, "num_grad_evals": int}`` for one chain,
        initialisation included.
      init_fn: optional ``init_fn(key, num_chains) -> x0 [num_chains, num_particles, d]``
        replacing the default initial particles (e.g. draws from a reference Gaussian).
      finalize: optional ``finalize(draws, stats) -> (draws, stats, warnings)`` on host arrays.
    """
    from samplax.postprocess import finish_result

    key = jax.random.key(seed)
    k_init, k_run = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    if init_fn is not None and init is None:
        x0 = init_fn(k_init, num_chains)
    else:
        x0 = initial_particles(target, k_init, num_chains, num_particles, init, gradient_based, method)
    dyn, static = eqx.partition(target, eqx.is_array)
    chain_keys = jax.vmap(lambda c: jax.random.fold_in(k_run, c))(jnp.arange(num_chains))

    def run_all(dyn, keys, x0):
        tgt = eqx.combine(dyn, static)
        return jax.vmap(lambda k, x: run_chain(k, x, tgt))(keys, x0)

    t0 = time.perf_counter()
    compiled = jax.jit(run_all).lower(dyn, chain_keys, x0).compile()
    compile_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    draws, stats = compiled(dyn, chain_keys, x0)
    draws = np.asarray(draws)
    stats = {k: np.asarray(v) for k, v in stats.items()}
    sampling_seconds = time.perf_counter() - t0
    warnings = list(extra_warnings or [])
    if finalize is not None:
        draws, stats, w = finalize(draws, stats)
        warnings += w
    if not np.all(np.isfinite(draws)):
        n_bad = int(np.sum(~np.all(np.isfinite(draws), axis=-1)))
        warnings.append({"code": "nonfinite_draws", "value": n_bad,
                         "message": f"{n_bad} returned draws are not finite: the particle system diverged "
                                    "(lower the step size or check the target)"})
    cost = {
        "num_logdensity_evals": int(cost_per_chain["num_logdensity_evals"]) * num_chains,
        "num_grad_evals": int(cost_per_chain["num_grad_evals"]) * num_chains,
        "compile_seconds": compile_seconds, "sampling_seconds": sampling_seconds, "num_compilations": 1,
    }
    from samplax.driver import _target_id

    config = {
        "method": method, "options": options, "target": _target_id(target), "seed": seed,
        "num_chains": num_chains, "num_warmup": num_warmup, "num_samples": num_samples,
        "num_particles": num_particles, "dtype": str(jnp.result_type(float)),
        "init": None if init is None else hashlib.sha256(np.asarray(init, np.float64).tobytes()).hexdigest()[:16],
    }
    return finish_result(target, method, draws, stats, cost, config, extra=extra or {},
                         extra_warnings=warnings)


def pairwise_sq_dists(x: jax.Array, y: jax.Array) -> jax.Array:
    """``[n, m]`` squared Euclidean distances between rows of ``x`` [n, d] and ``y`` [m, d]."""
    diff = x[:, None, :] - y[None, :, :]
    return jnp.sum(diff * diff, axis=-1)
