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


def langevin_gaussian():
    """5-d Gaussian for fixed-step tests: x0, x1 standard normal; (x2, x3, x4) with scales
    (0.5, 1, 1.5) and correlations 0.5, -0.3, 0.2.  Returns ``(target, mean, cov)``."""
    scales = np.array([0.5, 1.0, 1.5])
    corr = np.array([[1.0, 0.5, -0.3], [0.5, 1.0, 0.2], [-0.3, 0.2, 1.0]])
    cov = np.eye(5)
    cov[2:, 2:] = corr * np.outer(scales, scales)
    mean = np.array([0.5, 0.0, -1.0, 2.0, 0.0])
    return Gaussian(mean=jnp.asarray(mean), chol=jnp.asarray(np.linalg.cholesky(cov)), label="langevin_gaussian"), \
        mean, cov


def ula_stationary_cov(cov, eps):
    """Exact stationary covariance of ULA (C = I, h = eps^2/2) on N(m, cov): V = A V A^T + 2h I, A = I - h cov^{-1}."""
    import scipy.linalg as sl

    h = 0.5 * eps**2
    a = np.eye(len(cov)) - h * np.linalg.inv(cov)
    return sl.solve_discrete_lyapunov(a, 2 * h * np.eye(len(cov)))


def rlmc_stationary_cov(cov, eps):
    """Exact stationary covariance of randomized-midpoint LMC (C = I, h = eps^2/2) on N(m, cov).

    x' - m = (B + u D)(x - m) + (I - hP) b1 + b2 with P = cov^{-1}, B = I - hP, D = h^2 P^2,
    b1 ~ N(0, 2uh I), b2 ~ N(0, 2(1-u)h I), u ~ U(0,1):
    vec V = (I - E[(B + uD) (x) (B + uD)])^{-1} vec(E[2uh B B^T + 2(1-u)h I]),
    with E u = 1/2, E u^2 = 1/3.
    """
    d = len(cov)
    h = 0.5 * eps**2
    p = np.linalg.inv(cov)
    b = np.eye(d) - h * p
    dd = h**2 * p @ p
    kron = np.kron(b, b) + 0.5 * (np.kron(b, dd) + np.kron(dd, b)) + np.kron(dd, dd) / 3.0
    q = h * b @ b.T + h * np.eye(d)
    v = np.linalg.solve(np.eye(d * d) - kron, q.reshape(-1))
    return v.reshape(d, d)


def baoab_stationary_cov(cov, eps, gamma):
    """Exact stationary covariance of (x, p) for BAOAB (C = I) on N(m, cov), by the Lyapunov equation."""
    import scipy.linalg as sl

    d = len(cov)
    p = np.linalg.inv(cov)
    i, z = np.eye(d), np.zeros((d, d))
    bm = np.block([[i, z], [-0.5 * eps * p, i]])
    am = np.block([[i, 0.5 * eps * i], [z, i]])
    eta = np.exp(-gamma * eps)
    om = np.block([[i, z], [z, eta * i]])
    t = bm @ am @ om @ am @ bm
    n = bm @ am @ np.block([[z], [np.sqrt(1 - eta**2) * i]])
    return sl.solve_discrete_lyapunov(t, n @ n.T)


def stationary_1d(grid, mean_fn, var_fn, x_of=lambda t: t):
    """Exact (up to quadrature) stationary law of a 1-d chain with Gaussian transitions
    ``t' ~ N(mean_fn(t), var_fn(t))`` on a (possibly non-uniform) grid of ``t``.

    Builds the transition matrix ``K[i, k] = N(t_k; mean(t_i), var(t_i)) w_k`` (trapezoid
    weights ``w``, rows renormalized: the mass beyond the grid is negligible by the
    choice of grid), solves ``pi K = pi``, and returns the mean and sd of ``x_of(t)``.
    """
    t = np.asarray(grid, dtype=np.float64)
    w = np.empty_like(t)
    w[1:-1] = 0.5 * (t[2:] - t[:-2])
    w[0], w[-1] = 0.5 * (t[1] - t[0]), 0.5 * (t[-1] - t[-2])
    mu, var = mean_fn(t), var_fn(t)
    k = np.exp(-0.5 * (t[None, :] - mu[:, None]) ** 2 / var[:, None]) / np.sqrt(2 * np.pi * var[:, None]) * w[None, :]
    k /= k.sum(axis=1, keepdims=True)
    n = len(t)
    a = k.T - np.eye(n)
    a[-1, :] = 1.0
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    pi = np.linalg.solve(a, rhs)
    x = x_of(t)
    m = float(np.sum(pi * x))
    return m, float(np.sqrt(np.sum(pi * (x - m) ** 2)))
