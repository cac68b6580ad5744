"""Euclidean metrics (mass matrices) for HMC-type kernels.

The inverse mass matrix ``C`` is a vector (diagonal), a ``[d, d]`` matrix
(dense), or a :class:`LowRankMetric` ``C = diag(s) (I + U diag(l - 1) U^T) diag(s)``
(diagonal plus a rank-``k`` correction, nutpie's form; ``O(d k)`` per use); its
kind and rank are structural (static) choices, its values are array parameters.  Momentum ``p ~ N(0, C^{-1})``, kinetic energy ``K(p) = p^T C p / 2``
and velocity ``dK/dp = C p`` (Neal 2011, "MCMC using Hamiltonian dynamics").
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class LowRankMetric(NamedTuple):
    """Inverse mass matrix ``C = diag(s) (I + U diag(l - 1) U^T) diag(s)``.

    ``U`` ``[d, k]`` has orthonormal columns; columns with ``l = 1`` are unused.
    With ``k = d`` it represents any SPD matrix (``C = S U diag(l) U^T S``).
    Then ``C^{1/2} = diag(s) (I + U diag(sqrt(l) - 1) U^T)`` and
    ``C^{-1/2} = (I + U diag(1/sqrt(l) - 1) U^T) diag(1/s)``, so momentum draws,
    velocities and energies cost ``O(d k)`` (Seyboldt's nutpie low-rank mass matrix).
    """

    scale: jax.Array  # s, [d]
    vectors: jax.Array  # U, [d, k]
    values: jax.Array  # l, [k]


def is_low_rank(inverse_mass_matrix) -> bool:
    return isinstance(inverse_mass_matrix, LowRankMetric)


def is_dense(inverse_mass_matrix) -> bool:
    return not is_low_rank(inverse_mass_matrix) and jnp.ndim(inverse_mass_matrix) == 2


def _core_apply(m: LowRankMetric, v, power):
    """``(I + U diag(l^power - 1) U^T) v``."""
    return v + m.vectors @ ((m.values**power - 1.0) * (m.vectors.T @ v))


def low_rank_to_dense(m: LowRankMetric):
    """The ``[d, d]`` matrix a :class:`LowRankMetric` stands for."""
    d = m.scale.shape[0]
    core = jnp.eye(d, dtype=m.scale.dtype) + (m.vectors * (m.values - 1.0)) @ m.vectors.T
    c = core * jnp.outer(m.scale, m.scale)
    return 0.5 * (c + c.T)


def diagonal_as_low_rank(diag, rank: int) -> LowRankMetric:
    """A diagonal inverse mass matrix as a :class:`LowRankMetric` of structural rank ``rank`` (all ``l = 1``)."""
    d = diag.shape[-1]
    return LowRankMetric(jnp.sqrt(diag), jnp.eye(d, rank, dtype=diag.dtype), jnp.ones((rank,), diag.dtype))


def _chol(c):
    return jnp.linalg.cholesky(c)


def sample_momentum(key, inverse_mass_matrix, position):
    """Draw ``p ~ N(0, C^{-1})`` with the shape and dtype of ``position``."""
    z = jax.random.normal(key, position.shape, dtype=position.dtype)
    if is_low_rank(inverse_mass_matrix):
        # p = C^{-1/2 T} z = diag(1/s) (I + U diag(l^{-1/2} - 1) U^T) z
        return _core_apply(inverse_mass_matrix, z, -0.5) / inverse_mass_matrix.scale
    if is_dense(inverse_mass_matrix):
        l_chol = _chol(inverse_mass_matrix)
        # p = L^{-T} z has covariance (L L^T)^{-1} = C^{-1}.
        return jax.scipy.linalg.solve_triangular(l_chol, z, lower=True, trans="T")
    return z / jnp.sqrt(inverse_mass_matrix)


def velocity(inverse_mass_matrix, momentum):
    """``C p``."""
    if is_low_rank(inverse_mass_matrix):
        s = inverse_mass_matrix.scale
        return s * _core_apply(inverse_mass_matrix, s * momentum, 1.0)
    if is_dense(inverse_mass_matrix):
        return inverse_mass_matrix @ momentum
    return inverse_mass_matrix * momentum


def kinetic_energy(inverse_mass_matrix, momentum):
    """``p^T C p / 2``."""
    return 0.5 * jnp.dot(momentum, velocity(inverse_mass_matrix, momentum))


def scale_noise(inverse_mass_matrix, z):
    """``C^{1/2} z`` (Cholesky factor for dense ``C``): a draw from ``N(0, C)``."""
    if is_low_rank(inverse_mass_matrix):
        return inverse_mass_matrix.scale * _core_apply(inverse_mass_matrix, z, 0.5)
    if is_dense(inverse_mass_matrix):
        return _chol(inverse_mass_matrix) @ z
    return jnp.sqrt(inverse_mass_matrix) * z


def whiten(inverse_mass_matrix, v):
    """``C^{-1/2} v`` (inverse of :func:`scale_noise`)."""
    if is_low_rank(inverse_mass_matrix):
        return _core_apply(inverse_mass_matrix, v / inverse_mass_matrix.scale, -0.5)
    if is_dense(inverse_mass_matrix):
        return jax.scipy.linalg.solve_triangular(_chol(inverse_mass_matrix), v, lower=True)
    return v / jnp.sqrt(inverse_mass_matrix)


def is_turning(inverse_mass_matrix, momentum_left, momentum_right, momentum_sum):
    """Generalized no-U-turn criterion (Betancourt 2017, "A conceptual introduction to HMC").

    A trajectory with end momenta ``p-``, ``p+`` and momentum sum ``rho`` (ends
    included) turns when ``(C p-) . r <= 0`` or ``(C p+) . r <= 0`` with
    ``r = rho - (p- + p+)/2``: the end points count half (trapezoidal rule), as in
    NumPyro's iterative NUTS.  Symmetric in its ends, so detailed balance is kept.
    The half-weighted ends alone do not catch the U-turns of nearly periodic
    trajectories (a 100-d standard normal at step size 0.42 ran ~50 leapfrog steps
    per draw instead of ~7); :mod:`samplax.mcmc.nuts` therefore also applies it
    to Stan's two extra spans at every merge of two halves.
    """
    v_left = velocity(inverse_mass_matrix, momentum_left)
    v_right = velocity(inverse_mass_matrix, momentum_right)
    r = momentum_sum - 0.5 * (momentum_left + momentum_right)
    return (jnp.dot(v_left, r) <= 0) | (jnp.dot(v_right, r) <= 0)
