"""Small targets with analytic log Z for the SMC tests (defined here so the tests do not wait for the target registry)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

import samplax
from samplax.core.target import GroundTruth

GMM25_MEANS = np.array([(a, b) for a in (-10.0, -5.0, 0.0, 5.0, 10.0) for b in (-10.0, -5.0, 0.0, 5.0, 10.0)])
GMM25_VAR = 0.3


def gmm25_logdensity(x):
    """Normalized uniform mixture of 25 isotropic Gaussians (variance 0.3) on the grid {-10,-5,0,5,10}^2: log Z = 0."""
    means = jnp.asarray(GMM25_MEANS, x.dtype)
    sq = jnp.sum((x - means) ** 2, axis=-1)
    comp = -0.5 * sq / GMM25_VAR - jnp.log(2 * jnp.pi * GMM25_VAR)
    return logsumexp(comp) - jnp.log(25.0)


def gmm25():
    var = GMM25_VAR + np.var(GMM25_MEANS[:, 0])
    return samplax.from_logdensity(
        gmm25_logdensity, 2, name="gmm25_test",
        ground_truth=GroundTruth(kind="analytic", source="closed form", mean=np.zeros(2),
                                 std=np.sqrt(np.full(2, var)), log_Z=0.0))


def funnel_logdensity(x):
    """Neal's funnel, d = len(x): x0 ~ N(0, 9), x_i | x0 ~ N(0, e^{x0}); normalized (log Z = 0)."""
    d = x.shape[0]
    lp0 = -0.5 * x[0] ** 2 / 9.0 - 0.5 * jnp.log(2 * jnp.pi * 9.0)
    rest = -0.5 * jnp.sum(x[1:] ** 2) * jnp.exp(-x[0]) - 0.5 * (d - 1) * (x[0] + jnp.log(2 * jnp.pi))
    return lp0 + rest


def gaussian_logdensity(mean, std, offset):
    """Unnormalized ``-0.5 |(x - m)/s|^2 + offset``; log Z = offset + sum log(s sqrt(2 pi))."""
    def lp(x):
        return -0.5 * jnp.sum(((x - mean) / std) ** 2) + offset
    return lp


def gaussian_log_Z(std, offset, d):
    std = np.broadcast_to(np.asarray(std, float), (d,))
    return float(offset + np.sum(np.log(std * np.sqrt(2 * np.pi))))
