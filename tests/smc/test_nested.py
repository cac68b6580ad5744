"""Nested sampling: log Z against analytic values within z * sqrt(H / n_live)."""
import numpy as np
import jax.numpy as jnp
import pytest

import samplax
from smc_helpers import gaussian_log_Z, gaussian_logdensity


def test_nested_sampling_gaussian_log_Z_and_moments():
    mean, std = jnp.asarray([1.0, -2.0, 0.5]), jnp.asarray([0.5, 1.5, 1.0])
    t = samplax.from_logdensity(gaussian_logdensity(mean, std, 0.0), 3)
    r = samplax.sample(t, method="nested_sampling", seed=0, num_chains=8, num_samples=150)
    true = gaussian_log_Z(np.asarray(std), 0.0, 3)
    assert r.log_Z_se > 0 and not r.warnings
    assert abs(r.log_Z - true) <= 5 * r.log_Z_se, (r.log_Z, true, r.log_Z_se)
    # the H-based error agrees with the spread over runs (same order of magnitude)
    sd_runs = r.extra["log_Z_sd_over_runs"]
    se_one = r.log_Z_se * np.sqrt(8)
    assert 0.2 * se_one < sd_runs < 5 * se_one
    per_run = r.samples.mean(axis=1)
    mcse = per_run.std(0, ddof=1) / np.sqrt(8)  # 8 runs: 7 degrees of freedom for the MCSE
    assert np.all(np.abs(per_run.mean(0) - np.asarray(mean)) <= 5 * mcse + 1e-12)


def test_nested_sampling_bad_options():
    t = samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), 2)
    with pytest.raises(ValueError, match="num_delete"):
        samplax.sample(t, method="nested_sampling", num_samples=10, num_delete=10)


def test_stages_plan():
    from samplax.smc.nested import NSConfig, stages
    cfg = NSConfig(num_live=2000, num_delete=200, num_repeats=10, max_iterations=10, min_live=100)
    assert stages(cfg) == [(2000, 200), (500, 250), (125, 62), (100, 50)]
    assert stages(cfg._replace(min_live=0)) == [(2000, 200)]


def test_nested_sampling_decreasing_live_points_bimodal():
    """k = n/10 deletions and live points decreasing 400 -> 100 -> 25 on an unequal two-mode mixture.

    log Z (= log 3 for the mixture 3 * (0.3 N(-4, 0.5^2) + 0.7 N(4, 0.5^2)) in each of 2 coordinates' first)
    and the weight of the small mode are checked against the truth within 5 standard errors.
    """
    from jax.scipy.special import logsumexp

    def lp(x):
        a = -0.5 * jnp.sum(((x - jnp.asarray([-4.0, 0.0])) / 0.5) ** 2)
        b = -0.5 * jnp.sum(((x - jnp.asarray([4.0, 0.0])) / 0.5) ** 2)
        return jnp.log(3.0) + logsumexp(jnp.stack([jnp.log(0.3) + a, jnp.log(0.7) + b])) - jnp.log(2 * jnp.pi * 0.25)

    t = samplax.from_logdensity(lp, 2)
    r = samplax.sample(t, method="nested_sampling", seed=1, num_chains=6, num_samples=400, min_live=25)
    assert [tuple(s) for s in r.extra["stages"]] == [(400, 40), (100, 50), (25, 12)]
    assert not r.warnings
    assert abs(r.log_Z - np.log(3.0)) <= 5 * r.log_Z_se, (r.log_Z, r.log_Z_se, r.extra["log_Z_runs"])
    small = (r.samples[..., 0] < 0).mean(axis=1)  # per-run fraction of draws in the 0.3 mode
    se = max(small.std(ddof=1), np.sqrt(0.3 * 0.7 / r.samples.shape[1])) / np.sqrt(small.shape[0])
    assert abs(small.mean() - 0.3) <= 5 * se, (small, se)


@pytest.mark.slow
def test_nested_sampling_funnel_log_Z():
    """Neal's funnel-10 (log Z = 0) from N(0, 5^2 I): L = p / pi has a heavy upper tail (the funnel's mouth),
    which the decreasing live points follow to log X ~ -1000; |log Z| within 5 standard errors of 0, where the
    standard error takes the larger of sqrt(H / n_live) and the spread over the independent runs."""
    t = samplax.targets.get("funnel")
    assert t.ground_truth().log_Z == 0.0
    r = samplax.sample(t, method="nested_sampling", seed=0, num_chains=6, num_samples=2000)
    assert not r.warnings
    assert abs(r.log_Z) <= 5 * r.log_Z_se, (r.log_Z, r.log_Z_se, r.extra["log_Z_runs"])
    assert r.log_Z_se < 0.05
