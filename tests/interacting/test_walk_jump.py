"""Walk-jump sampling: independent trajectories, so the usual MCSE of independent draws applies.

The jump returns a posterior mean, so for a Gaussian target N(mu, S) the exact law of the output is
N(mu, S (S + s I)^{-1} S) with s = sigma^2 / M (module docstring); we test against that law.
"""
import numpy as np
import pytest

import samplax
from samplax.interacting import smoothing
from samplax.targets.gaussian import _gaussian
from tests.interacting.helpers import Z, correlated_gaussian, mode_weight_check, two_mode_gmm


def _shrunk_std(S, s):
    S = np.asarray(S)
    V = S @ np.linalg.solve(S + s * np.eye(len(S)), S)
    return np.sqrt(np.diag(V))


def _check(r, mean, std, z=Z):
    d = r.diagnostics
    assert np.all(np.abs(d["mean"] - mean) <= z * d["mcse_mean"]), (d["mean"], mean)
    assert np.all(np.abs(d["sd"] - std) <= z * d["mcse_sd"]), (d["sd"], std)


def test_walk_jump_exact_gaussian():
    S = [[0.25, 0.3], [0.3, 4.0]]
    g = _gaussian([0.2, 0.4], S, "g")
    r = samplax.sample(g, method="walk_jump", seed=1, num_chains=4, num_warmup=400, num_samples=500,
                       progress=False)
    assert r.extra["smoothed_score"] == "exact mixture"
    _check(r, [0.2, 0.4], _shrunk_std(S, 4.0 / 100))
    # the initial-point search only (one attempt per particle): the smoothed density is closed form
    assert r.cost["num_logdensity_evals"] == 4 * 500


def test_walk_jump_gmm_mode_weights():
    t = two_mode_gmm()
    assert smoothing.gaussian_mixture_parts(t) is not None
    r = samplax.sample(t, method="walk_jump", seed=2, num_chains=4, num_warmup=400, num_samples=500,
                       progress=False)
    mode_weight_check(r.samples, 0.3)


def test_walk_jump_snis_gaussian():
    t = correlated_gaussian(2)  # a plain function target: SNIS smoothed score, ULA walk
    # SNIS has an O(1/num_is) bias (measured: num_is = 16 inflates the sd by ~60%, 256 is within MCSE)
    r = samplax.sample(t, method="walk_jump", seed=3, num_chains=4, num_warmup=200, num_samples=150,
                       num_measurements=50, progress=False)  # default SNIS step size 0.1
    assert r.extra["smoothed_score"].startswith("SNIS")
    gt = t.ground_truth()
    S = np.diag(gt.std) @ np.array([[1, 0.6], [0.6, 1]]) @ np.diag(gt.std)
    _check(r, gt.mean, _shrunk_std(S, 4.0 / 50))
    first, later = 100, 2
    n_smooth = first + 49 * later + 2 * 50
    assert r.cost["num_logdensity_evals"] == 4 * 150 * (1 + 256 * n_smooth)  # initial-point search + SNIS


def test_mixture_smoothed_matches_numpy():
    import jax.numpy as jnp
    from scipy.stats import multivariate_normal

    t = two_mode_gmm()
    parts = smoothing.gaussian_mixture_parts(t)
    y = np.array([0.3, -0.7])
    s = 0.5
    ref = np.log(0.3 * multivariate_normal([-2, -1], (0.36 + s) * np.eye(2)).pdf(y)
                 + 0.7 * multivariate_normal([2, 1], (0.36 + s) * np.eye(2)).pdf(y))
    np.testing.assert_allclose(float(smoothing.mixture_smoothed_logdensity(parts, jnp.asarray(y), s)), ref,
                               rtol=1e-12)


def test_walk_jump_bad_options():
    t = correlated_gaussian(2)
    with pytest.raises(ValueError, match="exact"):
        samplax.sample(t, method="walk_jump", smoothed_score="exact", progress=False)
    with pytest.raises(ValueError, match="sigma"):
        samplax.sample(t, method="walk_jump", sigma=0.0, progress=False)
    with pytest.raises(ValueError, match="num_warmup"):
        samplax.sample(t, method="walk_jump", num_warmup=0, progress=False)


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_walk_jump_carries_a_biased_warning():
    """Like svgd, rdmc and score_ensemble: the SNIS walk (not a Gaussian mixture) and the exact path's shrinkage."""
    kw = dict(method="walk_jump", seed=0, num_chains=1, num_warmup=10, num_samples=5, num_measurements=5,
              num_is=8, progress=False)
    r = samplax.sample(correlated_gaussian(2), **kw)
    biased = [w for w in r.warnings if w["code"] == "biased"]
    assert len(biased) == 1 and "not a Gaussian mixture" in biased[0]["message"]
    assert "SNIS" in biased[0]["message"] and biased[0]["value"] == 4.0 / 5
    r = samplax.sample(two_mode_gmm(), **kw)
    biased = [w for w in r.warnings if w["code"] == "biased"]
    assert len(biased) == 1 and "posterior means" in biased[0]["message"] and "exact mixture" in biased[0]["message"]


@pytest.mark.slow
def test_walk_jump_snis_bias_in_6d_is_real():
    """What the warning says: at the defaults on the 6-D correlated Gaussian the SNIS path's sds are far too large
    (well beyond the exact path's shrinkage, which goes the other way)."""
    t = correlated_gaussian(6)
    r = samplax.sample(t, method="walk_jump", seed=0, num_chains=2, num_samples=200, progress=False)
    d = r.diagnostics
    sd_true = t.ground_truth().std
    assert np.max((d["sd"] - sd_true) / d["mcse_sd"]) > 5 and np.max(d["sd"] / sd_true) > 1.15
