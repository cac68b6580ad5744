"""Per-step solver schedules (USF / S^3, Liu et al. 2023): the ``usf`` solver and :func:`search_schedule`.

Exactness: uniform schedules are the fixed solvers they name, to round-off (``dpmpp_2m``, UniPC); convergence order of
fixed schedules on ring8 against a tight PF-ODE reference. Search (slow tier): the searched schedule is at least as
good as every uniform strategy it contains on its fitting noises, and on held-out noises with a margin.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as sd
from samplax.diffusion.solvers import run_solver

SMAX = 80.0
KW = dict(key=jax.random.key(0), shape=(32, 2), sigma_max=SMAX, nfe=8, grid="karras")  # 7 steps + final denoise


def _close(a, b):
    # round-off: the weights come out of other (equivalent) expressions; values are O(1)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)


def test_uniform_schedules_are_dpmpp_2m_and_unipc_in_one_program():
    """One compiled ``usf`` program (the schedule is plan values: no retrace) runs all-order-2 data prediction
    without corrector (``dpmpp_2m``) and with UniC (``unipc_bh2``); both agree with those solvers to round-off."""
    model = sd.ring8()
    dz = lambda xb, sg: jax.vmap(model, in_axes=(0, None))(xb, sg)  # noqa: E731
    sig = jnp.asarray(sd.make_grid("karras", 7, SMAX, 0.002))
    x0 = SMAX * jax.random.normal(jax.random.key(1), (16, 2))
    usf = sd.get_solver("usf")
    run = jax.jit(lambda p: run_solver(usf, dz, x0, sig, p, None, {}))

    def plan(**opts):
        return {k: jnp.asarray(v) for k, v in sd.get_solver("usf", **opts).plan(7, False).items()}

    for opts, base in (({"order": [2] * 7, "prediction": ["data"] * 7, "corrector": [False] * 7}, "dpmpp_2m"),
                       ({"order": 2, "prediction": "data", "corrector": True}, "unipc_bh2")):
        x, ne = run(plan(**opts))
        b = sd.get_solver(base)
        y, _ = run_solver(b, dz, x0, sig, {k: jnp.asarray(v) for k, v in b.plan(7, False).items()}, None, {})
        _close(x, y)
        assert int(ne) == 7  # one call per step, no extra call for the choices
    assert run._cache_size() == 1


@pytest.mark.slow  # the sample path; the default tier checks the same in one program above
@pytest.mark.parametrize("order,variant", [(2, "bh2"), (2, "bh1"), (3, "bh2"), (3, "bh1"), (1, "bh2")])
def test_usf_with_unic_is_unipc(order, variant):
    model = sd.ring8()
    a, info = sd.sample(model, solver="usf", solver_options={"order": order, "variant": variant, "corrector": True},
                        **KW)
    b, _ = sd.sample(model, solver=f"unipc_{variant}", solver_options={"order": order}, **KW)
    _close(a, b)
    assert int(info.num_model_evals) == 8


@pytest.mark.slow
def test_usf_order2_data_without_corrector_is_dpmpp_2m():
    model = sd.ring8()
    a, info = sd.sample(model, solver="usf", solver_options={"order": [2] * 7, "prediction": ["data"] * 7,
                                                             "corrector": [False] * 7}, **KW)
    b, _ = sd.sample(model, solver="dpmpp_2m", **KW)
    _close(a, b)
    assert int(info.num_model_evals) == 8


@pytest.mark.slow
def test_usf_noise_prediction_order1_is_ddim():
    model = sd.ring8()
    a, _ = sd.sample(model, solver="usf", solver_options={"order": 1, "prediction": "noise", "corrector": False}, **KW)
    b, _ = sd.sample(model, solver="ddim", **KW)
    _close(a, b)


@pytest.mark.slow  # the default tier checks the same for two uniform schedules above
def test_new_schedule_does_not_retrace_the_step():
    model = sd.ring8()
    s = sd.get_solver("usf")
    sig = jnp.asarray(sd.make_grid("karras", 6, SMAX, 0.01))
    x0 = SMAX * jax.random.normal(jax.random.key(1), (8, 2))
    run = jax.jit(lambda p: run_solver(s, lambda xb, sg: jax.vmap(model, in_axes=(0, None))(xb, sg), x0, sig, p,
                                       None, {})[0])
    outs = []
    for opts in ({"order": 2, "corrector": False}, {"order": [1, 3, 2, 3, 1, 2], "prediction": "noise",
                                                    "corrector": [1, 0, 1, 1, 0, 1], "variant": "bh1"}):
        plan = sd.get_solver("usf", **opts).plan(6, False)
        outs.append(run({k: jnp.asarray(v) for k, v in plan.items()}))
    assert run._cache_size() == 1
    assert float(jnp.max(jnp.abs(outs[0] - outs[1]))) > 1e-6  # the schedules differ, and so do the samples


# Convergence order on ring8 between sigma 20 and 0.5 (log-SNR grid): noise prediction, order 2, no corrector is
# second order; order 2 with UniC is third order (as unipc_bh2) also when the prediction type and B(h) alternate
# from step to step.
CONV_NFES = (24, 48, 96, 192)


def _alternating(n):
    return {"order": 2, "corrector": True, "prediction": [("data", "noise")[i % 2] for i in range(n)],
            "variant": [("bh1", "bh2")[i % 2] for i in range(n)]}


@pytest.mark.slow  # ~10 s: the reference solve compiles
@pytest.mark.parametrize("options,expected", [
    (lambda n: {"order": 2, "prediction": "noise", "corrector": False}, 2),
    (_alternating, 3),
])
def test_usf_convergence_order(options, expected):
    model, smin = sd.ring8(), 0.5
    x0 = 20.0 * jax.random.normal(jax.random.key(3), (32, 2))
    ref = sd.solve_pf_ode(model, x0, 20.0, smin, rtol=1e-12, atol=1e-12)
    errs = []
    for nfe in CONV_NFES:
        x, info = sd.sample(model, key=jax.random.key(0), x_init=x0, sigma_max=20.0, sigma_min=smin, nfe=nfe,
                            solver="usf", solver_options=options(nfe), grid="logsnr")
        assert int(info.num_model_evals) == nfe
        errs.append(float(jnp.mean(jnp.linalg.norm(x - ref, axis=-1))))
    slope = -np.polyfit(np.log(CONV_NFES[1:]), np.log(errs[1:]), 1)[0]
    assert abs(slope - expected) < 0.3, (slope, errs)
    assert errs[-1] > 1e-11


def test_bad_schedules_name_the_argument():
    with pytest.raises(ValueError, match=r"usf: order must be 1, 2 or 3 \(per step\), got 4"):
        sd.get_solver("usf", order=[1, 2, 4])
    with pytest.raises(ValueError, match=r"usf: order must be 1, 2 or 3 \(per step\), got True"):
        sd.get_solver("usf", order=True)
    with pytest.raises(ValueError, match=r"usf: prediction must be one of \('data', 'noise'\) \(per step\), got 'v'"):
        sd.get_solver("usf", prediction=["data", "v"])
    with pytest.raises(ValueError, match=r"usf: variant must be one of \('bh1', 'bh2'\) \(per step\), got 'bh3'"):
        sd.get_solver("usf", variant="bh3")
    with pytest.raises(ValueError, match=r"usf: corrector must be a bool \(or 0/1\) \(per step\), got 'yes'"):
        sd.get_solver("usf", corrector="yes")
    with pytest.raises(ValueError, match=r"usf: order must not be an empty sequence"):
        sd.get_solver("usf", order=[])
    # the number of steps follows nfe (7 steps + final denoise here): raised before anything compiles
    with pytest.raises(ValueError, match=r"usf: order has values for 3 steps, but this call plans 7 steps"):
        sd.sample(sd.ring8(), solver="usf", solver_options={"order": [1, 2, 2]}, **KW)
    with pytest.raises(ValueError, match=r"usf: corrector has values for 8 steps, but this call plans 7 steps"):
        sd.sample(sd.ring8(), solver="usf", solver_options={"corrector": [True] * 8}, **KW)
    with pytest.raises(ValueError, match=r"make_grid: grid 'given' needs n \+ 1 = 8 nodes"):
        sd.sample(sd.ring8(), solver="usf", **{**KW, "grid": "given"}, grid_options={"nodes": (80.0, 1.0, 0.002)})
    kw = dict(key=jax.random.key(0), nfe=6, sigma_max=SMAX, event_shape=(2,))
    with pytest.raises(ValueError, match=r"search_schedule: orders must be a non-empty sequence of values from"):
        sd.search_schedule(sd.ring8(), orders=(1, 4), **kw)
    with pytest.raises(ValueError, match=r"search_schedule: predictions must be a non-empty sequence"):
        sd.search_schedule(sd.ring8(), predictions=("x0",), **kw)
    with pytest.raises(ValueError, match=r"search_schedule: grid must be one of"):
        sd.search_schedule(sd.ring8(), grid=("logsnr", "nope"), **kw)


def _err(model, x, ref, **kw):
    out, _ = sd.sample(model, key=jax.random.key(1), x_init=x, **kw)
    return float(np.mean(np.linalg.norm(np.asarray(out) - ref, axis=-1)))


@pytest.mark.slow  # ~1 min: the reference solves compile, ~400-1100 schedules searched
@pytest.mark.parametrize("refine_nodes", [False, True])
def test_searched_schedule_beats_every_uniform_strategy(refine_nodes):
    model, nfe = sd.ring8(), 6
    fit = sd.search_schedule(model, key=jax.random.key(0), nfe=nfe, sigma_max=SMAX, event_shape=(2,),
                             num_samples=256, refine_nodes=refine_nodes)
    d = fit.diagnostics
    n = nfe - 1
    assert fit.solver == "usf" and len(fit.solver_options["order"]) == n
    assert d["num_model_evals"] == d["candidates"] * 256 * nfe
    # on its fitting noises it contains the uniform strategies, so it is at least as good as the best of them
    assert d["error"] <= d["best_fixed"][1]
    # held out: every uniform strategy on the same grid (dpmpp_2m, unipc_bh2, ... among them), run by one compiled
    # program (the choices are plan values)
    z = SMAX * jax.random.normal(jax.random.key(7), (1024, 2))
    ref = np.asarray(sd.solve_pf_ode(model, z, SMAX, 0.0))
    dz = lambda xb, sg: jax.vmap(model, in_axes=(0, None))(xb, sg)  # noqa: E731
    sig = jnp.asarray(fit.nodes)
    run = jax.jit(lambda p: dz(run_solver(sd.get_solver("usf"), dz, z, sig, p, None, {})[0], sig[-1]))

    def held_out(**opts):
        plan = sd.get_solver("usf", **opts).plan(n, False)
        x = run({k: jnp.asarray(v) for k, v in plan.items()})
        return float(np.mean(np.linalg.norm(np.asarray(x) - ref, axis=-1)))

    searched = {k: v for k, v in fit.solver_options.items() if k != "nodes"}
    e_s = held_out(**searched)
    fixed = [held_out(order=o, prediction=p, corrector=c, variant=v) for o in (1, 2, 3) for p in ("data", "noise")
             for c in (False, True) for v in ("bh1", "bh2")]
    assert e_s <= 1.05 * min(fixed), (e_s, min(fixed))
    # sample with the fit's arguments is the same sampler
    assert abs(_err(model, z, ref, **fit.sample_kwargs) - e_s) <= 1e-9 * e_s
    # and it reproduces through sample's arguments: its own nodes, refused on another grid
    with pytest.raises(ValueError, match=r"solver 'usf' was fitted on the grid"):
        sd.sample(model, key=jax.random.key(1), x_init=z, **{**fit.sample_kwargs, "grid": "karras",
                                                              "grid_options": {}})
