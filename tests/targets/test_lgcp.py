"""Tests of the LGCP (pines) target against a direct numpy formula."""
import math

import jax
import numpy as np
import pytest
from scipy import stats

import samplax.targets as T
from samplax.targets import _data


def test_lgcp(key, check_protocol):
    t = T.get("lgcp", num_bins=12)  # small grid for speed; same code path as 40
    check_protocol(t, key)
    assert T.get("lgcp").event_shape == (1600,)
    assert "pines126" in t.provenance()["variant"]
    pts = np.genfromtxt(_data.DATA_DIR / "pines126.csv", delimiter=",", skip_header=1)[:, 1:]
    m = 12
    counts = np.zeros((m, m))
    for px, py in pts:
        counts[min(int(px * m), m - 1), min(int(py * m), m - 1)] += 1
    np.testing.assert_array_equal(np.asarray(t.counts), counts.reshape(-1))
    # independent oracle: density of f under the GP prior (scipy) + Poisson term, then the
    # change of variables x -> f = mu + L x has log|det L| Jacobian
    g = np.array([(i, j) for i in range(m) for j in range(m)], dtype=float)
    dist = np.linalg.norm(g[:, None] - g[None], axis=-1)
    cov = 1.91 * np.exp(-dist / (m / 33.0))
    mu = math.log(126) - 1.91 / 2
    x = 0.5 * np.asarray(jax.random.normal(key, (4, m * m)))
    chol = np.linalg.cholesky(cov)
    f = mu + x @ chol.T
    ref = (stats.multivariate_normal(np.full(m * m, mu), cov).logpdf(f)
           + np.log(np.abs(np.diag(chol))).sum()
           + (f * counts.reshape(-1) - np.exp(f) / m**2).sum(1))
    lp, fc = jax.jit(lambda t, x: (jax.vmap(t.logdensity)(x), jax.vmap(t.constrain)(x)))(t, x)
    np.testing.assert_allclose(np.asarray(fc), f, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(lp), ref, rtol=1e-9)
    assert t.ground_truth() is None


def test_lgcp_bad_parameters():
    with pytest.raises(ValueError, match="num_bins must be an int"):
        T.get("lgcp", num_bins=1)
