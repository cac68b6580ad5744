"""Reverse-diffusion samplers (score_ensemble, rdmc) against ground truth.

Tolerances: z * MCSE with the MCSE of the returned draws.  rdmc trajectories are independent,
so that MCSE is exact; score_ensemble members interact only through a shared O(1/N) estimate
(N = 300 members), which we do not inflate the tolerance for.  Mode weights use the binomial SE.
The 2-D score_ensemble tests run with draws_per_member = 4 (a quarter of the default cost), which
is accurate in 2-D; the default (16) is checked in 5-D in test_slow_5d.py.
"""
import numpy as np
import pytest

import samplax
from tests.interacting.helpers import check_moments_mcse, correlated_gaussian, mode_weight_check, two_mode_gmm


def test_score_ensemble_gaussian():
    t = correlated_gaussian(2)
    r = samplax.sample(t, method="score_ensemble", seed=1, num_chains=4, num_warmup=150, num_samples=300,
                       draws_per_member=4, progress=False)
    check_moments_mcse(r, t)
    assert r.cost["num_logdensity_evals"] == 4 * 300 * 4 * 150
    assert r.cost["num_grad_evals"] == 0


def test_score_ensemble_gmm_mode_weights():
    t = two_mode_gmm()
    r = samplax.sample(t, method="score_ensemble", seed=2, num_chains=4, num_warmup=150, num_samples=300,
                       draws_per_member=4, progress=False)
    mode_weight_check(r.samples, 0.3)
    check_moments_mcse(r, t)


def test_reverse_diffusion_bad_options():
    t = correlated_gaussian(2)
    with pytest.raises(ValueError, match="init"):
        samplax.sample(t, method="score_ensemble", init=np.zeros(2), progress=False)
    with pytest.raises(ValueError, match="num_warmup"):
        samplax.sample(t, method="rdmc", num_warmup=0, progress=False)
    with pytest.raises(ValueError, match="inner"):
        samplax.sample(t, method="rdmc", inner="mala", progress=False)
    with pytest.raises(ValueError, match="T"):
        samplax.sample(t, method="rdmc", T=1e-4, progress=False)
    with pytest.raises(ValueError, match="ensemble size"):
        samplax.sample(t, method="score_ensemble", num_samples=1, progress=False)


@pytest.mark.slow  # 15-20 s on an idle core; the default tier's 15-minute budget
def test_rdmc_gaussian():
    t = correlated_gaussian(2)
    r = samplax.sample(t, method="rdmc", seed=4, num_chains=4, num_warmup=200, num_samples=250, progress=False)
    check_moments_mcse(r, t)
    # 200 Langevin start steps + 200 reverse steps, 256 importance draws each, per particle
    assert r.cost["num_logdensity_evals"] == 4 * 250 * 400 * 256
    assert r.cost["num_grad_evals"] == 0


@pytest.mark.slow  # 20-45 s: the default tier must fit 15 min on 2 cores
def test_rdmc_gmm_mode_weights():
    t = two_mode_gmm()
    r = samplax.sample(t, method="rdmc", seed=5, num_chains=4, num_warmup=200, num_samples=250, progress=False)
    mode_weight_check(r.samples, 0.3)
    check_moments_mcse(r, t)


def test_score_ensemble_quadratic_cost_is_said_and_warned(monkeypatch):
    """The cost grows with members^2: said in the description (``samplax list methods``) and the docstring, and a
    run whose predicted work is large warns before it starts (Python warning) and in the result."""
    import warnings

    from samplax.interacting import score_ensemble as se
    from samplax.methods import get_method

    assert "SQUARE of the ensemble size" in get_method("score_ensemble").description
    assert "QUADRATIC in the ensemble size" in se.__doc__
    # the defaults (1000 members, L = 16, 1000 steps, 4 ensembles) do not warn up to 100 dimensions;
    # the reported run (2000 members, 3000 steps, >35 min) does, even in 6-D
    assert se.cost_warning("score_ensemble", 1000, 1000, 4, 100, 16) is None
    w = se.cost_warning("score_ensemble", 2000, 3000, 4, 6, 16)
    assert w["code"] == "expensive" and "2000^2" in w["message"] and "square" in w["message"]
    assert se.predicted_work(2000, 3000, 4, 6, 16) == 2000**2 * 3000 * 4 * 16 * 56
    t = correlated_gaussian(2)
    kw = dict(method="score_ensemble", seed=1, num_chains=2, num_warmup=5, num_samples=20, draws_per_member=2,
              progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a small run says nothing about its cost
        r = samplax.sample(t, **kw)
    assert not any(x["code"] == "expensive" for x in r.warnings)
    # the same small run with the threshold lowered below its predicted work: both warnings
    monkeypatch.setattr(se, "WORK_WARN_THRESHOLD", se.predicted_work(20, 5, 2, 2, 2) - 1)
    with pytest.warns(UserWarning, match=r"score_ensemble: predicted work .*20\^2 x 2 x 5 x 2 x \(2 \+ 50\)"):
        r = samplax.sample(t, **kw)
    assert [x["code"] for x in r.warnings if x["code"] == "expensive"] == ["expensive"]
