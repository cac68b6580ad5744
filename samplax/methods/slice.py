"""Registration of the slice samplers: ``gpss``, ``elliptical_slice``, ``hit_and_run_slice``.

Exact and derivative free.  They work in whitened coordinates ``x = c + s z``;
:func:`moment_adapter` estimates ``c`` (mean) and ``s`` (standard deviations) per
chain in Stan's slow warm-up windows and fixes them after warm-up (every kernel is
exact for any fixed ``c``, ``s``).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from samplax.adaptation.mass_matrix import welford_covariance, welford_init, welford_update
from samplax.adaptation.windowed import Adapter, select, window_schedule
from samplax.core.options import boolean, pos_float, pos_int
from samplax.mcmc.registry import get_kernel
from samplax.methods import Algorithm, MethodSpec, Option, register_method


def moment_adapter(dim: int, num_warmup: int, num_chains: int, make_params: Callable, *,
                   adapt: bool = True, position_fn: Callable = lambda s: s.position) -> Adapter:
    """Per-chain warm-up of a centre ``c`` and scales ``s`` (Stan's slow windows).

    In each slow window of :func:`~samplax.adaptation.window.window_ends` the
    positions feed a Welford estimate; at the end of the window
    ``c = mean`` and ``s = sqrt(var_hat)`` (unregularized: Stan's shrinkage
    towards 1e-3 would make an elliptical-slice reference too narrow; a zero
    variance, e.g. a stuck chain, keeps the previous scale).  Before the first window ends
    ``c = 0``, ``s = 1``; after warm-up nothing changes.
    ``make_params(center, scale) -> params`` (one chain).
    """
    schedule = window_schedule(num_warmup, adapt)
    num_warmup_a = schedule.num_warmup

    def init(keys, states):
        n = keys.shape[0]  # the batch of chains the driver passes (may be a block)
        pos = jax.vmap(position_fn)(states)
        dtype = pos.dtype
        c = jnp.zeros((n, dim), dtype)
        s = jnp.ones((n, dim), dtype)
        w = jax.vmap(lambda _: welford_init(dim, False, dtype))(jnp.arange(n))
        return (c, s, w), jnp.zeros((n,), jnp.int32)

    def update_one(c, s, w, i, x):
        in_slow = schedule.in_slow(i) & (i < num_warmup_a)
        w = select(in_slow, welford_update(w, x[None, :]), w)
        is_end = schedule.is_end(i) & (i < num_warmup_a)
        c = jnp.where(is_end, w.mean, c)
        var = welford_covariance(w, regularize=False)
        s = jnp.where(is_end & (var > 0), jnp.sqrt(var), s)
        w = select(is_end, welford_init(dim, False, x.dtype), w)
        return c, s, w

    def update(astate, i, states, infos):
        del infos
        c, s, w = astate
        x = jax.vmap(position_fn)(states)
        return jax.vmap(update_one, in_axes=(0, 0, 0, None, 0))(c, s, w, i, x)

    def params(astate):
        c, s, _ = astate
        return jax.vmap(make_params)(c, s)

    return Adapter(init, update, params)


def _slice_stats(state, info, params):
    del params
    return {"acceptance_rate": info.acceptance_rate, "lp": state.logdensity,
            "n_steps": info.num_logdensity_evals, "nonfinite": info.is_nonfinite}


def _slice_options(width_default=None):
    out = {"adapt": Option(True, "estimate the centre and scales of the whitening x = c + s z in warm-up",
                           boolean, "True/False")}
    if width_default is not None:
        out["width"] = Option(width_default, "initial slice interval width w in whitened units", pos_float,
                              "a positive number")
        out["max_steps"] = Option(32, "limit m of Neal's stepping-out procedure", pos_int, "an int >= 1")
    return out


def _slice_builder(kernel: str, min_dim_error=None) -> Callable:
    """``build`` of the registered slice kernel ``kernel``: params ``params_cls(center, scale[, width])`` from the
    moment adapter; with a ``width`` (option ``width``) the option ``max_steps`` goes to ``build_kernel``.

    ``min_dim_error``: if given, a target of dimension < 2 is refused with this
    message (formatted with ``dim``).
    """
    spec = get_kernel(kernel)
    has_width = "width" in spec.params_cls._fields

    def build(logdensity_fn, dim, num_warmup, num_chains, **o):
        if min_dim_error is not None and dim < 2:
            raise ValueError(min_dim_error.format(dim=dim))

        def init(key, position):
            return spec.init(key, position, logdensity_fn)

        if has_width:
            def make(c, s):
                return spec.params_cls(c, s, jnp.asarray(o["width"], c.dtype))

            step = spec.build_kernel(logdensity_fn, o["max_steps"])
        else:
            make = spec.params_cls
            step = spec.build_kernel(logdensity_fn)
        return Algorithm(init, step, moment_adapter(dim, num_warmup, num_chains, make, adapt=o["adapt"]),
                         _slice_stats)

    return build


def _slice_method(name, description, options, min_dim_error=None):
    return register_method(MethodSpec(name, _slice_builder(name, min_dim_error), description, options,
                                      gradient_based=get_kernel(name).gradient_based))


_slice_method("gpss", "Gibbsian polar slice sampling about the warm-up mean (Schär, Habeck & Rudolf 2023)",
              _slice_options(2.0), "method 'gpss' needs a target of dimension >= 2 (polar coordinates), got dim={dim}")
_slice_method("hit_and_run_slice",
              "Hit-and-run slice sampling with stepping out and shrinkage (MacKay 2003; Neal 2003)", _slice_options(2.0))
_slice_method("elliptical_slice", "Elliptical slice sampling with a warm-up Gaussian reference "
              "(Murray et al. 2010; Nishihara et al. 2014)", _slice_options(None))
