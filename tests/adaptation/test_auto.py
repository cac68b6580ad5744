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


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_auto_correlated_gaussian():
    t = samplax.targets.get("correlated_gaussian", dim=5, rho=0.7)
    r = samplax.sample(t, "auto", seed=0, num_chains=4, num_warmup=600, num_samples=500, progress=False)
    _check(r, t.ground_truth())
    assert r.extra["warmup_converged"] and r.extra["warmup_steps"] < 600
    assert r.cost["num_grad_evals"] > 0 and not r.warnings


@pytest.mark.slow  # 15-20 s on an idle core; the default tier's 15-minute budget
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


def _centred_eight_schools():
    y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sig = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def lp(z):  # mu ~ N(0, 5^2), tau ~ half-N(0, 5^2) (on log tau), theta_j ~ N(mu, tau^2), y_j ~ N(theta_j, sig_j^2)
        mu, logtau, th = z[0], z[1], z[2:]
        tau = jnp.exp(logtau)
        return (-0.5 * (mu / 5) ** 2 - 0.5 * (tau / 5) ** 2 + logtau
                - jnp.sum(0.5 * ((th - mu) / tau) ** 2 + logtau) - jnp.sum(0.5 * ((y - th) / sig) ** 2))

    # exact moments of (mu, log tau, theta_1): theta integrates out, y_j | mu, tau ~ N(mu, sig_j^2 + tau^2),
    # leaving a 2-D density on (mu, log tau) for quadrature; E[theta_1 | mu, tau] is the precision-weighted mean
    mu = np.linspace(-25.0, 35.0, 1201)[:, None]
    lt = np.linspace(-14.0, 4.0, 1801)[None, :]
    tau2 = np.exp(2 * lt)
    v = sig[:, None, None] ** 2 + tau2
    logp = (-0.5 * (mu / 5) ** 2 - 0.5 * tau2 / 25 + lt
            - np.sum(0.5 * (y[:, None, None] - mu) ** 2 / v + 0.5 * np.log(v), axis=0))
    w = np.exp(logp - logp.max())
    w /= w.sum()
    th1 = (y[0] / sig[0] ** 2 + mu / tau2) / (1 / sig[0] ** 2 + 1 / tau2)
    mean = {0: np.sum(w * mu), 1: np.sum(w * lt), 2: np.sum(w * th1)}
    sd_lt = np.sqrt(np.sum(w * (lt - mean[1]) ** 2))
    return samplax.from_logdensity(lp, (10,)), mean, sd_lt


@pytest.mark.slow
def test_auto_centred_eight_schools_is_right_and_says_what_it_did():
    """Centred eight schools: NUTS at target_accept 0.8 diverges at small tau and is biased there.  auto
    raises target_accept and, seeing the funnel (E-BFMI), samples with its coordinate-wise fallback:
    mu, log tau and theta_1 agree with quadrature, and the run says the fallback was used."""
    t, mean, sd_lt = _centred_eight_schools()
    r = samplax.sample(t, "auto", seed=0, num_chains=4, num_warmup=1000, num_samples=1000, progress=False)
    d = r.diagnostics
    for j, m in mean.items():
        assert abs(d["mean"][j] - m) < Z * d["mcse_mean"][j], (j, d["mean"][j], m)
    assert abs(d["sd"][1] - sd_lt) < Z * d["mcse_sd"][1], (d["sd"][1], sd_lt)
    codes = {w["code"] for w in r.warnings}
    assert r.extra["fallback"] is not None and "auto_fallback" in codes
    assert r.cost["num_logdensity_evals"] == r.cost["num_grad_evals"] + r.extra["fallback"]["logdensity_evals"]


def test_divergence_region_counts_the_draws_dropped_by_a_raise():
    """auto's divergence_concentration warning pools the kept draws with the sampling phases dropped when
    target_accept was raised: 4 divergences at small x[1] among the kept draws are too few to name a
    region (5 are needed), 4 more in a dropped phase are enough."""
    from samplax.methods.auto import nuts_divergence_region

    rng = np.random.default_rng(1)
    t = samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), (3,))
    kept = rng.standard_normal((2, 400, 3))
    div = np.zeros((2, 400), bool)
    div[np.unravel_index(np.argsort(kept[..., 1], axis=None)[:4], div.shape)] = True
    assert nuts_divergence_region(t, kept, div, [], "x") is None
    drop_pos = rng.standard_normal((300, 2, 3))  # [steps, chains, d]
    drop_div = np.zeros((300, 2), bool)
    drop_div[np.unravel_index(np.argsort(drop_pos[..., 1], axis=None)[:4], drop_div.shape)] = True
    w = nuts_divergence_region(t, kept, div, [(drop_pos, drop_div)], "NUTS gave up")
    assert w["code"] == "divergence_concentration" and w["value"] == "x[1]"
    assert "small values of x[1]" in w["message"] and "NUTS gave up" in w["message"]


@pytest.mark.slow
def test_auto_funnel_right_or_warns():
    t = samplax.targets.get("funnel")
    r = samplax.sample(t, "auto", seed=0, num_chains=4, num_warmup=1000, num_samples=1000, progress=False)
    sd0 = float(np.std(r.quantities[..., 0]))
    right = abs(sd0 - 3.0) < Z * float(r.diagnostics["mcse_sd"][0])
    assert right or r.warnings


def test_pooled_low_rank_is_exact_for_a_gaussian():
    """Draws and gradients of a Gaussian determine its covariance exactly from 2 d draws."""
    from samplax.adaptation.fisher import LowRankMetric
    from samplax.adaptation.auto_rules import pooled_low_rank
    from samplax.mcmc.metrics import low_rank_to_dense

    rng = np.random.default_rng(3)
    d = 6
    a = rng.normal(size=(d, d))
    cov = a @ a.T + 0.5 * np.eye(d)
    mu = rng.normal(size=d)
    x = rng.multivariate_normal(mu, cov, size=2 * d)
    g = -np.linalg.solve(cov, (x - mu).T).T
    m, info = pooled_low_rank(x, g, max_rank=d, cutoff=1.01, gamma=0.0)
    assert isinstance(m, LowRankMetric) and info["kept"] == d
    np.testing.assert_allclose(np.asarray(low_rank_to_dense(m)), cov, rtol=1e-8, atol=1e-10)
    # a diagonal Gaussian needs no correction
    x = rng.normal(size=(40, d)) * np.arange(1, d + 1)
    m, info = pooled_low_rank(x, -x / np.arange(1, d + 1) ** 2, max_rank=d, cutoff=2.0)
    assert m is None and info["kept"] == 0
    # too few draws: no estimate
    m, info = pooled_low_rank(x[:d], -x[:d], max_rank=d, cutoff=2.0)
    assert m is None and "fewer" in info["reason"]


@pytest.mark.slow  # 20-45 s: the default tier must fit 15 min on 2 cores
def test_auto_switches_to_low_rank_on_a_strongly_correlated_target():
    """rho = 0.95 in 8-d: the diagonal metric mixes badly; auto must switch and be right."""
    t = samplax.targets.get("correlated_gaussian", dim=8, rho=0.95)
    r = samplax.sample(t, "auto", seed=1, num_chains=4, num_warmup=1000, num_samples=500, progress=False)
    assert r.extra["metric"].startswith("fisher_low_rank"), r.extra["metric"]
    _check(r, t.ground_truth())
    assert not r.warnings, r.warnings
    off = samplax.sample(t, "auto", seed=1, num_chains=4, num_warmup=1000, num_samples=500, progress=False,
                         low_rank=False)
    assert off.extra["metric"] == "fisher_diag"
    def ess_per_grad(res):
        return float(np.min(res.diagnostics["ess_bulk"])) / res.cost["num_grad_evals"]

    assert ess_per_grad(r) > 3 * ess_per_grad(off), (ess_per_grad(r), ess_per_grad(off))


def test_stuck_chain_rule():
    from samplax.adaptation.auto_rules import stuck_chains

    assert stuck_chains([-1e111, -1e60, -10.0, -12.0], [1e-56, 1e-30, 0.8, 0.7], 4) == [0, 1]
    assert stuck_chains([-10.0, -11.0, -9.0, -12.0], [0.5, 0.6, 0.7, 0.8], 4) == []
    # a chain in a minor mode (log-density a few hundred lower) is left alone
    assert stuck_chains([-10.0, -400.0, -9.0, -12.0], [0.5, 0.6, 0.7, 0.8], 4) == []
    # more than half the chains only when they are hopeless (arma11: one chain found the mass, three
    # Stan-style starts sit at -1e7 and below), never all of them
    assert stuck_chains([-1e4, -1e4, -1e4, -12.0], [0.5, 0.6, 0.7, 0.8], 4) == []
    assert stuck_chains([-8.8e98, -1.1e7, 200.0, -2.0e7], [0.0, 0.6, 0.7, 0.6], 4) == [0, 1, 3]
    assert stuck_chains([-1e50, -1e50, -1e50, -1e50], [0.5, 0.6, 0.7, 0.8], 4) == []
    assert stuck_chains([-np.inf, -np.inf, -np.inf, -np.inf], [0.5, 0.6, 0.7, 0.8], 4) == []


def test_auto_restarts_chains_started_in_absurd_regions():
    """Finite but absurd initial points (log-density -1e100) must not freeze chains (arma11-like)."""
    t = samplax.targets.get("std_gaussian", dim=3)
    init = np.zeros((4, 3))
    init[0] = 1e50
    init[1] = -3e49
    r = samplax.sample(t, "auto", seed=0, num_chains=4, num_warmup=500, num_samples=500, init=init, progress=False)
    assert r.extra["warmup_resets"] and r.extra["warmup_resets"][0]["chains"] == [0, 1]
    _check(r, t.ground_truth())
    assert not r.warnings, r.warnings


def test_auto_raises_target_accept_when_sampling_diverges():
    """Sampling that diverges (banana: curvature grows along the ridge) goes back to warm-up with a higher
    target_accept; the dropped draws are warm-up draws and every gradient spent on them is counted."""
    from samplax.methods.auto import DIVERGENCE_MIN, MAX_TARGET_ACCEPT_RAISES

    t = samplax.targets.get("banana")
    r = samplax.sample(t, "auto", seed=0, num_chains=4, num_warmup=400, num_samples=400, keep_warmup=True,
                       progress=False, fallback=False)  # the raises alone (the fallback is tested below)
    raises = r.extra["target_accept_raised"]
    assert 1 <= len(raises) <= MAX_TARGET_ACCEPT_RAISES, raises
    expected = 0.8
    for q in raises:
        expected = 1.0 - (1.0 - expected) / 4.0
        assert q["divergences"] >= DIVERGENCE_MIN and q["target_accept"] == pytest.approx(expected)
    assert r.extra["target_accept"] == pytest.approx(expected)
    # the sampling that was kept diverges less often than the rule allows (or the raises ran out)
    n_div = int(np.sum(r.stats["diverging"]))
    assert n_div < DIVERGENCE_MIN or len(raises) == MAX_TARGET_ACCEPT_RAISES
    # every warm-up step, dropped sampling steps included, is in the warm-up draws
    assert r.warmup_samples.shape[1] == r.extra["warmup_steps"] > raises[-1]["after_step"]
    # the cost counts every leapfrog step of every transition (warm-up, dropped and kept sampling) plus the
    # initialization's gradients, which a run without divergences pays as well
    steps = int(np.sum(r.warmup_stats["n_steps"]) + np.sum(r.stats["n_steps"]))
    assert steps < r.cost["num_grad_evals"] < steps + 4 * 200


def test_geometry_fallback_rule():
    """Which NUTS runs auto replaces by coordinate-wise slice sampling (synthetic diagnostics)."""
    from samplax.adaptation.auto_rules import geometry_fallback_reason

    rng = np.random.default_rng(0)
    good_x = rng.normal(size=(4, 1000, 2))
    e_iid = rng.normal(size=(4, 1000))  # E-BFMI about 2
    e_sticky = np.cumsum(rng.normal(size=(4, 1000)) * 0.05, axis=1)  # a random walk: E-BFMI far below 0.3
    no_div = np.zeros((4, 1000), bool)
    some_div = no_div.copy()
    some_div[1, 10] = True
    args = (2, 4, 1e-3, 0.3, 100)
    assert geometry_fallback_reason(good_x, e_iid, no_div, 0, *args) is None
    assert "E-BFMI" in geometry_fallback_reason(good_x, e_sticky, no_div, 0, *args)
    many = no_div.copy()
    many[:, ::100] = True  # 40 divergences in 4000
    assert geometry_fallback_reason(good_x, e_iid, many, 1, *args) is None  # one raise left: the raise rule acts
    assert "raised 2 times" in geometry_fallback_reason(good_x, e_iid, many, 2, *args)
    # divergences left after a raise: only with too few effective draws (a slowly mixing chain)
    slow_x = np.cumsum(rng.normal(size=(4, 1000, 2)), axis=1)
    assert geometry_fallback_reason(good_x, e_iid, some_div, 1, *args) is None
    assert "bulk ESS" in geometry_fallback_reason(slow_x, e_iid, some_div, 1, *args)
    assert geometry_fallback_reason(slow_x, e_iid, no_div, 1, *args) is None  # slow mixing alone is no reason
    assert geometry_fallback_reason(slow_x, e_iid, some_div, 0, *args) is None


@pytest.mark.slow  # 3 x (funnel 10-30 s + banana 10 s)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_right_on_funnel_and_banana(seed):
    """Neal's funnel (10-d) and the banana, without reparameterization: auto's answer within 5 MCSE.

    On the funnel the checks are v's mean and sd, every mean, and E log|x_i| = E v / 2 - (gamma + log 2) / 2
    (log|x_i| = v / 2 + log|z|): the sd of x_i (sqrt(e^4.5) = 9.49) is no test of any sampler at this length,
    since x_i^4 has mean 3 e^18 and the sd's sampling distribution is ruled by the few draws with v > 6.
    """
    from samplax.diagnostics import ess_bulk, mcse_mean, mcse_sd

    funnel = samplax.targets.get("funnel")
    r = samplax.sample(funnel, "auto", seed=seed, num_chains=4, num_warmup=1000, num_samples=1000, progress=False)
    x = np.asarray(r.samples)
    assert r.extra["fallback"] is not None and "E-BFMI" in r.extra["fallback"]["reason"]
    assert r.cost["num_logdensity_evals"] > r.cost["num_grad_evals"] + r.extra["fallback"]["logdensity_evals"] - 5
    assert float(ess_bulk(x[..., :1])[0]) >= 100
    assert np.all(np.abs(x.mean(axis=(0, 1))) < 5 * mcse_mean(x))
    assert abs(x[..., 0].std(ddof=1) - 3.0) < 5 * float(mcse_sd(x[..., :1])[0])
    log_abs = np.log(np.abs(x[..., 1:]))
    truth = -(np.euler_gamma + np.log(2.0)) / 2.0
    assert np.all(np.abs(log_abs.mean(axis=(0, 1)) - truth) < 5 * mcse_mean(log_abs))

    banana = samplax.targets.get("banana")
    r = samplax.sample(banana, "auto", seed=seed, num_chains=4, num_warmup=1000, num_samples=1000, progress=False)
    x = np.asarray(r.samples)
    gt = banana.ground_truth()
    assert float(np.min(ess_bulk(x))) >= 100
    assert np.all(np.abs(x.mean(axis=(0, 1)) - gt.mean) < 5 * mcse_mean(x))
    assert np.all(np.abs(x.reshape(-1, 2).std(axis=0, ddof=1) - gt.std) < 5 * mcse_sd(x))


POSTERIORS = [("pdb:arma-arma11", 1), ("pdb:gp_pois_regr-gp_pois_regr", 0), ("pdb:kilpisjarvi_mod-kilpisjarvi", 0),
              ("pdb:garch-garch11", 0), ("pdb:earnings-logearn_interaction", 0), ("pdb:eight_schools-eight_schools_noncentered", 2)]


@pytest.mark.slow  # 5-40 s each
@pytest.mark.parametrize("name,seed", POSTERIORS, ids=[p[0] for p in POSTERIORS])
def test_auto_right_on_posteriordb(name, seed):
    """posteriordb reference posteriors (10 000 Stan draws), the standard run: auto's means and sds within Z_PASS
    of the reference, every bulk ESS >= 100 (arma11 seed 1 and gp_pois_regr were wrong before the stuck-chain and
    divergence rules)."""
    from samplax.bench.harness import Z_PASS, evaluate

    target = samplax.targets.get(name)
    r = samplax.sample(target, "auto", seed=seed, num_chains=4, num_warmup=1000, num_samples=1000, progress=False)
    row = evaluate(r, target)
    assert row["max_z_mean"] < Z_PASS and row["max_z_sd"] < Z_PASS, row
    assert float(np.min(r.diagnostics["ess_bulk"])) >= 100, row


@pytest.mark.slow  # 10 s
def test_auto_without_fallback_names_the_geometry():
    funnel = samplax.targets.get("funnel")
    r = samplax.sample(funnel, "auto", seed=1, num_chains=4, num_warmup=1000, num_samples=1000, progress=False,
                       fallback=False)
    assert r.extra["fallback"] is None
    w = [w for w in r.warnings if w["code"] == "auto_geometry"]
    assert len(w) == 1 and "E-BFMI" in w[0]["message"] and "fallback=False" in w[0]["message"]
    assert r.cost["num_logdensity_evals"] == r.cost["num_grad_evals"]
