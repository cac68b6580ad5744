"""Randomized-midpoint kinetic Langevin (Shen & Lee 2019): ``method="randomized_midpoint"``.

On a Gaussian target ``N(m, S)`` one step is a random linear recursion
``z' - z* = A(alpha) (z - z*) + G(alpha) w`` in ``z = (x, p)``, ``z* = (m, 0)``, with
``alpha ~ U(0, 1)`` and whitened noises ``w = (w_mid, w_x, w_v)`` whose 3 x 3
covariance ``K(alpha)`` (per coordinate) is computed here by Gauss-Legendre
quadrature of the Ito isometry, independently of the kernel's closed forms.
Given ``alpha`` the noise is independent of ``z``, so the stationary law is
Gaussian with mean ``z*`` and covariance ``V = E_alpha[A V A^T] + E_alpha[G (K (x) I) G^T]``,
solved by vectorization (``vec V = (I - E[A (x) A])^{-1} vec E[Q]``) with
Gauss-Legendre nodes in ``alpha`` (the integrands are analytic in ``alpha``).
The discretization bias is part of the reference; tolerances are z * MCSE only.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from mcmc2_helpers import baoab_stationary_cov, check_moments, langevin_gaussian

rm = importlib.import_module("samplax.mcmc.randomized_midpoint")


# --------------------------------------------------------------------------- exact stationary law (numpy)
def _gl(a, b, n):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (b - a) * x + 0.5 * (b + a), 0.5 * (b - a) * w


def _phi(gamma, s):
    return (1.0 - np.exp(-gamma * s)) / gamma


def noise_cov_quadrature(gamma, h, t, n=60):
    """Covariance of ``(W_mid, W_x, W_v)`` for one whitened coordinate: ``2 gamma int k_i k_j ds`` with
    ``k_mid(s) = phi(t - s) 1[s < t]``, ``k_x(s) = phi(h - s)``, ``k_v(s) = e^{-gamma (h - s)}`` (Ito isometry)."""
    k = np.zeros((3, 3))
    for a, b in ((0.0, t), (t, h)):
        if b <= a:
            continue
        s, w = _gl(a, b, n)
        ks = np.stack([np.where(s < t, _phi(gamma, t - s), 0.0), _phi(gamma, h - s), np.exp(-gamma * (h - s))])
        k += 2.0 * gamma * (ks * w) @ ks.T
    return k


def rmkl_stationary_cov(cov, h, gamma, imm=None, n_alpha=40):
    """Exact stationary covariance of ``(x, p)`` ([2d, 2d]) of the randomized-midpoint step on ``N(m, cov)``.

    With ``P = cov^{-1}``, ``C = imm = L L^T``, ``t = alpha h``, ``psi = (t - phi(t)) / gamma``,
    ``e = e^{-gamma (h - t)}``, ``r = phi(h - t)``:
    ``x_mid = (I - psi C P) x + phi(t) C p + L w_mid``,
    ``x' = x + phi(h) C p - h r C P x_mid + L w_x``,
    ``p' = e^{-gamma h} p - h e P x_mid + L^{-T} w_v``.
    """
    d = len(cov)
    p_ = np.linalg.inv(cov)
    c = np.eye(d) if imm is None else (np.diag(imm) if np.ndim(imm) == 1 else np.asarray(imm))
    chol = np.linalg.cholesky(c)
    lit = np.linalg.inv(chol).T
    eye, zero = np.eye(d), np.zeros((d, d))
    e_aa = np.zeros((4 * d * d, 4 * d * d))
    e_q = np.zeros((2 * d, 2 * d))
    for a, w in zip(*_gl(0.0, 1.0, n_alpha)):
        t = a * h
        psi = (t - _phi(gamma, t)) / gamma
        e, r = np.exp(-gamma * (h - t)), _phi(gamma, h - t)
        m1 = eye - psi * c @ p_
        amat = np.block([[eye - h * r * c @ p_ @ m1, _phi(gamma, h) * c - h * r * _phi(gamma, t) * c @ p_ @ c],
                         [-h * e * p_ @ m1, np.exp(-gamma * h) * eye - h * e * _phi(gamma, t) * p_ @ c]])
        g = np.block([[-h * r * c @ p_ @ chol, chol, zero], [-h * e * p_ @ chol, zero, lit]])
        q = g @ np.kron(noise_cov_quadrature(gamma, h, t), eye) @ g.T
        e_aa += w * np.kron(amat, amat)
        e_q += w * q
    # mean-square stability of the random recursion (else no stationary second moments exist)
    assert np.max(np.abs(np.linalg.eigvals(e_aa))) < 1.0, "randomized midpoint step is mean-square unstable here"
    v = np.linalg.solve(np.eye(4 * d * d) - e_aa, e_q.reshape(-1))
    return v.reshape(2 * d, 2 * d)


def euler_kinetic_stationary_cov(s2, h, gamma):
    """Exact stationary covariance of Euler-Maruyama for kinetic Langevin on N(0, s2) (1-d, C = 1):
    ``x' = x + h p``, ``p' = p - h x / s2 - h gamma p + sqrt(2 gamma h) xi``."""
    import scipy.linalg as sl

    a = np.array([[1.0, h], [-h / s2, 1.0 - h * gamma]])
    return sl.solve_discrete_lyapunov(a, np.diag([0.0, 2.0 * gamma * h]))


# --------------------------------------------------------------------------- deterministic checks
@pytest.mark.parametrize("gamma,h,alpha", [(1.0, 0.7, 0.3), (2.5, 0.2, 0.9), (0.3, 1.5, 0.05), (1.0, 1e-3, 0.5)])
def test_noise_covariance_closed_form_matches_quadrature(gamma, h, alpha):
    """The kernel's construction W_mid = X1, W_x = X1 + phi(h-t) V1 + X2, W_v = e^{-gamma(h-t)} V1 + V2
    (closed-form OU pair covariances) reproduces the Ito-isometry covariance of the three integrals."""
    t = alpha * h
    vxx1, vvv1, cxv1 = (float(a) for a in rm.ou_noise_cov(gamma, t))
    vxx2, vvv2, cxv2 = (float(a) for a in rm.ou_noise_cov(gamma, h - t))
    r, e = _phi(gamma, h - t), np.exp(-gamma * (h - t))
    # linear map from (X1, V1, X2, V2) to (W_mid, W_x, W_v)
    lin = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, r, 1.0, 0.0], [0.0, e, 0.0, 1.0]])
    cov4 = np.zeros((4, 4))
    cov4[:2, :2] = [[vxx1, cxv1], [cxv1, vvv1]]
    cov4[2:, 2:] = [[vxx2, cxv2], [cxv2, vvv2]]
    got = lin @ cov4 @ lin.T
    want = noise_cov_quadrature(gamma, h, t)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)


def test_small_argument_series_float32():
    """The Taylor branches keep the noise variances accurate where the direct formulas cancel (float32)."""
    for y in [1e-4, 1e-2, 0.0999, 0.1001, 0.3]:
        vxx32 = float(rm.ou_noise_cov(jnp.float32(1.0), jnp.float32(y))[0])
        vxx = float(noise_cov_quadrature(1.0, y, y)[1, 1])
        assert abs(vxx32 / vxx - 1) < 1e-4, (y, vxx32, vxx)
        psi32 = float(rm._f2(jnp.float32(y)))
        assert abs(psi32 / (y - 1 + np.exp(-y)) - 1) < 1e-4


def test_stationary_bias_is_third_order():
    """1-d N(0, 1), gamma = 1: the stationary variance error of the randomized midpoint scheme is O(h^3)
    in both position and momentum; BAOAB's position is exact and its momentum error O(h^2); Euler is O(h)."""
    hs = [0.2, 0.1, 0.05]
    rm_err = np.array([np.diag(rmkl_stationary_cov(np.array([[1.0]]), h, 1.0)) - 1.0 for h in hs])
    ba_err = np.array([np.diag(baoab_stationary_cov(np.array([[1.0]]), h, 1.0)) - 1.0 for h in hs])
    # Euler's error is so large at these h that its order is only asymptotic: check it at smaller h
    eu_err = np.array([np.diag(euler_kinetic_stationary_cov(1.0, h / 10, 1.0)) - 1.0 for h in hs])
    rm_order = np.log2(rm_err[:-1] / rm_err[1:])
    assert np.all(np.abs(rm_order - 3.0) < 0.1), rm_order
    assert np.all(np.abs(ba_err[:, 0]) < 1e-12)
    assert np.all(np.abs(np.log2(ba_err[:-1, 1] / ba_err[1:, 1]) - 2.0) < 0.05)
    assert np.all(np.abs(np.log2(eu_err[:-1] / eu_err[1:]) - 1.0) < 0.05)
    # at h = 0.2 the randomized midpoint momentum variance is >10x closer than BAOAB's
    assert np.abs(rm_err[0, 1]) * 10 < np.abs(ba_err[0, 1])


# --------------------------------------------------------------------------- statistical checks
def _corr3():
    cov = np.array([[1.0, 0.6, -0.3], [0.6, 2.0, 0.4], [-0.3, 0.4, 0.5]])
    return np.array([0.5, -1.0, 2.0]), cov


@pytest.mark.parametrize("metric,h", [("identity", 0.5), ("diag", 0.65), ("dense", 0.65)])
def test_kernel_exact_stationary_law(metric, h):
    """Final states of many independent chains (iid) match the exact stationary covariance of (x, p)."""
    mean, cov = _corr3()
    prec = jnp.asarray(np.linalg.inv(cov))
    logdensity = lambda x: -0.5 * (x - mean) @ prec @ (x - mean)  # noqa: E731
    imm = {"identity": None, "diag": np.array([0.8, 1.7, 0.4]),
           "dense": np.array([[0.9, 0.3, 0.0], [0.3, 1.6, 0.2], [0.0, 0.2, 0.5]])}[metric]
    gamma = 1.2
    exact = rmkl_stationary_cov(cov, h, gamma, imm)
    target_law = np.block([[cov, np.zeros((3, 3))],
                           [np.zeros((3, 3)), np.linalg.inv(np.eye(3) if imm is None else
                                                            (np.diag(imm) if imm.ndim == 1 else imm))]])
    kern = samplax.mcmc.randomized_midpoint(logdensity, h, friction=gamma,
                                            inverse_mass_matrix=None if imm is None else jnp.asarray(imm))
    n, steps = 10000, 40
    key = jax.random.key(7)
    x0 = jnp.asarray(mean) + jax.random.normal(jax.random.fold_in(key, 0), (n, 3)) @ jnp.asarray(
        np.linalg.cholesky(cov)).T
    states = jax.vmap(kern.init)(jax.random.split(jax.random.fold_in(key, 1), n), x0)

    def body(s, i):
        keys = jax.random.split(jax.random.fold_in(key, 2 + i), n)
        s, info = jax.vmap(kern.step)(keys, s)
        return s, info.is_nonfinite.any()

    states, bad = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(steps)))(states)
    assert not bool(bad.any())
    assert np.all(np.isfinite(np.asarray(states.position)))
    z = np.concatenate([np.asarray(states.position) - mean, np.asarray(states.momentum)], axis=1)
    # means: zero within 5 MCSE (iid draws)
    assert np.all(np.abs(z.mean(0)) <= 5 * z.std(0) / np.sqrt(n)), z.mean(0)
    # every second moment E[z_i z_j] within 5 MCSE of the exact stationary covariance
    prod = z[:, :, None] * z[:, None, :]
    est, se = prod.mean(0), prod.std(0) / np.sqrt(n)
    assert np.all(np.abs(est - exact) <= 5 * se), np.max(np.abs(est - exact) / se)
    # and the bias at this step size is visible: the target's own covariance is rejected
    assert np.max(np.abs(est - target_law) / se) > 8


def test_sample_exact_stationary_law_fixed_step():
    """Through samplax.sample with a fixed step: marginal means and sds match the exact stationary law."""
    target, mean, cov = langevin_gaussian()
    eps, gamma = 0.4, 1.0
    with pytest.warns(UserWarning, match="not the target"):
        r = samplax.sample(target, method="randomized_midpoint", seed=11, num_chains=4, num_warmup=300,
                           num_samples=6000, progress=False, step_size=eps, friction=gamma,
                           adapt_step_size=False, adapt_mass_matrix=False)
    assert any(w["code"] == "biased" for w in r.warnings)
    v = rmkl_stationary_cov(cov, eps, gamma)[:5, :5]
    # the bias is real at this step size: the smallest-scale coordinate is >5% too wide
    assert np.sqrt(v[2, 2] / cov[2, 2]) > 1.05
    check_moments(r, mean, np.sqrt(np.diag(v)), z=5.0)
    # two gradients per step (midpoint and new point) plus one at init per chain and one in the initial-point
    # search per chain
    n_steps = 4 * (300 + 6000)
    assert r.cost["num_grad_evals"] == 2 * n_steps + 4 + 4


@pytest.mark.parametrize("name", ["std_gaussian", "correlated_gaussian"])
def test_defaults_unbiased_mean_and_warning(name):
    """Default options (adapted step size and metric): means (exact by symmetry) within z * MCSE, `biased` warning."""
    target = samplax.targets.get(name)
    gt = target.ground_truth()
    with pytest.warns(UserWarning, match="not the target"):
        r = samplax.sample(target, method="randomized_midpoint", seed=0, progress=False)
    assert r.warnings[-1]["code"] == "biased"
    d = r.diagnostics
    assert np.all(np.abs(d["mean"] - np.asarray(gt.mean).ravel()) <= 5 * d["mcse_mean"])
    assert np.all(np.asarray(r.stats["acceptance_rate"]) <= 1.0)


# --------------------------------------------------------------------------- kernel plumbing
def test_nonfinite_is_flagged(key):
    """(Evaluation counts are checked for every Langevin kernel in test_langevin.py.)"""
    # a log-density that is -inf beyond x0 > 1: the chain never moves there and flags the attempts
    wall = lambda x: jnp.where(x[0] > 1.0, -jnp.inf, -0.5 * jnp.sum(x**2))  # noqa: E731
    kern = samplax.mcmc.randomized_midpoint(wall, 1.5)
    s = kern.init(key, jnp.array([0.9, 0.0]))
    flagged = 0
    step = jax.jit(kern.step)
    for i in range(50):
        s, info = step(jax.random.fold_in(key, 100 + i), s)
        flagged += int(info.is_nonfinite)
        assert float(s.position[0]) <= 1.0 and np.isfinite(float(s.logdensity))
    assert flagged > 0


def test_bad_options():
    target, _, _ = langevin_gaussian()
    with pytest.raises(ValueError, match="friction"):
        samplax.sample(target, method="randomized_midpoint", friction=-1.0, num_samples=10, progress=False)
    with pytest.raises(ValueError, match="step_size"):
        samplax.sample(target, method="randomized_midpoint", step_size=0.0, num_samples=10, progress=False)
    with pytest.raises(TypeError, match="unknown option"):
        samplax.sample(target, method="randomized_midpoint", num_integration_steps=3, num_samples=10, progress=False)


def test_registry_names():
    from samplax.methods import METHODS

    under = METHODS.get("randomized_midpoint").description.lower()
    assert "underdamped" in under and "shen & lee" in under
    assert "overdamped" in METHODS.get("randomized_midpoint_overdamped").description.lower()
    assert samplax.mcmc.randomized_midpoint.build_kernel is rm.build_kernel
    assert samplax.mcmc.randomized_midpoint_overdamped.build_randomized_midpoint_kernel is not None
