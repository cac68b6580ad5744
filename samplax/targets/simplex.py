"""Targets on the probability simplex (analytic moments), for mirror-map samplers such as ``mirrored_svgd``."""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import GroundTruth, Target
from samplax.targets import register


class Dirichlet(Target):
    """Dirichlet(alpha) on the simplex ``{x in R^K: x_i > 0, sum_i x_i = 1}``.

    ``logdensity(x) = sum_i (alpha_i - 1) log x_i`` for a point ``x`` of the
    simplex, given as all ``K`` coordinates (the density is with respect to
    Lebesgue measure on the first ``K - 1`` coordinates, ``x_K = 1 - sum_{i<K} x_i``).
    Points with a non-positive coordinate get ``-inf``; the sum constraint is
    the caller's responsibility (mirror-map samplers keep it exactly).
    ``log Z = sum_i log Gamma(alpha_i) - log Gamma(sum_i alpha_i)``.
    Moments: ``E x_i = alpha_i / alpha_0``,
    ``Var x_i = alpha_i (alpha_0 - alpha_i) / (alpha_0^2 (alpha_0 + 1))``.
    Not for samplers that move in unconstrained R^K (use ``mirrored_svgd``).
    """

    alpha: jax.Array
    label: str = eqx.field(static=True, default="dirichlet")

    def logdensity(self, x):
        ok = jnp.all(x > 0)
        safe = jnp.where(x > 0, x, 1.0)
        return jnp.where(ok, jnp.sum((self.alpha - 1.0) * jnp.log(safe)), -jnp.inf)

    @property
    def event_shape(self):
        return (self.alpha.shape[0],)

    @property
    def name(self):
        return self.label

    def sample(self, key, n):
        return jax.random.dirichlet(key, self.alpha, (n,))

    def initial_point(self, key):
        """A uniform point of the simplex (Dirichlet(1, ..., 1))."""
        e = -jnp.log(jax.random.uniform(key, self.alpha.shape, minval=1e-12, maxval=1.0))
        return e / jnp.sum(e)

    def ground_truth(self):
        from scipy.special import gammaln

        a = np.asarray(self.alpha, dtype=np.float64)
        a0 = a.sum()
        k = a.shape[0]
        return GroundTruth(
            kind="analytic", source="closed form (Dirichlet moments)", version="1",
            mean=a / a0, std=np.sqrt(a * (a0 - a) / (a0**2 * (a0 + 1))),
            mean_se=np.zeros(k), std_se=np.zeros(k),
            log_Z=float(np.sum(gammaln(a)) - gammaln(a0)))

    def provenance(self):
        return {"source": "analytic", "variant": self.label, "version": "1"}


@register("dirichlet")
def dirichlet(alpha=(2.0, 3.0, 5.0)):
    """Dirichlet(alpha) on the simplex; alpha must be a vector of >= 2 positive numbers."""
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < 2 or not np.all(a > 0):
        raise ValueError(f"dirichlet: alpha must be a 1-D array of >= 2 positive numbers, got {alpha!r}")
    return Dirichlet(alpha=jnp.asarray(a, dtype=float))
