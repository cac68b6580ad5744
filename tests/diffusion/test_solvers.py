"""Solver correctness: convergence order vs a diffrax reference, NFE accounting, no NaN, no cliff."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as sd

# A smooth 2-D mixture (component stds 0.3..0.5): its PF-ODE between sigma 20 and 0.2 is
# non-stiff, so 20..160 steps are in the asymptotic regime of every solver.
MODEL = sd.GaussianMixtureDiffusion(np.array([0.5, 0.3, 0.2]), np.array([[1.0, 0.0], [-0.5, 0.8], [-0.3, -1.0]]),
                                    np.array([0.4, 0.5, 0.3]))
SMAX, SMIN = 20.0, 0.2

# Asymptotic global order on the log-SNR grid. Multistep methods start at order 1
# (one step, local error O(h^2)), so without a corrector their global order is at most 2:
# DPM-Solver++(3M) converges at order 2 asymptotically. DEIS-3 also starts at order 1, but
# its first step is Euler in sigma at sigma_max where eps = (x - D)/sigma is nearly constant,
# so that step's error is far below the order-3 error in this NFE range and the measured
# order is 3. The UniC corrector lifts the order-1 start to order 2 locally, so UniPC-2 with
# UniC has order 3. iPNDM's fixed Adams-Bashforth weights match a smoothly varying grid to
# second order only.
ORDERS = {
    "euler": 1, "ddim": 1, "dpm_solver_1": 1, "heun": 2, "dpm_solver_2": 2, "dpm_solver_3": 3,
    "dpmpp_2m": 2, "dpmpp_3m": 2, "unip_bh1": 2, "unip_bh2": 2, "unipc_bh1": 3, "unipc_bh2": 3,
    "deis": 3, "ipndm": 2, "hb": 1, "ghvb": 1,  # heavy-ball momentum with beta < 1: a first-order lag
}
NFES = (24, 48, 96, 192)  # multiples of 6: DPM-Solver-2/3 and Heun use whole steps


@pytest.fixture(scope="module")
def setup():
    x0 = SMAX * jax.random.normal(jax.random.key(3), (32, 2))
    ref = sd.solve_pf_ode(MODEL, x0, SMAX, SMIN, rtol=1e-12, atol=1e-12)
    return x0, ref


FAST = {"euler", "heun", "dpm_solver_3", "dpmpp_2m", "unipc_bh2", "deis"}


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(ORDERS)])
def test_convergence_order(name, setup):
    x0, ref = setup
    errs, nfes = [], []
    for nfe in NFES:
        x, info = sd.sample(MODEL, key=jax.random.key(0), x_init=x0, sigma_max=SMAX, sigma_min=SMIN, nfe=nfe,
                            solver=name, grid="logsnr")
        assert int(info.num_model_evals) <= nfe
        errs.append(float(jnp.mean(jnp.linalg.norm(x - ref, axis=-1))))
        nfes.append(int(info.num_model_evals))
    slope = -np.polyfit(np.log(nfes[1:]), np.log(errs[1:]), 1)[0]
    assert abs(slope - ORDERS[name]) < 0.3, (name, slope, errs)
    assert errs[-1] > 1e-11  # above the reference's own error: the slope is the solver's


def test_reference_solve_is_converged(setup):
    x0, ref = setup
    ref2 = sd.solve_pf_ode(MODEL, x0, SMAX, SMIN, rtol=1e-9, atol=1e-9)
    assert float(jnp.max(jnp.abs(ref - ref2))) < 1e-7


INTEGRATE_FAST = {"deis", "ipndm", "unipc_bh1", "dpmpp_3m", "heun", "dpm_solver_3"}
# their own tests (test_fitted_solvers.py) run them against their base solvers in the default tier
FITTED = {"iia", "dc_solver", "usf"}
CASES = [(n, "denoise") if n not in FITTED else pytest.param(n, "denoise", marks=pytest.mark.slow)
         for n in sd.solver_names() if n != "auto"] + [
    (n, "integrate") if n in INTEGRATE_FAST else pytest.param(n, "integrate", marks=pytest.mark.slow)
    for n in sd.solver_names() if n != "auto"]


@pytest.mark.parametrize("name,final_step", CASES)
def test_nfe_never_exceeded_and_finite(name, final_step, key):
    model = sd.ring8()
    for nfe in (12, 15):
        x, info = sd.sample(model, key=key, shape=(8, 2), sigma_max=80.0, nfe=nfe, solver=name, grid="karras",
                            final_step=final_step)
        assert int(info.num_model_evals) <= nfe, (name, nfe, int(info.num_model_evals))
        assert x.shape == (8, 2)
        assert bool(jnp.all(jnp.isfinite(x)))


@pytest.mark.parametrize("name", ["unipc_bh2", "restart", pytest.param("heun", marks=pytest.mark.slow),
                                  pytest.param("dpm_solver_3", marks=pytest.mark.slow)])
def test_counted_evals_match_real_calls(name, key):
    calls = []

    model = sd.ring8()

    def D(x, s):
        jax.debug.callback(lambda: calls.append(1))
        return model(x, s)

    _, info = sd.sample(D, key=key, shape=(1, 2), sigma_max=80.0, nfe=17, solver=name)
    jax.effects_barrier()
    assert len(calls) == int(info.num_model_evals) <= 17, name


def test_unipc_bh1_default_final_sigma_no_nan(key):
    """diffusers returns NaN from UniPC bh1 when the final sigma is 0; samplax must not."""
    sch = sd.ddpm_linear()
    smax = float(sch.sigma_ve(999.0))
    for final in ["denoise", "integrate"]:
        for nfe in [5, 10, 20, 50]:
            x, _ = sd.sample(sd.ring8(), key=key, shape=(64, 2), sigma_max=smax, nfe=nfe, solver="unipc_bh1",
                             final_step=final)
            assert bool(jnp.all(jnp.isfinite(x))), (final, nfe)


@pytest.fixture(scope="module")
def ring_ref():
    model = sd.ring8()
    x0 = 80.0 * jax.random.normal(jax.random.key(5), (64, 2))
    return model, x0, sd.solve_pf_ode(model, x0, 80.0, 0.0)


@pytest.mark.parametrize("name", ["deis", "ipndm", "dpmpp_3m", "unipc_bh2", "unipc_bh1"])
def test_no_cliff_between_14_and_15_steps(name, ring_ref):
    """diffusers' DEIS switches to lower order below 15 steps and its error jumps; samplax's error is monotone."""
    model, x0, ref = ring_ref
    errs = {}
    for nfe in (13, 14, 15, 16):
        x, _ = sd.sample(model, key=jax.random.key(0), x_init=x0, sigma_max=80.0, nfe=nfe, solver=name,
                         grid="logsnr", sigma_end=0.02, final_step="integrate")
        errs[nfe] = float(jnp.mean(jnp.linalg.norm(x - ref, axis=-1)))
    # one more step may not make things much worse, and 14 -> 15 is no special jump
    for a, b in [(13, 14), (14, 15), (15, 16)]:
        assert errs[b] < 1.25 * errs[a], errs
    r_14_15 = errs[14] / errs[15]
    r_neighbours = max(errs[13] / errs[14], errs[15] / errs[16])
    assert r_14_15 < 1.5 * r_neighbours + 0.2, errs


@pytest.mark.parametrize("name", ["sde_dpmpp_2m", pytest.param("ddpm", marks=pytest.mark.slow)])
def test_batch_size_invariance(name, key):
    a, _ = sd.sample(sd.ring8(), key=key, shape=(4, 2), sigma_max=80.0, nfe=10, solver=name)
    b, _ = sd.sample(sd.ring8(), key=key, shape=(9, 2), sigma_max=80.0, nfe=10, solver=name)
    np.testing.assert_allclose(a, b[:4], rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # 8 s; the default tier's budget
def test_momentum_solvers_with_beta_one_are_euler_and_ipndm(setup):
    """GHVB's velocity with beta = 1 is the Adams-Bashforth combination itself: iPNDM of that order (HB: Euler)."""
    x0, _ = setup
    kw = dict(key=jax.random.key(0), x_init=x0, sigma_max=SMAX, sigma_min=SMIN, nfe=12, grid="karras")
    for order in (1, 2, 4):
        a, _ = sd.sample(MODEL, solver="ghvb", solver_options={"order": order, "beta": 1.0}, **kw)
        b, _ = sd.sample(MODEL, solver="ipndm", solver_options={"order": order}, **kw)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-13)
    a, _ = sd.sample(MODEL, solver="hb", solver_options={"beta": 1.0}, **kw)
    b, _ = sd.sample(MODEL, solver="euler", **kw)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="beta must be in"):
        sd.get_solver("ghvb", beta=0.0)
    # the bespoke solver with its planned (unfitted) weights is iPNDM
    a, _ = sd.sample(MODEL, solver="bespoke", **kw)
    b, _ = sd.sample(MODEL, solver="ipndm", **kw)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-13)


@pytest.mark.slow  # 8 s; the default tier's budget
def test_eps_scaling_is_the_base_solver_on_the_scaled_denoiser(setup):
    """Epsilon scaling = the base solver run on D' = x - (x - D) / lambda(sigma), lambda = scale + slope sigma/smax."""
    x0, _ = setup
    kw = dict(key=jax.random.key(0), x_init=x0, sigma_max=SMAX, sigma_min=SMIN, nfe=12, grid="logsnr")

    def scaled(x, s):
        return x - (x - MODEL(x, s)) / (1.02 + 0.05 * s / SMAX)

    for base in ("dpmpp_2m", "unipc_bh2"):
        a, _ = sd.sample(MODEL, solver="eps_scaling", solver_options={"base": base, "scale": 1.02, "slope": 0.05}, **kw)
        b, _ = sd.sample(scaled, solver=base, **kw)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)
    a, _ = sd.sample(MODEL, solver="eps_scaling", solver_options={"scale": 1.0}, **kw)
    b, _ = sd.sample(MODEL, solver="dpmpp_2m", **kw)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="base must be one of"):
        sd.get_solver("eps_scaling", base="auto")


def test_auto_and_names(key):
    assert "auto" in sd.solver_names() and "dpmpp_2m" in sd.solver_names()
    assert {"logsnr", "karras", "time", "polynomial", "beta"} <= set(sd.grid_names())
    for nfe in (5, 10, 20):
        x, info = sd.sample(sd.ring8(), key=key, shape=(8, 2), sigma_max=80.0, nfe=nfe, solver="auto", tune=False)
        assert int(info.num_model_evals) <= nfe and info.solver != "auto"
        assert (info.solver, info.grid, info.final_step) == tuple(sd.auto_choice(nfe)[i] for i in (0, 1, 3))
        assert info.auto["tuned"] is False and "tune=False" in info.auto["reason"]


def test_bad_input(key):
    m = sd.ring8()
    kw = dict(key=key, shape=(4, 2), sigma_max=80.0, nfe=10)
    with pytest.raises(ValueError, match="unknown solver"):
        sd.sample(m, **{**kw, "solver": "rk99"})
    with pytest.raises(ValueError, match="unknown grid"):
        sd.sample(m, **{**kw, "grid": "nope"})
    with pytest.raises(ValueError, match="nfe"):
        sd.sample(m, **{**kw, "nfe": 0})
    with pytest.raises(ValueError, match="final_step"):
        sd.sample(m, **{**kw, "final_step": "maybe"})
    with pytest.raises(ValueError, match="sigma_min"):
        sd.sample(m, **{**kw, "sigma_min": 100.0})
    with pytest.raises(ValueError, match="exactly one"):
        sd.sample(m, key=key, sigma_max=80.0, nfe=10)
    with pytest.raises(ValueError, match="x_init"):
        sd.sample(m, key=key, x_init=jnp.ones(2), sigma_max=80.0, nfe=10)
    with pytest.raises(ValueError, match="too small"):
        sd.sample(m, **{**kw, "solver": "restart", "nfe": 5})
    with pytest.raises(ValueError, match="solver_options"):
        sd.sample(m, **{**kw, "solver_options": {"bogus": 1}})


def test_sampling_program_traced_once(key):
    """One compiled program per (solver, final step, denoiser structure, shape, dtype): changing
    sigma_max, sigma_end, nfe (within the padding bucket), the key or the model's numbers never retraces."""
    traces = []

    def D(x, s):
        traces.append(1)  # runs only while tracing
        return 0.5 * x

    kw = dict(shape=(8, 2), solver="dpmpp_2m")
    counts = []
    for smax, nfe, send in [(80.0, 10, 0.002), (40.0, 12, 0.01), (10.0, 7, 0.05)]:
        sd.sample(D, key=jax.random.fold_in(key, nfe), sigma_max=smax, nfe=nfe, sigma_end=send, **kw)
        counts.append(len(traces))
    assert counts[0] > 0 and counts[0] == counts[1] == counts[2], counts
    a, b = sd.random_mixture(1, 2, 3), sd.random_mixture(2, 2, 3)
    xa, _ = sd.sample(a, key=key, sigma_max=80.0, nfe=10, **kw)
    n = len(sd.sampling._PROGRAMS)
    xb, _ = sd.sample(b, key=key, sigma_max=80.0, nfe=10, **kw)
    assert len(sd.sampling._PROGRAMS) == n  # same structure, new numbers: same program
    assert not np.allclose(xa, xb)


def test_eager_call_after_the_same_call_under_jit(key):
    """The host-side grid and plan of a configuration were cached with the device arrays made while tracing a
    jitted call, so the same configuration called eagerly afterwards raised UnexpectedTracerError."""
    model = sd.ring8()
    x0 = 80.0 * jax.random.normal(key, (4, 2))
    kw = dict(key=key, sigma_max=80.0, nfe=9, solver="dpmpp_2m", sigma_end=0.03)
    xt = jax.jit(lambda x: sd.sample(model, x_init=x, **kw)[0])(x0)
    xe, _ = sd.sample(model, x_init=x0, **kw)
    np.testing.assert_allclose(np.asarray(xe), np.asarray(xt), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["dpmpp_3m", "unipc_bh2", pytest.param("deis", marks=pytest.mark.slow),
                                  pytest.param("sde_dpmpp_2m", marks=pytest.mark.slow)])
def test_gradients_through_a_solver_into_zero_are_finite(name):
    """The steps compute every order's update and keep the planned one (no conditional); the orders not taken
    must see safe noise levels, or their NaN (the step into sigma = 0, the first step's equal history levels)
    leaks into the gradients that grid="optimized" and solver="auto" descend."""
    from samplax.diffusion.solvers import get_solver, run_solver

    s = get_solver(name)
    plan = s.plan(6, True)  # into sigma = 0: its last step is order 1
    x0 = SMAX * jax.random.normal(jax.random.key(0), (8, 2))

    def loss(u):
        nodes = jnp.concatenate([jnp.exp(u), jnp.zeros(1)])
        x, _ = run_solver(s, lambda xb, sg: jax.vmap(MODEL, (0, None))(xb, sg), x0, nodes, plan,
                          jax.vmap(lambda b: jax.random.fold_in(jax.random.key(1), b))(jnp.arange(8)), {})
        return jnp.sum(x ** 2)

    g = jax.grad(loss)(jnp.linspace(np.log(SMAX), np.log(0.05), len(plan["order"])))
    assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0)
