"""GFlowNet-style and time-reversal configurations of the path-measure core: the methods tb, dgfs and dis, the
replay buffer with local search, sub-trajectory balance and the DIS reference.

log Z: each method must land within Z_CLT reported standard errors of the exact log Z (the delta-method standard
error of the importance-sampling estimate; |N(0, 1)| > 3.29 has probability 1e-3) and within ABS_TOL on a
Gaussian; on gmm25 within Z_CLT se plus 0.1 (as pis's gmm25 test), with every mode receiving draws.
"""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.neural import SamplerConfig
from samplax.neural.gfn import (
    RANK_WEIGHT, buffer_insert, buffer_sample, init_buffer, mala, mala_chain, rank_priorities, subtb_residuals,
    subtb_weights,
)
from samplax.neural.sde import DriftNet, dis_reference, log_weight, pis_reference, simulate
from neural_helpers import assert_same_run, interrupted_and_resumed, NoGradient, gaussian_target

Z_CLT = 3.29
ABS_TOL = 0.05




REFERENCE = {"tb": "pis", "dgfs": "pis", "dis": "dis"}


def budget(method, steps, **options):
    """``training_evals`` for ``steps`` training steps of ``method`` at ``options``."""
    from samplax.methods import get_method

    opts = get_method(method).resolve_options(options)
    return SamplerConfig(reference=REFERENCE[method], **opts).training_evals_for(steps)


# ---------------------------------------------------------------------------------------------------------------
# the replay buffer


def test_buffer_ring_invalid_entries_and_rank_priorities():
    insert, priorities = jax.jit(buffer_insert), jax.jit(rank_priorities)
    buf = init_buffer(5, 2, 0.1, jnp.float64)
    x = jnp.arange(8.0).reshape(4, 2)
    buf = insert(buf, x, jnp.asarray([1.0, jnp.nan, 3.0, -2.0]))
    np.testing.assert_array_equal(buf.valid, [1, 0, 1, 1, 0])
    np.testing.assert_array_equal(buf.x[1], [0.0, 0.0])  # the NaN entry is stored as an invalid zero
    assert int(buf.next) == 4
    # ranks among the 3 valid: slot 2 (3.0) rank 0, slot 0 (1.0) rank 1, slot 3 (-2.0) rank 2
    logw = np.asarray(priorities(buf))
    n = 3
    expect = {2: -np.log(RANK_WEIGHT * n + 0), 0: -np.log(RANK_WEIGHT * n + 1), 3: -np.log(RANK_WEIGHT * n + 2)}
    for slot, v in expect.items():
        assert logw[slot] == pytest.approx(v, rel=1e-12)
    assert logw[1] == -np.inf and logw[4] == -np.inf
    idx = np.asarray(jax.jit(buffer_sample, static_argnums=2)(jax.random.key(0), buf, 20000))
    assert set(np.unique(idx)) <= {0, 2, 3}
    p = np.exp([expect[0], expect[2], expect[3]])
    p /= p.sum()
    freq = np.array([np.mean(idx == s) for s in (0, 2, 3)])
    np.testing.assert_array_less(np.abs(freq - p), Z_CLT * np.sqrt(p * (1 - p) / idx.size))
    # the ring wraps: 3 more go to slots 4, 0, 1
    buf = insert(buf, 10 + jnp.zeros((3, 2)), jnp.asarray([5.0, 6.0, 7.0]))
    np.testing.assert_array_equal(buf.valid, [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(buf.log_pi, [6.0, 7.0, 3.0, -2.0, 5.0])
    assert int(buf.next) == 2


@pytest.mark.slow  # 2-5 s of compilation: the default tier is at its 15-minute budget
def test_mala_local_search_leaves_the_target_invariant():
    """From exact draws of N(mu, s^2), MALA with a large step keeps the law: the mean and variance after 10 steps
    stay within the CLT band of the exact ones; the same proposal without the Metropolis correction (ULA) leaves
    that band (so the check has power)."""
    mu, s, n, eps = 1.5, 0.7, 20000, 0.4

    def logp(x):
        return -0.5 * jnp.sum(((x - mu) / s) ** 2)

    x0 = mu + s * jax.random.normal(jax.random.key(0), (n, 1), jnp.float64)
    x, lp, acc = jax.jit(lambda k, x: mala(k, logp, x, eps, 10))(jax.random.key(1), x0)
    x = np.asarray(x[:, 0])
    assert 0.2 < float(acc) < 0.99
    np.testing.assert_allclose(np.asarray(lp), -0.5 * ((x - mu) / s) ** 2, rtol=1e-12)
    mean_tol = Z_CLT * s / np.sqrt(n)
    var_tol = Z_CLT * s**2 * np.sqrt(2.0 / n)
    assert abs(x.mean() - mu) < mean_tol
    assert abs(x.var() - s**2) < var_tol
    # ULA with the same step: the chain's stationary variance is s^2 / (1 - eps / (2 s^2)), far outside the band
    y = np.asarray(x0[:, 0])
    rng = np.random.default_rng(2)
    for _ in range(10):
        y = y - eps * (y - mu) / s**2 + np.sqrt(2 * eps) * rng.standard_normal(y.shape)
    assert abs(float(np.var(y)) - s**2) > 10 * var_tol


@pytest.mark.slow  # 2-5 s of compilation: the default tier is at its 15-minute budget
def test_subtb_full_path_residual_is_trajectory_balance():
    """``G_0 - G_K`` of sub-trajectory balance is the trajectory-balance residual ``log Z_theta - log w`` (to
    round-off), with a non-zero flow network and log Z; and the lambda weights are normalized."""
    d, K = 3, 6
    ref = pis_reference(K, 1.3)
    model = DriftNet(jax.random.key(0), d, 8, 1, langevin=True, flow=True)
    model = jax.tree.map(lambda a: a + 0.05 if eqx_is_array(a) else a, model)

    def logp(x):
        return -0.5 * jnp.sum((x - 0.4) ** 2) + 0.3

    @eqx.filter_jit
    def run(model):
        path = simulate(model, ref, logp, jax.random.key(1), d, langevin=True, with_log_pis=True)
        plain = simulate(model, ref, logp, jax.random.key(1), d, langevin=True)
        G = subtb_residuals(model, ref, path)
        return path.xs, plain.xs, path.log_pis, jax.vmap(logp)(path.xs), G[0] - G[-1], model.log_z - log_weight(path)

    xs, xs_plain, log_pis, lp, g0k, tb = run(model)
    np.testing.assert_array_equal(xs, xs_plain)  # with_log_pis does not change the path
    np.testing.assert_allclose(log_pis, lp, rtol=1e-12)
    assert float(g0k) == pytest.approx(float(tb), abs=1e-10)
    W = subtb_weights(K, 2.0)
    assert W.sum() == pytest.approx(1.0) and W[0, K] == W.max() and np.all(np.tril(W) == 0)

    # an intermediate state where the target is -inf or NaN (LJ-13's overlapping particles): the anchor floors
    # log pi~, so the residuals stay finite and the full-path residual (log pi~(x_K) finite) is unchanged
    def logp_holes(x):
        return jnp.where(x[0] > 0.0, -jnp.inf, jnp.where(x[1] > 0.5, jnp.nan, logp(x)))

    @eqx.filter_jit
    def run_holes(model):
        path = simulate(model, ref, logp, jax.random.key(1), d, langevin=True, with_log_pis=True)
        holes = path._replace(log_pis=jax.vmap(logp_holes)(path.xs).at[-1].set(path.log_pis[-1]))
        return subtb_residuals(model, ref, holes), holes.log_pis

    G_holes, lp_holes = run_holes(model)
    assert not np.all(np.isfinite(lp_holes[1:-1]))  # the holes are hit
    assert np.all(np.isfinite(G_holes))
    assert float(G_holes[0] - G_holes[-1]) == pytest.approx(float(tb), abs=1e-10)


def eqx_is_array(a):
    return isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)


def test_dis_reference_is_the_euler_reversal_of_the_vp_sde():
    """DIS's steps: ``a = c = 1 - beta_k h``, ``s = r = sigma sqrt(2 beta_k h)`` with ``beta`` at the midpoints of the
    linear VP schedule; too few steps for the schedule is an error naming the option."""
    ref = dis_reference(20, 2.0)
    h = 1 / 20
    beta = 0.5 * (0.1 + (1 - (np.arange(20) + 0.5) * h) * 19.9)
    np.testing.assert_allclose(ref.a, 1 - beta * h)
    np.testing.assert_allclose(ref.c, ref.a)
    np.testing.assert_allclose(ref.s, 2.0 * np.sqrt(2 * beta * h))
    np.testing.assert_allclose(ref.b, 2 * 4.0 * beta * h)
    assert ref.prior_std == 2.0 and np.all(ref.backward_mask == 1)
    with pytest.raises(ValueError, match="num_time_steps=8"):
        samplax.sample(gaussian_target(), "dis", num_time_steps=8, training_evals=10**6, progress=False)




def test_bad_input_is_a_clear_error():
    t = gaussian_target()
    kw = dict(batch_size=8, num_time_steps=4, progress=False, training_evals=10**5)
    with pytest.raises(ValueError, match=r"replay_fraction=1.5 is invalid.*\[0, 1\]"):
        samplax.sample(t, "tb", replay_fraction=1.5, **kw)
    with pytest.raises(ValueError, match=r"replay_fraction=-0.1 is invalid"):
        samplax.sample(t, "pis", loss="tb", replay=100, replay_fraction=-0.1, **kw)
    with pytest.raises(ValueError, match="replay_fraction=1.0 leaves no forward paths"):
        samplax.sample(t, "tb", replay_fraction=1.0, **kw)
    with pytest.raises(ValueError, match="replay=100 needs an off-policy loss.*loss='kl'"):
        samplax.sample(t, "pis", loss="kl", replay=100, replay_fraction=0.5, **kw)
    with pytest.raises(ValueError, match="replay=4 is smaller than batch_size=8"):
        samplax.sample(t, "tb", replay=4, **kw)
    with pytest.raises(ValueError, match="replay_fraction=0.5 needs a replay buffer"):
        samplax.sample(t, "dds", loss="logvar", replay_fraction=0.5, **kw)
    with pytest.raises(ValueError, match="local_search_steps=3 needs a replay buffer"):
        samplax.sample(t, "dgfs", local_search_steps=3, **kw)
    with pytest.raises(ValueError, match="no gradient.*local_search_steps=200 runs MALA"):
        samplax.sample(NoGradient(), "tb", langevin=False, **kw)
    with pytest.raises(ValueError, match="option loss='nope' is invalid"):
        samplax.sample(t, "dgfs", loss="nope", **kw)
    with pytest.raises(ValueError, match="training_evals=75 is too small for one training step"):
        samplax.sample(t, "tb", batch_size=8, num_time_steps=4, training_evals=75, progress=False)
    # the long local-search schedule
    with pytest.raises(ValueError, match="local_search_every=0 is invalid|local_search_every=0 must be"):
        samplax.sample(t, "tb", local_search_every=0, **kw)
    with pytest.raises(ValueError, match="local_search_every=7 has no effect without a local search"):
        samplax.sample(t, "pis", loss="tb", local_search_every=7, **kw)
    with pytest.raises(ValueError, match="local_search_every=7 has no effect without a local search"):
        samplax.sample(t, "tb", local_search_steps=0, local_search_every=7, **kw)
    with pytest.raises(ValueError, match=r"too small for one training step.*a local search of 804"):
        samplax.sample(t, "tb", batch_size=8, num_time_steps=4, training_evals=800, progress=False)
    with pytest.raises(ValueError, match="local_search_burn_in=8 leaves no draws of local_search_steps=8"):
        samplax.sample(t, "tb", local_search_steps=8, local_search_burn_in=8, **kw)


# ---------------------------------------------------------------------------------------------------------------
# tb through samplax.sample: costs, resume

TINY = dict(batch_size=8, num_time_steps=4, width=8, depth=1, replay=16, replay_fraction=0.5, local_search_steps=3,
            local_search_every=1, local_search_burn_in=0)  # the short search at every step
K_, NB_, NF_, L_, STEPS_ = 4, 4, 4, 3, 6
PER_LP = NF_ * (K_ + 1) + NB_ * (K_ + 1) + NB_ * (L_ + 1)
PER_GRAD = NF_ * K_ + NB_ * K_ + NB_ * (L_ + 1)
#: the same run in both tests below (one compilation)
TINY_RUN = dict(num_chains=1, num_samples=10, training_evals=STEPS_ * PER_LP + PER_LP - 1, chunk_size=2, **TINY)


@pytest.mark.slow
def test_training_evaluations_follow_the_formula():
    """Per step: ``nf (K + 1) + nb (K + 1) + nb (L + 1)`` log-densities and ``nf K + nb K + nb (L + 1)``
    gradients (``nf`` forward and ``nb`` backward paths with the Langevin drift, ``L`` MALA steps); sampling
    ``K + 1`` and ``K`` per draw."""
    r = samplax.sample(gaussian_target(), "tb", seed=4, progress=False, **TINY_RUN)
    c = r.cost
    assert c["num_training_steps"] == STEPS_
    assert c["training_logdensity_evals"] == STEPS_ * PER_LP and c["training_grad_evals"] == STEPS_ * PER_GRAD
    assert c["sampling_logdensity_evals"] == 10 * (K_ + 1) and c["sampling_grad_evals"] == 10 * K_
    assert samplax.methods.get_method("tb").sampling_cost(
        samplax.methods.get_method("tb").resolve_options(TINY)) == K_ + 1
    m = r.extra["training"]["metrics"]
    assert np.all(m["local_search_acceptance"] >= 0) and np.all(m["local_search_acceptance"] <= 1)


@pytest.mark.slow
def test_resume_with_a_replay_buffer_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """tb (buffer, rank sampling, local search with its adapted step size in the state) interrupted after 2
    training chunks, then resumed: the same run bit for bit."""
    t = gaussian_target()
    kw = TINY_RUN
    ref, part, resumed = interrupted_and_resumed(monkeypatch, tmp_path, t, "tb", **kw)
    assert not part.complete and 0 < part.cost["num_training_steps"] < ref.cost["num_training_steps"]
    assert_same_run(resumed, ref, ("training_logdensity_evals", "training_grad_evals", "num_training_steps"))


LONG = dict(TINY, replay=64, local_search_steps=6, local_search_every=3, local_search_burn_in=2)
LONG_BASE = NF_ * (K_ + 1) + NB_ * (K_ + 1)
LONG_LS = NB_ * (6 + 1)


@pytest.mark.slow
def test_long_local_search_schedule_counts_and_resumes(tmp_path, monkeypatch):
    """Sendera et al.'s long schedule (``local_search_every=3``, burn-in 2 of 6 MALA steps): the search runs at
    steps 0, 3, 6, ... (``NB (L + 1)`` value-and-gradients each), the budget buys the most steps ``n`` with ``n x
    base + ceil(n / 3) x search <= training_evals``, and an interrupted run resumes bit for bit (both buffers, the
    step counter and the adapted step size are in the state)."""
    t = gaussian_target()
    n = 7
    kw = dict(num_chains=1, num_samples=10, chunk_size=2, **LONG,
              training_evals=n * LONG_BASE + 3 * LONG_LS + LONG_BASE - 1)  # step 8 would not fit
    ref, part, resumed = interrupted_and_resumed(monkeypatch, tmp_path, t, "tb", **kw)
    c = ref.cost
    assert c["num_training_steps"] == n
    assert c["training_logdensity_evals"] == n * LONG_BASE + 3 * LONG_LS
    assert c["training_grad_evals"] == n * (NF_ * K_ + NB_ * K_) + 3 * LONG_LS
    m = ref.extra["training"]["metrics"]
    assert list(np.asarray(m["local_search_ran"])) == [1, 0, 0, 1, 0, 0, 1]
    assert np.all((m["local_search_acceptance"] > 0) & (m["local_search_acceptance"] <= 1))
    assert not part.complete and 0 < part.cost["num_training_steps"] < n
    assert_same_run(resumed, ref, ("training_logdensity_evals", "training_grad_evals", "num_training_steps"))


@pytest.mark.slow
def test_mala_chain_keeps_the_target_after_its_burn_in():
    """From exact draws of N(mu, s^2), a long local search (adapting during 5 burn-in steps, then 10 kept steps):
    the kept states of the last step have the target's mean and variance within the CLT band, every kept state
    is a chain state (its log-density matches), and the step size moved from its start toward acceptance 0.574."""
    mu, s, n = 1.5, 0.7, 20000

    def logp(x):
        return -0.5 * jnp.sum(((x - mu) / s) ** 2)

    x0 = mu + s * jax.random.normal(jax.random.key(0), (n, 1), jnp.float64)
    xs, lps, eps, acc = jax.jit(lambda k, x: mala_chain(k, logp, x, 0.05, 15, 5))(jax.random.key(1), x0)
    assert xs.shape == (10 * n, 1) and lps.shape == (10 * n,)
    np.testing.assert_allclose(np.asarray(lps), -0.5 * ((np.asarray(xs[:, 0]) - mu) / s) ** 2, rtol=1e-12)
    last = np.asarray(xs[-n:, 0])
    assert abs(last.mean() - mu) < Z_CLT * s / np.sqrt(n)
    assert abs(last.var() - s**2) < Z_CLT * s**2 * np.sqrt(2.0 / n)
    assert float(eps) == pytest.approx(0.05 * 1.02**5) and 0.5 < float(acc) < 1.0


# ---------------------------------------------------------------------------------------------------------------
# statistical tests (slow)

SMALL = dict(batch_size=32, num_time_steps=16, width=32, depth=2)


def _check(r, target, label, learned=True):
    gt = target.ground_truth()
    err, se = r.log_Z - gt.log_Z, r.log_Z_se
    print(f"{label}: log Z error {err:+.4f}, se {se:.4f}, ESS {r.extra['ess']:.0f}, ELBO {r.extra['elbo']:.4f}, "
          f"learned log Z {r.extra.get('learned_log_Z')}")
    assert np.isfinite(se) and se > 0
    assert abs(err) <= Z_CLT * se, f"{label}: log Z error {err:.4f} outside {Z_CLT} x se {se:.4f}"
    assert abs(err) <= ABS_TOL
    assert r.extra["elbo"] <= r.log_Z + 1e-9
    draws = r.samples.reshape(-1, 2)
    tol = Z_CLT * gt.std / np.sqrt(r.extra["ess"])
    np.testing.assert_array_less(np.abs(draws.mean(0) - gt.mean), tol)
    if learned:
        assert abs(r.extra["learned_log_Z"] - gt.log_Z) < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tb", "dgfs", "dis"])
def test_log_z_on_a_gaussian(method):
    t = gaussian_target()
    r = samplax.sample(t, method, seed=0, num_chains=2, num_samples=2000, progress=False,
                       training_evals=budget(method, 200, **SMALL), **SMALL)
    assert r.cost["num_training_steps"] == 200
    _check(r, t, method, learned=method != "dis")


@pytest.mark.slow
def test_pis_logvar_with_replay_and_local_search():
    """The buffer options on an existing configuration: pis with the log-variance loss and a replay buffer."""
    t = gaussian_target()
    opts = dict(loss="logvar", replay=2000, replay_fraction=0.25, local_search_steps=4, **SMALL)
    cfg = SamplerConfig(reference="pis", **opts)
    r = samplax.sample(t, "pis", seed=1, num_chains=2, num_samples=2000, progress=False,
                       training_evals=200 * cfg.evals_per_step()[0], **opts)
    _check(r, t, "pis/logvar+replay", learned=False)


GMM = dict(sigma=5.0, batch_size=64, num_time_steps=32, width=64, depth=2)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tb", "dgfs"])
def test_gmm25_mode_coverage_and_log_z(method):
    target = samplax.targets.get("gmm25")
    r = samplax.sample(target, method, seed=0, num_chains=1, num_samples=5000, progress=False,
                       training_evals=budget(method, GMM_STEPS[method], **GMM), **GMM)
    means = np.asarray(target.means)
    x = r.samples.reshape(-1, 2)
    counts = np.bincount(np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1), minlength=25)
    err = r.log_Z - target.ground_truth().log_Z
    print(f"gmm25 {method}: counts {counts.tolist()} log Z error {err:+.4f} se {r.log_Z_se:.4f} "
          f"ESS {r.extra['ess']:.0f} ELBO {r.extra['elbo']:.4f}")
    assert np.all(counts > 0.2 * x.shape[0] / 25), counts
    assert abs(err) < max(Z_CLT * r.log_Z_se, 0.1) + 0.1


GMM_STEPS = {"tb": 300, "dgfs": 300}
