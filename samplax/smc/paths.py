"""Annealing paths between a reference and the target.

Geometric path (Gelman & Meng 1998; Neal 2001):
``log pi_beta(x) = (1 - beta) log q(x) + beta log p(x)``, ``beta`` in ``[0, 1]``,
where ``q`` is a *normalized* reference, so ``Z_0 = 1`` and the SMC estimate of
``Z_1`` is the target's normalizing constant.  The incremental log-weight from
``beta`` to ``beta'`` is ``(beta' - beta) (log p(x) - log q(x))``.

samplax's default reference is the broad diagonal Gaussian ``N(0, 5^2 I)``
(``reference_scale=5``); a fitted or user-given Gaussian is a
``(mean, scale)`` pair.  :class:`StudentTReference` is the heavy-tailed
alternative (nested sampling's default prior, see ``samplax.smc.nested``).
Prior-to-posterior (likelihood) tempering is the same path with ``q`` the
prior and ``log p - log q`` the log-likelihood.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

DEFAULT_REFERENCE_SCALE = 5.0


class GaussianReference(NamedTuple):
    """Normalized diagonal Gaussian ``N(mean, diag(scale^2))`` (array fields, so a new reference never retraces)."""

    mean: jax.Array
    scale: jax.Array

    def logdensity(self, x: jax.Array) -> jax.Array:
        """``log N(x; mean, diag(scale^2))`` for one point ``x`` of shape ``[d]``."""
        # times the reciprocal rather than a division by the broadcast scale: XLA rewrites
        # ``a / broadcast(s)`` into ``a * broadcast(1 / s)`` only when the broadcast has one user, which
        # depends on whether CSE ran first (it does in a program partitioned over devices), so a division
        # would round differently sharded and on one device
        z = (x - self.mean) * (1.0 / self.scale)
        d = x.shape[-1]
        return -0.5 * jnp.sum(z**2) - jnp.sum(jnp.log(self.scale)) - 0.5 * d * jnp.log(2 * jnp.pi)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` exact draws ``[n, d]``."""
        z = jax.random.normal(key, (n, self.mean.shape[0]), dtype=self.mean.dtype)
        return self.mean + self.scale * z


class StudentTReference(NamedTuple):
    """Normalized multivariate Student-t ``t_nu(mean, diag(scale^2))`` (one shared ``nu``).

    Density: ``Gamma((nu + d) / 2) / (Gamma(nu / 2) (nu pi)^{d/2} prod(scale))
    (1 + |z|^2 / nu)^{-(nu + d) / 2}``, ``z = (x - mean) / scale``.  Draws:
    ``mean + scale * g / sqrt(w / nu)`` with ``g ~ N(0, I)``, ``w ~ chi^2_nu``
    (a Gaussian scale mixture).  ``nu = 1`` is the multivariate Cauchy.  Its
    polynomial tails dominate any target whose tails decay faster than
    ``|x|^{-(nu + d)}``, which keeps ``p / reference`` bounded.
    """

    mean: jax.Array
    scale: jax.Array
    dof: jax.Array

    def logdensity(self, x: jax.Array) -> jax.Array:
        """``log t_nu(x; mean, diag(scale^2))`` for one point ``x`` of shape ``[d]``."""
        # times the reciprocal rather than a division by the broadcast scale: XLA rewrites
        # ``a / broadcast(s)`` into ``a * broadcast(1 / s)`` only when the broadcast has one user, which
        # depends on whether CSE ran first (it does in a program partitioned over devices), so a division
        # would round differently sharded and on one device
        z = (x - self.mean) * (1.0 / self.scale)
        d = x.shape[-1]
        nu = self.dof
        return (gammaln(0.5 * (nu + d)) - gammaln(0.5 * nu) - 0.5 * d * jnp.log(nu * jnp.pi)
                - jnp.sum(jnp.log(self.scale)) - 0.5 * (nu + d) * jnp.log1p(jnp.sum(z**2) / nu))

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` exact draws ``[n, d]``."""
        k1, k2 = jax.random.split(key)
        dtype = self.mean.dtype
        g = jax.random.normal(k1, (n, self.mean.shape[0]), dtype=dtype)
        w = 2.0 * jax.random.gamma(k2, 0.5 * self.dof, (n,), dtype=dtype)  # chi^2_nu
        return self.mean + self.scale * g * jnp.sqrt(self.dof / w)[:, None]


def valid_dof(dof) -> bool:
    """Whether ``dof`` is an accepted ``reference_dof``: None (Gaussian) or a positive finite real number."""
    return dof is None or (isinstance(dof, numbers.Real) and not isinstance(dof, bool) and 0 < dof < np.inf)


def make_reference(dim: int, mean=None, scale=None, dtype=None, dof=None):
    """Build a :class:`GaussianReference` (``dof=None``) or :class:`StudentTReference`, checking shapes.

    Defaults ``N(0, 5^2 I)``.  ``mean`` is a scalar or ``[dim]``; ``scale`` a
    positive scalar or ``[dim]`` vector (standard deviations for the Gaussian,
    scales for the Student-t); ``dof`` a positive number of degrees of freedom.
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
    if dof is None:
        return GaussianReference(jnp.asarray(m, dtype), jnp.asarray(s, dtype))
    if not valid_dof(dof):
        raise ValueError(f"reference_dof must be None or a positive finite number, got {dof!r}")
    return StudentTReference(jnp.asarray(m, dtype), jnp.asarray(s, dtype), jnp.asarray(float(dof), dtype))


def geometric_logdensity(beta, log_reference, log_target):
    """``(1 - beta) log q + beta log p``, with ``0 * (-inf) = 0`` at the ends of the path."""
    a = jnp.where(beta < 1, (1 - beta) * log_reference, 0.0)
    b = jnp.where(beta > 0, beta * log_target, 0.0)
    return a + b


def log_increment(beta, beta_next, log_reference, log_target):
    """Incremental log-weight ``(beta' - beta)(log p - log q)``; ``-inf`` where ``log p`` is ``-inf``, NaN or ``+inf``
    (zero density; :mod:`samplax.core.nonfinite`) and ``beta' > beta``."""
    ell = log_target - log_reference
    inc = (beta_next - beta) * ell
    return jnp.where(jnp.isnan(inc), jnp.where(beta_next > beta, -jnp.inf, 0.0),
                     jnp.where(inc == jnp.inf, -jnp.inf, inc))
