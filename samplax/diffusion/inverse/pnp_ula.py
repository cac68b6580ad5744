"""PnP-ULA: plug-and-play unadjusted Langevin (Laumont, De Bortoli, Almansa, Delon, Durmus & Pereyra, SIAM J.
Imaging Sci. 2022, "Bayesian imaging using Plug & Play priors").

The prior score is replaced by the denoiser's at a fixed small noise level ``eps`` (Tweedie:
``grad log p_eps(x) = (D(x, eps) - x) / eps^2``), so the chain targets the posterior with the *smoothed*
prior, ``pi_eps(x) ∝ p_eps(x) p(y | x)``. One step:

``x <- x + delta [grad log p(y | x) + (alpha / eps^2) (D(x, eps) - x)] + (delta / lambda) (P_C(x) - x)
+ sqrt(2 delta) z``

with ``P_C`` the projection on the ball of radius ``projection_radius`` (off by default; the paper's
stabilizer), ``lambda = 1 / (2 L)``, ``L = L_y + alpha / eps^2`` (``L_y = ||A||^2 / sigma_y^2``), and
``delta = step_fraction / L`` (``step_fraction / (L + 1/lambda)`` with the projection).

The chains start from an unconditional DDPM prior draw with ``init_nfe`` denoiser evaluations
(``init="prior"``, default ``max(1, nfe // 10)``) or from ``A^+ y`` (``init="pinv"``, linear problems), and
make the remaining ``nfe - init_nfe`` Langevin steps (one denoiser evaluation each, no VJP, one likelihood
gradient each); the sample is each chain's last state.

Known bias: the smoothed prior ``p_eps`` (spread ``eps^2`` added to every component), the step size
(unadjusted: ``O(delta)``) and, on multimodal posteriors, slow mixing between modes (chains keep the
mode weights of their start); measured in ``tests/diffusion/test_inverse.py``, where the smoothed
posterior of the exact prior is the method's own target.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core import options as ck
from samplax.core.method import Option
from samplax.diffusion.inverse import common
from samplax.diffusion.inverse.registry import InverseMethod, MethodOutput, Plan, register
from samplax.diffusion.solvers import mark_nonfinite, no_nonfinite

INITS = ("prior", "pinv")

OPTIONS = {
    "sigma_denoiser": Option(0.05, "noise level eps of the denoiser used as prior score (data units)",
                             ck.pos_float, "a positive finite number"),
    "alpha": Option(1.0, "weight of the prior score", ck.pos_float, "a positive finite number"),
    "step_fraction": common.step_fraction_option(0.25, "Langevin step delta as a fraction of 1 / L"),
    "projection_radius": Option(None, "radius of the ball C of the projection term (None: no projection)",
                                ck.pos_float_or_none, "None or a positive finite number"),
    "init": Option("prior", "chain start: 'prior' (DDPM prior draw with init_nfe evaluations) or 'pinv' (A^+ y)",
                   ck.one_of(INITS), f"one of {INITS}"),
    "init_nfe": Option(None, "denoiser evaluations of the prior draw that starts each chain (None: max(1, nfe // 10))",
                       ck.pos_int_or_none, "None or an int >= 1"),
    **common.grid_options(),
}


def _plan(problem, nfe, sigma_max, num_samples, o) -> Plan:
    if o["init"] == "pinv" and not problem.linear:
        raise ValueError("inverse.sample: pnp_ula with init='pinv' needs a LinearGaussian problem")
    init_nfe = 0 if o["init"] == "pinv" else (max(1, nfe // 10) if o["init_nfe"] is None else o["init_nfe"])
    steps = nfe - init_nfe
    if steps < 1:
        raise ValueError(f"inverse.sample: pnp_ula needs nfe > init_nfe ({init_nfe}) for at least one Langevin step, "
                         f"got nfe={nfe}")
    eps = o["sigma_denoiser"]
    lip = problem.lipschitz() + o["alpha"] / eps**2
    radius = o["projection_radius"]
    inv_lam = 2.0 * lip if radius is not None else 0.0
    delta = o["step_fraction"] / (lip + inv_lam)
    levels = (common.positive_levels(o["grid"], init_nfe, sigma_max, o["sigma_end"], "inverse.sample (pnp_ula)")
              if init_nfe > 0 else np.zeros(0))
    params = {"delta": delta, "eps": eps, "alpha": o["alpha"], "inv_lambda": inv_lam,
              "radius": np.inf if radius is None else radius}
    return Plan(levels, params, (("steps", steps), ("init", o["init"])), nfe * num_samples, 0, num_steps=steps,
                likelihood_grads=steps * num_samples, items=num_samples)


def _run(denoiser, problem, key, sigmas, params, num_samples, shape, steps, init):
    dtype = params["delta"].dtype
    keys, init_keys = common.start_keys(key, num_samples)
    if init == "pinv":
        x0 = problem.operator.pinv(problem.y).reshape(shape)
        x = jnp.broadcast_to(x0, (num_samples,) + shape).astype(dtype)
        ne = jnp.asarray(0, jnp.int32)
    else:
        x = common.initial_noise(init_keys, sigmas[0], shape, dtype)
        x = common.prior_ancestral(denoiser, x, sigmas, init_keys, step0=1)
        ne = jnp.asarray(sigmas.shape[0] * num_samples, jnp.int32)
    grad_ll = jax.vmap(problem.grad_log_likelihood)
    delta, eps = params["delta"], params["eps"]

    def body(i, state):
        x, ne, nf = state
        d = common.denoise(denoiser, x, eps)
        drift = grad_ll(x) + params["alpha"] / eps**2 * (d - x)
        flat = x.reshape(num_samples, -1)
        norm = jnp.linalg.norm(flat, axis=1, keepdims=True)
        proj = (flat * jnp.minimum(1.0, params["radius"] / jnp.maximum(norm, 1e-300))).reshape(x.shape)
        x_new = (x + delta * drift + delta * params["inv_lambda"] * (proj - x)
                 + jnp.sqrt(2.0 * delta) * common.normals(keys, i, 0, shape, dtype))
        return x_new, ne + num_samples, mark_nonfinite(nf, x_new, i, eps)

    x, ne, nf = jax.lax.fori_loop(0, steps, body, (x, ne, no_nonfinite(x)))
    return MethodOutput(x, ne, jnp.asarray(0, jnp.int32), nf, {})


register(InverseMethod(
    "pnp_ula", "Plug-and-play unadjusted Langevin: the denoiser at a fixed eps as prior score "
               "(Laumont et al. 2022)",
    OPTIONS, _plan, _run,
    bias="targets the posterior with the eps-smoothed prior; O(step) discretization bias; slow mixing between modes",
    remedy="its Langevin step (step_fraction / L) is too large for this problem; lower step_fraction"))
