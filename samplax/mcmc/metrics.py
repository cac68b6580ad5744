"""Euclidean metrics (mass matrices) for HMC-type kernels.

The inverse mass matrix ``C`` is either a vector (diagonal) or a ``[d, d]``
matrix (dense); its rank is a structural (static) choice, its values are array
parameters.  Momentum ``p ~ N(0, C^{-1})``, kinetic energy ``K(p) = p^T C p / 2``
and velocity ``dK/dp = C p`` (Neal 2011, "MCMC using Hamiltonian dynamics").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def is_dense(inverse_mass_matrix) -> bool:
    return jnp.ndim(inverse_mass_matrix) == 2


def _chol(c):
    return jnp.linalg.cholesky(c)


def sample_momentum(key, inverse_mass_matrix, position):
    """Draw ``p ~ N(0, C^{-1})`` with the shape and dtype of ``position``."""
    z = jax.random.normal(key, position.shape, dtype=position.dtype)
    if is_dense(inverse_mass_matrix):
        l_chol = _chol(inverse_mass_matrix)
        # p = L^{-T} z has covariance (L L^T)^{-1} = C^{-1}.
        return jax.scipy.linalg.solve_triangular(l_chol, z, lower=True, trans="T")
    return z / jnp.sqrt(inverse_mass_matrix)


def velocity(inverse_mass_matrix, momentum):
    """``C p``."""
    if is_dense(inverse_mass_matrix):
        return inverse_mass_matrix @ momentum
    return inverse_mass_matrix * momentum


def kinetic_energy(inverse_mass_matrix, momentum):
    """``p^T C p / 2``."""
    return 0.5 * jnp.dot(momentum, velocity(inverse_mass_matrix, momentum))


def scale_noise(inverse_mass_matrix, z):
    """``C^{1/2} z`` (Cholesky factor for dense ``C``): a draw from ``N(0, C)``."""
    if is_dense(inverse_mass_matrix):
        return _chol(inverse_mass_matrix) @ z
    return jnp.sqrt(inverse_mass_matrix) * z


def whiten(inverse_mass_matrix, v):
    """``C^{-1/2} v`` (inverse of :func:`scale_noise`)."""
    if is_dense(inverse_mass_matrix):
        return jax.scipy.linalg.solve_triangular(_chol(inverse_mass_matrix), v, lower=True)
    return v / jnp.sqrt(inverse_mass_matrix)


def is_turning(inverse_mass_matrix, momentum_left, momentum_right, momentum_sum):
    """Generalized no-U-turn criterion (Betancourt 2017, "A conceptual introduction to HMC").

    A trajectory with end momenta ``p-``, ``p+`` and momentum sum ``rho`` (ends
    included) turns when ``(C p-) . r <= 0`` or ``(C p+) . r <= 0`` with
    ``r = rho - (p- + p+)/2``: the end points count half (trapezoidal rule), as in
    NumPyro's iterative NUTS.  With the full sum (Stan before 2.26) U-turns of
    nearly periodic trajectories can be missed and trees run to the maximum
    depth; Stan fixed this with extra sub-tree checks, the half-weighted ends fix
    it without them.  Symmetric in its ends, so detailed balance is kept.
    """
    v_left = velocity(inverse_mass_matrix, momentum_left)
    v_right = velocity(inverse_mass_matrix, momentum_right)
    r = momentum_sum - 0.5 * (momentum_left + momentum_right)
    return (jnp.dot(v_left, r) <= 0) | (jnp.dot(v_right, r) <= 0)
