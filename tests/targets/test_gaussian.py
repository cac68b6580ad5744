"""Tests of the Gaussian targets: std, correlated, ill-conditioned."""
import jax
import numpy as np
import pytest
from scipy import stats

import samplax.targets as T


@pytest.mark.parametrize("name,params", [
    ("std_gaussian", {"dim": 3}),
    ("correlated_gaussian", {}),
    pytest.param("correlated_gaussian", {"dim": 2, "rho": -0.5}, marks=pytest.mark.slow),
    pytest.param("ill_conditioned_gaussian", {}, marks=pytest.mark.slow),
    ("ill_conditioned_gaussian", {"dim": 20, "rotate": True, "seed": 3}),
])
def test_gaussian_logdensity_moments_logz(name, params, key, check_protocol, check_moments, draw):
    t = T.get(name, **params)
    check_protocol(t, key)
    # covariance that the factory documents, rebuilt here independently
    d = t.dim
    if name == "std_gaussian":
        cov = np.eye(d)
    elif name == "correlated_gaussian":
        rho = params.get("rho", 0.9)
        cov = (1 - rho) * np.eye(d) + rho * np.ones((d, d))
    else:
        var = 10.0 ** np.linspace(-2, 2, d)
        cov = np.diag(var)
        if params.get("rotate"):
            q, r = np.linalg.qr(np.random.default_rng(params["seed"]).standard_normal((d, d)))
            q = q * np.sign(np.diag(r))
            cov = q @ np.diag(var) @ q.T
            assert not np.allclose(cov, np.diag(np.diag(cov)))
    gt = t.ground_truth()
    np.testing.assert_allclose(gt.std, np.sqrt(np.diag(cov)), rtol=1e-10)
    np.testing.assert_allclose(gt.mean, 0.0)
    s, lp = draw(t, key, 20000)
    # log-density - log Z is the normalized scipy log-pdf
    ref = stats.multivariate_normal(np.zeros(d), cov).logpdf(s[:32])
    np.testing.assert_allclose(lp - gt.log_Z, ref, rtol=1e-9, atol=1e-8)
    check_moments(s, gt.mean, gt.std, what=name)


def test_ill_conditioned_spectrum():
    t = T.get("ill_conditioned_gaussian", rotate=True)
    chol = np.asarray(t.chol)
    ev = np.linalg.eigvalsh(chol @ chol.T)
    np.testing.assert_allclose(ev, 10.0 ** np.linspace(-2, 2, 100), rtol=1e-8)
    assert t.provenance()["details"].startswith("dim=100")


def test_gaussian_bad_parameters():
    with pytest.raises(ValueError, match="rho must lie in"):
        T.get("correlated_gaussian", dim=3, rho=-0.6)
    with pytest.raises(ValueError, match="rho must lie in"):
        T.get("correlated_gaussian", rho=1.0)
    with pytest.raises(TypeError, match="rho must be a number"):
        T.get("correlated_gaussian", rho="high")
    with pytest.raises(ValueError, match="dim must be >= 2"):
        T.get("correlated_gaussian", dim=1)
    with pytest.raises(TypeError, match="dim must be an int"):
        T.get("ill_conditioned_gaussian", dim=10.5)
    with pytest.raises(TypeError, match="rotate must be a bool"):
        T.get("ill_conditioned_gaussian", rotate="yes")
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        T.get("ill_conditioned_gaussian", rotate=True, seed=-1)
