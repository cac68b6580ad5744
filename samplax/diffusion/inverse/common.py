"""Pieces the posterior samplers share: noise levels, per-sample noise, denoising with a VJP, the ancestral step.

Conventions (those of :mod:`samplax.diffusion`): VE state ``x = x0 + sigma * eps``; ``denoiser(x, sigma)``
is ``E[x0 | x]`` for ONE point (vmapped here). Randomness is batch-size invariant: the ``j``-th normal
draw of step ``i`` for item ``b`` comes from ``fold_in(fold_in(fold_in(key, b), i), j)``.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core import options as ck
from samplax.core.method import Option
from samplax.diffusion.grids import grid_names, make_grid

DEFAULT_SIGMA_END = 0.01


def grid_options(grid: str = "karras", sigma_end: float = DEFAULT_SIGMA_END) -> dict:
    """The ``grid`` and ``sigma_end`` options of the methods that walk a noise grid."""
    return {
        "grid": Option(grid, "noise-level grid (samplax.diffusion.grid_names(); 'optimized' excluded)",
                       ck.one_of([g for g in grid_names() if g != "optimized"]),
                       f"one of {[g for g in grid_names() if g != 'optimized']}"),
        "sigma_end": Option(sigma_end, "smallest positive noise level of the grid", ck.pos_float,
                            "a positive finite number below sigma_max"),
    }


def positive_levels(grid: str, num: int, sigma_max: float, sigma_end: float, who: str) -> np.ndarray:
    """``num`` decreasing positive noise levels from ``sigma_max`` to ``sigma_end`` (``[sigma_max]`` when ``num == 1``)."""
    if not sigma_end < sigma_max:
        raise ValueError(f"{who}: need sigma_end < sigma_max, got sigma_end={sigma_end}, sigma_max={sigma_max}")
    if num == 1:
        return np.asarray([float(sigma_max)])
    return make_grid(grid, num - 1, sigma_max, sigma_end)


def step_fraction_option(default: float, doc: str) -> Option:
    """The ``step_fraction`` option of the Langevin-type methods (``daps``, ``pnp_ula``): a number in ``(0, 1]``."""
    return Option(default, doc, lambda v: ck.is_number(v) and 0 < v <= 1, "a number in (0, 1]")


def start_keys(key, n: int):
    """``(keys, init_keys)``: the per-item keys of the steps and of the initial draw, from ``(k_init, k_step) =
    split(key)`` (``item_keys(k_step, n)``, ``item_keys(k_init, n)``), shared by the samplers that start from noise."""
    k_init, k_step = jax.random.split(key)
    return item_keys(k_step, n), item_keys(k_init, n)


def initial_noise(init_keys, sigma, shape, dtype):
    """The start ``x = sigma * z``, ``z ~ N(0, I)`` from ``normals(init_keys, 0, 0, ...)``: ``[n, *shape]``."""
    return sigma * normals(init_keys, 0, 0, shape, dtype)


def item_keys(key, n: int):
    """``[n]`` keys ``fold_in(key, b)``."""
    return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(n))


def normals(keys, i, j, shape, dtype):
    """``[n, *shape]`` standard normals: item ``b`` from ``fold_in(fold_in(keys[b], i), j)``."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, i), j), shape, dtype))(keys)


def denoise(denoiser: Callable, x, sigma):
    """The batched denoiser ``D(x[b], sigma)``."""
    return jax.vmap(denoiser, in_axes=(0, None))(x, sigma)


def denoise_with_grad(denoiser: Callable, objective: Callable, x, sigma):
    """Per point: ``d = D(x, sigma)``, ``v = objective(d)`` and ``grad_x v = J_D(x)^T grad objective(d)``.

    One denoiser evaluation and one vector-Jacobian product through the denoiser per point. Returns
    ``(d, v, g)`` batched."""

    def one(xi):
        d, pullback = jax.vjp(lambda z: denoiser(z, sigma), xi)
        v, g_d = jax.value_and_grad(objective)(d)
        (g,) = pullback(g_d)
        return d, v, g

    return jax.vmap(one)(x)


def ancestral(x, d, s, s_next):
    """The DDPM ancestral step (Ho et al. 2020) in VE form: the Gaussian ``q(x' | x, x0 = d)`` at level ``s_next``.

    ``mean = d + (s_next^2 / s^2) (x - d) = x + (s^2 - s_next^2) score``, ``std = s_next sqrt(s^2 - s_next^2) / s``
    (0 when ``s_next = 0``: then ``x' = d``). Returns ``(mean, std, delta)`` with ``delta = s^2 - s_next^2``
    the coefficient of the score in the mean."""
    ratio = (s_next / s) ** 2
    delta = s**2 - s_next**2
    return d + ratio * (x - d), s_next * jnp.sqrt(delta) / s, delta


def prior_ancestral(denoiser: Callable, x, levels, keys, step0: int = 0):
    """Unconditional DDPM ancestral sampling from ``x`` at ``levels[0]`` through ``levels`` and a final denoise.

    ``len(levels)`` denoiser evaluations per point (the last one denoises at ``levels[-1]``). Step ``i`` draws
    its noise with index ``step0 + i``."""
    n = levels.shape[0]

    def body(i, x):
        s, s_next = levels[i], levels[i + 1]
        d = denoise(denoiser, x, s)
        mean, std, _ = ancestral(x, d, s, s_next)
        return mean + std * normals(keys, step0 + i, 0, x.shape[1:], x.dtype)

    x = jax.lax.fori_loop(0, n - 1, body, x)
    return denoise(denoiser, x, levels[n - 1])
