"""Gibbsian polar slice sampling, GPSS (Schär, Habeck & Rudolf 2023, ICML, arXiv:2302.03945).

Polar slice sampling (Roberts & Rosenthal 2002) splits the target
``p(z) = p0(z) p1(z)`` with ``p0(z) = |z|^{1-d}`` and ``p1(z) = |z|^{d-1} p(z)``;
in polar coordinates ``z = r theta`` the measure ``p0(z) dz`` is ``dr dsigma(theta)``,
so the slice ``{p1 > T}`` is to be sampled *uniformly in (r, theta)*.  GPSS does
this by Gibbs steps under one level ``log T = log p1(z) - E``, ``E ~ Exp(1)``:

1. direction (geodesic shrinkage, Alg. 2 of the paper): ``y ~ N(0, I)``
   projected orthogonally to ``theta`` and normalized; ``omega ~ U(0, 2 pi)``,
   bracket ``[omega - 2 pi, omega]``; propose ``theta' = theta cos(omega) + y sin(omega)``
   and shrink the bracket towards 0 until ``p1(r theta') > T``;
2. radius (stepping out and shrinkage on ``r > 0``, Alg. 3, width ``w``):
   Neal's stepping-out clipped at ``r = 0`` and shrinkage for
   ``{r > 0 : p1(r theta') > T}``.

The sampler works on ``z = (x - c) / s``; polar coordinates are taken about the
centre ``c`` (the estimated mean after warm-up, as the paper recommends
centring the target) with per-coordinate scales ``s``.  Exact for any fixed
``c``, ``s``, ``w``; every log-density evaluation is counted (it varies per
step).  Needs ``d >= 2``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.types import Kernel
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel
from samplax.mcmc.slice import (SliceState, _check_positive, shrink, slice_options, slice_params, slice_stats,
                                step_out)
from samplax.mcmc.slice import init as _init


class GPSSParams(NamedTuple):
    """Centre ``c`` [d] and scales ``s`` [d] of ``x = c + s z``; radius width ``w`` (z units)."""

    center: jax.Array
    scale: jax.Array
    width: jax.Array


class GPSSInfo(NamedTuple):
    """Per-step information; ``num_logdensity_evals = num_direction_proposals + num_radius_evals``."""

    acceptance_rate: jax.Array
    is_nonfinite: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array
    num_direction_proposals: jax.Array
    num_radius_evals: jax.Array


SliceState = SliceState


def init(key, position, logdensity_fn: Callable) -> SliceState:
    """Evaluate the log-density at ``position`` (one evaluation)."""
    return _init(key, position, logdensity_fn)


def build_kernel(logdensity_fn: Callable, max_steps: int = 64, max_shrink: int = 200) -> Callable:
    """``step(key, state, params) -> (state, info)`` for GPSS (see module docstring).

    ``max_steps``: limit of Neal's stepping out for the radius; ``max_shrink``:
    limit on shrinkage proposals of each update (both structural).
    """

    def step(key, state: SliceState, params: GPSSParams):
        c, s, w = params.center, params.scale, params.width
        x = state.position
        d = x.shape[0]
        dtype = x.dtype
        k_lvl, k_y, k_om, k_dshr, k_out, k_rshr = jax.random.split(key, 6)
        z = (x - c) / s
        r = jnp.linalg.norm(z)
        theta = z / r

        def log_p1(radius, direction):
            lp = logdensity_fn(c + s * (radius * direction))
            return (d - 1) * jnp.log(radius) + lp, lp

        log_t = (d - 1) * jnp.log(r) + state.logdensity - jax.random.exponential(k_lvl, dtype=dtype)

        # 1. direction: geodesic shrinkage on the great circle through theta and y
        y = jax.random.normal(k_y, (d,), dtype=dtype)
        y = y - jnp.dot(y, theta) * theta
        y = y / jnp.maximum(jnp.linalg.norm(y), jnp.finfo(dtype).eps)
        omega0 = 2 * jnp.pi * jax.random.uniform(k_om, dtype=dtype)

        def propose_dir(omega):
            th = theta * jnp.cos(omega) + y * jnp.sin(omega)
            v, lp = log_p1(r, th)
            return v, (th, lp)

        # first proposal omega0, bracket [omega0 - 2 pi, omega0], shrinking towards angle 0
        zero = jnp.zeros((), dtype)
        _, (theta_new, lp_dir), n_dir, ok_dir, bad_dir = shrink(
            k_dshr, propose_dir, zero, omega0 - 2 * jnp.pi, omega0, log_t, max_shrink, first=omega0)
        theta_new = jnp.where(ok_dir, theta_new, theta)
        lp_dir = jnp.where(ok_dir, lp_dir, state.logdensity)

        # 2. radius: stepping out (clipped at 0) and shrinkage along the ray theta_new
        def level_r(radius):
            return log_p1(radius, theta_new)[0]

        def propose_r(radius):
            v, lp = log_p1(radius, theta_new)
            return v, (radius, lp)

        lo, hi, n_out, bad_out = step_out(k_out, level_r, r, log_t, w, max_steps, lower=zero)
        _, (r_new, lp_r), n_rs, ok_r, bad_rs = shrink(k_rshr, propose_r, r, lo, hi, log_t, max_shrink)
        r_new = jnp.where(ok_r, r_new, r)
        lp_new = jnp.where(ok_r, lp_r, lp_dir)
        x_new = c + s * (r_new * theta_new)
        n_dir = n_dir.astype(jnp.int32)
        n_rad = (n_out + n_rs).astype(jnp.int32)
        info = GPSSInfo(jnp.ones((), dtype), bad_dir | bad_out | bad_rs | ~ok_dir | ~ok_r,
                        n_dir + n_rad, jnp.zeros((), jnp.int32), n_dir, n_rad)
        return SliceState(x_new, lp_new), info

    return step


def gpss(logdensity_fn: Callable, width=2.0, center=None, scale=None,
         max_steps: int = 64, max_shrink: int = 200) -> Kernel:
    """Gibbsian polar slice sampling kernel (Schär, Habeck & Rudolf 2023).

    Polar coordinates about ``center`` (default 0) in units of ``scale`` (default 1);
    ``width`` is the initial radius interval ``w`` of the stepping-out procedure.
    """
    _check_positive("width", width)
    step_fn = build_kernel(logdensity_fn, max_steps, max_shrink)

    def init_fn(key, position):
        position = jnp.asarray(position)
        if position.ndim != 1 or position.shape[0] < 2:
            raise ValueError(f"gpss: position must be a flat vector with d >= 2, got shape {position.shape}")
        return init(key, position, logdensity_fn)

    def step(key, state):
        d = state.position.shape[0]
        cc = jnp.zeros((d,), state.position.dtype) if center is None else jnp.asarray(center)
        ss = jnp.ones((d,), state.position.dtype) if scale is None else jnp.asarray(scale)
        return step_fn(key, state, GPSSParams(cc, ss, jnp.asarray(width, state.position.dtype)))

    return Kernel(init_fn, step)


register_kernel(KernelSpec("gpss", init, build_kernel, GPSSParams, gpss, gradient_based=False, invariant=True,
                           method=ChainMethod("Gibbsian polar slice sampling about the warm-up mean (Schär, Habeck & "
                                              "Rudolf 2023)", slice_stats, adapter="moments", options=slice_options(2.0),
                                              make_params=slice_params(GPSSParams), min_dim=2,
                                              settings={"min_dim_reason": "polar coordinates"})))
