"""method="auto": correct against ground truth, early-stopped warm-up, honest warnings."""
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.postprocess import divergence_concentration

Z = 5.0


def _check(r, gt):
    d = r.diagnostics
    se = 0.0 if gt.mean_se is None else np.asarray(gt.mean_se)
    z = np.abs(d["mean"] - gt.mean) / np.sqrt(d["mcse_mean"] ** 2 + se**2)
    assert np.max(z) < Z, z
    sse = 0.0 if gt.std_se is None else np.asarray(gt.std_se)
    zs = np.abs(d["sd"] - gt.std) / np.sqrt(d["mcse_sd"] ** 2 + sse**2)
    assert np.max(zs) < Z, zs


def test_auto_correlated_gaussian():
    t = samplax.targets.get("correlated_gaussian", dim=5, rho=0.7)
    r = samplax.sample(t, "auto", seed=0, num_chains=4, num_warmup=600, num_samples=500, progress=False)
    _check(r, t.ground_truth())
    assert r.extra["warmup_converged"] and r.extra["warmup_steps"] < 600
    assert r.cost["num_grad_evals"] > 0 and not r.warnings


def test_auto_eight_schools():
    t = samplax.targets.get("eight_schools")
    r = samplax.sample(t, "auto", seed=0, num_chains=4, num_warmup=600, num_samples=500, progress=False)
    _check(r, t.ground_truth())


def test_auto_counts_every_gradient():
    t = samplax.targets.get("std_gaussian", dim=3)
    r = samplax.sample(t, "auto", seed=0, num_chains=2, num_warmup=300, num_samples=100, progress=False)
    n_sample = int(np.sum(r.stats["n_steps"]))
    assert r.cost["num_grad_evals"] > n_sample + 2 * r.extra["warmup_steps"]  # warm-up >= 1 grad per step


def test_auto_bad_options():
    t = samplax.targets.get("std_gaussian", dim=2)
    with pytest.raises(ValueError, match="check_every"):
        samplax.sample(t, "auto", check_every=7, progress=False)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        samplax.sample(t, "auto", checkpoint_dir="/tmp/x", progress=False)


def test_divergence_concentration_names_the_region():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 500, 3))
    div = np.zeros((2, 500), bool)
    div[q[..., 1] < -1.2] = True  # divergences only at small values of quantity 1
    out = divergence_concentration(q, div, ["a", "tau", "c"])
    assert out and out[0]["name"] == "tau" and out[0]["side"] == "small"
    div2 = rng.random((2, 500)) < 0.05  # unrelated to the draws
    assert divergence_concentration(q, div2, ["a", "tau", "c"]) == []


@pytest.mark.slow
def test_auto_centered_eight_schools_warns_small_tau():
    y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sig = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def lp(z):
        mu, logtau, th = z[0], z[1], z[2:]
        tau = jnp.exp(logtau)
        return (-0.5 * (mu / 5) ** 2 - 0.5 * (tau / 5) ** 2 + logtau
                - jnp.sum(0.5 * ((th - mu) / tau) ** 2 + logtau) - jnp.sum(0.5 * ((y - th) / sig) ** 2))

    t = samplax.from_logdensity(lp, (10,))
    r = samplax.sample(t, "auto", seed=0, num_chains=4, num_warmup=1000, num_samples=1000, progress=False)
    conc = [w for w in r.warnings if w["code"] == "divergence_concentration"]
    assert conc and conc[0]["value"] == "x[1]" and "small" in conc[0]["message"]


@pytest.mark.slow
def test_auto_funnel_right_or_warns():
    t = samplax.targets.get("funnel")
    r = samplax.sample(t, "auto", seed=0, num_chains=4, num_warmup=1000, num_samples=1000, progress=False)
    sd0 = float(np.std(r.quantities[..., 0]))
    right = abs(sd0 - 3.0) < Z * float(r.diagnostics["mcse_sd"][0])
    assert right or r.warnings
