"""Tests of Neal's funnel and the easy (std 1) funnel."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import samplax.targets as T


def _numpy_funnel_logpdf(x, sigma):
    x = np.atleast_2d(x)
    return stats.norm.logpdf(x[:, 0], 0, sigma) + stats.norm.logpdf(
        x[:, 1:], 0, np.exp(x[:, :1] / 2)).sum(axis=1)


@pytest.mark.parametrize("name,sigma", [("funnel", 3.0), ("easy_funnel", 1.0)])
def test_funnel(name, sigma, key, check_protocol, check_moments, draw):
    t = T.get(name)
    check_protocol(t, key)
    assert t.dim == 10
    gt = t.ground_truth()
    assert gt.log_Z == 0.0
    np.testing.assert_allclose(gt.std[1:] ** 2, math.exp(sigma**2 / 2))
    np.testing.assert_allclose(gt.std[0], sigma)
    s, lp = draw(t, key, 20000)
    np.testing.assert_allclose(lp, _numpy_funnel_logpdf(s[:32], sigma), rtol=1e-10, atol=1e-9)
    # x_0 ~ N(0, sigma^2); x_i e^{-x_0/2} ~ N(0, 1) independent of x_0; E[x_i] = 0
    check_moments(s[:, :1], gt.mean[:1], gt.std[:1], what=f"{name} x0")
    check_moments(s[:, 1:] * np.exp(-s[:, :1] / 2), np.zeros(9), np.ones(9), what=f"{name} whitened")
    se = s[:, 1:].std(axis=0) / math.sqrt(s.shape[0])
    assert np.all(np.abs(s[:, 1:].mean(axis=0)) <= 5 * se)
    if name == "easy_funnel":  # light enough tails for a direct variance test
        check_moments(s[:, 1:], gt.mean[1:], gt.std[1:], what=name)


def test_funnel_log_z_by_quadrature():
    """2-D funnel: trapezoid rule in (x0, u = x1 e^{-x0/2}), Jacobian e^{x0/2}; log Z = 0."""
    t = T.get("funnel", dim=2)
    g0 = np.linspace(-36.0, 36.0, 2401)
    gu = np.linspace(-12.0, 12.0, 1201)
    x0, u = np.meshgrid(g0, gu, indexing="ij")
    pts = np.stack([x0, u * np.exp(x0 / 2)], -1).reshape(-1, 2)
    lp = jax.jit(lambda t, x: jax.vmap(t.logdensity)(x))(t, pts)
    f = np.exp(np.asarray(lp).reshape(x0.shape) + x0 / 2)
    z = np.trapezoid(np.trapezoid(f, gu, axis=1), g0)
    assert abs(math.log(z)) < 1e-8


def test_funnel_scale_change_does_not_retrace():
    traces = []

    @jax.jit
    def f(t, x):
        traces.append(1)
        return t.logdensity(x)

    f(T.get("funnel"), jnp.ones(10))
    f(T.get("funnel", scale=2.0), jnp.ones(10))
    assert len(traces) == 1


def test_funnel_bad_parameters():
    with pytest.raises(ValueError, match="dim must be an int >= 2"):
        T.get("funnel", dim=1)
    with pytest.raises(ValueError, match="scale .* must be positive"):
        T.get("easy_funnel", scale=-1.0)
    with pytest.raises(TypeError, match="scale must be a number"):
        T.get("funnel", scale=None)
