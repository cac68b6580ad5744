"""iDEM (samplax.neural.idem, method "idem"): the EGNN's equivariance, the MC score estimator, the path weights on
the VE core (also on the centre-of-mass-free subspace), bad input; slow: log Z within its standard error and moments
on a 2-D Gaussian, mode coverage on gmm25, checkpoint/resume.

Statistical tolerances: Z_CLT = 3.29 reported standard errors (|N(0, 1)| > 3.29 has probability 1e-3).
"""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.metrics import mode_coverage
from samplax.neural.egnn import remove_mean
from samplax.neural.idem import IDEMConfig, ScoreNet, mc_score, ve_simulate
from samplax.neural.sde import log_weight, simulate, ve_reference
from neural_helpers import IDEM_SMALL, assert_same_run, gaussian_target, idem_gaussian_run, interrupted_and_resumed, \
    NoGradient

Z_CLT = 3.29




def randomized(model, key, scale=0.3):
    """``model`` with every array perturbed (the zero-initialized last layers too: a zero field is trivially
    equivariant)."""
    leaves, tree = jax.tree.flatten(model, is_leaf=lambda v: isinstance(v, jax.Array))
    keys = jax.random.split(key, len(leaves))
    out = [v + scale * jax.random.normal(k, v.shape, v.dtype) if isinstance(v, jax.Array) and v.ndim > 0 else v
           for v, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, out)


@pytest.mark.slow  # 2-5 s of compilation: the default tier is at its 15-minute budget
def test_egnn_score_is_equivariant():
    """Rotating / reflecting, permuting or translating the particles transforms the EGNN score accordingly
    (float64, round-off), and the score lies in the centre-of-mass-free subspace."""
    n, D = 4, 3
    net = ScoreNet(jax.random.key(0), n * D, sigma_min=1e-3, sigma_max=3.0, network="egnn", particles=(n, D),
                   width=16, depth=2)
    net = randomized(net, jax.random.key(1))
    X = np.asarray(jax.random.normal(jax.random.key(2), (n, D)))
    u = 0.37
    Q, _ = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(3), (D, D))))
    Q = Q * np.sign(np.linalg.det(Q))  # a rotation; R a reflection
    R = np.diag([1.0, 1.0, -1.0]) @ Q
    perm = np.array([2, 0, 3, 1])
    shift = np.array([1.5, -2.0, 0.7])
    inputs = np.stack([X, X @ Q, X @ R, X[perm], X + shift]).reshape(5, n * D)

    def fields(model):
        return np.asarray(eqx.filter_jit(jax.vmap(lambda v: model(v, u)))(jnp.asarray(inputs))).reshape(5, n, D)

    F = fields(net)
    P = F[0]
    assert np.max(np.abs(P)) > 1e-3  # a non-trivial field
    np.testing.assert_allclose(P.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(F[1], P @ Q, atol=1e-10)
    np.testing.assert_allclose(F[2], P @ R, atol=1e-10)
    np.testing.assert_allclose(F[3], P[perm], atol=1e-10)
    np.testing.assert_allclose(F[4], P, atol=1e-10)
    # the MLP on the same particles is not equivariant (the checks above can fail)
    mlp = randomized(ScoreNet(jax.random.key(0), n * D, sigma_min=1e-3, sigma_max=3.0, network="mlp",
                              particles=(n, D), width=16, depth=2), jax.random.key(1))
    Fm = fields(mlp)
    assert np.max(np.abs(Fm[1] - Fm[0] @ Q)) > 1e-4


@pytest.mark.slow  # 2-5 s of compilation: the default tier is at its 15-minute budget
def test_mc_score_one_sample_is_the_gradient_and_many_converge_to_the_noised_score():
    """K = 1: the estimate is ``grad log pi(x + sigma u)`` exactly.  Large K on ``pi = N(m, v I)``: within
    4 delta-method standard errors (of the self-normalized estimate, from the same draws) of the noised
    target's score ``-(x - m) / (v + sigma^2)`` (the estimator's O(1/K) bias is far below that)."""
    m, v = jnp.asarray([0.5, -1.0]), 0.8

    def logp(y):
        return -0.5 * jnp.sum((y - m) ** 2) / v

    x, sigma, key = jnp.asarray([1.3, 0.2]), 0.6, jax.random.key(5)
    u = jax.random.normal(key, (1, 2))[0]
    np.testing.assert_array_equal(np.asarray(mc_score(logp, key, x, sigma, 1)),
                                  np.asarray(jax.grad(logp)(x + sigma * u)))
    K = 50_000
    s = np.asarray(mc_score(logp, key, x, sigma, K))
    y = x + sigma * jax.random.normal(key, (K, 2))
    lp, g = jax.vmap(jax.value_and_grad(logp))(y)
    w = np.asarray(jax.nn.softmax(lp))
    se = np.sqrt(np.sum(w[:, None] ** 2 * (np.asarray(g) - s) ** 2, axis=0))
    truth = -np.asarray(x - m) / (v + sigma**2)
    assert np.all(np.abs(s - truth) < 4 * se), (s, truth, se)
    assert np.all(se < 0.01)
    # clipping caps the norm; non-finite draws get zero weight
    c = np.asarray(mc_score(logp, key, x, sigma, K, score_clip=0.1))
    np.testing.assert_allclose(np.linalg.norm(c), 0.1)
    np.testing.assert_allclose(c / 0.1, s / np.linalg.norm(s))

    def half_nan(yy):
        return jnp.where(yy[0] > 10.0, jnp.nan, logp(yy))

    np.testing.assert_allclose(np.asarray(mc_score(half_nan, key, x, sigma, K)), s, atol=1e-12)


@pytest.mark.slow  # 2-5 s of compilation: the default tier is at its 15-minute budget
def test_ve_paths_are_the_core_path_measure():
    """Without particles, ``ve_simulate`` is ``sde.simulate`` on ``ve_reference`` with the score network as the
    drift: the same endpoint (bit for bit) and the same log weight (round-off)."""
    ref = ve_reference(12, 1e-3, 4.0)
    net = randomized(ScoreNet(jax.random.key(0), 2, sigma_min=1e-3, sigma_max=4.0, width=8, depth=1),
                     jax.random.key(1), 0.1)
    t = gaussian_target()
    logp = t.flat_logdensity()
    keys = jax.random.split(jax.random.key(10), 3)

    @jax.jit
    def both(k):
        xK, partial = ve_simulate(net, ref, k, 2)
        path = simulate(net, ref, logp, k, 2, langevin=False)
        return xK, partial + logp(xK), path.xs[-1], log_weight(path)

    xK, lw, xK_core, lw_core = jax.vmap(both)(keys)
    np.testing.assert_array_equal(np.asarray(xK), np.asarray(xK_core))
    np.testing.assert_allclose(np.asarray(lw), np.asarray(lw_core), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ref.b, ref.s**2)
    sig = 1e-3 ** (np.arange(13) / 12) * 4.0 ** (1 - np.arange(13) / 12)
    np.testing.assert_allclose(np.cumsum(ref.b), 16.0 - sig[1:] ** 2)


class ParticleGaussian(samplax.Target):
    """``pi~(x) = exp(-|x - mean(x)|^2 / (2 v))`` for 3 particles in 2-D: translation invariant; on the
    centre-of-mass-free subspace (dimension 4) its integral is ``(2 pi v)^2``."""

    v: float = 0.5
    n_particles: int = 3
    spatial_dim: int = 2

    def logdensity(self, x):
        return -0.5 * jnp.sum(remove_mean(x, 3, 2) ** 2) / self.v

    @property
    def event_shape(self):
        return (6,)


class ExactScore(eqx.Module):
    """The exact score of ``N(0, v I)`` noised to ``sigma(u)`` on the subspace: ``-P x / (v + sigma(u)^2)``."""

    v: float
    sigma_min: float
    sigma_max: float
    log_z: jax.Array

    def __call__(self, x, u, score=None):
        sig = self.sigma_min ** (1.0 - u) * self.sigma_max ** u
        return -remove_mean(x, 3, 2) / (self.v + sig**2)


def test_weights_on_the_centre_of_mass_free_subspace_give_its_log_z():
    """With the exact noised score of a translation-invariant Gaussian the weights are exact on the subspace:
    ``log Z`` is the subspace integral ``2 log(2 pi v)`` within Z_CLT standard errors; counting the removed D
    dimensions in ``q_0`` would be off by ``D (log sigma_max + log(2 pi) / 2) = 4.0``."""
    from samplax.neural.sde import estimates

    t = ParticleGaussian()
    ref = ve_reference(32, 1e-3, 3.0)
    net = ExactScore(t.v, 1e-3, 3.0, jnp.zeros(()))
    keys = jax.random.split(jax.random.key(1), 2000)
    xK, partial = jax.jit(jax.vmap(lambda k: ve_simulate(net, ref, k, 6, (3, 2))))(keys)
    np.testing.assert_allclose(np.asarray(xK).reshape(-1, 3, 2).mean(1), 0.0, atol=1e-12)
    est = estimates(partial + jax.vmap(t.logdensity)(xK))
    exact = 2 * math.log(2 * math.pi * t.v)
    assert abs(est["log_Z"] - exact) < Z_CLT * est["log_Z_se"] and est["log_Z_se"] < 0.05, (est, exact)




def test_bad_input_is_a_clear_error():
    t = gaussian_target()
    small = dict(batch_size=8, num_mc_samples=10, progress=False)
    with pytest.raises(ValueError, match="training_evals=50 is too small for one training step"):
        samplax.sample(t, "idem", training_evals=50, **small)
    with pytest.raises(ValueError, match="outer_paths=200 exceeds buffer_size=100"):
        samplax.sample(t, "idem", training_evals=1000, outer_paths=200, buffer_size=100, **small)
    with pytest.raises(ValueError, match="sigma_min=5.0 and sigma_max=2.0"):
        samplax.sample(t, "idem", training_evals=1000, sigma_min=5.0, sigma_max=2.0, **small)
    with pytest.raises(ValueError, match="network='egnn' needs a particle system"):
        samplax.sample(t, "idem", training_evals=1000, network="egnn", **small)
    with pytest.raises(ValueError, match="no gradient.*num_mc_samples"):
        samplax.sample(NoGradient(), "idem", training_evals=1000, **small)
    for name, value in (("network", "gnn"), ("num_mc_samples", 0), ("sigma_max", -1.0), ("score_clip", 0.0),
                        ("buffer_size", 1.5), ("inner_steps", 0)):
        with pytest.raises(ValueError, match=f"option {name}="):
            samplax.sample(t, "idem", **{**small, name: value})


def test_defaults_follow_the_paper_and_the_target():
    """``network``, ``sigma_min``, ``sigma_max`` and ``score_clip`` resolve per target (EGNN, the paper's noise range
    and its clip of 20 for particle systems); an explicit value wins; a draw costs one log-density evaluation."""
    from samplax.methods import get_method

    cfg = IDEMConfig().resolve(samplax.targets.get("dw4"))
    assert cfg.network == "egnn" and cfg.sigma_max == 3.0 and cfg.sigma_min == 1e-5 and cfg.score_clip == 20.0
    cfg = IDEMConfig().resolve(samplax.targets.get("lj13"))
    assert cfg.sigma_max == 2.0 and cfg.sigma_min == 0.01 and cfg.score_clip == 20.0
    cfg = IDEMConfig().resolve(gaussian_target())
    assert cfg.network == "mlp" and cfg.sigma_max == 70.0 and cfg.sigma_min == 1e-5 and cfg.score_clip == 1000.0
    cfg = IDEMConfig(score_clip=None, sigma_min=0.5).resolve(samplax.targets.get("dw4"))
    assert cfg.score_clip is None and cfg.sigma_min == 0.5
    with pytest.raises(ValueError, match="option score_clip="):
        samplax.sample(gaussian_target(), "idem", training_evals=10_000, score_clip="paper")
    assert get_method("idem").sampling_cost({}) == 1


SMALL = IDEM_SMALL


@pytest.mark.slow
def test_log_z_and_moments_on_a_gaussian():
    r = idem_gaussian_run("idem")
    assert r.cost["num_model_evals"] == 2 * 2000 * SMALL["num_time_steps"]  # score-network passes, reverse SDE
    assert r.extra["proposal_samples"].shape == (2, 2000, 2)


GMM25 = dict(sigma_max=15.0, num_time_steps=100, batch_size=32, num_mc_samples=250, buffer_size=5000, inner_steps=50,
             outer_paths=1000, width=128, depth=3)


@pytest.mark.slow
def test_gmm25_mode_coverage_and_log_z():
    target = samplax.targets.get("gmm25")
    steps = 1200
    r = samplax.sample(target, "idem", seed=0, num_chains=1, num_samples=5000, progress=False,
                       training_evals=steps * 32 * 250, **GMM25)
    cov = mode_coverage(r.samples.reshape(-1, 2), np.asarray(target.means))
    err = r.log_Z - target.ground_truth().log_Z
    print("idem gmm25: EMC", cov["mode_coverage"], "modes hit", cov["modes_hit"], "log Z error", err, "se",
          r.log_Z_se, "ESS", r.extra["ess"])
    assert cov["mode_coverage"] >= 0.9
    assert abs(err) <= Z_CLT * r.log_Z_se


@pytest.mark.slow
def test_resume_after_a_checkpoint_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """Interrupted after 2 of 10 training chunks, then resumed: the same run bit for bit (the buffer, its
    position and the step counter are in the checkpointed state)."""
    target = gaussian_target()
    kw = dict(num_chains=1, num_samples=500, training_evals=120 * 32 * 64, **{**SMALL, "inner_steps": 7})
    ref, part, resumed = interrupted_and_resumed(monkeypatch, tmp_path, target, "idem", **kw)
    assert not part.complete and 0 < part.cost["num_training_steps"] < 120
    assert_same_run(resumed, ref, ("num_logdensity_evals", "num_grad_evals", "training_logdensity_evals", "num_training_steps"))


@pytest.mark.slow  # 2-5 s of compilation: the default tier is at its 15-minute budget
def test_replay_buffer_fills_every_inner_steps_and_keeps_diverged_paths_out():
    """Step 0 and step ``inner_steps`` add ``outer_paths`` endpoints (first in, first out, the write position
    wraps); other steps add none; a network whose paths all diverge (NaN parameters) adds nothing and counts them
    in ``num_diverged_paths``; each step reports ``batch_size x num_mc_samples`` evaluations."""
    from samplax.core.method import TrainingContext
    from samplax.neural.idem import make_plan

    t = gaussian_target()
    cfg = IDEMConfig(training_evals=10 * 4 * 3, batch_size=4, num_mc_samples=3, buffer_size=10, outer_paths=6,
                     inner_steps=2, num_time_steps=4, sigma_max=2.0, width=8, depth=1)
    plan = make_plan(t, TrainingContext(1, 5, "idem/gauss2", "idem"), cfg)
    assert plan.num_steps == 10
    step = jax.jit(plan.step)
    state = plan.init(jax.random.key(0))
    seen = []
    for i in range(3):
        before = np.asarray(state["buffer"])
        state, m = step(jax.random.key(i + 1), state, t)
        seen.append((int(state["count"]), int(state["pos"])))
        assert int(m["num_logdensity_evals"]) == int(m["num_grad_evals"]) == 12 and int(m["num_diverged_paths"]) == 0
        if i == 1:
            np.testing.assert_array_equal(np.asarray(state["buffer"]), before)
    assert seen == [(6, 6), (6, 6), (10, 2)]
    assert np.all(np.isfinite(np.asarray(state["buffer"])))
    bad = plan.init(jax.random.key(0))
    bad["params"] = jax.tree.map(lambda v: v * jnp.nan if jnp.issubdtype(v.dtype, jnp.floating) and v.ndim else v,
                                 bad["params"])
    bad, m = step(jax.random.key(1), bad, t)
    assert int(bad["count"]) == 0 and int(m["num_diverged_paths"]) == 6
    np.testing.assert_array_equal(np.asarray(bad["buffer"]), 0.0)
