"""Unadjusted Langevin family: ula, randomized_midpoint_overdamped, kinetic_langevin
(the underdamped randomized_midpoint has its own file, test_randomized_midpoint.py).

The tests compare against the *exact stationary law of the discretization* on
a Gaussian target (derived in tests/mcmc/mcmc2_helpers.py): mean m, covariance
from a Lyapunov equation.  The discretization bias is therefore part of the
reference, not of the tolerance; the tolerance is z * MCSE only.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from mcmc2_helpers import (baoab_stationary_cov, check_moments, counting, langevin_gaussian,
                           rlmc_stationary_cov, ula_stationary_cov)

EPS = 0.4
FIXED = dict(step_size=EPS, adapt_step_size=False, adapt_mass_matrix=False)


def _run(method, **opts):
    target, mean, cov = langevin_gaussian()
    with pytest.warns(UserWarning, match="not the target"):
        r = samplax.sample(target, method=method, seed=11, num_chains=4, num_warmup=300, num_samples=6000,
                           progress=False, **opts)
    assert any(w["code"] == "biased" for w in r.warnings)
    return r, mean, cov


def test_ula_exact_stationary_law():
    r, mean, cov = _run("ula", **FIXED)
    v = ula_stationary_cov(cov, EPS)
    # the bias is real at this step size: the smallest-scale coordinate is >5% too wide
    assert np.sqrt(v[2, 2]) / np.sqrt(cov[2, 2]) > 1.05
    check_moments(r, mean, np.sqrt(np.diag(v)), z=5.0)
    assert r.cost["num_grad_evals"] == r.cost["num_logdensity_evals"]


def test_randomized_midpoint_overdamped_exact_stationary_law():
    r, mean, cov = _run("randomized_midpoint_overdamped", **FIXED)
    v = rlmc_stationary_cov(cov, EPS)
    check_moments(r, mean, np.sqrt(np.diag(v)), z=5.0)
    # two gradients per step (midpoint and new point), + init and initial-point search per chain
    n_steps = 4 * (300 + 6000)
    assert r.cost["num_grad_evals"] == 2 * n_steps + 4 + 4


def test_kinetic_langevin_exact_stationary_law():
    gamma = 1.0
    r, mean, cov = _run("kinetic_langevin", friction=gamma, **FIXED)
    v = baoab_stationary_cov(cov, EPS, gamma)
    np.testing.assert_allclose(v[:5, :5], cov, atol=1e-10)  # BAOAB: positions exact on Gaussians
    check_moments(r, mean, np.sqrt(np.diag(v[:5, :5])), z=5.0)


def test_stationary_formulas_scalar():
    """The closed forms of samplax.mcmc.langevin's docstring agree with the Lyapunov solutions (1-d)."""
    s2, eps = 2.0, 0.7
    h, a = 0.5 * eps**2, 1 / s2
    assert np.isclose(ula_stationary_cov(np.array([[s2]]), eps)[0, 0], s2 / (1 - h * a / 2))
    b, c = 1 - h * a, h**2 * a**2
    rl = h * (b**2 + 1) / (1 - (b**2 + b * c + c**2 / 3))
    assert np.isclose(rlmc_stationary_cov(np.array([[s2]]), eps)[0, 0], rl)


#: gradient (and log-density) evaluations per step of each kernel
GRADS_PER_STEP = {"ula": 1, "randomized_midpoint_overdamped": 2, "kinetic_langevin": 1, "randomized_midpoint": 2}


@pytest.mark.parametrize("method", sorted(GRADS_PER_STEP))
def test_kernel_counts_and_factories(method, key):
    lp = lambda x: -0.5 * jnp.sum(x**2 / jnp.array([1.0, 4.0]))  # noqa: E731
    counted, count = counting(lp)
    kern = getattr(samplax.mcmc, method)(counted, 0.3)
    state = kern.init(key, jnp.array([0.5, -1.0]))
    count[0] = 0
    step = jax.jit(kern.step)
    total = 0
    for i in range(5):
        state, info = step(jax.random.fold_in(key, i), state)
        jax.block_until_ready(state)
        total += int(info.num_grad_evals)
        assert 0.0 <= float(info.acceptance_rate) <= 1.0
    assert total == count[0] == 5 * GRADS_PER_STEP[method]


@pytest.mark.slow
def test_default_options_run_and_warn():
    target, mean, cov = langevin_gaussian()
    with pytest.warns(UserWarning, match="not the target"):
        r = samplax.sample(target, method="ula", seed=2, num_chains=2, num_warmup=300, num_samples=300,
                           progress=False)
    assert np.all(np.isfinite(r.samples))
    assert r.warnings[-1]["code"] == "biased"


def test_bad_options():
    target, _, _ = langevin_gaussian()
    with pytest.raises(ValueError, match="friction"):
        samplax.sample(target, method="kinetic_langevin", friction=0.0, num_samples=10, progress=False)
    with pytest.raises(ValueError, match="target_accept"):
        samplax.sample(target, method="ula", target_accept=1.5, num_samples=10, progress=False)
    with pytest.raises(TypeError, match="unknown option"):
        samplax.sample(target, method="randomized_midpoint_overdamped", friction=1.0, num_samples=10,
                       progress=False)
