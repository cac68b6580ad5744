"""MMD flow (negative-distance kernel, sample-based variant).

Tolerance: the i.i.d. yardstick of test_stein (particles are interacting, not independent):
|mean - mu| <= z sigma / sqrt(N C), |sd - sigma| <= z sigma / sqrt(2 N C), z = 4.5.
"""
import numpy as np
import pytest

import samplax
from samplax.interacting import mmd_flow
from tests.interacting.helpers import Z, correlated_gaussian


def test_mmd_flow_gaussian():
    t = correlated_gaussian(2)
    gt = t.ground_truth()
    r = samplax.sample(t, method="mmd_flow", seed=1, num_chains=8, num_warmup=300, num_samples=100,
                       progress=False)
    x = r.samples.reshape(-1, 2)
    n = x.shape[0]
    assert np.all(np.abs(x.mean(0) - gt.mean) <= Z * gt.std / np.sqrt(n))
    assert np.all(np.abs(x.std(0, ddof=1) - gt.std) <= Z * gt.std / np.sqrt(2 * n))
    assert r.cost["num_logdensity_evals"] == 8 * 100 and r.cost["num_grad_evals"] == 0
    assert r.extra["num_target_samples"] == 8 * 100 * 301


def test_energy_velocity_against_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(7, 2))
    v = np.zeros_like(x)
    for i in range(5):
        for j in range(5):
            if i != j:
                v[i] += (x[i] - x[j]) / np.linalg.norm(x[i] - x[j]) / 5
        for j in range(7):
            v[i] -= (x[i] - y[j]) / np.linalg.norm(x[i] - y[j]) / 7
    np.testing.assert_allclose(np.asarray(mmd_flow.energy_flow_velocity(x, y)), v, rtol=1e-10)


def test_mmd_flow_needs_sampler():
    import jax.numpy as jnp

    t = samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), 2)
    with pytest.raises(ValueError, match="exact sampler"):
        samplax.sample(t, method="mmd_flow", progress=False)
