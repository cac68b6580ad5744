"""The generic Feynman–Kac step that every SMC algorithm in samplax configures.

A Feynman–Kac model (Del Moral 2004; Chopin & Papaspiliopoulos 2020, ch. 5)
is a sequence of Markov kernels ``M_t`` and potentials ``G_t``.  One step of
the particle approximation maps weighted particles ``(x^i, log W^i)`` to

1. **reweight**: ``log w^i <- log W^i + log G_t(x^i)``; the normalizing-constant
   estimate is updated by ``log Z += logsumexp(log W + log G) - logsumexp(log W)``
   (the weighted mean of the potential);
2. **resample** (when ``ESS < threshold * N``, or always): draw ancestors
   ``A ~ resampler(W)``, reset weights to uniform;
3. **mutate**: ``x^i ~ M_t(x^{A_i}, .)``, a Markov kernel invariant for the
   next annealing distribution.

Tempered SMC (Del Moral, Doucet & Jasra 2006), AIS (Neal 2001: never resample),
population annealing (Machta 2010: always resample, fixed schedule) and
waste-free SMC (Dau & Chopin 2022: resample ``M = N / P`` ancestors and keep
every state of their length-``P`` chains) are configurations of
:func:`fk_step`.  Particles are any pytree with a leading particle axis.

The state also tracks *Eve indices* (the time-0 ancestor of each particle) for
the single-run variance estimator of Lee & Whiteley (2018), see
:func:`lee_whiteley_relative_variance`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from samplax.smc import resampling


class SMCState(NamedTuple):
    """Weighted particle system.

    Attributes:
      particles: pytree with leading axis ``N``.
      log_weights: ``[N]`` normalized log-weights (``logsumexp == 0``).
      log_Z: running log normalizing-constant estimate (scalar).
      eve: ``[N]`` int32 index of each particle's time-0 ancestor.
      num_resampling: number of resampling events so far (int32).
    """

    particles: Any
    log_weights: jax.Array
    log_Z: jax.Array
    eve: jax.Array
    num_resampling: jax.Array


class FKInfo(NamedTuple):
    """What one Feynman–Kac step did: ESS after reweighting, whether it resampled, the log Z increment, mutation info."""

    ess: jax.Array
    resampled: jax.Array
    log_Z_increment: jax.Array
    mutation: Any


def init(particles: Any, num_particles: int | None = None, log_weights: jax.Array | None = None) -> SMCState:
    """Initial state: equal weights (or the given ones, normalized), ``log Z = 0``, Eve indices ``0..N-1``."""
    n = jax.tree.leaves(particles)[0].shape[0] if num_particles is None else num_particles
    dtype = jax.tree.leaves(particles)[0].dtype
    if log_weights is None:
        log_weights = jnp.full((n,), -jnp.log(n), dtype=dtype)
    else:
        log_weights = resampling.normalize(log_weights)
    return SMCState(particles, log_weights, jnp.zeros((), dtype), jnp.arange(n, dtype=jnp.int32),
                    jnp.zeros((), jnp.int32))


def _take(tree, idx):
    return jax.tree.map(lambda a: a[idx], tree)


def fk_step(key: jax.Array, state: SMCState, log_potential: jax.Array, mutate: Callable,
            resample_fn: Callable = resampling.systematic, ess_threshold: jax.Array | float = 0.5,
            num_ancestors: int | None = None):
    """One Feynman–Kac step: reweight by ``log_potential``, ESS-triggered resampling, mutation.

    Args:
      key: PRNG key.
      state: the current :class:`SMCState`.
      log_potential: ``[N]`` values ``log G_t(x^i)`` at the current particles
        (computed by the caller, usually from cached log-densities, so that no
        evaluation is repeated; NaN and ``+inf`` values count as ``-inf``: zero weight).
      mutate: ``mutate(key, particles) -> (particles, info)``; must map
        ``num_ancestors`` particles to ``N`` (the identity count unless waste-free).
      resample_fn: ``resample_fn(key, weights, num) -> indices``.
      ess_threshold: resample when ``ESS < ess_threshold * N``; ``1.0`` (or more)
        resamples every step, ``0.0`` never does (AIS).
      num_ancestors: how many ancestors to resample (``N`` by default; ``N / P``
        for waste-free SMC, which requires resampling at every step).

    Returns:
      ``(new_state, FKInfo)``.
    """
    k_res, k_mut = jax.random.split(key)
    n = state.log_weights.shape[0]
    m = n if num_ancestors is None else int(num_ancestors)
    log_g = jnp.where(jnp.isnan(log_potential) | (log_potential == jnp.inf), -jnp.inf, log_potential)
    unnorm = state.log_weights + log_g
    log_z_inc = logsumexp(unnorm)  # state.log_weights are normalized
    log_w = unnorm - log_z_inc
    ess = jnp.exp(-logsumexp(2.0 * log_w))
    if m != n:
        do_resample = jnp.asarray(True)
    else:
        do_resample = ess < ess_threshold * n
    idx = resample_fn(k_res, jnp.exp(log_w), m)
    if m == n:
        idx = jnp.where(do_resample, idx, jnp.arange(n, dtype=jnp.int32))
        new_lw = jnp.where(do_resample, jnp.full_like(log_w, -jnp.log(n)), log_w)
        eve = state.eve[idx]
    else:
        new_lw = jnp.full_like(log_w, -jnp.log(n))
        eve = jnp.repeat(state.eve[idx], n // m, total_repeat_length=n)
    particles = _take(state.particles, idx)
    particles, minfo = mutate(k_mut, particles)
    new_state = SMCState(particles, new_lw, state.log_Z + log_z_inc, eve,
                         state.num_resampling + do_resample.astype(jnp.int32))
    return new_state, FKInfo(ess, do_resample, log_z_inc, minfo)


def lee_whiteley_relative_variance(state: SMCState) -> jax.Array:
    """Single-run estimate of ``Var(Z_hat / Z)`` (Lee & Whiteley 2018; Chan & Lai 2013).

    With ``S_i = sum_{j: E_j = i} W_j`` the final weight carried by the
    descendants of initial particle ``i`` and ``R`` resampling events,

    ``V = 1 - (N / (N - 1))^{R + 1} (1 - sum_i S_i^2)``.

    With no resampling this is the unbiased estimate of the relative variance of
    an importance-sampling mean, ``(N sum W^2 - 1) / (N - 1)``.  Du & Guyader
    (2021) justify it for ESS-triggered resampling with ``R`` counted as here.
    It degenerates when all particles descend from one Eve (then ``sum S^2 = 1``
    and ``V = 1`` whatever the true variance), so samplax prefers the spread over
    independent runs whenever there are several.
    """
    n = state.log_weights.shape[0]
    w = jnp.exp(state.log_weights)
    s = jnp.zeros((n,), w.dtype).at[state.eve].add(w)
    c = jnp.exp((state.num_resampling + 1).astype(w.dtype) * jnp.log(n / (n - 1.0)))
    return 1.0 - c * (1.0 - jnp.sum(s**2))
