"""Fitted solvers (issue 17): IIA (improved integration approximation) and DC-Solver (dynamic compensation).

Exactness: with zero coefficients IIA is its base solver, and with all ratios 1 DC-Solver is UniPC, bit for bit.
Accuracy (slow tier): fitted on one batch of noises, each beats its base at the same NFE on other noises, measured
against a tight PF-ODE reference on the exact ring8 / grid25 mixtures.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as sd

SMAX = 80.0
KW = dict(key=jax.random.key(0), shape=(16, 2), sigma_max=SMAX, nfe=8, grid="karras")  # 7 steps + final denoise


def test_iia_with_zero_coefficients_is_its_base_bit_for_bit():
    model = sd.ring8()
    a, info = sd.sample(model, solver="iia", solver_options={"base": "ddim", "coefficients": np.zeros((7, 3))}, **KW)
    b, _ = sd.sample(model, solver="ddim", **KW)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(info.num_model_evals) == 8  # no extra call


def test_dc_solver_with_unit_ratios_is_unipc_bit_for_bit():
    model = sd.ring8()
    a, info = sd.sample(model, solver="dc_solver", solver_options={"ratios": np.ones(7)}, **KW)
    b, _ = sd.sample(model, solver="unipc_bh2", **KW)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(info.num_model_evals) == 8


def test_bad_coefficients_ratios_and_grids_name_the_argument():
    model = sd.ring8()
    with pytest.raises(ValueError, match=r"iia: base must be one of .*got 'heun'"):
        sd.get_solver("iia", base="heun")
    with pytest.raises(ValueError, match=r"iia: coefficients must have shape \[num_steps, num_terms\], got shape \(7,\)"):
        sd.get_solver("iia", coefficients=np.zeros(7))
    with pytest.raises(ValueError, match=r"iia: coefficients must have 1..4 columns"):
        sd.get_solver("iia", coefficients=np.zeros((7, 5)))
    with pytest.raises(ValueError, match=r"iia: coefficients has non-finite values"):
        sd.get_solver("iia", coefficients=np.full((7, 2), np.nan))
    with pytest.raises(ValueError, match=r"iia: num_terms=2 but coefficients has 3 columns"):
        sd.get_solver("iia", coefficients=np.zeros((7, 3)), num_terms=2)
    with pytest.raises(ValueError, match=r"dc_solver: ratios must have shape \[num_steps\]"):
        sd.get_solver("dc_solver", ratios=np.ones((7, 1)))
    with pytest.raises(ValueError, match=r"dc_solver: ratios of the first dc_order=2 steps must be 1"):
        sd.get_solver("dc_solver", ratios=[0.9, 1, 1, 1])
    with pytest.raises(ValueError, match=r"dc_solver: dc_order must be 1, 2 or 3"):
        sd.get_solver("dc_solver", dc_order=4)
    # another nfe: the number of steps does not match the fitted values (raised before anything compiles)
    with pytest.raises(ValueError, match=r"iia: coefficients has values for 7 steps, but this call plans 9 steps"):
        sd.sample(model, solver="iia", solver_options={"coefficients": np.zeros((7, 3))}, **{**KW, "nfe": 10})
    with pytest.raises(ValueError, match=r"dc_solver: ratios has values for 7 steps, but this call plans 4 steps"):
        sd.sample(model, solver="dc_solver", solver_options={"ratios": np.ones(7)}, **{**KW, "nfe": 5})
    # another grid than the one the values were fitted on
    nodes = sd.make_grid("logsnr", 7, SMAX, 0.002)
    with pytest.raises(ValueError, match=r"sample: solver 'iia' was fitted on the grid .*solver_options\['nodes'\]"):
        sd.sample(model, solver="iia", solver_options={"coefficients": np.zeros((7, 3)), "nodes": nodes}, **KW)
    with pytest.raises(ValueError, match=r"iia: nodes must be the fit's strictly decreasing positive grid"):
        sd.get_solver("iia", nodes=nodes[::-1])
    with pytest.raises(ValueError, match="save_sigmas must be a strictly decreasing"):
        sd.solve_pf_ode(model, jnp.zeros((2, 2)), SMAX, 0.0, save_sigmas=[0.5, 5.0])
    with pytest.raises(ValueError, match=r"save_sigmas must lie within \[sigma_stop, sigma_start\]"):
        sd.solve_pf_ode(model, jnp.zeros((2, 2)), SMAX, 1.0, save_sigmas=[5.0, 0.5])
    # the fitting functions
    fkw = dict(key=jax.random.key(1), nfe=6, sigma_max=SMAX, event_shape=(2,))
    with pytest.raises(ValueError, match=r"fit_iia: base must be one of"):
        sd.fit_iia(model, base="restart", **fkw)
    with pytest.raises(ValueError, match=r"fit_iia: nfe must be an int >= 2"):
        sd.fit_iia(model, **{**fkw, "nfe": 1})
    with pytest.raises(ValueError, match=r"fit_iia: fine_steps must be an int >= 1"):
        sd.fit_iia(model, fine_steps=0, **fkw)
    with pytest.raises(ValueError, match=r"fit_iia: grid must be one of .*got 'optimized'"):
        sd.fit_iia(model, grid="optimized", **fkw)
    with pytest.raises(ValueError, match=r"fit_iia: the denoiser fails on one point of shape \(3,\).*event_shape"):
        sd.fit_iia(model, **{**fkw, "event_shape": (3,)})
    with pytest.raises(ValueError, match=r"fit_dc: search must be a range \(low, high\) with low < 1 < high"):
        sd.fit_dc(model, search=(1.2, 2.0), **fkw)
    with pytest.raises(ValueError, match=r"fit_dc: num_candidates must be odd"):
        sd.fit_dc(model, num_candidates=40, **fkw)


@pytest.mark.slow  # 10 s: two reference solves compile
def test_reference_trajectory_saves_the_grid():
    """solve_pf_ode(save_sigmas=...) returns the states of one solve at every node; the end equals the plain solve."""
    model = sd.ring8()
    x0 = SMAX * jax.random.normal(jax.random.key(2), (4, 2))
    sig = np.array([SMAX, 5.0, 0.5, 0.0])
    path = sd.solve_pf_ode(model, x0, SMAX, 0.0, rtol=1e-9, atol=1e-9, save_sigmas=sig)
    assert path.shape == (4, 4, 2)
    np.testing.assert_array_equal(np.asarray(path[0]), np.asarray(x0))
    np.testing.assert_array_equal(np.asarray(path[-1]), np.asarray(sd.solve_pf_ode(model, x0, SMAX, 0.0, rtol=1e-9,
                                                                                   atol=1e-9)))


def _endpoint_error(model, x_init, ref, **kw):
    kw = {"sigma_max": SMAX, **kw}
    x, info = sd.sample(model, key=jax.random.key(0), x_init=x_init, **kw)
    assert int(info.num_model_evals) == kw["nfe"]
    return float(jnp.mean(jnp.linalg.norm(x - ref, axis=-1)))


@pytest.fixture(scope="module")
def held_out():
    """Per model: 256 noises that no fit sees (the fits draw theirs from fold_in(key(7), b)) and their exact
    PF-ODE endpoints."""
    out = {}
    for name in ("ring8", "grid25"):
        model = sd.get_model(name)
        x = SMAX * jax.random.normal(jax.random.key(123), (256, 2))
        out[name] = (model, x, sd.solve_pf_ode(model, x, SMAX, 0.0, rtol=1e-10, atol=1e-10))
    return out


# Measured error ratios fitted / base on these 256 noises (fit_iia defaults: 64 noises, 10 fine steps, 3 terms;
# fit_dc defaults: 32 noises): IIA-DDIM 0.58, 0.51 (ring8 NFE 5, 10), 0.32, 0.19 (grid25); IIA-DPM-Solver++(2M)
# 0.49, 0.55, 0.70, 0.69; DC-Solver 0.46, 0.43, 0.73, 0.87 (docs/tutorials/diffusion.md).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ring8", "grid25"])
@pytest.mark.parametrize("nfe", [5, 10])
def test_fitted_iia_beats_its_base_on_held_out_noises(name, nfe, held_out):
    model, x, ref = held_out[name]
    for base in ("ddim", "dpmpp_2m"):
        fit = sd.fit_iia(model, key=jax.random.key(7), base=base, nfe=nfe, sigma_max=SMAX, event_shape=(2,))
        assert fit.solver == "iia" and len(fit.solver_options["coefficients"]) == nfe - 1
        # least squares: each fitted step is at least as close to its fine target as the base step
        assert np.all(fit.diagnostics["local_error"] <= fit.diagnostics["local_error_base"] * (1 + 1e-9))
        # the difference terms do not exist at step 0: their coefficients are 0 there
        assert fit.solver_options["coefficients"][0][1:] == (0.0, 0.0)
        e_base = _endpoint_error(model, x, ref, solver=base, nfe=nfe)
        e_fit = _endpoint_error(model, x, ref, **fit.sample_kwargs)
        assert e_fit < 0.9 * e_base, (name, nfe, base, e_fit, e_base)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ring8", "grid25"])
@pytest.mark.parametrize("nfe", [5, 10])
def test_fitted_dc_solver_beats_unipc_on_held_out_noises(name, nfe, held_out):
    model, x, ref = held_out[name]
    fit = sd.fit_dc(model, key=jax.random.key(7), nfe=nfe, sigma_max=SMAX, event_shape=(2,))
    ratios = np.asarray(fit.solver_options["ratios"])
    assert ratios.shape == (nfe - 1,) and np.all(ratios[:2] == 1.0)
    # the search includes rho = 1, so the fitted loss of every searched step is at most UniPC's
    d = fit.diagnostics
    assert np.all(d["loss"][2:] <= d["loss_uncompensated"][2:])
    e_base = _endpoint_error(model, x, ref, solver="unipc_bh2", nfe=nfe)
    e_fit = _endpoint_error(model, x, ref, **fit.sample_kwargs)
    assert e_fit < 0.9 * e_base, (name, nfe, e_fit, e_base)
