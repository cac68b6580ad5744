"""Shared test helpers: small targets with exact ground truth and CLT checks."""
import numpy as np
import jax.numpy as jnp

import jax

import samplax
from samplax.core.target import GroundTruth

Z = 4.5  # z for many simultaneous comparisons at fixed seeds


def correlated_gaussian(dim=5):
    """N(m, C) with C = D R D, R_ij = 0.6^|i-j|, stds 0.5 ... 2, mean (1..dim) / dim.

    Written with a precomputed precision matrix (a batched triangular solve is slow on CPU).
    """
    idx = np.arange(dim)
    R = 0.6 ** np.abs(idx[:, None] - idx[None, :])
    s = np.linspace(0.5, 2.0, dim)
    C = s[:, None] * R * s[None, :]
    m = (idx + 1) / dim
    P = jnp.asarray(np.linalg.inv(C))
    L = jnp.asarray(np.linalg.cholesky(C))
    mj = jnp.asarray(m)

    def logdensity(x):
        r = x - mj
        return -0.5 * r @ (P @ r)

    def sampler(key, n):
        return mj + jax.random.normal(key, (n, dim)) @ L.T

    gt = GroundTruth(kind="analytic", source="closed form", mean=m, std=s, mean_se=np.zeros(dim),
                     std_se=np.zeros(dim), log_Z=float(0.5 * np.linalg.slogdet(2 * np.pi * C)[1]))
    return samplax.from_logdensity(logdensity, dim, name="corr_gauss", ground_truth=gt, sampler=sampler)


def check_moments_mcse(result, target, z=Z, check_std=True):
    """|mean - truth| <= z * mcse_mean and |sd - truth| <= z * mcse_sd, per coordinate."""
    gt = target.ground_truth()
    d = result.diagnostics
    err_m = np.abs(d["mean"] - gt.mean)
    assert np.all(err_m <= z * d["mcse_mean"]), (d["mean"], gt.mean, d["mcse_mean"])
    if check_std:
        err_s = np.abs(d["sd"] - gt.std)
        assert np.all(err_s <= z * d["mcse_sd"]), (d["sd"], gt.std, d["mcse_sd"])


def chain_spread_check(values, truth, z=Z):
    """Per-chain estimates ``values`` [chains, k] vs truth: |grand mean - truth| <= z * sd_chains / sqrt(C).

    Independent chains (independent populations) give independent estimates, so their
    spread is an honest standard error of the grand mean (Student-t with C-1 dof; z = 4.5
    is conservative enough for C >= 8).
    """
    values = np.asarray(values)
    C = values.shape[0]
    se = values.std(axis=0, ddof=1) / np.sqrt(C)
    err = np.abs(values.mean(axis=0) - truth)
    assert np.all(err <= z * se), (values.mean(axis=0), truth, se)
    return err, se


class GMM(samplax.Target):
    """Test Gaussian mixture exposing ``means`` [K, d], ``scales`` [K] (isotropic std) and ``weights`` [K]."""

    means: jax.Array
    scales: jax.Array
    weights: jax.Array

    def logdensity(self, x):
        d = self.means.shape[1]
        z = (x[None, :] - self.means) / self.scales[:, None]
        comp = -0.5 * jnp.sum(z * z, axis=1) - d * jnp.log(self.scales) - 0.5 * d * jnp.log(2 * jnp.pi)
        return jax.scipy.special.logsumexp(jnp.log(self.weights) + comp)

    @property
    def event_shape(self):
        return (self.means.shape[1],)

    def sample(self, key, n):
        k1, k2 = jax.random.split(key)
        c = jax.random.choice(k1, self.weights.shape[0], (n,), p=self.weights)
        return self.means[c] + self.scales[c][:, None] * jax.random.normal(k2, (n, self.means.shape[1]))

    def ground_truth(self):
        w = np.asarray(self.weights)
        m = np.asarray(self.means)
        s = np.asarray(self.scales)
        mean = w @ m
        second = w @ (m**2 + s[:, None] ** 2)
        return GroundTruth(kind="analytic", source="closed form", mean=mean, std=np.sqrt(second - mean**2),
                           log_Z=0.0)


def two_mode_gmm():
    """0.3 N((-2, -1), 0.6^2 I) + 0.7 N((2, 1), 0.6^2 I): mode weights 0.3 / 0.7."""
    return GMM(means=jnp.array([[-2.0, -1.0], [2.0, 1.0]]), scales=jnp.array([0.6, 0.6]),
               weights=jnp.array([0.3, 0.7]))


def mode_weight_check(samples, w_first, z=Z):
    """Fraction of draws with x0 < 0 (the first mode) vs its weight, binomial SE of independent draws."""
    flat = samples.reshape(-1, samples.shape[-1])
    n = flat.shape[0]
    frac = float(np.mean(flat[:, 0] < 0))
    se = np.sqrt(w_first * (1 - w_first) / n)
    assert abs(frac - w_first) <= z * se, (frac, w_first, se)
    return frac, se
