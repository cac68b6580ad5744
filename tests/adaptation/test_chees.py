"""ChEES trajectory-length adaptation (Hoffman, Radul & Sountsov 2021)."""
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.adaptation.chees import chees_gradient, halton
from samplax.targets.gaussian import Gaussian


def test_halton_base2():
    np.testing.assert_allclose([float(halton(i)) for i in range(1, 8)],
                               [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875])


def test_chees_gradient_sign():
    """Proposals farther from the mean than the starts, moving outwards: ChEES grows with T (g > 0)."""
    x0 = jnp.array([[0.1, 0.0], [-0.1, 0.0]])
    x1 = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
    p1 = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
    g = chees_gradient(x0, x1, p1, jnp.ones(2), jnp.zeros(2, bool), jnp.ones(2), 0.5, 1.0)
    assert float(g) > 0
    g2 = chees_gradient(x0, x1, -p1, jnp.ones(2), jnp.zeros(2, bool), jnp.ones(2), 0.5, 1.0)
    assert float(g2) < 0


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_chees_raises_trajectory_length_on_wide_scales():
    """Scales 0.1..10 and no mass matrix: the step size is set by the 0.1 scale, the trajectory
    must grow from one step (T = e) towards the 10 scale."""
    sd = jnp.asarray(10.0 ** np.linspace(-1, 1, 6))
    t = Gaussian(jnp.zeros(6), jnp.diag(sd), "wide6")
    r = samplax.sample(t, "chees_hmc", seed=0, num_chains=8, num_warmup=400, num_samples=20, progress=False,
                       adapt_mass_matrix=False)
    eps = float(r.stats["step_size"][0, 0])
    T = float(r.stats["trajectory_length"][0, 0])
    assert eps < 0.3  # limited by the smallest scale
    assert T > 20 * eps, (T, eps)
    assert 2.0 < T < 60.0, T  # the order of the largest scale (10)


def test_chees_needs_several_chains():
    with pytest.raises(ValueError, match="num_chains"):
        samplax.sample(samplax.targets.get("std_gaussian", dim=2), "chees_hmc", num_chains=1, num_warmup=10,
                       num_samples=10, progress=False)


@pytest.mark.slow
def test_chees_hmc_correct_on_ill_conditioned_gaussian():
    t = samplax.targets.get("ill_conditioned_gaussian")
    r = samplax.sample(t, "chees_hmc", seed=2, num_chains=8, num_warmup=500, num_samples=500, progress=False)
    gt = t.ground_truth()
    z = np.abs(r.diagnostics["mean"] - gt.mean) / r.diagnostics["mcse_mean"]
    assert np.max(z) < 5
    zs = np.abs(r.diagnostics["sd"] - gt.std) / r.diagnostics["mcse_sd"]
    assert np.max(zs) < 5
