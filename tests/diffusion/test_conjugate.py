"""The conjugate integrator (lambda-DDIM, Pandey, Rudolph & Mandt 2024): DDIM at lam = 0, first order for every lam,
errors that name ``lam``, and its few-step gain on the exact 2-D mixtures (slow)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as sd
from samplax.diffusion.solvers import StepContext

# test_solvers.py's smooth mixture: its PF-ODE between sigma 20 and 0.2 is in the asymptotic regime from 8 steps
MODEL = sd.GaussianMixtureDiffusion(np.array([0.5, 0.3, 0.2]), np.array([[1.0, 0.0], [-0.5, 0.8], [-0.3, -1.0]]),
                                    np.array([0.4, 0.5, 0.3]))
SMAX, SMIN = 20.0, 0.2


@pytest.fixture(scope="module")
def setup():
    x0 = SMAX * jax.random.normal(jax.random.key(3), (32, 2))
    return x0, sd.solve_pf_ode(MODEL, x0, SMAX, SMIN, rtol=1e-12, atol=1e-12)


def _err(x, ref):
    return float(jnp.mean(jnp.linalg.norm(x - ref, axis=-1)))


@pytest.mark.parametrize("grid,final", [("karras", "integrate"),
                                        pytest.param("logsnr", "denoise", marks=pytest.mark.slow)])
def test_lam_zero_is_ddim_to_round_off(grid, final, key):
    """lam = 0 is DDIM's update; its weights come from exp/expm1 of h = log(s/t) instead of the ratio t/s, so the
    states agree to round-off (measured 1e-15 at |x| ~ 2 in float64), not bit for bit. ``integrate`` ends with
    the step into sigma = 0 (DDIM's there for every lam)."""
    kw = dict(key=key, shape=(16, 2), sigma_max=80.0, nfe=9, grid=grid, final_step=final)
    a, ia = sd.sample(sd.ring8(), solver="conjugate", solver_options={"lam": 0.0}, **kw)
    b, ib = sd.sample(sd.ring8(), solver="ddim", **kw)
    assert int(ia.num_model_evals) == int(ib.num_model_evals) == 9
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)
    assert sd.get_solver("conjugate").order == 1


@pytest.mark.parametrize("lam", [-0.4, 0.3, -1.0])
def test_one_step_is_euler_in_the_conjugate_space(lam):
    """The closed form equals the step taken in x_hat = sigma^lam x: Euler on lam x_hat in tau = log sigma plus
    (Phi_t - Phi_s) eps_s, Phi = sigma^(lam+1)/(lam+1) (log sigma at lam = -1), mapped back by t^-lam."""
    solver = sd.get_solver("conjugate", lam=lam)
    x = np.array([[1.3, -0.7], [-2.0, 0.4]])

    def denoise(x, s):
        return 0.4 * x / (1 + s**2) + 0.1

    for s, t in ((5.0, 2.0), (0.9, 0.1)):
        sig = jnp.array([s, t])
        ctx = StepContext(denoise, sig, {}, None, {})
        got, calls = solver.step(solver.init(jnp.asarray(x), sig, {}), 0, ctx)
        eps = (x - denoise(x, s)) / s
        phi = (lambda g: np.log(g)) if lam == -1.0 else (lambda g: g ** (lam + 1) / (lam + 1))
        xh = s**lam * x
        want = t ** (-lam) * (xh + lam * np.log(t / s) * xh + (phi(t) - phi(s)) * eps)
        np.testing.assert_allclose(np.asarray(got.x), want, rtol=1e-13, atol=1e-13)
        assert calls == 1


@pytest.mark.parametrize("lam", [-0.3, pytest.param(0.2, marks=pytest.mark.slow)])
def test_convergence_order_one(lam, setup):
    """Euler in the conjugate space: global order 1 for lam != 0 (errors over nfe 8..64 on the log-SNR grid),
    with errors that are not DDIM's (lam moves them by a factor > 1.5 either way on this mixture)."""
    x0, ref = setup
    kw = dict(key=jax.random.key(0), x_init=x0, sigma_max=SMAX, sigma_min=SMIN, grid="logsnr")
    errs, nfes = [], []
    for nfe in (8, 16, 32, 64):
        x, info = sd.sample(MODEL, solver="conjugate", solver_options={"lam": lam}, nfe=nfe, **kw)
        errs.append(_err(x, ref))
        nfes.append(int(info.num_model_evals))
    assert nfes == [8, 16, 32, 64]
    slope = -np.polyfit(np.log(nfes[1:]), np.log(errs[1:]), 1)[0]
    assert abs(slope - 1.0) < 0.15, (lam, slope, errs)
    x, _ = sd.sample(MODEL, solver="ddim", nfe=16, **kw)
    ratio = errs[1] / _err(x, ref)
    assert ratio < 1 / 1.5 or ratio > 1.5, (lam, ratio)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -np.inf, "0.1", None, True, [0.1], 1j])
def test_bad_lam_is_an_error_naming_it(bad, key):
    with pytest.raises(ValueError, match="conjugate: lam must be a finite real number"):
        sd.get_solver("conjugate", lam=bad)
    if bad is None:
        with pytest.raises(ValueError, match="lam must be"):
            sd.sample(sd.ring8(), key=key, shape=(2, 2), sigma_max=80.0, nfe=5, solver="conjugate",
                      solver_options={"lam": bad})


@pytest.mark.slow  # ~10 s
def test_few_step_gain_on_exact_mixtures():
    """lam = -0.1 (at or next to the best of a sweep on other noises, key 11, for both models at nfe = 10; the table
    in docs/tutorials/diffusion.md) against DDIM at nfe = 10 on held-out noises (key 12), log-SNR grid, final
    denoise: measured error ratios 0.735 (ring8) and 0.265 (grid25)."""
    for model, bound in ((sd.ring8(), 0.85), (sd.grid25(), 0.4)):
        x0 = 80.0 * jax.random.normal(jax.random.key(12), (512, 2))
        ref = sd.solve_pf_ode(model, x0, 80.0, 0.0, rtol=1e-10, atol=1e-10)
        kw = dict(key=jax.random.key(0), x_init=x0, sigma_max=80.0, nfe=10)
        a, _ = sd.sample(model, solver="conjugate", solver_options={"lam": -0.1}, **kw)
        b, _ = sd.sample(model, solver="ddim", **kw)
        assert _err(a, ref) < bound * _err(b, ref), (_err(a, ref), _err(b, ref))


def test_a_sample_gone_nonfinite_stays_nonfinite_through_the_step_into_zero():
    """conjugate keeps non-finite states (Solver.keeps_nonfinite, so sample looks only at the end state of its
    untracked run): its step into sigma = 0 returns D(x_s, s) + 0 * x_s, not D alone. The denoiser here turns NaN
    for some samples below sigma 1 and maps a non-finite input to a finite output, so with D alone those samples
    would end finite and go unreported."""
    ring = sd.ring8()

    def model(x, sigma):
        bad = (sigma < 1.0) & (sigma > 0.5) & (x[0] > 0)
        return jnp.where(bad, jnp.nan, 1.0) * ring(jnp.nan_to_num(x), sigma)

    s = sd.get_solver("conjugate", lam=0.3)
    assert s.keeps_nonfinite
    with pytest.warns(UserWarning, match=r"sample: the denoiser returned non-finite values"):
        x, info = sd.sample(model, key=jax.random.key(2), shape=(32, 2), sigma_max=80.0, nfe=10,
                            solver="conjugate", solver_options={"lam": 0.3}, final_step="integrate")
    rows_bad = ~np.all(np.isfinite(np.asarray(x)), axis=1)
    assert 0 < rows_bad.sum() < 32
    np.testing.assert_array_equal(np.asarray(info.nonfinite_step) >= 0, rows_bad)
