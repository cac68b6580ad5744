"""DPS: diffusion posterior sampling (Chung, Kim, McCann, Klasky & Ye, ICLR 2023).

The posterior score at noise level ``sigma`` is ``grad log p_sigma(x) + grad log p(y | x)``; DPS replaces the
intractable ``p(y | x) = E[p(y | x0) | x]`` by the likelihood at the denoised estimate,
``p(y | x) ~ N(y; A D(x, sigma), sigma_y^2 I)``, whose gradient goes through the denoiser (one VJP). On the
positive levels ``sigma_0 = sigma_max > ... > sigma_{N-1} = sigma_end`` and ``sigma_N = 0`` each step is the
DDPM ancestral step (Ho et al. 2020) in VE form plus the guidance term:

``d = D(x_i, s_i)``, ``x_{i+1} = d + (s_{i+1}/s_i)^2 (x_i - d) + step_i + s_{i+1} sqrt(s_i^2 - s_{i+1}^2)/s_i z``

* ``step="likelihood"`` (default): ``step_i = scale (s_i^2 - s_{i+1}^2) grad_x log N(y; A d, sigma_y^2)``, the
  Euler–Maruyama step of the reverse SDE with the DPS posterior score (``scale = 1``);
* ``step="normalized"`` (the paper's Algorithm 1): ``step_i = -scale grad_x |y - A d|^2 / |y - A d|``
  (``zeta_i = zeta' / |y - A D(x_i)|``).

The last step (into ``sigma = 0``) returns ``d`` plus its guidance term. ``nfe`` steps cost ``nfe`` denoiser
evaluations and ``nfe`` VJPs per sample.

Known bias: ``N(y; A D(x), sigma_y^2)`` ignores the spread of ``x0`` given ``x``, so the guidance is too strong
at high noise and the samples concentrate where ``A x = y`` (too little posterior spread along ``A``, wrong
mode weights); it does not vanish as ``nfe`` grows (measured in ``tests/diffusion/test_inverse.py``).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core import options as ck
from samplax.core.method import Option
from samplax.diffusion.inverse import common
from samplax.diffusion.inverse.registry import InverseMethod, MethodOutput, Plan, register
from samplax.diffusion.solvers import mark_nonfinite, no_nonfinite

STEPS = ("likelihood", "normalized")


def guidance_options() -> dict:
    """The guidance options shared by DPS and MCG."""
    return {
        "scale": Option(1.0, "guidance scale (1 = the DPS posterior score with step='likelihood'; zeta' otherwise)",
                        lambda v: ck.is_number(v) and np.isfinite(v) and v >= 0, "a finite number >= 0"),
        "step": Option("likelihood", "guidance step: 'likelihood' (reverse-SDE step with the DPS score) or "
                       "'normalized' (the paper's zeta' / |y - A D|)", ck.one_of(STEPS), f"one of {STEPS}"),
        **common.grid_options(),
    }


def plan_guided(name: str, problem, nfe, sigma_max, num_samples, opts) -> Plan:
    """``nfe`` positive levels and 0: ``nfe`` evaluations and ``nfe`` VJPs per sample."""
    if nfe < 2:
        raise ValueError(f"inverse.sample: method {name!r} needs nfe >= 2, got {nfe}")
    levels = common.positive_levels(opts["grid"], nfe, sigma_max, opts["sigma_end"], f"inverse.sample ({name})")
    sigmas = np.concatenate([levels, [0.0]])
    return Plan(sigmas, {"scale": opts["scale"]}, (("step", opts["step"]),), nfe * num_samples, nfe * num_samples,
                num_steps=nfe, items=num_samples)


def guided_reverse(denoiser: Callable, problem, key, sigmas, scale, num_samples: int, shape: tuple, step: str,
                   project: Optional[Callable] = None) -> MethodOutput:
    """The DPS loop (see the module docstring); ``project(x, s_next, keys, i)`` is applied after each step (MCG)."""
    dtype = sigmas.dtype
    keys, init_keys = common.start_keys(key, num_samples)
    x = common.initial_noise(init_keys, sigmas[0], shape, dtype)
    n = sigmas.shape[0] - 1

    if step == "likelihood":
        objective = problem.log_likelihood
    else:
        def objective(d):
            return -jnp.sum((problem.y - problem.forward(d)) ** 2)

    def body(i, state):
        x, ne, nv, nf = state
        s, s_next = sigmas[i], sigmas[i + 1]
        d, val, g = common.denoise_with_grad(denoiser, objective, x, s)
        mean, std, delta = common.ancestral(x, d, s, s_next)
        if step == "likelihood":
            guide = scale * delta * g
        else:
            norm = jnp.sqrt(jnp.maximum(-val, 1e-300))  # |y - A d|
            guide = scale * g / norm.reshape((-1,) + (1,) * len(shape))
        x_new = mean + guide + std * common.normals(keys, i, 0, shape, dtype)
        if project is not None:
            x_new = project(x_new, s_next, keys, i)
        nf = mark_nonfinite(nf, x_new, i, s)
        return x_new, ne + num_samples, nv + num_samples, nf

    zero = jnp.asarray(0, jnp.int32)
    x, ne, nv, nf = jax.lax.fori_loop(0, n, body, (x, zero, zero, no_nonfinite(x)))
    return MethodOutput(x, ne, nv, nf, {})


def _run(denoiser, problem, key, sigmas, params, num_samples, shape, step):
    return guided_reverse(denoiser, problem, key, sigmas, params["scale"], num_samples, shape, step)


register(InverseMethod(
    "dps", "Diffusion posterior sampling: reverse diffusion guided by grad log N(y; A D(x), sigma_y^2) through the "
           "denoiser (Chung et al. 2023)",
    guidance_options(), lambda problem, nfe, sm, n, o: plan_guided("dps", problem, nfe, sm, n, o), _run,
    bias="the likelihood at the denoised mean ignores Var[x0|x]: over-confident guidance, too little spread "
         "along A and biased mode weights; does not vanish with nfe",
    remedy=("its guidance step (s_i^2 - s_(i+1)^2) grad log N(y; A D(x), sigma_y^2) overshoots when sigma_y is "
            "small next to the prior's spread along A; use step='normalized' (the paper's step), a scale below 1, "
            "or a larger nfe")))
