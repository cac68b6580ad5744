"""Tests of the Many-Well targets against the external test points and quadrature."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import samplax.targets as T

NPZ = "/work/shared/external/particles/many_well_32.npz"


@pytest.fixture(scope="module")
def ref():
    try:
        return dict(np.load(NPZ))
    except FileNotFoundError:
        pytest.skip(f"external reference {NPZ} not available")


def test_many_well32_against_external_points(ref, key, check_protocol):
    t = T.get("many_well32")
    check_protocol(t, key)
    lp, g = jax.jit(lambda t, x: jax.vmap(jax.value_and_grad(t.logdensity))(x))(t, ref["x"])
    np.testing.assert_allclose(np.asarray(lp), ref["logp"], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(np.asarray(g), ref["grad_logp"], rtol=1e-12, atol=1e-10)
    gt = t.ground_truth()
    assert abs(gt.log_Z - float(ref["log_Z"])) < 1e-8
    assert abs(gt.log_Z - 164.695675) < 1e-6
    np.testing.assert_allclose(gt.mean, ref["mean"], atol=1e-9)
    np.testing.assert_allclose(gt.std, ref["std"], atol=1e-9)


def test_many_well_quadrature_independent():
    """1-D adaptive quadrature (scipy) of the well factors vs the declared log Z."""
    z1 = integrate.quad(lambda x: math.exp(-x**4 + 6 * x**2 + 0.5 * x), -np.inf, np.inf, epsabs=0, epsrel=1e-13)[0]
    t = T.get("many_well32")
    assert abs(t.ground_truth().log_Z - 16 * (math.log(z1) + 0.5 * math.log(2 * math.pi))) < 1e-9
    z5 = integrate.quad(lambda x: math.exp(-(x**2 - 4) ** 2), -np.inf, np.inf, epsabs=0, epsrel=1e-13)[0]
    t5 = T.get("many_well5")
    gt = t5.ground_truth()
    assert abs(gt.log_Z - 5 * math.log(z5)) < 1e-9
    assert abs(gt.log_Z - (-0.5411)) < 5e-5  # the published value (DIS), to its 4 digits
    x = np.linspace(-3, 3, 35).reshape(7, 5)
    lp = jax.jit(lambda t, x: jax.vmap(t.logdensity)(x))(t5, x)
    np.testing.assert_allclose(np.asarray(lp), -((x**2 - 4) ** 2).sum(1), rtol=1e-13)
    m2 = integrate.quad(lambda x: x * x * math.exp(-(x**2 - 4) ** 2), -np.inf, np.inf, epsrel=1e-13)[0] / z5
    np.testing.assert_allclose(gt.std, math.sqrt(m2), rtol=1e-9)
    np.testing.assert_allclose(gt.mean, 0.0, atol=1e-12)


@pytest.mark.parametrize("name", ["many_well32", "many_well5"])
def test_many_well_exact_sampler(name, key, check_moments, draw):
    t = T.get(name)
    s, _ = draw(t, key, 20000)
    gt = t.ground_truth()
    check_moments(s, gt.mean, gt.std, what=name)
    # mass of the right well (well coordinates): Binomial test against quadrature
    from samplax.targets.many_well import well_quadrature
    p = well_quadrature(np.asarray(t.coef))["p_right"]
    wells = s[:, 0::2] if name == "many_well32" else s
    frac = (wells > 0).mean(0)
    n = s.shape[0]
    assert np.all(np.abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n))
    if name == "many_well32":
        # two-sample check against the external exact samples on the double-well coordinates:
        # at each of their empirical quantiles, the fraction of ours below it is q up to
        # sqrt(q (1 - q) (1/N_ours + 1/N_theirs)) (wells are independent within a draw)
        try:
            theirs = np.load(NPZ)["exact_samples"][:, 0::2].reshape(-1)
        except FileNotFoundError:
            return
        ours = wells.reshape(-1)
        for q in (0.05, 0.15, 0.3, 0.5, 0.7, 0.9):
            thr = np.quantile(theirs, q)
            se = math.sqrt(q * (1 - q) * (1 / ours.size + 1 / theirs.size))
            assert abs((ours < thr).mean() - q) <= 5 * se, q


def test_many_well_sampler_batch_invariance(key):
    t = T.get("many_well5")
    f = jax.jit(lambda t, k: (t.sample(k, 3), t.sample(k, 8)))
    a, b = f(t, key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b[:3]))


def test_many_well_bad_parameters():
    with pytest.raises(ValueError, match="dim must be an even int"):
        T.get("many_well32", dim=31)
    with pytest.raises(ValueError, match="dim must be an int >= 1"):
        T.get("many_well5", dim=0)
