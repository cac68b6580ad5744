"""Coordinate-wise (univariate) slice sampling: one sweep over the coordinates per step (Neal 2003).

Neal (2003, "Slice sampling", Ann. Statist. 31, sec. 4.1) updates a multivariate
target one coordinate at a time, each by a univariate slice update; his funnel
(sec. 8) is the example where it adapts to a scale that changes by orders of
magnitude from one region to the next, which fixed-step Metropolis and HMC cannot.

One step, with whitening ``x = c + s z`` (``c``, ``s`` fixed after warm-up: the
estimated mean and standard deviations) and width ``w`` in whitened units, for
``j = 0, ..., d - 1`` in order:

1. level ``log y = log p(x) - E``, ``E ~ Exp(1)``;
2. stepping out along ``x + t s_j e_j`` from ``t = 0`` with width ``w`` (at most
   ``max_steps`` steps, Neal 2003, Fig. 3);
3. shrinkage (Fig. 5) to a point inside the slice, which becomes ``x``.

Each univariate update leaves the target invariant (it is exact: no
Metropolis correction, acceptance rate 1), so the sweep does too.  Every
log-density evaluation is counted (about ``d (2 + log2(w s_j / local scale))`` per
sweep); no gradient is used.  The cost of a sweep is ``d`` sequential
univariate updates of a full log-density each, so this kernel suits targets
of modest dimension whose local scale varies (funnels, bananas).  A NaN or
``+inf`` log-density at a proposal is outside the slice and flagged in
``is_nonfinite``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.types import Kernel
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel
from samplax.mcmc.slice import (
    SliceInfo, SliceState, init, shrink, slice_options, slice_params, slice_stats, step_out, whitened_slice_kernel,
)


class CoordinateSliceParams(NamedTuple):
    """``center`` ``c`` [d], ``scale`` ``s`` [d] of the whitening ``x = c + s z``; ``width`` ``w`` in z units."""

    center: jax.Array
    scale: jax.Array
    width: jax.Array


def build_kernel(logdensity_fn: Callable, max_steps: int = 32, max_shrink: int = 200) -> Callable:
    """``step(key, state, params) -> (state, info)``: one sweep of univariate slice updates (module docstring)."""

    def step(key, state: SliceState, params: CoordinateSliceParams):
        x0 = state.position
        d = x0.shape[0]
        zero_i = jnp.zeros((), jnp.int32)

        def update(j, carry):
            st, n_out, n_shr, bad, ok = carry
            k_lvl, k_out, k_shr = jax.random.split(jax.random.fold_in(key, j), 3)
            x = st.position
            v = jnp.zeros_like(x).at[j].set(params.scale[j])
            log_y = st.logdensity - jax.random.exponential(k_lvl, dtype=x.dtype)
            t0 = jnp.zeros((), x.dtype)

            def propose(t):
                y = x + t * v
                lp = logdensity_fn(y)
                return lp, SliceState(y, lp)

            left, right, n1, bad1 = step_out(k_out, lambda t: logdensity_fn(x + t * v), t0, log_y, params.width,
                                             max_steps)
            _, new, n2, accepted, bad2 = shrink(k_shr, propose, t0, left, right, log_y, max_shrink)
            new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), new, st)
            return new, n_out + n1, n_shr + n2, bad | bad1 | bad2, ok & accepted

        new, n_out, n_shr, bad, ok = jax.lax.fori_loop(
            0, d, update, (state, zero_i, zero_i, jnp.zeros((), bool), jnp.ones((), bool)))
        info = SliceInfo(jnp.ones((), x0.dtype), bad | ~ok, n_out + n_shr, zero_i, n_out, n_shr)
        return new, info

    return step


def coordinate_slice(logdensity_fn: Callable, width=2.0, center=None, scale=None,
                     max_steps: int = 32, max_shrink: int = 200) -> Kernel:
    """Coordinate-wise slice sampling kernel (Neal 2003, "Slice sampling", sec. 4.1): one step sweeps
    the coordinates in order, each with a univariate slice update (stepping out with width
    ``width * scale_j``, then shrinkage).  See the module docstring."""
    return whitened_slice_kernel(build_kernel(logdensity_fn, max_steps, max_shrink), CoordinateSliceParams,
                                 logdensity_fn, width, center, scale)


register_kernel(KernelSpec("coordinate_slice", init, build_kernel, CoordinateSliceParams, coordinate_slice,
                           gradient_based=False, invariant=True,
                           method=ChainMethod("Coordinate-wise slice sampling, one sweep of univariate updates per "
                                              "step, stepping out and shrinkage (Neal 2003); for funnels and "
                                              "bananas of modest dimension", slice_stats, adapter="moments",
                                              options=slice_options(2.0),
                                              make_params=slice_params(CoordinateSliceParams))))
