"""DPM-Solver-v3 (Zheng, Lu, Chen & Zhu, NeurIPS 2023): the solver ``dpm_solver_v3`` and its EMS fit ``fit_v3``.

Exactness: with l = s = b = 0 the step is DPM-Solver++'s multistep data-prediction update in its
exponential-integrator (Taylor) form, written out independently below (to round-off). Convergence: order 3 with the
full derivative estimates, order 2 with the pseudo-order ones, against a tight PF-ODE reference on ring8; with
smooth nonzero EMS the method stays consistent (any l, s, b leave the ODE unchanged). Accuracy (slow tier): fitted
EMS beat the zero EMS on held-out noises where that was measured to hold.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as sd

SMAX, SMIN = 80.0, 0.05
MODEL = sd.ring8()


def _taylor_dpmpp(model, x, nodes, order):
    """DPM-Solver++(kM), data prediction, Taylor form: ``x_t = e^{-h} x_s + (1 - e^{-h}) D_s + (h - 1 + e^{-h}) a_1
    + (h^2 - 2h + 2 - 2e^{-h}) a_2``, ``a_k`` the Taylor coefficients of the polynomial through the last k + 1
    denoised values in ``lambda = -log sigma`` (orders ramp 1, 2, 3)."""
    hist = []
    dz = jax.jit(jax.vmap(model, (0, None)))
    for i in range(len(nodes) - 1):
        s, t = nodes[i], nodes[i + 1]
        d = dz(x, s)
        h = np.log(s / t)
        o = min(i + 1, order)
        xn = np.exp(-h) * x + (1 - np.exp(-h)) * d
        if o >= 2:
            d1, s1 = hist[-1]
            u1 = np.log(s / s1)  # lambda_1 - lambda_s (< 0)
            q1 = (d1 - d) / u1
            a1, a2 = q1, 0.0
            if o == 3:
                d2, s2 = hist[-2]
                u2 = np.log(s / s2)
                a2 = (q1 - (d2 - d) / u2) / (u1 - u2)
                a1 = q1 - a2 * u1
            xn = xn + (h - 1 + np.exp(-h)) * a1 + (h * h - 2 * h + 2 - 2 * np.exp(-h)) * a2
        hist.append((d, s))
        x = xn
    return x


@pytest.mark.parametrize("order", [pytest.param(2, marks=pytest.mark.slow), 3])
def test_zero_ems_is_dpmpp_multistep_taylor_form(order):
    x0 = SMAX * jax.random.normal(jax.random.key(3), (16, 2))
    nodes = np.asarray(sd.make_grid("logsnr", 7, SMAX, 0.002))
    a, info = sd.sample(MODEL, key=jax.random.key(0), x_init=x0, sigma_max=SMAX, nfe=8, grid="logsnr",
                        solver="dpm_solver_v3", solver_options={"order": order, "corrector": False})
    assert int(info.num_model_evals) == 8
    b = jax.vmap(MODEL, (0, None))(_taylor_dpmpp(MODEL, x0, nodes, order), nodes[-1])  # the final denoise
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def reference():
    x0 = SMAX * jax.random.normal(jax.random.key(3), (32, 2))
    return x0, sd.solve_pf_ode(MODEL, x0, SMAX, SMIN, rtol=1e-12, atol=1e-12)


def _slope(x0, ref, options, nfes=(24, 48, 96, 192)):
    errs = []
    for nfe in nfes:
        x, info = sd.sample(MODEL, key=jax.random.key(0), x_init=x0, sigma_max=SMAX, sigma_min=SMIN, nfe=nfe,
                            grid="logsnr", solver="dpm_solver_v3", solver_options=options(nfe))
        assert int(info.num_model_evals) == nfe
        errs.append(float(jnp.mean(jnp.linalg.norm(x - ref, axis=-1))))
    assert errs[-1] > 1e-11  # above the reference's own error
    # the order seen in the last halving of the step (the corrector's errors fall faster than O(h^3) at first:
    # error ratios 17, 20, then 8.5 for the default)
    return np.log2(errs[-2] / errs[-1]), errs


@pytest.mark.slow  # the reference solve compiles (10 s); each case about 4 s
@pytest.mark.parametrize("options,order", [
    ({"order": 3, "corrector": False}, 3),
    ({"order": 3, "pseudo": True, "corrector": False}, 2),  # pseudo-order: the first derivative from the nearest value
    ({"order": 2, "corrector": True}, 3),  # the corrector raises the order by one
    ({"order": 1, "corrector": True}, 2),
    ({"order": 3}, 3),  # the default: order 3 with the corrector (capped at 3)
])
def test_convergence_order_zero_ems(options, order, reference):
    slope, errs = _slope(*reference, lambda nfe: options)
    assert abs(slope - order) < 0.3, (slope, errs)


@pytest.mark.slow  # 10 s
def test_consistent_with_smooth_nonzero_ems(reference):
    """Any l, s, b leave the ODE unchanged, so the solver converges with them too. The integrals with ``e^S`` and
    ``B`` use the trapezoid rule on K fixed points per step (error O(h^3 / K^2) per step), so the global order is
    at least 2 (3 from the predictor until the quadrature dominates)."""
    k = 8

    def options(nfe):
        lm = -np.log(np.asarray(sd.make_grid("logsnr", nfe, SMAX, SMIN)))
        lam = np.stack([np.linspace(lm[i], lm[i + 1], k + 1) for i in range(nfe)])[..., None] * np.ones(2)
        return {"order": 3, "corrector": False, "l": 0.5 * (1 + 0.2 * np.sin(lam)), "s": -(1 + 0.3 * np.cos(lam)),
                "b": 0.3 * (1 - 0.5 * np.sin(2 * lam))}

    slope, errs = _slope(*reference, options)
    assert slope > 1.8, (slope, errs)
    assert errs[-1] < 1e-3, errs


def test_bad_ems_and_options_name_the_argument():
    e = np.zeros((7, 3, 2))
    with pytest.raises(ValueError, match=r"dpm_solver_v3: order must be 1, 2 or 3, got 4"):
        sd.get_solver("dpm_solver_v3", order=4)
    with pytest.raises(ValueError, match=r"dpm_solver_v3: pseudo must be a bool"):
        sd.get_solver("dpm_solver_v3", pseudo=1)
    with pytest.raises(ValueError, match=r"dpm_solver_v3: corrector must be a bool"):
        sd.get_solver("dpm_solver_v3", corrector="yes")
    with pytest.raises(ValueError, match=r"dpm_solver_v3: l, s and b \(the EMS\) must be given together, got \['l'\]"):
        sd.get_solver("dpm_solver_v3", l=e)
    with pytest.raises(ValueError, match=r"dpm_solver_v3: s must have shape \[num_steps, K \+ 1, \*event_shape\]"):
        sd.get_solver("dpm_solver_v3", l=e, s=np.zeros(7), b=e)
    with pytest.raises(ValueError, match=r"dpm_solver_v3: b must have shape .*K \+ 1 >= 2, got shape \(7, 1, 2\)"):
        sd.get_solver("dpm_solver_v3", l=e, s=e, b=np.zeros((7, 1, 2)))
    with pytest.raises(ValueError, match=r"dpm_solver_v3: b has non-finite values"):
        sd.get_solver("dpm_solver_v3", l=e, s=e, b=np.full((7, 3, 2), np.inf))
    with pytest.raises(ValueError, match=r"dpm_solver_v3: l must be an array of numbers"):
        sd.get_solver("dpm_solver_v3", l="abc", s=e, b=e)
    with pytest.raises(ValueError, match=r"dpm_solver_v3: l, s and b must have one shape"):
        sd.get_solver("dpm_solver_v3", l=e, s=np.zeros((7, 4, 2)), b=e)
    nodes = sd.make_grid("logsnr", 6, SMAX, 0.002)
    with pytest.raises(ValueError, match=r"dpm_solver_v3: nodes has 6 intervals but the EMS have 7 steps"):
        sd.get_solver("dpm_solver_v3", l=e, s=e, b=e, nodes=nodes)
    kw = dict(key=jax.random.key(0), shape=(4, 2), sigma_max=SMAX, grid="logsnr")
    with pytest.raises(ValueError, match=r"dpm_solver_v3: l has values for 7 steps, but this call plans 9 steps"):
        sd.sample(MODEL, solver="dpm_solver_v3", solver_options={"l": e, "s": e, "b": e}, nfe=10, **kw)
    with pytest.raises(ValueError, match=r"sample: solver 'dpm_solver_v3' was fitted on the grid"):
        sd.sample(MODEL, solver="dpm_solver_v3", nfe=8,
                  solver_options={"l": e, "s": e, "b": e, "nodes": sd.make_grid("karras", 7, SMAX, 0.002)}, **kw)
    fkw = dict(key=jax.random.key(1), nfe=6, sigma_max=SMAX, event_shape=(2,))
    with pytest.raises(ValueError, match=r"fit_v3: sub_steps must be an int >= 1"):
        sd.fit_v3(MODEL, sub_steps=0, **fkw)
    with pytest.raises(ValueError, match=r"fit_v3: num_probes must be an int >= 1"):
        sd.fit_v3(MODEL, num_probes=0, **fkw)
    with pytest.raises(ValueError, match=r"fit_v3: pseudo must be a bool"):
        sd.fit_v3(MODEL, pseudo="yes", **fkw)
    with pytest.raises(ValueError, match=r"fit_v3: nfe must be an int >= 2"):
        sd.fit_v3(MODEL, **{**fkw, "nfe": 1})


@pytest.mark.slow  # 15 s: the data solve and the JVP statistics compile
def test_fit_v3_shapes_and_counts():
    fit = sd.fit_v3(MODEL, key=jax.random.key(7), nfe=4, sigma_max=SMAX, event_shape=(2,), num_samples=32,
                    sub_steps=4)
    o, d = fit.solver_options, fit.diagnostics
    assert fit.solver == "dpm_solver_v3" and o["l"].shape == o["s"].shape == o["b"].shape == (3, 5, 2)
    assert len(d["lambdas"]) == 3 * 4 + 1
    # exact diag: per point 2 JVPs (J e_j), 2 JVPs of those (their d/dlambda) and dD/dlambda
    assert d["num_model_evals"] == 32 * 13 and d["num_jvps"] == 32 * 13 * 5
    # a node is shared by two steps: one value
    np.testing.assert_array_equal(o["l"][0, -1], o["l"][1, 0])
    # l = E[diag dD/dx] lies in [0, 1] for a mixture of isotropic components (D's Jacobian is Cov[x0 | x] / sigma^2)
    assert np.all(o["l"] >= -1e-12) and np.all(o["l"] <= 1 + 1e-12)
    x, info = sd.sample(MODEL, key=jax.random.key(0), shape=(8, 2), **fit.sample_kwargs)
    assert int(info.num_model_evals) == 4 and bool(jnp.all(jnp.isfinite(x)))


@pytest.mark.slow  # 15 s
def test_fitted_ems_reduce_the_first_order_local_error():
    """The EMS minimise the first-order discretisation error: one order-1 step from exact PF-ODE states (held-out
    noises) with the fitted l, s, b is far closer to the exact state than DDIM's step (l = s = b = 0). Measured
    ratios (ring8, 10 steps on the logsnr grid 80 -> 0.002, 512 fitting / 512 held-out noises): about 1e-4 at the
    first three steps, 2e-3 at the fourth and 0.03 at the last three; the two steps across sigma ~ 1 (where the
    modes separate: 0.2, 3.4) and the next (0.9) are left out."""
    from samplax.diffusion.solvers import StepContext

    fit = sd.fit_v3(MODEL, key=jax.random.key(7), nfe=11, sigma_max=SMAX, event_shape=(2,), num_samples=512,
                    sub_steps=8, order=1)
    nodes, o = fit.nodes, fit.solver_options
    x0 = SMAX * jax.random.normal(jax.random.key(9), (512, 2))
    path = sd.solve_pf_ode(MODEL, x0, SMAX, float(nodes[-1]), rtol=1e-11, atol=1e-11, save_sigmas=nodes)
    solver = sd.get_solver("dpm_solver_v3", order=1, corrector=False)
    dz = jax.vmap(MODEL, in_axes=(0, None))

    @jax.jit
    def one_step(x, sig, l, s, b):
        plan = {"order": jnp.ones((1,), jnp.int32), "v3_l": l, "v3_s": s, "v3_b": b}
        return solver.step(solver.init(x, sig, plan), 0, StepContext(dz, sig, plan, None, {}))[0].x

    for i in (0, 1, 2, 3, 7, 8, 9):
        rows = [jnp.asarray(o[k][i:i + 1]) for k in ("l", "s", "b")]
        sig = jnp.asarray(nodes[i:i + 2])
        e_fit = float(jnp.mean(jnp.sum((one_step(path[i], sig, *rows) - path[i + 1]) ** 2, -1)))
        zero = [jnp.zeros_like(r) for r in rows]
        e_ddim = float(jnp.mean(jnp.sum((one_step(path[i], sig, *zero) - path[i + 1]) ** 2, -1)))
        assert e_fit < 0.2 * e_ddim, (i, e_fit, e_ddim)


# Measured endpoint errors, fitted / zero EMS, of the default (order 3 with the corrector) on these 256 noises
# (fit_v3 with 512 noises, K = 8): ring8 0.19 (NFE 5), 0.46 (NFE 10); grid25 0.55, 0.28.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ring8", "grid25"])
@pytest.mark.parametrize("nfe", [5, 10])
def test_fitted_ems_beat_zero_ems_on_held_out_noises(name, nfe):
    model = sd.get_model(name)
    x = SMAX * jax.random.normal(jax.random.key(123), (256, 2))
    ref = sd.solve_pf_ode(model, x, SMAX, 0.0, rtol=1e-10, atol=1e-10)
    fit = sd.fit_v3(model, key=jax.random.key(7), nfe=nfe, sigma_max=SMAX, event_shape=(2,), num_samples=512,
                    sub_steps=8)

    def err(options):
        y, info = sd.sample(model, key=jax.random.key(0), x_init=x, **{**fit.sample_kwargs, "solver_options": options})
        assert int(info.num_model_evals) == nfe
        return float(jnp.mean(jnp.linalg.norm(y - ref, axis=-1)))

    o = fit.solver_options
    zero = {**o, "l": np.zeros_like(o["l"]), "s": np.zeros_like(o["s"]), "b": np.zeros_like(o["b"])}
    e_fit, e_zero = err(o), err(zero)
    assert e_fit < 0.7 * e_zero, (name, nfe, e_fit, e_zero)
