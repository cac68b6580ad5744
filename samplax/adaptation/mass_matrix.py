"""Welford estimates of the posterior (co)variance for the inverse mass matrix.

Batched Welford/Chan update: a batch ``X`` (``[b, d]``) with mean ``m_b`` and
centred sum of squares ``S_b`` merges into ``(n, m, S)`` as
``m' = m + (m_b - m) b/(n+b)``, ``S' = S + S_b + (m_b - m)(m_b - m)^T n b/(n+b)``.
The final estimate is regularized towards ``1e-3 I`` as in Stan:
``C = n/(n+5) S/(n-1) + 1e-3 * 5/(n+5)``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class WelfordState(NamedTuple):
    count: jnp.ndarray
    mean: jnp.ndarray
    m2: jnp.ndarray  # [d] (diagonal) or [d, d] (dense)


def welford_init(dim: int, dense: bool, dtype=float) -> WelfordState:
    m2 = jnp.zeros((dim, dim) if dense else (dim,), dtype)
    return WelfordState(jnp.zeros((), dtype), jnp.zeros((dim,), dtype), m2)


def welford_update(state: WelfordState, batch) -> WelfordState:
    """Merge a batch of points ``[b, d]`` into the running estimate."""
    b = batch.shape[0]
    m_b = jnp.mean(batch, axis=0)
    c = batch - m_b
    dense = state.m2.ndim == 2
    s_b = c.T @ c if dense else jnp.sum(c**2, axis=0)
    n = state.count
    tot = n + b
    delta = m_b - state.mean
    mean = state.mean + delta * (b / tot)
    corr = jnp.outer(delta, delta) if dense else delta**2
    m2 = state.m2 + s_b + corr * (n * b / tot)
    return WelfordState(tot, mean, m2)


def welford_covariance(state: WelfordState, regularize: bool = True):
    n = state.count
    cov = state.m2 / jnp.maximum(n - 1.0, 1.0)
    if not regularize:
        return cov
    shrink = 1e-3 * 5.0 / (n + 5.0)
    if cov.ndim == 2:
        return (n / (n + 5.0)) * cov + shrink * jnp.eye(cov.shape[0], dtype=cov.dtype)
    return (n / (n + 5.0)) * cov + shrink
