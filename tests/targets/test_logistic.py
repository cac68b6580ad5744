"""Tests of the German credit logistic-regression posterior and its NUTS reference."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import samplax.targets as T
from samplax.targets import _data


def _numpy_logpost(w, x, y):
    z = w @ x.T  # [m, N]
    return (y * z - np.logaddexp(0.0, z)).sum(-1) - 0.5 * (w**2).sum(-1) - 0.5 * w.shape[-1] * math.log(2 * math.pi)


def _raw():
    raw = np.loadtxt(_data.DATA_DIR / "german.data-numeric")
    x = raw[:, :24]
    x = (x - x.mean(0)) / x.std(0)
    return np.hstack([x, np.ones((1000, 1))]), raw[:, 24] - 1


def test_german_credit_logdensity(key, check_protocol):
    t = T.get("german_credit")
    check_protocol(t, key)
    assert t.event_shape == (25,)
    x, y = _raw()
    assert set(np.unique(np.asarray(t.y))) == {0.0, 1.0}
    np.testing.assert_allclose(np.asarray(t.X)[:, :24].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(t.X)[:, :24].std(0), 1.0, rtol=1e-12)
    w = 0.3 * np.asarray(jax.random.normal(key, (8, 25)))
    lp, g = jax.jit(lambda t, w: jax.vmap(jax.value_and_grad(t.logdensity))(w))(t, w)
    np.testing.assert_allclose(np.asarray(lp), _numpy_logpost(w, x, y), rtol=1e-11)
    s = special.expit(w @ x.T)
    np.testing.assert_allclose(np.asarray(g), (y - s) @ x - w, rtol=1e-10, atol=1e-10)


def test_german_credit_reference_file():
    t = T.get("german_credit")
    gt = t.ground_truth()
    assert gt.kind == "long_run" and gt.log_Z is None
    assert gt.mean.shape == (25,) and gt.names[-1] == "intercept"
    ref = json.loads((_data.DATA_DIR / "german_credit_reference.json").read_text())
    assert ref["max_rhat"] < 1.01 and ref["divergences"] == 0
    assert ref["data_sha256"] == _data.sha256(_data.DATA_DIR / "german.data-numeric")
    assert np.all(gt.mean_se > 0) and np.all(gt.mean_se < 0.01 * gt.std)


def test_german_credit_reference_by_importance_sampling():
    """Independent check of the NUTS reference: self-normalized importance sampling (numpy only)
    with a multivariate-t (5 dof) proposal at the Laplace approximation; the error bound
    combines the IS delta-method standard error and the reference MCSE."""
    x, y = _raw()
    w = np.zeros(25)
    for _ in range(30):  # Newton on the log posterior
        s = special.expit(x @ w)
        grad = x.T @ (y - s) - w
        hess = -(x.T * (s * (1 - s))) @ x - np.eye(25)
        w = w - np.linalg.solve(hess, grad)
    cov = np.linalg.inv(-hess)
    chol = np.linalg.cholesky(cov)
    rng = np.random.default_rng(7)
    n, nu = 40000, 5.0
    zn = rng.standard_normal((n, 25))
    chi = rng.chisquare(nu, n)
    draws = w + (zn @ chol.T) * np.sqrt(nu / chi)[:, None]
    maha = np.einsum("ij,ij->i", zn, zn) * nu / chi
    logq = -0.5 * (nu + 25) * np.log1p(maha / nu)  # up to a constant
    logw = _numpy_logpost(draws, x, y) - logq
    wt = np.exp(logw - special.logsumexp(logw))
    assert 1.0 / np.sum(wt**2) > 0.2 * n  # a healthy proposal
    mean = wt @ draws
    se_mean = np.sqrt(np.sum(wt[:, None] ** 2 * (draws - mean) ** 2, axis=0))
    var = wt @ (draws - mean) ** 2
    se_var = np.sqrt(np.sum(wt[:, None] ** 2 * ((draws - mean) ** 2 - var) ** 2, axis=0))
    gt = T.get("german_credit").ground_truth()
    assert np.all(np.abs(mean - gt.mean) <= 5 * np.sqrt(se_mean**2 + gt.mean_se**2))
    std = np.sqrt(var)
    se_std = se_var / (2 * std)
    assert np.all(np.abs(std - gt.std) <= 5 * np.sqrt(se_std**2 + gt.std_se**2))
