"""Shared test helpers for tests/mcmc (targets with analytic ground truth, CLT checks)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samplax.targets.gaussian import Gaussian


def block_gaussian():
    """5-d Gaussian: a standard-normal block (x0, x1) and a correlated anisotropic block (x2..x4).

    Covariance of the second block: scales (0.3, 1, 3) and correlations 0.8, -0.5, -0.2 (SPD).
    """
    scales = np.array([0.3, 1.0, 3.0])
    corr = np.array([[1.0, 0.8, -0.5], [0.8, 1.0, -0.2], [-0.5, -0.2, 1.0]])
    cov = np.eye(5)
    cov[2:, 2:] = corr * np.outer(scales, scales)
    mean = np.array([0.0, 0.0, 1.0, -2.0, 0.5])
    chol = np.linalg.cholesky(cov)
    return Gaussian(mean=jnp.asarray(mean), chol=jnp.asarray(chol), label="block_gaussian"), mean, np.sqrt(np.diag(cov))


def check_moments(result, mean, std, z=5.0, mean_bias=0.0, std_bias=0.0):
    """|mean_hat - mean| <= z * MCSE + mean_bias and |sd_hat - sd| <= z * MCSE_sd + std_bias, per coordinate."""
    d = result.diagnostics
    err_m = np.abs(d["mean"] - mean)
    tol_m = z * d["mcse_mean"] + mean_bias
    err_s = np.abs(d["sd"] - std)
    tol_s = z * d["mcse_sd"] + std_bias
    assert np.all(np.isfinite(d["mcse_mean"])), d
    assert np.all(err_m <= tol_m), f"mean {d['mean']} vs {mean}: err {err_m} > tol {tol_m}"
    assert np.all(err_s <= tol_s), f"sd {d['sd']} vs {std}: err {err_s} > tol {tol_s}"


def counting(fn):
    """Wrap a log-density so every evaluation (inside jit / while loops) bumps a host counter."""
    count = [0]

    def bump():
        count[0] += 1

    def wrapped(x):
        jax.debug.callback(bump)
        return fn(x)

    return wrapped, count
