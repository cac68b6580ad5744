"""Gaussian targets (analytic moments and log Z)."""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import GroundTruth, Target
from samplax.targets import register


class Gaussian(Target):
    """Multivariate normal ``N(mean, cov)``, unnormalized log-density.

    ``logdensity(x) = -0.5 (x - m)^T C^{-1} (x - m)``, so
    ``log Z = 0.5 log det(2 pi C)``.
    """

    mean: jax.Array
    chol: jax.Array  # lower Cholesky factor of the covariance
    label: str = eqx.field(static=True, default="gaussian")

    def logdensity(self, x):
        z = jax.scipy.linalg.solve_triangular(self.chol, x - self.mean, lower=True)
        return -0.5 * jnp.sum(z**2)

    @property
    def event_shape(self):
        return (self.mean.shape[0],)

    @property
    def name(self):
        return self.label

    def sample(self, key, n):
        z = jax.random.normal(key, (n, self.mean.shape[0]), dtype=self.mean.dtype)
        return self.mean + z @ self.chol.T

    def ground_truth(self):
        chol = np.asarray(self.chol, dtype=np.float64)
        cov = chol @ chol.T
        d = cov.shape[0]
        logdet = 2.0 * np.sum(np.log(np.abs(np.diag(chol))))
        return GroundTruth(
            kind="analytic", source="closed form", version="1",
            mean=np.asarray(self.mean, dtype=np.float64), std=np.sqrt(np.diag(cov)),
            mean_se=np.zeros(d), std_se=np.zeros(d),
            log_Z=float(0.5 * (d * np.log(2 * np.pi) + logdet)),
        )

    def provenance(self):
        return {"source": "analytic", "variant": self.label, "version": "1"}


def _gaussian(mean, cov, label):
    mean = jnp.asarray(mean, dtype=float)
    chol = jnp.asarray(np.linalg.cholesky(np.asarray(cov, dtype=np.float64)), dtype=float)
    return Gaussian(mean=mean, chol=chol, label=label)


@register("std_gaussian")
def std_gaussian(dim: int = 10):
    """Standard normal in ``dim`` dimensions."""
    if int(dim) < 1:
        raise ValueError(f"std_gaussian: dim must be >= 1, got {dim}")
    return _gaussian(np.zeros(dim), np.eye(dim), "std_gaussian")
