import math

import numpy as np
import pytest

import samplax
from samplax.interacting import ensemble
from tests.interacting.helpers import check_moments_mcse, correlated_gaussian


@pytest.mark.parametrize("method", ["ensemble_stretch", "ensemble_de"])
def test_ensemble_moments_correlated_gaussian(method):
    target = correlated_gaussian(4)
    r = samplax.sample(target, method=method, seed=3, num_chains=4, num_warmup=300, num_samples=1000,
                       progress=False)
    assert r.samples.shape == (4, 1000, 4)
    check_moments_mcse(r, target)
    W = ensemble.default_num_walkers(4)
    T = math.ceil(1000 / W)
    # the walkers' initial-point search (one attempt each on a Gaussian) and the ensemble's own evaluations
    assert r.cost["num_logdensity_evals"] == 4 * W + 4 * W * (1 + 300 + T * W)
    assert r.cost["num_grad_evals"] == 0
    assert 0.1 < np.mean(r.stats["acceptance_rate"]) < 0.9
    assert np.all(r.diagnostics["rhat"] < 1.02)


def test_ensemble_bad_options():
    target = samplax.targets.get("std_gaussian", dim=5)
    with pytest.raises(ValueError, match="num_walkers"):
        samplax.sample(target, method="ensemble_stretch", num_walkers=7, progress=False)
    with pytest.raises(ValueError, match="num_walkers"):
        samplax.sample(target, method="ensemble_stretch", num_walkers=8, progress=False)  # < 2 dim
    with pytest.raises(ValueError, match="a"):
        samplax.sample(target, method="ensemble_stretch", a=0.5, progress=False)
    # the stretch move needs a > 1 (z in [1/a, a]; Goodman & Weare 2010), finite: refused by the option's check
    for a in (1, 1.0, 0.5, float("inf")):
        with pytest.raises(ValueError, match=r"option a=.*a finite number > 1"):
            samplax.sample(target, method="ensemble_stretch", a=a, progress=False)
    # walkers: an even int >= 4 (and >= 2 dim), for both moves, refused before anything runs
    small = samplax.targets.get("std_gaussian", dim=2)
    for method in ("ensemble_de", "ensemble_stretch"):
        for w in (5, 3, 2, 7.0):
            with pytest.raises(ValueError, match=r"option num_walkers=.*even int >= 4"):
                samplax.sample(small, method=method, num_walkers=w, progress=False)
    with pytest.raises(TypeError, match="unknown option"):
        samplax.sample(target, method="ensemble_de", step_size=0.1, progress=False)
    with pytest.raises(ValueError, match="init"):
        samplax.sample(target, method="ensemble_de", init=np.zeros(3), progress=False)


@pytest.mark.slow  # 15-20 s on an idle core; the default tier's 15-minute budget
def test_batch_invariance_and_layout():
    """Chain c depends only on (seed, c): 2 chains reproduce the first 2 of 3; shapes follow the rule."""
    target = samplax.targets.get("std_gaussian", dim=2)
    kw = dict(method="ensemble_de", seed=5, num_warmup=10, num_samples=40, num_walkers=16, progress=False)
    r2 = samplax.sample(target, num_chains=2, **kw)
    r3 = samplax.sample(target, num_chains=3, **kw)
    assert r3.samples.shape == (3, 40, 2)
    np.testing.assert_array_equal(r2.samples, r3.samples[:2])
    # walker-major: within a walker's block of T = 3 snapshots the draws are that walker's path,
    # so consecutive draws inside a block repeat exactly when the walker rejected all W moves
    assert r3.stats["acceptance_rate"].shape == (3, 40)
