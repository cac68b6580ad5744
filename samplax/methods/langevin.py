"""Registration of the unadjusted Langevin family: ``ula``, ``randomized_midpoint_overdamped``,
``kinetic_langevin``, ``randomized_midpoint`` (underdamped).

All are BIASED at finite step size: the engine attaches a ``biased`` run warning
(``MethodSpec.bias``).  During warm-up they Metropolize their moves
(:func:`warmup_flag_adapter`) so that dual averaging can explore step sizes without
the chain diverging; sampling is unadjusted.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.adaptation.windowed import Adapter
from samplax.core.options import pos_float
from samplax.mcmc.registry import get_kernel
from samplax.methods import Algorithm, MethodSpec, Option, register_method
from samplax.methods.mcmc import _adapter, _basic_stats, _common_options


def bias_of(message: str) -> Callable:
    """``MethodSpec.bias`` of an unadjusted method: the engine warns and attaches a ``biased`` run warning."""
    return lambda options: message


_BIAS_MSG = ("its stationary distribution is not the target at any finite step size (the bias shrinks "
             "with the step size); lower target_accept or pass a smaller step_size to reduce it")


class EpsImm(NamedTuple):
    """``(step_size, inverse_mass_matrix)`` as produced by the window adapter."""

    step_size: jax.Array
    inverse_mass_matrix: jax.Array


def warmup_flag_adapter(inner: Adapter, num_warmup: int, make_params: Callable) -> Adapter:
    """Wrap an adapter whose params are ``(step_size, inverse_mass_matrix)`` and add a warm-up flag.

    ``make_params(inner_params, in_warmup) -> params``; ``in_warmup`` (bool, one per
    chain) is true for the first ``num_warmup`` iterations.  Unadjusted kernels
    use it to Metropolize their moves during warm-up only: dual averaging then
    explores step sizes without the chain diverging; sampling is unadjusted.
    """
    n_w = jnp.asarray(num_warmup, jnp.int32)

    def init(keys, states):
        a, n = inner.init(keys, states)
        # one counter per chain: the driver splits adapter state into blocks of chains
        return (a, jnp.zeros((keys.shape[0],), jnp.int32)), n

    def update(astate, i, states, infos):
        a, count = astate
        return inner.update(a, i, states, infos), count + 1

    def params(astate):
        a, count = astate
        p = inner.params(a)
        return make_params(p, jnp.broadcast_to(count < n_w, jnp.shape(p.step_size)))

    return Adapter(init, update, params)


def _langevin_builder(kernel: str) -> Callable:
    """``build`` of the overdamped Langevin method of the registered kernel ``kernel`` (params
    ``params_cls(step_size, inverse_mass_matrix, metropolize)``): window adapter plus a warm-up flag."""
    spec = get_kernel(kernel)

    def build(logdensity_fn, dim, num_warmup, num_chains, **o):
        def init(key, position):
            return spec.init(key, position, logdensity_fn)

        def make(p, in_warmup):
            return spec.params_cls(p.step_size, p.inverse_mass_matrix, in_warmup)

        inner = _adapter(logdensity_fn, EpsImm, dim, num_warmup, num_chains, o)
        return Algorithm(init, spec.build_kernel(logdensity_fn), warmup_flag_adapter(inner, num_warmup, make),
                         _basic_stats)

    return build


def _kl_stats(state, info, params):
    out = _basic_stats(state, info, params)
    out["energy"] = info.energy
    return out


def _kinetic_builder(kernel: str) -> Callable:
    """``build`` of the kinetic Langevin method of the registered kernel ``kernel`` (params
    ``params_cls(step_size, inverse_mass_matrix, friction, metropolize)``): window adapter plus a warm-up flag."""
    spec = get_kernel(kernel)

    def build(logdensity_fn, dim, num_warmup, num_chains, **o):
        gamma = o["friction"]

        def init(key, position):
            return spec.init(key, position, logdensity_fn)

        def make(p, in_warmup):
            return spec.params_cls(p.step_size, p.inverse_mass_matrix, jnp.full_like(p.step_size, gamma), in_warmup)

        inner = _adapter(logdensity_fn, EpsImm, dim, num_warmup, num_chains, o)
        return Algorithm(init, spec.build_kernel(logdensity_fn), warmup_flag_adapter(inner, num_warmup, make),
                         _kl_stats)

    return build


_SURROGATE = ("target acceptance statistic for dual averaging (a surrogate: the Metropolis acceptance "
              "probability the move would have had; the move is always taken)")
_RM_SURROGATE = ("target acceptance statistic for dual averaging (a surrogate: min(1, exp(-W)) with the "
                 "discretization work W = log p(x) - log p(x') + g(x_mid).(x' - x); the move is always taken)")
_FRICTION = Option(1.0, "friction gamma (in units of the adapted metric's time scale)", pos_float,
                   "a positive number")


def _langevin_method(name, build, description, surrogate=_SURROGATE, **options):
    """Register the unadjusted method ``name`` of the registered kernel ``name``: the common window options with
    the kernel's default acceptance target (a surrogate: documented), ``options``, and the bias warning."""
    spec = get_kernel(name)
    o = _common_options(spec.target_accept)
    o["target_accept"] = dataclasses.replace(o["target_accept"], doc=surrogate)
    return register_method(MethodSpec(name, build, description, {**o, **options},
                                      gradient_based=spec.gradient_based, bias=bias_of(_BIAS_MSG)))


_langevin_method("ula", _langevin_builder("ula"),
                 "Unadjusted Langevin algorithm, preconditioned; BIASED at finite step size (Roberts & Tweedie 1996)")
_langevin_method("randomized_midpoint_overdamped", _langevin_builder("randomized_midpoint_overdamped"),
                 "Randomized-midpoint overdamped Langevin Monte Carlo (Shen & Lee 2019; He, Balasubramanian & "
                 "Erdogdu 2020; Yu & Dalalyan 2024); BIASED at finite step size")
_langevin_method("kinetic_langevin", _kinetic_builder("kinetic_langevin"),
                 "Underdamped Langevin, BAOAB splitting (Leimkuhler & Matthews 2013); BIASED at finite step size",
                 friction=_FRICTION)
_langevin_method("randomized_midpoint", _kinetic_builder("randomized_midpoint"),
                 "Underdamped (kinetic) Langevin, randomized midpoint discretization (Shen & Lee 2019; Yu & "
                 "Dalalyan 2024); 2 gradients per step; BIASED at finite step size",
                 surrogate=_RM_SURROGATE, friction=_FRICTION)
