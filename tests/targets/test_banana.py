"""Tests of the banana (twisted Gaussian) target."""
import math

import jax
import numpy as np
import pytest
from scipy import integrate, stats

import samplax.targets as T


def _numpy_banana_logpdf(x, s=10.0, b=0.03):
    """Independent oracle: N(x1; 0, s^2) N(x2; b (x1^2 - s^2), 1) N(x_rest; 0, 1)."""
    x = np.atleast_2d(x)
    out = stats.norm.logpdf(x[:, 0], 0, s) + stats.norm.logpdf(x[:, 1], b * (x[:, 0] ** 2 - s**2), 1)
    return out + stats.norm.logpdf(x[:, 2:]).sum(axis=1)


@pytest.mark.parametrize("params", [{}, pytest.param({"dim": 4, "curvature": 0.1}, marks=pytest.mark.slow)])
def test_banana(params, key, check_protocol, check_moments, draw):
    t = T.get("banana", **params)
    check_protocol(t, key)
    b = params.get("curvature", 0.03)
    s, lp = draw(t, key, 20000)
    np.testing.assert_allclose(lp, _numpy_banana_logpdf(np.asarray(s[:32]), b=b), rtol=1e-10, atol=1e-10)
    gt = t.ground_truth()
    assert gt.log_Z == 0.0
    np.testing.assert_allclose(gt.std[1], math.sqrt(1 + 2 * b**2 * 1e4))
    check_moments(s, gt.mean, gt.std, what="banana")


def test_banana_log_z_by_quadrature():
    t = T.get("banana")
    f = jax.jit(lambda x: t.logdensity(x))

    def inner(x1):
        c = 0.03 * (x1**2 - 100.0)
        return integrate.quad(lambda x2: math.exp(float(f(np.array([x1, x2])))), c - 12, c + 12,
                              epsabs=1e-13)[0]

    z, _ = integrate.quad(inner, -90.0, 90.0, epsabs=1e-12, limit=200)
    assert abs(math.log(z) - t.ground_truth().log_Z) < 1e-7


def test_banana_no_retrace_when_curvature_changes():
    traces = []

    @jax.jit
    def f(t, x):
        traces.append(1)
        return t.logdensity(x)

    x = np.array([1.0, 2.0])
    f(T.get("banana"), x)
    f(T.get("banana", curvature=0.1, scale=3.0), x)
    assert len(traces) == 1


def test_banana_bad_parameters():
    with pytest.raises(ValueError, match="dim must be an int >= 2"):
        T.get("banana", dim=1)
    with pytest.raises(ValueError, match="scale must be a positive"):
        T.get("banana", scale=0.0)
    with pytest.raises(TypeError, match="curvature and scale must be numbers"):
        T.get("banana", curvature="x")
