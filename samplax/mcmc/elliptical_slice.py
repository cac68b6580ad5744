"""Elliptical slice sampling (Murray, Adams & MacKay 2010, AISTATS), generalized to any target.

For a target ``p(x) ∝ N(x; c, diag s^2) L(x)`` (Gaussian reference times a
"likelihood") one step is, with ``nu ~ N(c, diag s^2)`` and level
``log y = log L(x) - E``, ``E ~ Exp(1)``:
``theta ~ U(0, 2 pi)``, bracket ``[theta - 2 pi, theta]``,
``x' = c + (x - c) cos(theta) + (nu - c) sin(theta)``; accept if
``log L(x') > log y``, else shrink the bracket towards 0 and redraw ``theta``.

A generic target has no Gaussian prior, so (as in generalized elliptical slice
sampling, Nishihara, Murray & Adams 2014, JMLR 15) we *choose* a reference
``N(c, diag s^2)`` — ``c``, ``s`` are the mean and standard deviations
estimated during warm-up, fixed afterwards — and write
``p(x) = N(x; c, s^2) * (p(x) / N(x; c, s^2))``, i.e.
``log L(x) = log p(x) + 0.5 |(x - c) / s|^2``.  This is exact for any fixed
``c``, ``s`` (Nishihara et al. use a Student-t reference; we use the Gaussian
one). Every evaluation of ``log p`` is counted.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.types import Kernel
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel
from samplax.mcmc.slice import SliceState, _bad, shrink, slice_stats
from samplax.mcmc.slice import init as _init


class EllipticalSliceParams(NamedTuple):
    """Mean ``c`` [d] and standard deviations ``s`` [d] of the Gaussian reference."""

    center: jax.Array
    scale: jax.Array


class EllipticalSliceInfo(NamedTuple):
    """Per-step information; ``num_logdensity_evals`` is the number of angle proposals."""

    acceptance_rate: jax.Array
    is_nonfinite: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array


def init(key, position, logdensity_fn: Callable) -> SliceState:
    """Evaluate the log-density at ``position`` (one evaluation)."""
    return _init(key, position, logdensity_fn)


def build_kernel(logdensity_fn: Callable, max_shrink: int = 200) -> Callable:
    """``step(key, state, params) -> (state, info)`` for (generalized) elliptical slice sampling."""

    def step(key, state: SliceState, params: EllipticalSliceParams):
        c, s = params.center, params.scale
        x = state.position
        dtype = x.dtype
        k_nu, k_lvl, k_th, k_shr = jax.random.split(key, 4)
        z = (x - c) / s
        nu = jax.random.normal(k_nu, x.shape, dtype=dtype)
        log_lik = state.logdensity + 0.5 * jnp.sum(z**2)
        log_y = log_lik - jax.random.exponential(k_lvl, dtype=dtype)
        theta0 = 2 * jnp.pi * jax.random.uniform(k_th, dtype=dtype)

        def propose(theta):
            zp = z * jnp.cos(theta) + nu * jnp.sin(theta)
            xp = c + s * zp
            lp = logdensity_fn(xp)
            ll = jnp.where(_bad(lp), lp, lp + 0.5 * jnp.sum(zp**2))
            return ll, SliceState(xp, lp)

        zero = jnp.zeros((), dtype)
        _, new, n, ok, bad = shrink(k_shr, propose, zero, theta0 - 2 * jnp.pi, theta0, log_y, max_shrink,
                                  first=theta0)
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
        info = EllipticalSliceInfo(jnp.ones((), dtype), bad | ~ok, n.astype(jnp.int32), jnp.zeros((), jnp.int32))
        return new, info

    return step


def elliptical_slice(logdensity_fn: Callable, mean=None, scale=None, max_shrink: int = 200) -> Kernel:
    """Elliptical slice sampling kernel with Gaussian reference ``N(mean, diag scale^2)``
    (Murray, Adams & MacKay 2010; generalized to any target as in Nishihara et al. 2014).

    With ``logdensity_fn = log prior + log likelihood`` and the prior's mean and
    standard deviations this is the original algorithm.
    """
    step_fn = build_kernel(logdensity_fn, max_shrink)

    def init_fn(key, position):
        return init(key, position, logdensity_fn)

    def step(key, state):
        d = state.position.shape[0]
        cc = jnp.zeros((d,), state.position.dtype) if mean is None else jnp.asarray(mean)
        ss = jnp.ones((d,), state.position.dtype) if scale is None else jnp.asarray(scale)
        return step_fn(key, state, EllipticalSliceParams(cc, ss))

    return Kernel(init_fn, step)


register_kernel(KernelSpec("elliptical_slice", init, build_kernel, EllipticalSliceParams, elliptical_slice,
                           gradient_based=False, invariant=True,
                           method=ChainMethod("Elliptical slice sampling with a warm-up Gaussian reference "
                                              "(Murray et al. 2010; Nishihara et al. 2014)", slice_stats,
                                              adapter="moments")))
