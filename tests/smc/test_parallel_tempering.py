"""Parallel tempering: DEO swaps, schedule equalization, stepping-stone log Z, and end-to-end against ground truth."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax import diagnostics
from samplax.smc import parallel_tempering as pt
from smc_helpers import gaussian_log_Z, gaussian_logdensity

D, W, MU = 5, 0.3, 3.0


def bimodal_logdensity(x):
    """Normalized 0.3 N(3 * 1, I) + 0.7 N(-3 * 1, I) in d = 5 (log Z = 0; modes 6.7 sd apart)."""
    a = -0.5 * jnp.sum((x - MU) ** 2) + jnp.log(W)
    b = -0.5 * jnp.sum((x + MU) ** 2) + jnp.log(1 - W)
    return jnp.logaddexp(a, b) - 0.5 * x.shape[0] * jnp.log(2 * jnp.pi)


def test_deo_permutation_even_and_odd():
    acc = jnp.asarray([True, True, False, True, True])  # K = 6
    even = np.asarray(pt.deo_permutation(acc, 0))   # pairs (0,1), (2,3)x, (4,5)
    odd = np.asarray(pt.deo_permutation(acc, 1))    # pairs (1,2), (3,4)
    assert even.tolist() == [1, 0, 2, 3, 5, 4]
    assert odd.tolist() == [0, 2, 1, 4, 3, 5]
    for p in (even, odd):
        assert sorted(p.tolist()) == list(range(6))


def test_swap_acceptance_is_the_replica_exchange_ratio():
    betas = jnp.asarray([0.0, 0.3, 1.0])
    ell = jnp.asarray([2.0, -1.0, 0.5])
    la = np.asarray(pt.swap_log_acceptance(betas, ell))
    # pi_b(x) = q(x) exp(b ell(x)): log ratio of the swapped to the current configuration
    want = [min(0.0, (0.3 - 0.0) * (2.0 + 1.0)), min(0.0, (1.0 - 0.3) * (-1.0 - 0.5))]
    assert np.allclose(la, want)
    la = pt.swap_log_acceptance(betas, jnp.asarray([0.0, -jnp.inf, 0.0]))
    assert float(la[0]) == 0.0 and float(la[1]) == -np.inf  # a dead state always moves down, never up


def test_equalize_schedule():
    betas = jnp.linspace(0.0, 1.0, 5)
    new, lam = pt.equalize_schedule(betas, jnp.full((4,), 0.2))
    assert np.allclose(new, betas) and abs(float(lam) - 0.8) < 1e-12
    # all the rejection in the last interval: the new points crowd into [0.75, 1]
    new, lam = pt.equalize_schedule(betas, jnp.asarray([0.0, 0.0, 0.0, 0.8]))
    new = np.asarray(new)
    assert new[0] == 0.0 and new[-1] == 1.0 and np.all(np.diff(new) > 0) and new[1] > 0.74
    # the equalized schedule has equal estimated barrier per interval (piecewise-linear Lambda)
    r = jnp.asarray([0.5, 0.1, 0.05, 0.05])
    new, lam = pt.equalize_schedule(betas, r)
    cum = np.concatenate([[0.0], np.cumsum(np.clip(np.asarray(r), 1e-6, 1))])
    lam_at_new = np.interp(np.asarray(new), np.asarray(betas), cum)
    assert np.allclose(np.diff(lam_at_new), float(lam) / 4, rtol=1e-6)


def test_round_lengths():
    assert pt.round_lengths(1000) == [16, 32, 64, 128, 256, 504]
    assert sum(pt.round_lengths(77)) == 77 and pt.round_lengths(10) == [10] and pt.round_lengths(0) == []


def test_stepping_stone_with_exact_draws(key):
    """Exact independent draws at each temperature of a Gaussian path: the estimate is within 5 se of log Z."""
    s0, s1, off = 2.0, 0.5, 1.3  # q = N(0, s0^2), p = exp(off) N(0, s1^2) unnormalized-consistent
    betas = jnp.asarray([0.0, 0.1, 0.3, 0.6, 1.0])
    prec = (1 - betas) / s0**2 + betas / s1**2
    t = 4000
    x = jax.random.normal(key, (t, 5)) / jnp.sqrt(prec)                  # x_k ~ pi_{beta_k}
    lq = -0.5 * (x / s0) ** 2 - jnp.log(s0) - 0.5 * jnp.log(2 * jnp.pi)
    lp = off - 0.5 * (x / s1) ** 2 - jnp.log(s1) - 0.5 * jnp.log(2 * jnp.pi)
    log_z, se = pt.stepping_stone(betas, lp - lq, 20)
    assert 0 < float(se) < 0.1
    assert abs(float(log_z) - off) <= 5 * float(se), (float(log_z), float(se))


def test_bimodal_moments_weights_and_log_Z():
    """Two modes 6.7 sd apart with weights 0.3 / 0.7: the beta = 1 replica gets the mean and the weights."""
    t = samplax.from_logdensity(bimodal_logdensity, D)
    r = samplax.sample(t, method="parallel_tempering", seed=0, num_chains=4, num_warmup=300, num_samples=800,
                       num_temperatures=12, progress=False)
    assert r.samples.shape == (4, 800, D)
    truth = (2 * W - 1) * MU
    est, mcse = r.diagnostics["mean"], r.diagnostics["mcse_mean"]
    assert np.all(np.abs(est - truth) <= 5 * mcse), (est, mcse)
    ind = (r.samples.sum(-1) > 0).astype(float)  # the modes are 6.7 sd apart along 1: exact labels
    assert abs(ind.mean() - W) <= 5 * float(diagnostics.mcse_mean(ind)), ind.mean(axis=1)
    assert abs(r.log_Z - 0.0) <= 5 * r.log_Z_se, (r.log_Z, r.log_Z_se, r.extra["log_Z_runs"])
    assert r.log_Z_se < 0.2
    assert all(n > 10 for n in r.extra["round_trips"])
    assert r.cost["num_grad_evals"] > 0 and r.cost["num_logdensity_evals"] > 0
    s = np.asarray(r.extra["schedules"])
    assert np.all(s[:, 0] == 0) and np.all(s[:, -1] == 1) and np.all(np.diff(s, axis=1) > 0)


def test_init_and_bad_options():
    t = samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), 2)
    with pytest.raises(ValueError, match="init must have shape"):
        samplax.sample(t, method="parallel_tempering", init=np.zeros(3), num_warmup=10, num_samples=40)
    with pytest.raises(ValueError, match="num_temperatures"):
        samplax.sample(t, method="parallel_tempering", num_temperatures=1)
    with pytest.raises(ValueError, match="num_batches"):
        samplax.sample(t, method="parallel_tempering", num_samples=30)


@pytest.mark.slow
def test_gaussian_log_Z_and_moments():
    mean, std, off = jnp.asarray([1.0, -1.0, 0.5, 2.0]), jnp.asarray([0.5, 2.0, 1.0, 0.3]), -3.0
    t = samplax.from_logdensity(gaussian_logdensity(mean, std, off), 4)
    r = samplax.sample(t, method="parallel_tempering", seed=1, num_chains=8, num_warmup=500, num_samples=2000,
                       progress=False)
    true = gaussian_log_Z(np.asarray(std), off, 4)
    assert abs(r.log_Z - true) <= 5 * r.log_Z_se, (r.log_Z, true, r.log_Z_se, r.extra["log_Z_runs"])
    assert r.log_Z_se < 0.1
    assert np.all(np.abs(r.diagnostics["mean"] - np.asarray(mean)) <= 5 * r.diagnostics["mcse_mean"])
    assert np.all(np.abs(r.diagnostics["sd"] - np.asarray(std)) <= 5 * r.diagnostics["mcse_sd"])


@pytest.mark.slow
def test_bimodal_where_nuts_fails():
    """Plain NUTS chains stay in the mode they start in (so its mean is wrong); PT's beta = 1 replica is right."""
    t = samplax.from_logdensity(bimodal_logdensity, D)
    nuts = samplax.sample(t, method="nuts", seed=0, num_chains=4, num_warmup=300, num_samples=300, progress=False,
                          init=np.stack([np.full(D, MU), np.full(D, -MU)] * 2))
    frac = (nuts.samples.sum(-1) > 0).mean(axis=1)
    assert set(np.round(frac, 6).tolist()) == {0.0, 1.0}  # no chain ever switched mode
    r = samplax.sample(t, method="parallel_tempering", seed=2, num_chains=4, num_warmup=1000, num_samples=3000,
                       progress=False)
    truth = (2 * W - 1) * MU
    assert np.all(np.abs(r.diagnostics["mean"] - truth) <= 5 * r.diagnostics["mcse_mean"])
    assert abs(nuts.diagnostics["mean"][0] - truth) > 5 * r.diagnostics["mcse_mean"][0]
    assert abs(r.log_Z) <= 5 * r.log_Z_se
