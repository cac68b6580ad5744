"""Annealing paths between a reference and the target.

Geometric path (Gelman & Meng 1998; Neal 2001):
``log pi_beta(x) = (1 - beta) log q(x) + beta log p(x)``, ``beta`` in ``[0, 1]``,
where ``q`` is a *normalized* reference, so ``Z_0 = 1`` and the SMC estimate of
``Z_1`` is the target's normalizing constant.  The incremental log-weight from
``beta`` to ``beta'`` is ``(beta' - beta) (log p(x) - log q(x))``.

samplax's default reference is the broad diagonal Gaussian ``N(0, 5^2 I)``
(``reference_scale=5``); a fitted or user-given Gaussian is a
``(mean, scale)`` pair.  Prior-to-posterior (likelihood) tempering is the
same path with ``q`` the prior and ``log p - log q`` the log-likelihood.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_REFERENCE_SCALE = 5.0


class GaussianReference(NamedTuple):
    """Normalized diagonal Gaussian ``N(mean, diag(scale^2))`` (array fields, so a new reference never retraces)."""

    mean: jax.Array
    scale: jax.Array

    def logdensity(self, x: jax.Array) -> jax.Array:
        """``log N(x; mean, diag(scale^2))`` for one point ``x`` of shape ``[d]``."""
        z = (x - self.mean) / self.scale
        d = x.shape[-1]
        return -0.5 * jnp.sum(z**2) - jnp.sum(jnp.log(self.scale)) - 0.5 * d * jnp.log(2 * jnp.pi)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` exact draws ``[n, d]``."""
        z = jax.random.normal(key, (n, self.mean.shape[0]), dtype=self.mean.dtype)
        return self.mean + self.scale * z


def make_reference(dim: int, mean=None, scale=None, dtype=None) -> GaussianReference:
    """Build a :class:`GaussianReference`, checking shapes; defaults ``N(0, 5^2 I)``.

    ``mean`` is a scalar or ``[dim]``; ``scale`` a positive scalar or ``[dim]`` vector of standard deviations.
    """
    dtype = dtype or jnp.result_type(float)
    m = np.zeros(dim) if mean is None else np.asarray(mean, dtype=np.float64)
    s = np.full(dim, DEFAULT_REFERENCE_SCALE) if scale is None else np.asarray(scale, dtype=np.float64)
    if m.ndim == 0:
        m = np.full(dim, float(m))
    if s.ndim == 0:
        s = np.full(dim, float(s))
    if m.shape != (dim,):
        raise ValueError(f"reference_mean must be a scalar or have shape ({dim},), got shape {m.shape}")
    if s.shape != (dim,):
        raise ValueError(f"reference_scale must be a scalar or have shape ({dim},), got shape {s.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("reference_mean must be finite")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"reference_scale must be positive and finite, got {s}")
    return GaussianReference(jnp.asarray(m, dtype), jnp.asarray(s, dtype))


def geometric_logdensity(beta, log_reference, log_target):
    """``(1 - beta) log q + beta log p``, with ``0 * (-inf) = 0`` at the ends of the path."""
    a = jnp.where(beta < 1, (1 - beta) * log_reference, 0.0)
    b = jnp.where(beta > 0, beta * log_target, 0.0)
    return a + b


def log_increment(beta, beta_next, log_reference, log_target):
    """Incremental log-weight ``(beta' - beta)(log p - log q)``; ``-inf`` where ``log p = -inf`` and ``beta' > beta``."""
    ell = log_target - log_reference
    inc = (beta_next - beta) * ell
    return jnp.where(jnp.isnan(inc), jnp.where(beta_next > beta, -jnp.inf, 0.0), inc)
