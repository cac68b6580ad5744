"""5-D checks (slow tier): z * MCSE against analytic ground truth."""
import numpy as np
import pytest

import samplax
from samplax.targets.gaussian import _gaussian
from tests.particles.helpers import Z, check_moments_mcse, correlated_gaussian

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["ensemble_stretch", "ensemble_de"])
def test_ensemble_5d(method):
    t = correlated_gaussian(5)
    r = samplax.sample(t, method=method, seed=11, num_chains=4, num_warmup=1000, num_samples=2000, progress=False)
    check_moments_mcse(r, t)


def test_walk_jump_exact_5d():
    idx = np.arange(5)
    S = np.linspace(0.5, 2.0, 5)[:, None] * 0.6 ** np.abs(idx[:, None] - idx[None, :]) * np.linspace(0.5, 2.0, 5)
    mu = (idx + 1) / 5
    g = _gaussian(mu, S, "g5")
    r = samplax.sample(g, method="walk_jump", seed=12, num_chains=4, num_warmup=400, num_samples=500,
                       progress=False)
    s = 4.0 / 100
    V = S @ np.linalg.solve(S + s * np.eye(5), S)
    d = r.diagnostics
    assert np.all(np.abs(d["mean"] - mu) <= Z * d["mcse_mean"])
    assert np.all(np.abs(d["sd"] - np.sqrt(np.diag(V))) <= Z * d["mcse_sd"])
