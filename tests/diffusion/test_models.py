"""Schedules, the exact GMM model (Tweedie / autodiff), adapters, grids."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as sd

SCHEDULES = [sd.VPLinear(), sd.VPCosine(), sd.ddpm_linear(), sd.VE(), sd.EDM(), sd.LinearInterpolant()]


@pytest.mark.parametrize("sch", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedule_inverses(sch):
    lo, hi = sch.t_range
    t = jnp.linspace(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo), 7)
    np.testing.assert_allclose(sch.t_from_logsnr(sch.logsnr(t)), t, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(sch.t_from_sigma_ve(sch.sigma_ve(t)), t, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(sch.logsnr(t), 2 * jnp.log(sch.alpha(t) / sch.sigma(t)), rtol=1e-10, atol=1e-10)


def test_vp_is_variance_preserving_and_ddpm_sigma_max():
    for sch in [sd.VPLinear(), sd.VPCosine(), sd.ddpm_linear()]:
        t = jnp.linspace(*sch.t_range, 5)[1:-1]
        np.testing.assert_allclose(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, 1.0, rtol=1e-12)
    ddpm = sd.ddpm_linear()
    assert abs(float(ddpm.sigma_ve(999.0)) - 157.4) < 0.05
    assert abs(float(ddpm.sigma_ve(0.0)) - 0.01) < 1e-4


@pytest.mark.parametrize("model", [sd.ring8(), sd.grid25(), sd.random_mixture(1, 5, 4, 0.3)], ids=["ring8", "grid25", "mix5"])
def test_gmm_denoiser_is_tweedie_and_score_is_grad(model, key):
    xs = model.sample(key, 6, sigma=0.7)

    @jax.jit
    def check(xs, sigma):
        auto = jax.vmap(jax.grad(model.log_prob), (0, None))(xs, sigma)
        return (auto, jax.vmap(model.score, (0, None))(xs, sigma),
                jax.vmap(model.denoise, (0, None))(xs, sigma) - xs - sigma**2 * auto)

    for sigma in [0.01, 0.3, 5.0]:
        auto, score, diff = check(xs, sigma)
        np.testing.assert_allclose(score, auto, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(diff, 0.0, atol=1e-9 * (1 + float(jnp.max(jnp.abs(xs)))))


def test_gmm_log_prob_normalized_1d():
    model = sd.GaussianMixtureDiffusion(np.array([0.3, 0.7]), np.array([[-1.0], [2.0]]), np.array([0.2, 0.5]))
    grid = jnp.linspace(-40, 40, 80001)
    for sigma in [0.0, 0.5, 3.0]:
        p = jnp.exp(jax.vmap(lambda x: model.log_prob(x[None], sigma))(grid))
        assert abs(float(jnp.trapezoid(p, grid)) - 1.0) < 1e-8


def test_gmm_sample_moments(key):
    model = sd.grid25()
    n = 20000
    x = model.sample(key, n)
    m, cov = model.mean_and_cov()
    se = jnp.sqrt(jnp.diag(cov) / n)
    assert jnp.all(jnp.abs(x.mean(0) - m) < 4.5 * se)
    # batch-size invariance: the first 10 of n are the 10 of a smaller call
    np.testing.assert_array_equal(model.sample(key, 10), x[:10])


def test_gmm_bad_input():
    with pytest.raises(ValueError, match="means"):
        sd.GaussianMixtureDiffusion(np.ones(2), np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="weights"):
        sd.GaussianMixtureDiffusion(np.ones(3), np.ones((2, 2)), np.ones(2))
    with pytest.raises(ValueError, match="stds"):
        sd.GaussianMixtureDiffusion(np.ones(2), np.ones((2, 2)), -np.ones(2))
    with pytest.raises(ValueError, match="unknown GMM"):
        sd.get_model("nope")


@pytest.mark.parametrize("sch", [sd.VPLinear(), pytest.param(sd.VPCosine(), marks=pytest.mark.slow),
                                 pytest.param(sd.LinearInterpolant(), marks=pytest.mark.slow), sd.EDM()],
                         ids=lambda s: type(s).__name__)
def test_adapters_roundtrip(sch, key):
    """Each parameterization, built exactly from the GMM, converts back to the same denoiser."""
    model = sd.random_mixture(3, 3, 4, 0.4)
    xs = model.sample(key, 4, sigma=1.3)

    def eps_t(xt, t):
        a, s = sch.alpha(t), sch.sigma(t)
        return model.eps(xt / a, s / a)

    def x0_t(xt, t):
        a, s = sch.alpha(t), sch.sigma(t)
        return model.denoise(xt / a, s / a)

    v_t = lambda xt, t: sch.alpha(t) * eps_t(xt, t) - sch.sigma(t) * x0_t(xt, t)
    u_t = lambda xt, t: sch.dalpha(t) * x0_t(xt, t) + sch.dsigma(t) * eps_t(xt, t)
    score_t = lambda xt, t: -eps_t(xt, t) / sch.sigma(t)
    sig = jnp.asarray([0.05, 0.8, 4.0])
    want = jax.vmap(lambda s: jax.vmap(model, (0, None))(xs, s))(sig)
    for D in [sd.from_eps(eps_t, sch), sd.from_v(v_t, sch), sd.from_velocity(u_t, sch), sd.from_score(score_t, sch),
              sd.from_eps(sd.to_eps(model, sch), sch)]:
        got = jax.jit(jax.vmap(lambda s: jax.vmap(D, (0, None))(xs, s)))(sig)
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-8)


def test_discrete_adapter_rounds_timesteps():
    sch = sd.ddpm_linear()
    seen = []
    tab = np.asarray(sch.sigma_ve_table())

    def eps_n(xt, n):
        seen.append(n)
        return jnp.zeros_like(xt)

    D = sd.from_discrete_eps(eps_n, sch)
    D(jnp.ones(2), jnp.asarray(tab[500] * 1.0001))
    assert int(seen[-1]) == 500
    D(jnp.ones(2), jnp.asarray(np.sqrt(tab[10] * tab[11]) * 1.01))
    assert int(seen[-1]) == 11
    with pytest.raises(ValueError, match="rounding"):
        sd.from_discrete_eps(eps_n, sch, rounding="floor")


@pytest.mark.parametrize("name", [g for g in sd.grid_names() if g != "optimized"])
def test_grids(name):
    # 'given' returns the nodes it is given (checked against n, sigma_max and sigma_end)
    opts = {"nodes": np.geomspace(80.0, 0.002, 11)} if name == "given" else {}
    s = sd.make_grid(name, 10, 80.0, 0.002, **opts)
    assert s.shape == (11,)
    np.testing.assert_allclose([s[0], s[-1]], [80.0, 0.002], rtol=1e-9)
    assert np.all(np.diff(s) < 0)


def test_grid_formulas_and_errors():
    np.testing.assert_allclose(np.diff(np.log(sd.make_grid("logsnr", 5, 10.0, 0.1))), np.log(0.01) / 5)
    k = sd.make_grid("karras", 4, 80.0, 0.002)
    np.testing.assert_allclose(np.diff(k ** (1 / 7)), (0.002 ** (1 / 7) - 80 ** (1 / 7)) / 4)
    with pytest.raises(ValueError, match="unknown grid"):
        sd.make_grid("nope", 4, 1.0, 0.1)
    with pytest.raises(ValueError, match="sigma_end"):
        sd.make_grid("karras", 4, 1.0, 2.0)
    with pytest.raises(ValueError, match="n must be"):
        sd.make_grid("karras", 0, 1.0, 0.1)


@pytest.mark.parametrize("schedule", [sd.VPLinear(), sd.VPCosine(), sd.LinearInterpolant(), sd.EDM(), sd.VE()],
                         ids=lambda s: type(s).__name__)
def test_state_conversion_to_and_from_ve(schedule):
    """x_t = alpha x0 + sigma eps  <->  x_ve = x0 + (sigma/alpha) eps, and back."""
    x0 = jnp.array([0.3, -1.2])
    eps = jnp.array([0.7, 0.1])
    lo, hi = schedule.t_range
    t = jnp.asarray(lo + 0.37 * (hi - lo))
    x_t = schedule.alpha(t) * x0 + schedule.sigma(t) * eps
    x_ve, s_ve = schedule.state_to_ve(x_t, t)
    np.testing.assert_allclose(x_ve, x0 + s_ve * eps, rtol=1e-10, atol=1e-12)
    back, t_back = schedule.state_from_ve(x_ve, s_ve)
    np.testing.assert_allclose(t_back, t, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(back, x_t, rtol=1e-7, atol=1e-9)
