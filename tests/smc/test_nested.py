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
