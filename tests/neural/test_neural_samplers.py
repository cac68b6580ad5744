"""Learned diffusion samplers (pis, dds) through samplax.sample: log Z against the exact value, moments,
resume, the non-finite stop and bad input.

log Z: each method/loss must land within Z_CLT reported standard errors of the exact log Z (the delta-method
standard error of the importance-sampling estimate; |N(0, 1)| > 3.29 has probability 1e-3) AND within
ABS_TOL.  Moments: the equal-weight draws' mean within Z_CLT sd / sqrt(ESS) of the exact mean, with the
ESS the run reports.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.neural import SamplerConfig
from samplax.run import NonFiniteLossError
from samplax.targets.gaussian import Gaussian
from neural_helpers import assert_same_run, interrupted_and_resumed, NoGradient, gaussian_target

Z_CLT = 3.29
ABS_TOL = 0.05

SMALL = dict(batch_size=32, num_time_steps=8, width=32, depth=2)




def budget(steps, batch_size=32, num_time_steps=8, langevin=True, method="pis", loss="kl"):
    """``training_evals`` for ``steps`` training steps."""
    cfg = SamplerConfig(reference=method, loss=loss, batch_size=batch_size, num_time_steps=num_time_steps,
                        langevin=langevin and method != "cmcd")
    return steps * batch_size * cfg.evals_per_path()[0]


CASES = [(m, loss) for m in ("pis", "dds", "cmcd") for loss in ("kl", "logvar", "tb")]
DEFAULT_TIER = {("pis", "kl")}


def _check_log_z_and_moments(r, target, label):
    gt = target.ground_truth()
    err = r.log_Z - gt.log_Z
    se = r.log_Z_se
    print(f"{label}: log Z error {err:+.4f}, reported se {se:.4f}, ESS {r.extra['ess']:.0f} "
          f"of {r.extra['proposal_log_weights'].size}, ELBO {r.extra['elbo']:.4f}")
    assert np.isfinite(se) and se > 0
    assert abs(err) <= Z_CLT * se, f"{label}: log Z error {err:.4f} outside {Z_CLT} x se {se:.4f}"
    assert abs(err) <= ABS_TOL, f"{label}: log Z error {err:.4f} above {ABS_TOL}"
    assert r.extra["elbo"] <= r.log_Z + 1e-9
    draws = r.samples.reshape(-1, 2)
    tol = Z_CLT * gt.std / np.sqrt(r.extra["ess"])
    np.testing.assert_array_less(np.abs(draws.mean(0) - gt.mean), tol)


RUN = dict(num_chains=2, num_samples=2000, training_evals=budget(150), **SMALL)


@pytest.mark.parametrize("method,loss", [pytest.param(*c, marks=() if c in DEFAULT_TIER else pytest.mark.slow)
                                         for c in CASES])
def test_log_z_within_its_standard_error(method, loss):
    target = gaussian_target()
    run = {**RUN, "training_evals": budget(150, method=method, loss=loss)}
    r = samplax.sample(target, method, seed=0, progress=False, loss=loss, **run)
    _check_log_z_and_moments(r, target, f"{method}/{loss}")
    c = r.cost
    steps = c["num_training_steps"]
    assert steps == 150
    K = 8
    lp, grad = (K + 1 + (loss == "kl"),) * 2 if method == "cmcd" else (K + 1, K + (loss == "kl"))
    assert c["training_logdensity_evals"] == steps * 32 * lp and c["training_grad_evals"] == steps * 32 * grad
    lp, grad = (K + 1, K + 1) if method == "cmcd" else (K + 1, K)
    assert c["sampling_logdensity_evals"] == 2 * 2000 * lp and c["sampling_grad_evals"] == 2 * 2000 * grad
    assert c["num_logdensity_evals"] == c["training_logdensity_evals"] + c["sampling_logdensity_evals"]
    assert c["num_grad_evals"] == c["training_grad_evals"] + c["sampling_grad_evals"]
    assert r.extra["training"]["metrics"]["loss"].shape == (150,)
    if loss == "tb":
        assert abs(r.extra["learned_log_Z"] - target.ground_truth().log_Z) < 0.5


@pytest.mark.slow
def test_training_improves_on_the_reference():
    """Trained, the sampler's ESS is well above the reference process's (an untrained drift)."""
    target = gaussian_target()
    kw = dict(num_chains=1, num_samples=2000, progress=False, **SMALL)
    untrained = samplax.sample(target, "pis", seed=0, training_evals=budget(1), learning_rate=1e-12, **kw)
    trained = samplax.sample(target, "pis", seed=0, training_evals=budget(150), **kw)
    print("ESS untrained", untrained.extra["ess"], "trained", trained.extra["ess"])
    assert trained.extra["ess"] > 1.5 * untrained.extra["ess"]


def test_resume_after_a_checkpoint_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """Interrupted after 2 of 10 training chunks, then resumed: the same run bit for bit (the programs of the
    pis/kl case above are reused)."""
    target = gaussian_target()
    kw = dict(loss="kl", **RUN)
    ref, part, resumed = interrupted_and_resumed(monkeypatch, tmp_path, target, "pis", **kw)
    assert not part.complete and part.cost["num_training_steps"] == 30 and part.samples.shape[1] == 0
    assert_same_run(resumed, ref, ("num_logdensity_evals", "num_grad_evals", "training_logdensity_evals", "num_training_steps"))


def test_nan_energy_is_a_clear_error_at_step_0():
    """A log-density that is NaN everywhere (a NaN in the Gaussian's mean; the pis/kl programs are reused)."""
    bad = gaussian_target()
    bad = Gaussian(mean=bad.mean.at[0].set(jnp.nan), chol=bad.chol, label=bad.label, chol_inv=bad.chol_inv)
    with pytest.raises(NonFiniteLossError, match="non-finite training at step 0: the loss is nan") as info:
        samplax.sample(bad, "pis", seed=0, progress=False, loss="kl", **RUN)
    assert info.value.step == 0 and info.value.metrics["loss"].shape == (0,)


class NaNBeyond(samplax.Target):
    """A standard Gaussian whose log-density is NaN where ``x[0] > edge``."""

    edge: float = 1.5

    def logdensity(self, x):
        return jnp.where(x[0] > self.edge, jnp.nan, -0.5 * jnp.sum(x**2))

    @property
    def event_shape(self):
        return (2,)


@pytest.mark.slow
def test_nan_energy_stops_training_with_the_step_and_the_last_good_parameters():
    with pytest.raises(NonFiniteLossError, match=r"non-finite training at step \d+") as info:
        samplax.sample(NaNBeyond(), "pis", seed=0, num_samples=10, progress=False, loss="logvar",
                       training_evals=budget(20), **SMALL)
    err = info.value
    assert f"step {err.step}" in str(err)
    leaves = jax.tree.leaves(err.state["params"])
    assert leaves and all(np.all(np.isfinite(np.asarray(a))) for a in leaves)
    assert err.metrics["loss"].shape == (err.step,)




def test_bad_input_is_a_clear_error():
    t = gaussian_target()
    with pytest.raises(ValueError, match="training_evals=100 is too small for one training step"):
        samplax.sample(t, "pis", training_evals=100, progress=False, **SMALL)
    with pytest.raises(ValueError, match="no gradient.*loss='kl'"):
        samplax.sample(NoGradient(), "pis", training_evals=budget(2), progress=False, **SMALL)
    with pytest.raises(ValueError, match="no gradient.*langevin=True"):
        samplax.sample(NoGradient(), "dds", loss="tb", training_evals=budget(2), progress=False, **SMALL)
    with pytest.raises(ValueError, match="langevin=True does not apply"):
        samplax.sample(t, "cmcd", langevin=True, progress=False, **SMALL)
    with pytest.raises(ValueError, match="no gradient.*CMCD"):
        samplax.sample(NoGradient(), "cmcd", loss="logvar", progress=False, **SMALL)
    with pytest.raises(ValueError, match="exploration=0.5 needs an off-policy loss"):
        samplax.sample(t, "dds", loss="kl", exploration=0.5, training_evals=budget(2), progress=False, **SMALL)
    with pytest.raises(ValueError, match="option loss='bogus' is invalid"):
        samplax.sample(t, "pis", loss="bogus", progress=False)
    with pytest.raises(ValueError, match="init"):
        samplax.sample(t, "pis", init=np.zeros(2), training_evals=budget(2), progress=False, **SMALL)
    with pytest.raises(ValueError, match="thinning"):
        samplax.sample(t, "pis", thinning=2, training_evals=budget(2), progress=False, **SMALL)


@pytest.mark.slow
def test_a_target_without_gradients_trains_with_an_off_policy_loss():
    r = samplax.sample(NoGradient(), "pis", loss="logvar", langevin=False, exploration=0.2, seed=0, num_chains=1,
                       num_samples=200, progress=False, training_evals=budget(5, langevin=False), **SMALL)
    assert r.cost["num_grad_evals"] == 0 and r.cost["num_training_steps"] == 5
    assert np.isfinite(r.log_Z) and abs(r.log_Z - np.log(2 * np.pi)) < 5 * r.log_Z_se + 0.2


@pytest.mark.slow
def test_gmm25_mode_coverage():
    """PIS (Langevin drift, log-variance loss) on the 25-mode grid mixture: every mode receives draws."""
    target = samplax.targets.get("gmm25")
    r = samplax.sample(target, "pis", seed=0, num_chains=1, num_samples=5000, progress=False, loss="logvar",
                       sigma=5.0, num_time_steps=32, batch_size=64, width=64,
                       training_evals=budget(400, 64, 32))
    means = np.asarray(target.means)
    x = r.samples.reshape(-1, 2)
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=25)
    print("gmm25 counts per mode", counts.tolist(), "log Z error", r.log_Z - target.ground_truth().log_Z,
          "se", r.log_Z_se, "ESS", r.extra["ess"])
    assert np.all(counts > 0.2 * x.shape[0] / 25), counts
    assert abs(r.log_Z - target.ground_truth().log_Z) < max(Z_CLT * r.log_Z_se, 0.1) + 0.1


@pytest.mark.parametrize("reference", ["pis", "dds"])
def test_reverse_paths_give_the_eubo_of_the_reference_process(reference):
    """With the drift at zero (an untrained DriftNet) the proposal is the reference process, whose time-T marginal
    is N(0, sigma^2 I) (PIS, T = 1; DDS, stationary); the path-space KLs reduce to those of the marginals.  For
    ``pi~ = Z N(m, s^2 I)``: ``EUBO = log Z + KL(N(m, s^2) || N(0, sigma^2))`` (reverse paths from exact draws)
    and ``ELBO = log Z - KL(N(0, sigma^2) || N(m, s^2))`` (forward paths), in closed form."""
    from samplax.neural.sde import DriftNet, log_weight, reverse_simulate, simulate
    from samplax.neural.plan import CONFIGURATIONS

    d, sigma, m, s, log_z = 3, 1.3, 0.6, 0.8, 1.7
    ref = CONFIGURATIONS[reference](8, sigma)
    model = DriftNet(jax.random.key(0), d, 16, 2, langevin=True)

    def logp(x):
        return log_z - 0.5 * jnp.sum(((x - m) / s) ** 2) - d * jnp.log(s) - 0.5 * d * jnp.log(2 * jnp.pi)

    n = 2000
    keys = jax.random.split(jax.random.key(1), n)
    exact = m + s * jax.random.normal(jax.random.key(2), (n, d))
    rev = jax.vmap(lambda k, x: reverse_simulate(model, ref, logp, k, x, langevin=True))(keys, exact)
    fwd = jax.vmap(lambda k: simulate(model, ref, logp, k, d, langevin=True))(keys)
    np.testing.assert_allclose(np.asarray(rev.xs[:, -1]), np.asarray(exact))
    lw_rev, lw_fwd = np.asarray(log_weight(rev), float), np.asarray(log_weight(fwd), float)
    kl_pq = d * (np.log(sigma / s) + (s**2 + m**2) / (2 * sigma**2) - 0.5)
    kl_qp = d * (np.log(s / sigma) + (sigma**2 + m**2) / (2 * s**2) - 0.5)
    for lw, expect in ((lw_rev, log_z + kl_pq), (lw_fwd, log_z - kl_qp)):
        assert abs(lw.mean() - expect) < Z_CLT * lw.std() / np.sqrt(n), (reference, lw.mean(), expect)
    if reference == "pis":  # the reverse path ends at the point mass x_0 = 0
        assert np.all(np.asarray(rev.xs[:, 0]) == 0.0)


def test_score_clip_bounds_the_gradient_the_transitions_use():
    """``score_clip`` reaches the paths: with a steep target the stored scores are clipped to it, and the
    option is validated by name."""
    from samplax.neural.sde import DriftNet, simulate

    cfg = SamplerConfig(reference="pis", num_time_steps=4, score_clip=2.5)
    ref = cfg.make_reference()
    assert ref.score_clip == 2.5

    def logp(x):
        return -50.0 * jnp.sum((x - 3.0) ** 2)  # gradient 100 * (3 - x): far above the clip near 0

    path = simulate(DriftNet(jax.random.key(0), 2, 8, 1), ref, logp, jax.random.key(1), 2, langevin=True)
    s = np.asarray(path.scores[:-1])
    assert np.max(np.abs(s)) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="score_clip"):
        samplax.sample(gaussian_target(), "pis", training_evals=10_000, score_clip=-1.0)


def test_score_clip_zeroes_nan_gradients_so_pis_starts_on_particle_targets():
    """PIS starts every path at the point mass 0, where a particle target's pair distances are 0 and its gradient
    is NaN (DW-4: training stopped with a NaN loss at step 0).  The NaN coordinates reach the drift as 0, so the
    path and its weight are finite (benchmarks/learned_samplers.md: pis on DW-4 before/after)."""
    from samplax.neural.sde import DriftNet, clipped_score, log_weight, simulate

    target = samplax.targets.get("dw4")
    lp = target.flat_logdensity()
    assert np.isnan(np.asarray(jax.grad(lp)(jnp.zeros(8)))).any()
    assert np.all(np.asarray(clipped_score(lp, jnp.zeros(8))) == 0.0)
    ref = SamplerConfig(reference="pis", num_time_steps=4, sigma=2.0).make_reference()
    path = simulate(DriftNet(jax.random.key(0), 8, 8, 1), ref, lp, jax.random.key(1), 8, langevin=True)
    assert np.all(np.isfinite(np.asarray(path.xs))) and np.isfinite(float(log_weight(path)))
