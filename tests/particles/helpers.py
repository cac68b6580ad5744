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
