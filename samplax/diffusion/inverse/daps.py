"""DAPS: decoupled annealing posterior sampling (Zhang, Chu, Berner, Sun, Yue & Azizzadenesheli, 2024,
"Improving diffusion inverse problem solving with decoupled noise annealing").

Instead of one reverse trajectory, DAPS anneals over noise levels ``s_0 = sigma_max > ... > s_{N-1} = sigma_end``
and, at each level, decouples consecutive states through a clean sample ``x0``:

1. ``x0_hat = ODE(x_i, s_i -> 0)``: the probability-flow ODE solved with ``ode_steps`` denoiser evaluations
   (``ode_steps - 1`` Euler steps on a geometric sub-grid from ``s_i`` to ``sigma_end``, then ``D``; with
   ``ode_steps = 1`` simply ``x0_hat = D(x_i, s_i)``);
2. ``langevin_steps`` unadjusted Langevin steps on ``x0`` for ``pi(x0) ∝ N(x0; x0_hat, r_i^2 I) p(y | x0)``,
   ``r_i = r_scale * s_i``, started at ``x0_hat``:
   ``x0 <- x0 + eta_i (grad log p(y | x0) - (x0 - x0_hat)/r_i^2) + sqrt(2 eta_i) z``,
   ``eta_i = step_fraction / (1/r_i^2 + L_y)`` with ``L_y`` the Lipschitz constant of
   ``grad log p(y | x)`` (``||A||^2 / sigma_y^2``; :meth:`lipschitz` of the problem);
3. ``x_{i+1} = x0 + s_{i+1} eps`` (the next level), and the last level returns ``x0``.

Cost: ``nfe // ode_steps`` levels, ``ode_steps`` denoiser evaluations each, no VJP through the denoiser;
``langevin_steps`` likelihood gradients per level (counted as ``num_likelihood_grads``).

Known bias at finite steps: ``N(x0_hat, r_i^2 I)`` is a crude stand-in for ``p(x0 | x_i)`` (its covariance is
not ``r_i^2 I``), and the Langevin chain at each level is short and unadjusted; both leave a bias that shrinks
only partly with more levels (measured in ``tests/diffusion/test_inverse.py``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from samplax.core import options as ck
from samplax.core.method import Option
from samplax.diffusion.inverse import common
from samplax.diffusion.inverse.registry import InverseMethod, MethodOutput, Plan, register
from samplax.diffusion.solvers import mark_nonfinite, no_nonfinite

OPTIONS = {
    "ode_steps": Option(1, "denoiser evaluations of the PF-ODE solve x0_hat = ODE(x_i, s_i -> 0) per level",
                        ck.pos_int, "an int >= 1"),
    "langevin_steps": Option(50, "Langevin steps on x0 per level", ck.pos_int, "an int >= 1"),
    "step_fraction": common.step_fraction_option(0.1, "Langevin step as a fraction of 1 / (1/r^2 + L_y)"),
    "r_scale": Option(1.0, "r_i = r_scale * s_i, the spread of the Gaussian stand-in for p(x0 | x_i)",
                      ck.pos_float, "a positive finite number"),
    **common.grid_options(),
}


def _plan(problem, nfe, sigma_max, num_samples, o) -> Plan:
    k = o["ode_steps"]
    levels_n = nfe // k
    if levels_n < 1:
        raise ValueError(f"inverse.sample: method 'daps' needs nfe >= ode_steps = {k}, got nfe={nfe}")
    levels = common.positive_levels(o["grid"], levels_n, sigma_max, o["sigma_end"], "inverse.sample (daps)")
    params = {"step_fraction": o["step_fraction"], "r_scale": o["r_scale"], "lipschitz": problem.lipschitz(),
              "sigma_end": o["sigma_end"]}
    evals = levels_n * k * num_samples
    return Plan(levels, params, (("ode_steps", k), ("langevin_steps", o["langevin_steps"])), evals, 0,
                num_steps=levels_n, likelihood_grads=levels_n * o["langevin_steps"] * num_samples, items=num_samples)


def _run(denoiser, problem, key, sigmas, params, num_samples, shape, ode_steps, langevin_steps):
    dtype = sigmas.dtype
    keys, init_keys = common.start_keys(key, num_samples)
    x = common.initial_noise(init_keys, sigmas[0], shape, dtype)
    n = sigmas.shape[0]
    grad_ll = jax.vmap(problem.grad_log_likelihood)

    def ode(x, s):
        if ode_steps == 1:
            return common.denoise(denoiser, x, s)
        lo = jnp.minimum(params["sigma_end"], s)
        frac = jnp.arange(ode_steps, dtype=dtype) / (ode_steps - 1)
        sub = s * (lo / s) ** frac

        def euler(j, x):
            d = common.denoise(denoiser, x, sub[j])
            return d + (sub[j + 1] / sub[j]) * (x - d)

        x = jax.lax.fori_loop(0, ode_steps - 1, euler, x)
        return common.denoise(denoiser, x, sub[ode_steps - 1])

    def body(i, state):
        x, x0, ne, nf = state
        s = sigmas[i]
        x0_hat = ode(x, s)
        r2 = (params["r_scale"] * s) ** 2
        eta = params["step_fraction"] / (1.0 / r2 + params["lipschitz"])

        def langevin(j, z0):
            g = grad_ll(z0) - (z0 - x0_hat) / r2
            return z0 + eta * g + jnp.sqrt(2.0 * eta) * common.normals(keys, i, 2 + j, shape, dtype)

        x0 = jax.lax.fori_loop(0, langevin_steps, langevin, x0_hat)
        s_next = sigmas[jnp.minimum(i + 1, n - 1)]
        x_next = x0 + s_next * common.normals(keys, i, 1, shape, dtype)
        nf = mark_nonfinite(nf, x0, i, s)
        return x_next, x0, ne + ode_steps * num_samples, nf

    zero = jnp.asarray(0, jnp.int32)
    x, x0, ne, nf = jax.lax.fori_loop(0, n, body, (x, jnp.zeros_like(x), zero, no_nonfinite(x)))
    return MethodOutput(x0, ne, zero, nf, {})


register(InverseMethod(
    "daps", "Decoupled annealing posterior sampling: per noise level, PF-ODE to x0_hat, Langevin on x0 under "
            "N(x0_hat, r^2) p(y|x0), renoise (Zhang et al. 2024)",
    OPTIONS, _plan, _run,
    bias="Gaussian N(x0_hat, r^2 I) stand-in for p(x0|x_t) and short unadjusted Langevin chains per level: biased "
         "at finite steps",
    remedy="its Langevin step on x0 (step_fraction / (1/r^2 + L_y)) is too large; lower step_fraction"))
