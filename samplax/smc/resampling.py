"""Resampling schemes and effective sample sizes for weighted particle systems.

Every scheme maps normalized weights ``W`` (``[N]``, summing to one) to
``num_samples`` ancestor indices ``A`` with ``E[#{j: A_j = i}] = M W_i``
(unbiased resampling).  References: Douc, Cappé & Moulines (2005), "Comparison
of resampling schemes for particle filtering"; Chopin & Papaspiliopoulos
(2020), *An Introduction to Sequential Monte Carlo*, ch. 9.

- multinomial: ``A_j ~ Categorical(W)`` i.i.d. (Gordon et al. 1993).
- stratified: ``U_j ~ Uniform((j-1)/M, j/M)`` independently, ``A_j = F^{-1}(U_j)`` (Kitagawa 1996).
- systematic: one ``U ~ Uniform(0, 1/M)``, ``U_j = U + (j-1)/M`` (Carpenter, Clifford & Fearnhead 1999).
- residual: ``floor(M W_i)`` copies of ``i``, the remaining ``R = M - sum floor(M W_i)``
  drawn multinomially from the residual weights ``M W_i - floor(M W_i)`` (Liu & Chen 1998).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp


def _inverse_cdf(u: jax.Array, weights: jax.Array) -> jax.Array:
    """Indices ``i`` with ``cumsum(W)[i-1] <= u < cumsum(W)[i]`` for sorted or unsorted ``u``."""
    cdf = jnp.cumsum(weights)
    cdf = cdf / cdf[-1]
    idx = jnp.searchsorted(cdf, u, side="right")
    return jnp.clip(idx, 0, weights.shape[0] - 1).astype(jnp.int32)


def multinomial(key: jax.Array, weights: jax.Array, num_samples: int) -> jax.Array:
    """Multinomial resampling: ``num_samples`` i.i.d. draws from ``Categorical(weights)``."""
    u = jax.random.uniform(key, (num_samples,), dtype=weights.dtype)
    return _inverse_cdf(u, weights)


def stratified(key: jax.Array, weights: jax.Array, num_samples: int) -> jax.Array:
    """Stratified resampling: one uniform per stratum ``[(j-1)/M, j/M)``."""
    u = (jnp.arange(num_samples, dtype=weights.dtype)
         + jax.random.uniform(key, (num_samples,), dtype=weights.dtype)) / num_samples
    return _inverse_cdf(u, weights)


def systematic(key: jax.Array, weights: jax.Array, num_samples: int) -> jax.Array:
    """Systematic resampling: a single uniform offset shared by all strata."""
    u = (jnp.arange(num_samples, dtype=weights.dtype)
         + jax.random.uniform(key, (), dtype=weights.dtype)) / num_samples
    return _inverse_cdf(u, weights)


def residual(key: jax.Array, weights: jax.Array, num_samples: int) -> jax.Array:
    """Residual resampling: deterministic ``floor(M W_i)`` copies, multinomial on the rest."""
    n = weights.shape[0]
    w = weights / jnp.sum(weights)
    counts = jnp.floor(num_samples * w).astype(jnp.int32)
    num_det = jnp.sum(counts)
    resid = num_samples * w - counts
    resid_sum = jnp.sum(resid)
    resid = jnp.where(resid_sum > 0, resid / jnp.where(resid_sum > 0, resid_sum, 1.0), jnp.ones_like(w) / n)
    # Deterministic part: slot j holds particle i for cumsum(counts)[i-1] <= j < cumsum(counts)[i].
    slots = jnp.arange(num_samples)
    det_idx = jnp.searchsorted(jnp.cumsum(counts), slots, side="right")
    rand_idx = multinomial(key, resid, num_samples)
    return jnp.where(slots < num_det, jnp.clip(det_idx, 0, n - 1), rand_idx).astype(jnp.int32)


RESAMPLERS = {"multinomial": multinomial, "systematic": systematic, "stratified": stratified,
              "residual": residual}


def get_resampler(name) -> Callable:
    """A resampling function by name (``multinomial``, ``systematic``, ``stratified``, ``residual``) or callable."""
    if callable(name):
        return name
    try:
        return RESAMPLERS[name]
    except KeyError:
        raise ValueError(f"resampling must be one of {sorted(RESAMPLERS)}, got {name!r}") from None


def normalize(log_weights: jax.Array) -> jax.Array:
    """Normalized log-weights ``log W_i = log w_i - logsumexp(log w)``."""
    return log_weights - logsumexp(log_weights)


def ess(log_weights: jax.Array) -> jax.Array:
    """Effective sample size ``(sum w)^2 / sum w^2`` (Kong, Liu & Wong 1994) from unnormalized log-weights."""
    lw = normalize(log_weights)
    return jnp.exp(-logsumexp(2.0 * lw))


def conditional_ess(log_weights: jax.Array, log_increments: jax.Array) -> jax.Array:
    """Conditional ESS (Zhou, Johansen & Aston 2016): ``N (sum W g)^2 / sum W g^2``.

    ``W`` are the current normalized weights, ``g = exp(log_increments)`` the
    incremental weights of the next step; equals the ESS of ``W g`` when ``W`` is
    uniform, and lies in ``[1, N]``.
    """
    n = log_weights.shape[0]
    lw = normalize(log_weights)
    num = 2.0 * logsumexp(lw + log_increments)
    den = logsumexp(lw + 2.0 * log_increments)
    return n * jnp.exp(num - den)


def equal_weight_draws(key: jax.Array, positions: jax.Array, log_weights: jax.Array, num: int) -> jax.Array:
    """``num`` equally weighted draws from weighted particles ``positions [N, d]`` (``log_weights [N]``, normalized).

    Systematic resampling, then a random permutation of the draws, so that an
    ESS computed in index order reflects only the duplicates (systematic
    resampling returns the ancestors sorted).
    """
    k1, k2 = jax.random.split(key)
    idx = systematic(k1, jnp.exp(log_weights), num)
    idx = jax.random.permutation(k2, idx)
    return positions[idx]
