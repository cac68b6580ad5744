"""Shortcut models (Frans et al. 2024): self-consistency of an exact flow, argument errors, the trainer hook and its
cost count, and (slow) 1/2/4-step sampling on ring8 against DDIM on a flow-matching denoiser of the same budget."""
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as sd
from samplax.diffusion import shortcut as sc
from samplax.diffusion import train as tr
from samplax.metrics import energy_distance

S0 = 0.7  # data N(0, S0^2 I)


def _var(tau):
    """Variance per coordinate of x_tau = (1 - tau) x0 + tau eps for x0 ~ N(0, S0^2 I)."""
    return (1.0 - tau) ** 2 * S0**2 + tau**2


def exact_shortcut(x, tau, d):
    """The exact flow map of Gaussian data is linear, x_{tau-d} = sqrt(var(tau-d)/var(tau)) x_tau, so its shortcut
    (x_tau - x_{tau-d}) / d is exactly self-consistent for every d."""
    return x * (1.0 - jnp.sqrt(_var(tau - d) / _var(tau))) / d


def instantaneous(x, tau, d):
    """The flow's velocity at tau for every d (what a plain flow-matching model gives): not consistent."""
    dv = -2.0 * (1.0 - tau) * S0**2 + 2.0 * tau
    return x * dv / (2.0 * _var(tau))


def test_exact_flow_is_self_consistent_and_velocity_is_not():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        x0 = S0 * jax.random.normal(jax.random.key(0), (3,), jnp.float64)
        eps = jax.random.normal(jax.random.key(1), (3,), jnp.float64)
        for d, tau in ((0.5, 1.0), (1 / 8, 0.75), (1 / 64, 1 / 32)):
            x = (1 - tau) * x0 + tau * eps
            for model, zero in ((exact_shortcut, True), (instantaneous, False)):
                r = float(jnp.max(jnp.abs(model(x, tau, 2 * d) - sc.consistency_target(model, x, tau, d, 64))))
                if zero:
                    assert r < 1e-12, (d, tau, r)
                else:
                    assert r > 1e-4 * d, (d, tau, r)  # the velocity is not a chord of the curved flow
        # the random-draw loss (all step sizes 2d = 1, ..., 1/8 and their grids of times) is ~0 for the exact flow
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(2), i))(jnp.arange(64))
        xs = S0 * jax.random.normal(jax.random.key(3), (64, 2), jnp.float64)
        losses, taus = jax.jit(jax.vmap(lambda k, x: sc.consistency_loss(exact_shortcut, k, x, 16)))(keys, xs)
        taus = np.asarray(taus)
        assert np.all((taus > 0) & (taus <= 1)) and len(np.unique(taus)) > 4
        assert float(jnp.max(losses)) < 1e-24
    finally:
        jax.config.update("jax_enable_x64", previous)  # conftest runs every test in float64


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="shortcut_steps must be a power of two"):
        tr.TrainConfig(loss="shortcut", model="shortcut", shortcut_steps=48)
    with pytest.raises(ValueError, match="loss 'shortcut' goes with model 'shortcut'"):
        tr.TrainConfig(loss="shortcut")
    with pytest.raises(ValueError, match="loss 'shortcut' goes with model 'shortcut'"):
        tr.TrainConfig(loss="fm", model="shortcut")
    with pytest.raises(ValueError, match="shortcut_fraction"):
        tr.TrainConfig(loss="shortcut", model="shortcut", shortcut_fraction=1.0)
    for d in (0.3, 3 / 8, 1 / 128, 0.0, 1.0):
        with pytest.raises(ValueError, match="d must be"):
            sc.consistency_target(exact_shortcut, jnp.zeros(2), 1.0, d, 64)
    with pytest.raises(ValueError, match="tau must be in"):
        sc.consistency_target(exact_shortcut, jnp.zeros(2), 0.25, 0.25, 64)
    model = sc.ShortcutMLP(jax.random.key(0), 2, width=8, depth=1, emb_dim=4, shortcut_steps=8)
    for n in (0, 3, 16, 2.0, True):
        with pytest.raises(ValueError, match="num_steps must be a power of two between 1 and the model's "
                                             "shortcut_steps=8"):
            sd.sample_shortcut(model, key=jax.random.key(0), batch=4, num_steps=n)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        sd.sample_shortcut(model, key=jax.random.key(0), batch=0, num_steps=2)
    with pytest.raises(ValueError, match="model must be a ShortcutMLP"):
        sd.sample_shortcut(lambda x, s: x, key=jax.random.key(0), batch=4, num_steps=2)


def test_trainer_hook_cost_and_sampling_api(tmp_path):
    """The trainer's shortcut batch loss, its cost count, a checkpoint round trip and the sampler (untrained
    weights; the training run itself is in the slow test)."""
    cfg = tr.TrainConfig(width=8, depth=1, emb_dim=4, loss="shortcut", model="shortcut", batch_size=16,
                         shortcut_steps=8)
    state = tr.init_train_state(jax.random.key(0), cfg)
    assert isinstance(state.ema, sd.ShortcutMLP)
    # 4 of 16 points take the consistency target (3 passes each), 12 flow matching (1 pass): 24 per step
    assert sc.evals_per_batch(16, 0.25) == tr.evals_per_step(cfg) == 24
    x0 = sd.ring8().sample(jax.random.key(3), 16)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(4), i))(jnp.arange(16))
    losses, sigmas = eqx.filter_jit(sc.batch_losses)(state.model, keys, x0, 8, 0.25)
    assert losses.shape == (16,) and np.all(np.isfinite(np.asarray(losses))) and np.all(np.asarray(sigmas) > 0)
    with pytest.raises(ValueError, match="use batch_loss"):
        tr.point_loss(state.model, jax.random.key(0), x0[0], cfg)
    tr.save_checkpoint(str(tmp_path), state._replace(step=jnp.asarray(3, jnp.int32)), cfg)
    loaded, cfg2, meta = tr.load_checkpoint(str(tmp_path))
    assert cfg2 == cfg and meta["num_model_evals"] == 3 * 24
    m = loaded.ema
    for n in (1, 2, 8):
        x, info = sd.sample_shortcut(m, key=jax.random.key(1), batch=5, num_steps=n)
        assert x.shape == (5, 2) and np.all(np.isfinite(np.asarray(x)))
        assert info.num_model_evals == n and info.cost["num_model_evals"] == n and info.step_size == 1 / n
        np.testing.assert_allclose(info.taus, np.linspace(1, 0, n + 1))
        if n == 1:  # one step by hand: x_0 = eps - s(eps, 1, 1) (noise of sample b from fold_in(key, b))
            eps = jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(jax.random.key(1), b), (2,),
                                                       x.dtype))(jnp.arange(5))  # the sampler draws in x's dtype
            want = eps - jax.vmap(m.velocity, (0, None, None))(eps, 1.0, 1.0)
            np.testing.assert_allclose(np.asarray(x), np.asarray(want), rtol=1e-5, atol=1e-6)
    # the model is also a plain denoiser: x0 = x_tau - tau s(x_tau, tau, 1/M), tau = sigma/(1+sigma)
    xv, sig = jnp.array([0.3, -1.2]), 3.0
    tau = sig / (1 + sig)
    np.testing.assert_allclose(np.asarray(m(xv, sig)),
                               np.asarray(xv / (1 + sig) - tau * m.velocity(xv / (1 + sig), tau, 1 / 8)), rtol=1e-6)


def _ed(x, ref):
    return float(energy_distance(np.asarray(x), np.asarray(ref))["energy_distance"])


@pytest.mark.slow
def test_shortcut_few_steps_beat_ddim_on_ring8():
    """Shortcut model, 3000 training steps on ring8 (1.5 network passes per point: 1.152M passes), vs flow-matching
    denoisers of the same width/depth/batch/lr/EMA trained 3000 steps (same steps) and 4500 steps (same passes).
    Energy distance to 4000 exact draws, fixed seeds, of the shortcut sampler in 1, 2, 4 and 64 steps and of DDIM
    with 1, 2, 4 calls on the FM denoisers (logsnr grid, and the uniform flow-time grid the shortcut walks)."""
    model = sd.ring8()
    data = lambda k, n: model.sample(k, n)  # noqa: E731
    ref = model.sample(jax.random.key(99), 4000)
    common = dict(width=64, depth=2, batch_size=256, ema_decay=0.995)
    cs = tr.TrainConfig(loss="shortcut", model="shortcut", shortcut_steps=64, **common)
    st, _, cost_s = tr.train(jax.random.key(0), cs, data, 3000, chunk=1500, return_cost=True)
    assert cost_s["num_training_steps"] == 3000 and cost_s["num_model_evals"] == 3000 * (3 * 64 + 192)
    key, n = jax.random.key(5), 4000
    noise_floor = _ed(model.sample(jax.random.key(7), n), ref)
    short = {k: _ed(sd.sample_shortcut(st.ema, key=key, batch=n, num_steps=k)[0], ref) for k in (1, 2, 4, 64)}
    ddim = {}
    for steps in (3000, 4500):
        sf, _, cost_f = tr.train(jax.random.key(0), tr.TrainConfig(loss="fm", **common), data, steps, chunk=1500,
                                 return_cost=True)
        assert cost_f["num_model_evals"] == steps * 256
        for k in (1, 2, 4):
            if k == 1:  # one DDIM step from sigma_max into 0 is the denoiser's output there
                x = jax.vmap(sf.ema, (0, None))(80.0 * jax.random.normal(key, (n, 2)), 80.0)
                ddim[steps, k] = (_ed(x, ref),) * 2
                continue
            a = sd.sample(sf.ema, key=key, shape=(n, 2), sigma_max=80.0, nfe=k, solver="ddim")[0]
            b = sd.sample(sf.ema, key=key, shape=(n, 2), sigma_max=80.0, nfe=k, solver="ddim", grid="time",
                          sigma_end=1.0 / (k - 1), grid_options={"schedule": sd.LinearInterpolant()})[0]
            ddim[steps, k] = (_ed(a, ref), _ed(b, ref))
    print(f"\nring8 energy distance (exact-vs-exact {noise_floor:.5f}); shortcut {short}; "
          f"DDIM on FM denoiser (training steps, calls): (logsnr, uniform-tau) {ddim}")
    best = {k: min(min(ddim[3000, k]), min(ddim[4500, k])) for k in (1, 2, 4)}
    # measured: shortcut 0.0122 / 0.0135 / 0.0082 (1/2/4 steps), best DDIM 0.64 / 0.20 / 0.020 (see the report)
    assert short[4] < 0.5 * best[4], (short, ddim)
    assert short[2] < 0.2 * best[2], (short, ddim)
    assert short[1] < 0.05 * best[1], (short, ddim)
    assert short[64] < 0.01 and short[4] < 0.015, short
