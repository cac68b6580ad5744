"""Tempered SMC: adaptive schedule (BlackJAX issue 914 regression), unbiasedness of Z, log Z and moments."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.smc import paths, resampling, tempered
from smc_helpers import gaussian_log_Z, gaussian_logdensity, gmm25


# ----------------------------------------------------------------- schedule solver
def test_next_beta_uses_the_reweighting_sign_issue_914(key):
    """Cauchy prior, Gaussian likelihood at 2: the solved step must hit the CESS target with +delta * loglik."""
    n = 8192
    u = jax.random.uniform(key, (n,))
    x = jnp.tan(jnp.pi * (u - 0.5))
    loglik = -0.5 * ((x - 2.0) / 0.5) ** 2
    lw = jnp.full((n,), -jnp.log(n))
    rho = 0.5
    beta1 = tempered.next_beta(jnp.asarray(0.0), lw, loglik, jnp.zeros(n), rho)
    assert 0.0 < float(beta1) < 1.0
    cess_right = resampling.conditional_ess(lw, beta1 * loglik) / n
    cess_wrong = resampling.conditional_ess(lw, -beta1 * loglik) / n
    assert abs(float(cess_right) - rho) < 1e-6 * rho
    assert abs(float(cess_wrong) - rho) > 0.1 * rho  # the test would catch a flipped sign
    # from an intermediate beta with non-uniform weights the same holds
    lw2 = resampling.normalize(0.3 * loglik)
    beta2 = tempered.next_beta(jnp.asarray(0.3), lw2, loglik, jnp.zeros(n), 0.95)
    c2 = resampling.conditional_ess(lw2, (beta2 - 0.3) * loglik) / resampling.conditional_ess(lw2, 0 * loglik)
    assert 0.3 < float(beta2) < 1.0 and abs(float(c2) - 0.95) < 1e-6


def test_next_beta_ignores_constant_offsets_and_jumps_to_one(key):
    n = 500
    x = jax.random.normal(key, (n,))
    lw = jnp.full((n,), -jnp.log(n))
    ll = -0.5 * (x - 1.0) ** 2
    b = [float(tempered.next_beta(jnp.asarray(0.0), lw, ll + c, jnp.zeros(n), 0.8)) for c in (-1e6, 0.0, 1e6)]
    assert np.allclose(b, b[0], rtol=1e-6)
    # a flat log-likelihood is reached in one step
    assert float(tempered.next_beta(jnp.asarray(0.2), lw, jnp.zeros(n) + 5.0, jnp.zeros(n), 0.8)) == 1.0


_SCALES = [(1e-8, 0.0), (1e-3, -1e6), (1.0, 0.0), (1.0, 1e6), (1e3, -50.0), (1e6, 0.0), (1e8, 1e3)]


def test_schedule_always_reaches_one_in_bounded_steps(key):
    """Huge, tiny, negative and positive log-likelihood increments: beta reaches 1 in a bounded number of steps."""
    cfg = tempered.TemperedConfig(num_particles=256, kernel="rwm", num_mcmc_steps=2, max_steps=300)
    ref = paths.make_reference(1, 0.0, 5.0)

    def one(k, scale, shift):
        def lp(x):
            return shift - scale * 0.5 * jnp.sum(((x - 2.0) / 0.5) ** 2)
        return tempered.run(k, lp, ref, cfg)

    scales = jnp.asarray([s for s, _ in _SCALES])
    shifts = jnp.asarray([c for _, c in _SCALES])
    out = jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))(key, scales, shifts)
    steps = np.asarray(out.num_steps)
    betas = np.asarray(out.betas)
    for j, (scale, shift) in enumerate(_SCALES):
        assert betas[j, steps[j]] == 1.0, (scale, shift, steps[j])
        b = betas[j, : steps[j] + 1]
        assert np.all(np.diff(b) > 0)
        # log-information bound: ~ sqrt(d) log(precision ratio) steps, far below max_steps
        assert steps[j] <= 80, (scale, shift, steps[j])
        assert np.isfinite(np.asarray(out.state.log_Z)[j])
    print("steps per (scale, shift):", dict(zip(_SCALES, steps.tolist())))


# --------------------------------------------------------------- unbiasedness of Z
def test_Z_is_unbiased_gaussian_path(key):
    """Fixed schedule, fixed kernel, resampling every step: E[Z_hat] = Z (Del Moral 2004), over 4000 vmapped seeds."""
    d, n, reps = 2, 16, 4000
    mean, std, offset = jnp.asarray([1.0, -0.5]), jnp.asarray([0.7, 0.4]), 0.3
    lp = gaussian_logdensity(mean, std, offset)
    true = gaussian_log_Z(np.asarray(std), offset, d)
    ref = paths.make_reference(d, 0.0, 2.0)
    cfg = tempered.TemperedConfig(num_particles=n, kernel="rwm", num_mcmc_steps=2, adaptive=False,
                                  ess_threshold=1.0, resampling="multinomial", adapt_step_size=False,
                                  adapt_mass_matrix=False)
    sched = jnp.asarray([0.0, 0.05, 0.15, 0.35, 0.65, 1.0])
    run = jax.jit(jax.vmap(lambda k: tempered.run(k, lp, ref, cfg, sched, 0.8).state.log_Z))
    log_z = np.asarray(run(jax.random.split(key, reps)))
    ratio = np.exp(log_z - true)
    se = ratio.std(ddof=1) / np.sqrt(reps)
    assert abs(ratio.mean() - 1.0) <= 4.5 * se, (ratio.mean(), se)
    # and the test has power: log Z_hat itself is biased downwards (Jensen) by about var/2
    assert np.mean(log_z - true) < 0


# ---------------------------------------------------------- end to end, default options
@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_sample_smc_default_gmm25_log_Z_and_moments():
    target = gmm25()
    r = samplax.sample(target, method="smc", seed=0, num_chains=8)
    assert r.samples.shape == (8, 1000, 2)
    assert r.log_Z is not None and r.log_Z_se is not None and r.log_Z_se > 0
    assert r.cost["num_logdensity_evals"] > 0 and r.cost["num_grad_evals"] > 0
    assert abs(r.log_Z - 0.0) <= 5 * r.log_Z_se, (r.log_Z, r.log_Z_se, r.extra["log_Z_runs"])
    assert r.log_Z_se < 0.1
    assert all(b[-1] == 1.0 for b in r.extra["schedules"])
    gt = target.ground_truth()
    # moments: per-run means; MCSE from the spread over the 8 independent runs
    for f, truth in ((lambda s: s, gt.mean), (lambda s: s**2, gt.std**2 + gt.mean**2)):
        per_run = f(r.samples).mean(axis=1)  # [runs, 2]
        est = per_run.mean(0)
        mcse = per_run.std(0, ddof=1) / np.sqrt(per_run.shape[0])
        assert np.all(np.abs(est - truth) <= 5 * mcse), (est, truth, mcse)
    # every mode is populated (25 modes, 8000 particles)
    nearest = np.argmin(((r.samples.reshape(-1, 1, 2) - np.asarray(target.fn.__globals__["GMM25_MEANS"])) ** 2
                         ).sum(-1), axis=1)
    assert len(np.unique(nearest)) == 25
    assert "log Z" in r.summary()


def test_bad_options():
    t = samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), 3)
    with pytest.raises(ValueError, match="target_cess"):
        samplax.sample(t, method="smc", target_cess=1.5)
    with pytest.raises(ValueError, match="kernel"):
        samplax.sample(t, method="smc", kernel="gibbs")
    with pytest.raises(ValueError, match="reference_scale"):
        samplax.sample(t, method="smc", reference_scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="schedule"):
        samplax.sample(t, method="ais", schedule=[0.0, 0.7, 0.5, 1.0])
    with pytest.raises(ValueError, match="multiple of chain_length"):
        samplax.sample(t, method="waste_free_smc", num_samples=1001, chain_length=20)
    with pytest.raises(TypeError, match="unknown option"):
        samplax.sample(t, method="smc", num_particles=10)


def test_init_refused_and_progress_lines(capfd):
    t = samplax.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), 2)
    for m in ("smc", "ais", "nested_sampling"):
        with pytest.raises(ValueError, match="init is not supported"):
            samplax.sample(t, method=m, init=np.zeros(2), num_samples=50)
    assert "[samplax" not in capfd.readouterr().err  # nothing printed before the refusal
    samplax.sample(t, method="smc", seed=0, num_chains=2, num_samples=100, progress=True, kernel="rwm")
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "[samplax smc/" in ln]
    # not a line per temperature and run: compile, running, the final line (with the last temperature's
    # report), and at most a heartbeat line (tests/run/test_progress.py checks the display itself)
    assert 3 <= len(lines) <= 5, lines
    assert "runs 2/2 100%" in lines[-1] and "temperature" in lines[-1] and "beta 1," in lines[-1]
