"""Non-finite log-densities in the SMC family, nested sampling and parallel tempering: counted inside the run,
reported (``nonfinite`` warning, ``extra["num_nonfinite"]``), treated as zero density, and a ValueError when
nothing finite is left.  The counts are checked against a host-side recount of the NaN evaluations."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.core import nonfinite
from tests.nonfinite_helpers import nan_stripe_gaussian, nonfinite_warning, truncated_x0_moments


def test_count_nonfinite_counts_nan_and_plus_inf_not_minus_inf():
    lp = jnp.asarray([0.0, jnp.nan, jnp.inf, -jnp.inf, 1.0])
    assert int(nonfinite.count_nonfinite(lp)) == 2
    grad = jnp.asarray([[0.0], [0.0], [0.0], [jnp.nan], [jnp.inf]])  # a bad gradient counts where lp is finite
    assert np.asarray(nonfinite.is_nonfinite(lp, grad)).tolist() == [False, True, True, False, True]


def test_smc_nan_stripe_count_equals_host_recount_and_moments_are_the_truncated_gaussians():
    """NaN on the stripe 0.5 <= x0 < 1.5 is zero density: the target is N(0, I) without the stripe.  With the
    random-walk kernel every evaluation is one point, so the run's count must equal the NaN evaluations seen on
    the host (the returned draws' lp, also evaluated, are finite: they come from particles of positive weight)."""
    t, counter = nan_stripe_gaussian(name="nan_stripe_smc")
    runs = 8
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = samplax.sample(t, method="smc", kernel="rwm", seed=3, num_chains=runs, num_samples=400, progress=False)
    jax.effects_barrier()
    w = nonfinite_warning(r)
    assert w["value"] == r.extra["num_nonfinite"] == sum(r.extra["num_nonfinite_runs"]) == counter["nan"] > 0
    assert "NaN" in w["message"] and "zero density" in w["message"]
    mass, m1, m2 = truncated_x0_moments()
    x0 = r.samples[..., 0]
    assert not np.any((x0 >= 0.5) & (x0 < 1.5))  # zero density: no draw inside the stripe
    for est, truth in ((x0.mean(axis=1), m1), ((x0**2).mean(axis=1), m2),
                       (r.samples[..., 1].mean(axis=1), 0.0), ((r.samples[..., 1] ** 2).mean(axis=1), 1.0)):
        se = est.std(ddof=1) / np.sqrt(runs)  # independent runs
        assert abs(est.mean() - truth) < 5 * se, (est.mean(), truth, se)
    log_z_truth = np.log(2 * np.pi) + np.log(mass)
    assert abs(r.log_Z - log_z_truth) < 5 * r.log_Z_se, (r.log_Z, log_z_truth, r.log_Z_se)


@pytest.mark.parametrize("method, bad", [("ais", np.nan), ("waste_free_smc", np.nan), ("smc", np.inf)])
def test_fixed_schedule_waste_free_and_plus_inf_count_equals_host_recount(method, bad):
    """+inf is a broken evaluation like NaN: zero weight (not an infinite one), counted, never drawn."""
    t, counter = nan_stripe_gaussian(name=f"stripe_{method}_{bad}", bad=bad)
    kw = {"num_temperatures": 10} if method == "ais" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = samplax.sample(t, method=method, kernel="rwm", seed=1, num_chains=2, num_samples=40, progress=False,
                           **kw)
    jax.effects_barrier()
    assert nonfinite_warning(r)["value"] == r.extra["num_nonfinite"] == counter["nan"] > 0
    assert np.isfinite(r.log_Z) and np.all(np.isfinite(r.samples))
    assert not np.any((r.samples[..., 0] >= 0.5) & (r.samples[..., 0] < 1.5))


def test_finite_target_has_no_count_and_no_warning():
    t = samplax.targets.get("std_gaussian", dim=2)
    r = samplax.sample(t, method="smc", seed=1, num_chains=2, num_samples=50, progress=False)
    assert r.extra["num_nonfinite"] == 0 and r.extra["num_nonfinite_runs"] == [0, 0]
    assert not [w for w in r.warnings if w["code"] == "nonfinite"]


@pytest.mark.slow  # 15-20 s on an idle core; the default tier's 15-minute budget
def test_nested_sampling_nan_stripe_is_counted():
    """Nested sampling counts the NaN evaluations of its active slice rows (the vectorized pass also computes
    the rows that already finished; those are not used and not counted), so the host sees at least as many."""
    t, counter = nan_stripe_gaussian(name="nan_stripe_ns")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = samplax.sample(t, method="nested_sampling", seed=1, num_chains=2, num_samples=30, progress=False)
    jax.effects_barrier()
    n = nonfinite_warning(r)["value"]
    assert 0 < n == r.extra["num_nonfinite"] <= counter["nan"]
    assert not np.any((r.samples[..., 0] >= 0.5) & (r.samples[..., 0] < 1.5))


def test_parallel_tempering_nan_stripe_is_counted():
    """PT counts NaN at every scan's re-evaluation and the local proposals the kernel rejects as non-finite; the
    beta = 0 replica's proposals ignore the target (the NaN is computed, not used), so the host sees more."""
    t, counter = nan_stripe_gaussian(name="nan_stripe_pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = samplax.sample(t, method="parallel_tempering", kernel="rwm", seed=1, num_chains=2, num_warmup=32,
                           num_samples=40, num_temperatures=6, progress=False)
    jax.effects_barrier()
    n = nonfinite_warning(r)["value"]
    assert 0 < n == r.extra["num_nonfinite"] <= counter["nan"]
    assert not np.any((r.samples[..., 0] >= 0.5) & (r.samples[..., 0] < 1.5))


@pytest.mark.parametrize("method, kw, tried", [
    ("smc", {}, "all 30 initial particles"),
    ("population_annealing", {"num_temperatures": 5}, "all 30 initial particles"),
    pytest.param("nested_sampling", {}, "all num_live=30 initial draws", marks=pytest.mark.slow),  # 11 s: budget
    ("parallel_tempering", {"num_temperatures": 4, "num_warmup": 16}, "all num_temperatures=4 initial replicas"),
])
def test_nan_everywhere_is_a_value_error(method, kw, tried):
    t, _ = nan_stripe_gaussian(region=lambda x: jnp.ones((), bool), name=f"nan_everywhere_{method}", counted=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match="non-finite \\(NaN or \\+inf\\) everywhere it was tried") as e:
            samplax.sample(t, method=method, seed=1, num_chains=2, num_samples=30 if method != "parallel_tempering"
                           else 40, progress=False, **kw)
    assert tried in str(e.value) and "2 of 2 run(s)" in str(e.value)


def test_smc_all_weights_lost_to_nan_is_a_value_error():
    """NaN for x0 > 0 and -inf elsewhere: no initial particle is NaN-free and finite, but not all are NaN, so the
    first reweighting leaves every weight zero (log Z = -inf) because of the NaN: an error, not a result."""
    t, _ = nan_stripe_gaussian(region=lambda x: x[0] > 0, base=lambda x: -jnp.inf * jnp.ones((), x.dtype),
                               name="nan_or_minus_inf", counted=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match="lost its weight .*non-finite \\(NaN or \\+inf\\)"):
            samplax.sample(t, method="smc", seed=2, num_chains=2, num_samples=30, progress=False)
