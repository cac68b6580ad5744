"""Distillation (samplax.diffusion.distill): SFD's loss is zero exactly for the exact one-step map of a Gaussian
teacher and its teacher solver is second order; EMD's E-step is Langevin on the right (eps, z) target (its
stationary covariance on a linear-Gaussian case, closed form) and its M-step direction vanishes at the exact
generator; the trainer hooks, their cost counts and checkpoints; (slow) both beat DSM + DDIM on ring8 at the same
network-pass budget."""
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from samplax import diffusion as sd
from samplax.diffusion import distill as di
from samplax.diffusion import train as tr
from samplax.metrics import energy_distance

S0 = 0.7  # the single-Gaussian teacher N(0, S0^2 I)


def _gauss(dim=2):
    return sd.GaussianMixtureDiffusion(jnp.ones(1), jnp.zeros((1, dim)), S0)


def exact_flow(x, a, b):
    """The PF-ODE map of N(0, S0^2 I) from sigma a to b (affine, here linear): x sqrt((S0^2 + b^2)/(S0^2 + a^2))."""
    return x * np.sqrt((S0**2 + b**2) / (S0**2 + a**2))


def exact_student(grid):
    """The denoiser whose DDIM step on ``grid`` IS the exact map: at node s_n, D = (a - r)/(1 - r) x with
    a = sqrt((S0^2 + s_{n+1}^2)/(S0^2 + s_n^2)) and r = s_{n+1}/s_n (for s_{n+1} = 0, D = a x)."""
    g = [float(v) for v in grid]

    def student(x, s):
        out = jnp.zeros_like(x)
        for i in range(len(g) - 1):
            a, r = np.sqrt((S0**2 + g[i + 1] ** 2) / (S0**2 + g[i] ** 2)), g[i + 1] / g[i]
            out = jnp.where(s == g[i], (a - r) / (1.0 - r) * x, out)
        return out

    return student


def test_sfd_loss_vanishes_for_the_exact_one_step_map():
    teacher = _gauss()
    for n in (1, 2, 4):
        grid = di.sfd_grid(n, 80.0, 0.5)
        st = exact_student(grid)

        @jax.jit
        def losses(x):  # exact student, the teacher's own denoiser, and the gradient in a scale of the exact one
            grad = jax.grad(lambda c: di.sfd_point_loss(lambda y, s: c * st(y, s), exact_flow, x, grid))(1.0)
            return di.sfd_point_loss(st, exact_flow, x, grid), di.sfd_point_loss(teacher, exact_flow, x, grid), grad

        exact, ddim_teacher, grad = map(float, losses(80.0 * jax.random.normal(jax.random.key(n), (2,),
                                                                                jnp.float64)))
        assert exact < 1e-24 and abs(grad) < 1e-10, (n, exact, grad)
        assert ddim_teacher > 1e-6  # the teacher's own denoiser under DDIM is not the exact map (first order)
    # the teacher solver used in training (Heun, M steps per interval) converges at order 2 to the exact map
    x = jnp.array([1.3, -40.0])
    flow = jax.jit(lambda x, a, b, m: di.teacher_flow(teacher, x, a, b, m), static_argnums=(2, 3))
    errs = [float(jnp.max(jnp.abs(flow(x, 80.0, 0.5, m) - exact_flow(x, 80.0, 0.5)))) for m in (16, 32, 64)]
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 3.8) & (ratios < 4.3)) and ratios[1] < ratios[0], (errs, ratios)  # 4.20, 4.05 -> 4
    # into 0: Heun to sigma_min = 2e-3, then the denoiser: order 2 against the exact map to sigma_min followed by
    # the denoiser (which differs from the exact map into 0 by the factor S0 / sqrt(S0^2 + sigma_min^2))
    smin = di.TEACHER_SIGMA_MIN
    target0 = exact_flow(x, 0.5, smin) * S0**2 / (S0**2 + smin**2)
    errs = [float(jnp.max(jnp.abs(flow(x, 0.5, 0.0, m) - target0))) for m in (16, 32, 64)]
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 3.8) & (ratios < 4.3)), (errs, ratios)
    assert di.teacher_calls_per_interval(8, False) == 16 and di.teacher_calls_per_interval(8, True) == 17
    assert di.sfd_costs(4, 8) == (4, 2 * 8 * 4 + 1)


def _lyapunov_cov(P, H):
    """Stationary covariance of x' = x - H P x + sqrt(2H) n (ULA with diagonal steps H on precision P)."""
    A = np.eye(2) - H @ P
    return scipy.linalg.solve_discrete_lyapunov(A, 2.0 * H)


def test_emd_estep_is_langevin_on_the_joint_and_mstep_vanishes_at_the_exact_generator():
    """Data N(0, A^2), generator g(z) = c z (1-D), its noised marginal q_s = N(0, c^2 + s^2) (exact student score).
    In (eps, z) the E-step target is Gaussian with precision P = I + (1/(A^2+s^2) - 1/(c^2+s^2)) v v^T,
    v = (s, c); ULA with steps H has the closed-form stationary covariance of ``_lyapunov_cov``. The M-step
    direction d/dc |g(z_K) - sg[g(z_K) + s eps~]|^2 = -2 s eps~ z_K has mean zero at c = A and shrinks c > A, grows
    c < A: with noise cancellation for a short chain (K = 4, as trained), with eps_K itself after a long one."""
    A, s, h_e, h_z = 0.8, 0.6, 0.05, 0.04
    n = 10000

    def gauss_denoiser(scale):  # exact denoiser of N(0, scale^2)
        return lambda x, sig: scale**2 / (scale**2 + sig**2) * x

    @jax.jit
    def run(key, c):  # one compilation for every c (traced)
        def chains(k, k_steps):
            k0, k1, k2 = jax.random.split(k, 3)
            z0, e0 = jax.random.normal(k1, (n, 1)), jax.random.normal(k2, (n, 1))
            return jax.vmap(lambda kk, z, e: di.emd_estep(kk, lambda u: c * u, gauss_denoiser(A), gauss_denoiser(c),
                                                          s, z, e, k_steps, h_e, h_z))(jax.random.split(k0, n), z0, e0)
        return chains(key, 150), chains(jax.random.fold_in(key, 1), 4)

    for c in (A, 1.6, 0.4):
        long, short = run(jax.random.key(0), c)
        v = np.array([s, c])
        P = np.eye(2) + (1 / (A**2 + s**2) - 1 / (c**2 + s**2)) * np.outer(v, v)
        want = _lyapunov_cov(P, np.diag([h_e, h_z]))
        zz = np.concatenate([np.asarray(long.eps), np.asarray(long.z)], axis=1)
        got = zz.T @ zz / n
        se = np.sqrt((want**2 + np.outer(np.diag(want), np.diag(want))) / n)  # Gaussian second-moment SE
        assert np.all(np.abs(got - want) < 5 * se), (c, got, want)
        np.testing.assert_allclose(np.asarray(long.x), c * np.asarray(long.z) + s * np.asarray(long.eps), rtol=1e-12)
        for eps, z in ((short.eps_cancelled, short.z), (long.eps, long.z)):
            gm = -2.0 * s * np.asarray(eps)[:, 0] * np.asarray(z)[:, 0]
            mean, se_m = gm.mean(), gm.std() / np.sqrt(n)
            if c == A:
                assert abs(mean) < 4 * se_m, (c, mean, se_m)
            else:
                assert np.sign(c - A) * mean > 5 * se_m, (c, mean, se_m)
        # noise cancellation: the short chain's estimate has a far smaller spread than with eps_K
        assert np.std(np.asarray(short.eps_cancelled)) < 0.5 * np.std(np.asarray(short.eps))


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="loss 'emd' goes with model 'emd'"):
        tr.TrainConfig(loss="emd")
    with pytest.raises(ValueError, match="loss 'emd' goes with model 'emd'"):
        tr.TrainConfig(loss="dsm", model="emd")
    for name in ("sfd_steps", "sfd_teacher_steps", "emd_langevin_steps"):
        with pytest.raises(ValueError, match=f"{name} must be a positive int"):
            tr.TrainConfig(loss="sfd", **{name: 0})
    with pytest.raises(ValueError, match="sfd_sigma_end < sfd_sigma_max"):
        tr.TrainConfig(loss="sfd", sfd_sigma_end=90.0)
    with pytest.raises(ValueError, match="emd_sigma_min < emd_sigma_max"):
        tr.TrainConfig(loss="emd", model="emd", emd_sigma_min=0.0)
    with pytest.raises(ValueError, match="emd_noise_cancellation must be a bool"):
        tr.TrainConfig(loss="emd", model="emd", emd_noise_cancellation=1)
    with pytest.raises(ValueError, match="emd_step_eps must be positive"):
        tr.TrainConfig(loss="emd", model="emd", emd_step_eps=-1.0)
    cfg = tr.TrainConfig(loss="sfd", width=8, depth=1, emb_dim=4, batch_size=4)
    with pytest.raises(ValueError, match="teacher must be a denoiser"):
        tr.train(jax.random.key(0), cfg, None, 1)
    with pytest.raises(ValueError, match="teacher is for the distillation losses"):
        tr.train(jax.random.key(0), tr.TrainConfig(width=8, depth=1, emb_dim=4), sd.ring8().sample, 1,
                 teacher=sd.ring8())
    with pytest.raises(ValueError, match="data_fn must be given"):
        tr.train(jax.random.key(0), tr.TrainConfig(width=8, depth=1, emb_dim=4), None, 1)
    with pytest.raises(ValueError, match="use batch_loss"):
        tr.point_loss(None, jax.random.key(0), jnp.zeros(2), cfg)
    net = tr.MLPDenoiser(jax.random.key(0), 2, 8, 1, 4)
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        di.sample_sfd(net, key=jax.random.key(0), batch=4, num_steps=0)
    with pytest.raises(ValueError, match="student must be an MLP denoiser"):
        di.sample_sfd(sd.ring8(), key=jax.random.key(0), batch=4, num_steps=2)
    with pytest.raises(ValueError, match="sigma_end < sigma_max"):
        di.sample_sfd(net, key=jax.random.key(0), batch=4, num_steps=2, sigma_end=100.0)
    with pytest.raises(ValueError, match="model must be an EMDModel"):
        di.sample_emd(net, key=jax.random.key(0), batch=4)
    emd = di.EMDModel(net, net, 2.5)
    with pytest.raises(ValueError, match="num_steps must be 1"):
        di.sample_emd(emd, key=jax.random.key(0), batch=4, num_steps=2)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        di.sample_emd(emd, key=jax.random.key(0), batch=0)
    with pytest.raises(ValueError, match="config.model must be 'emd'"):
        di.emd_state_from_denoiser(net, cfg)


SMALL = dict(width=8, depth=1, emb_dim=4, batch_size=8)


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_sfd_trainer_hook_costs_checkpoint_and_sampler(tmp_path):
    """Two SFD training steps through ``train`` (teacher ring8): the counts of student passes and teacher calls,
    a checkpoint round trip with both in the metadata, and the sampler (DDIM on the grid the loss trains)."""
    teacher, small = sd.ring8(), SMALL
    cs = tr.TrainConfig(loss="sfd", sfd_steps=3, sfd_teacher_steps=2, **small)
    st, ls, cost = tr.train(jax.random.key(0), cs, None, 2, chunk=2, return_cost=True, teacher=teacher)
    assert np.all(np.isfinite(ls)) and int(st.step) == 2
    assert cost["num_model_evals"] == 2 * 8 * 3 and cost["num_teacher_evals"] == 2 * 8 * (2 * 2 * 3 + 1)
    assert tr.evals_per_step(cs) == 24 and tr.teacher_evals_per_step(cs) == 8 * 13
    tr.save_checkpoint(str(tmp_path / "sfd"), st, cs)
    loaded, cfg2, meta = tr.load_checkpoint(str(tmp_path / "sfd"))
    assert cfg2 == cs and meta["num_model_evals"] == 48 and meta["num_teacher_evals"] == 2 * 8 * 13
    m = loaded.ema
    grid = di.sfd_grid(3, 80.0, 0.5)
    x, info = di.sample_sfd(m, key=jax.random.key(1), batch=5, num_steps=3)
    assert info.num_model_evals == 3 and info.cost["num_model_evals"] == 3
    np.testing.assert_allclose(info.sigmas, grid)
    x1, info1 = di.sample_sfd(m, key=jax.random.key(1), batch=5, num_steps=1)
    assert x1.shape == (5, 2) and info1.num_model_evals == 1 and list(info1.sigmas) == [80.0, 0.0]
    # the student's DDIM rollout inside the loss is sample_sfd's sampler (same grid, same steps; traced only)
    seen = []
    jax.eval_shape(lambda x: di.sfd_point_loss(lambda y, s: seen.append(float(s)) or m(y, s), lambda y, a, b: y,
                                               x, grid), jnp.zeros(2, jnp.float32))
    assert seen == [float(v) for v in grid[:-1]]


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_emd_trainer_hook_costs_checkpoint_and_sampler(tmp_path):
    """Two EMD training steps through ``train`` (teacher ring8): the counts, a checkpoint round trip, the one-step
    sampler g(z), and the start from a denoiser (both networks copies of it)."""
    teacher, small = sd.ring8(), SMALL

    ce = tr.TrainConfig(loss="emd", model="emd", emd_langevin_steps=2, **small)
    se, ls, cost = tr.train(jax.random.key(0), ce, None, 2, chunk=2, return_cost=True, teacher=teacher)
    assert np.all(np.isfinite(ls))
    assert cost["num_model_evals"] == 2 * 8 * 6 and cost["num_teacher_evals"] == 2 * 8 * 2
    tr.save_checkpoint(str(tmp_path / "emd"), se, ce)
    loaded, _, meta = tr.load_checkpoint(str(tmp_path / "emd"))
    assert isinstance(loaded.ema, di.EMDModel) and meta["num_teacher_evals"] == 32
    x, info = di.sample_emd(loaded.ema, key=jax.random.key(3), batch=6)
    assert x.shape == (6, 2) and info.num_model_evals == 1
    z = jax.random.normal(jax.random.fold_in(jax.random.key(3), 4), (2,), x.dtype)
    np.testing.assert_allclose(np.asarray(x[4]), np.asarray(loaded.ema.generate(z)), rtol=1e-6)
    # started from a denoiser: both networks are copies of it, g(z) = D(sigma_g z, sigma_g)
    m = loaded.ema.generator
    init = di.emd_state_from_denoiser(m, ce)
    np.testing.assert_allclose(np.asarray(init.model.generate(z)), np.asarray(m(2.5 * z, 2.5)), rtol=1e-12)
    assert eqx.tree_equal(init.model.score, m)


def _ed(x, ref):
    return float(energy_distance(np.asarray(x), np.asarray(ref))["energy_distance"])


@pytest.mark.slow
def test_sfd_and_emd_beat_dsm_ddim_on_ring8_at_the_same_budget():
    """Budget 1.152M student network passes each (as the shortcut test): DSM 2000 steps (batch 256), then SFD
    fine-tuning 2500 / 1250 / 625 steps for 1 / 2 / 4 student steps, or EMD (K = 1: 4 passes per point) 625 steps;
    baseline DSM 4500 steps sampled with DDIM in 1 / 2 / 4 calls (the better of the logsnr grid and the SFD
    students' grid, sigma_max 80).
    Energy distance to 4000 exact draws (fixed seeds)."""
    model = sd.ring8()
    data = lambda k, n: model.sample(k, n)  # noqa: E731
    ref = model.sample(jax.random.key(99), 4000)
    key, n = jax.random.key(5), 4000
    common = dict(width=64, depth=2, batch_size=256, ema_decay=0.995, dtype="float32")
    dsm, _ = tr.train(jax.random.key(0), tr.TrainConfig(**common), data, 2000, chunk=2000)
    base, _ = tr.train(jax.random.key(0), tr.TrainConfig(**common), data, 4500, chunk=2250)
    ddim = {1: _ed(jax.vmap(base.ema, (0, None))(80.0 * jax.random.normal(key, (n, 2), jnp.float32), 80.0), ref)}
    for k in (2, 4):
        ddim[k] = min(_ed(sd.sample(base.ema, key=key, shape=(n, 2), sigma_max=80.0, nfe=k, solver="ddim")[0], ref),
                      _ed(di.sample_sfd(base.ema, key=key, batch=n, num_steps=k)[0], ref))
    sfd = {}
    for k, steps in ((1, 2500), (2, 1250), (4, 625)):
        cfg = tr.TrainConfig(loss="sfd", sfd_steps=k, **common)
        st, _, cost = tr.train(jax.random.key(1), cfg, None, steps, state=dsm, chunk=steps, return_cost=True,
                               teacher=model)
        assert 2000 * 256 + cost["num_model_evals"] == 4500 * 256
        sfd[k] = _ed(di.sample_sfd(st.ema, key=key, batch=n, num_steps=k)[0], ref)
    ce = tr.TrainConfig(loss="emd", model="emd", emd_langevin_steps=1, **common)
    se, _, cost = tr.train(jax.random.key(1), ce, None, 625, state=di.emd_state_from_denoiser(dsm.ema, ce),
                           chunk=625, return_cost=True, teacher=model)
    assert 2000 * 256 + cost["num_model_evals"] == 4500 * 256
    emd = _ed(di.sample_emd(se.ema, key=key, batch=n)[0], ref)
    print(f"\nring8 energy distance: SFD {sfd}, EMD (1 step) {emd:.4f}, DSM 4500 steps + DDIM {ddim}")
    # measured (benchmarks/distill_toy.py, same runs in float32 without x64): SFD 0.0082 / 0.0085 / 0.0093, EMD 0.025,
    # DSM + DDIM 0.42 / 0.056 / 0.058 (exact draws against each other: -0.0004)
    for k in (1, 2, 4):
        assert sfd[k] < 0.35 * ddim[k], (sfd, ddim)
    assert emd < 0.2 * ddim[1], (emd, ddim)
    assert sfd[4] < 0.02 and emd < 0.05, (sfd, emd)
