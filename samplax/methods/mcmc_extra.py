"""Registration of the derivative-free slice samplers and the Langevin family.

Slice samplers (``gpss``, ``elliptical_slice``, ``hit_and_run_slice``) work in
whitened coordinates ``x = c + s z``; :func:`moment_adapter` estimates ``c`` (mean)
and ``s`` (standard deviations) per chain in Stan's slow warm-up windows and
fixes them after warm-up (every kernel is exact for any fixed ``c``, ``s``).
"""
from __future__ import annotations

import importlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplax.adaptation.mass_matrix import welford_covariance, welford_init, welford_update
from samplax.adaptation.window import window_ends
from samplax.adaptation.windowed import Adapter, WindowState  # noqa: F401
from samplax.methods import Algorithm, MethodSpec, Option, register_method

slice_m = importlib.import_module("samplax.mcmc.slice")
gpss_m = importlib.import_module("samplax.mcmc.gpss")
ess_m = importlib.import_module("samplax.mcmc.elliptical_slice")


# --------------------------------------------------------------------------- option checks
def _pos_float(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and float(v) > 0


def _pos_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _bool(v):
    return isinstance(v, bool)


def _prob(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < float(v) < 1.0


# --------------------------------------------------------------------------- moment adapter
def moment_adapter(dim: int, num_warmup: int, num_chains: int, make_params: Callable, *,
                   adapt: bool = True, position_fn: Callable = lambda s: s.position) -> Adapter:
    """Per-chain warm-up of a centre ``c`` and scales ``s`` (Stan's slow windows).

    In each slow window of :func:`~samplax.adaptation.window.window_ends` the
    positions feed a Welford estimate; at the end of the window
    ``c = mean`` and ``s = sqrt(var)`` with Stan's regularization
    ``var = n/(n+5) var_hat + 1e-3 * 5/(n+5)``.  Before the first window ends
    ``c = 0``, ``s = 1``; after warm-up nothing changes.
    ``make_params(center, scale) -> params`` (one chain).
    """
    slow_start, slow_end, ends = window_ends(num_warmup)
    if not adapt:
        ends = -np.ones_like(ends)
        slow_start = slow_end = num_warmup
    ends = jnp.asarray(ends)
    slow_start_a = jnp.asarray(slow_start, jnp.int32)
    slow_end_a = jnp.asarray(slow_end, jnp.int32)
    num_warmup_a = jnp.asarray(num_warmup, jnp.int32)

    def init(keys, states):
        del keys
        pos = jax.vmap(position_fn)(states)
        dtype = pos.dtype
        c = jnp.zeros((num_chains, dim), dtype)
        s = jnp.ones((num_chains, dim), dtype)
        w = jax.vmap(lambda _: welford_init(dim, False, dtype))(jnp.arange(num_chains))
        return (c, s, w), jnp.zeros((num_chains,), jnp.int32)

    def update_one(c, s, w, i, x):
        in_slow = (i >= slow_start_a) & (i < slow_end_a) & (i < num_warmup_a)
        w = jax.tree.map(lambda a, b: jnp.where(in_slow, a, b), welford_update(w, x[None, :]), w)
        is_end = jnp.any(ends == i) & (i < num_warmup_a)
        c = jnp.where(is_end, w.mean, c)
        s = jnp.where(is_end, jnp.sqrt(welford_covariance(w)), s)
        w = jax.tree.map(lambda a, b: jnp.where(is_end, a, b), welford_init(dim, False, x.dtype), w)
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


# --------------------------------------------------------------------------- slice samplers
def _slice_stats(state, info, params):
    del params
    return {"acceptance_rate": info.acceptance_rate, "lp": state.logdensity,
            "n_steps": info.num_logdensity_evals, "nonfinite": info.is_nonfinite}


def _slice_options(width_default=None):
    out = {"adapt": Option(True, "estimate the centre and scales of the whitening x = c + s z in warm-up",
                           _bool, "True/False")}
    if width_default is not None:
        out["width"] = Option(width_default, "initial slice interval width w in whitened units", _pos_float,
                              "a positive number")
        out["max_steps"] = Option(32, "limit m of Neal's stepping-out procedure", _pos_int, "an int >= 1")
    return out


def _build_gpss(logdensity_fn, dim, num_warmup, num_chains, **o):
    if dim < 2:
        raise ValueError(f"method 'gpss' needs a target of dimension >= 2 (polar coordinates), got dim={dim}")

    def init(key, position):
        return gpss_m.init(key, position, logdensity_fn)

    def make(c, s):
        return gpss_m.GPSSParams(c, s, jnp.asarray(o["width"], c.dtype))

    step = gpss_m.build_kernel(logdensity_fn, o["max_steps"])
    return Algorithm(init, step, moment_adapter(dim, num_warmup, num_chains, make, adapt=o["adapt"]), _slice_stats)


def _build_hrs(logdensity_fn, dim, num_warmup, num_chains, **o):
    def init(key, position):
        return slice_m.init(key, position, logdensity_fn)

    def make(c, s):
        return slice_m.HitAndRunSliceParams(c, s, jnp.asarray(o["width"], c.dtype))

    step = slice_m.build_kernel(logdensity_fn, o["max_steps"])
    return Algorithm(init, step, moment_adapter(dim, num_warmup, num_chains, make, adapt=o["adapt"]), _slice_stats)


def _build_ess(logdensity_fn, dim, num_warmup, num_chains, **o):
    def init(key, position):
        return ess_m.init(key, position, logdensity_fn)

    step = ess_m.build_kernel(logdensity_fn)
    return Algorithm(init, step, moment_adapter(dim, num_warmup, num_chains, ess_m.EllipticalSliceParams,
                                                adapt=o["adapt"]), _slice_stats)


register_method(MethodSpec(
    "gpss", _build_gpss,
    "Gibbsian polar slice sampling about the warm-up mean (Schär, Habeck & Rudolf 2023)",
    _slice_options(2.0), gradient_based=False))
register_method(MethodSpec(
    "hit_and_run_slice", _build_hrs,
    "Hit-and-run slice sampling with stepping out and shrinkage (MacKay 2003; Neal 2003)",
    _slice_options(2.0), gradient_based=False))
register_method(MethodSpec(
    "elliptical_slice", _build_ess,
    "Elliptical slice sampling with a warm-up Gaussian reference (Murray et al. 2010; Nishihara et al. 2014)",
    _slice_options(None), gradient_based=False))
