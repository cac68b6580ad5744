"""Registration of the slice samplers, the Langevin family, MCLMC and the proximal samplers.

Methods: ``gpss``, ``elliptical_slice``, ``hit_and_run_slice`` (exact, derivative free);
``ula``, ``randomized_midpoint_overdamped``, ``kinetic_langevin``, ``randomized_midpoint``
(underdamped), ``mclmc`` (unadjusted: a ``biased`` run warning is attached, and during
warm-up ULA / both randomized midpoint schemes / kinetic Langevin Metropolize their moves
so that dual averaging can explore step sizes without the chain diverging); ``adjusted_mclmc`` (exact); ``myula``,
``bregman_myula`` (need a :class:`~samplax.targets.composite.CompositeTarget`).

The unadjusted and proximal methods run through a ``runner`` (to attach the run
warning / read the composite structure) that wraps the standard driver and
receives its remaining arguments (thinning, chunking, checkpoints) in
``driver_options``.

Slice samplers (``gpss``, ``elliptical_slice``, ``hit_and_run_slice``) work in
whitened coordinates ``x = c + s z``; :func:`moment_adapter` estimates ``c`` (mean)
and ``s`` (standard deviations) per chain in Stan's slow warm-up windows and
fixes them after warm-up (every kernel is exact for any fixed ``c``, ``s``).
"""
from __future__ import annotations

import importlib
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplax.adaptation.mass_matrix import welford_covariance, welford_init, welford_update
from samplax.core.composite import CompositeTarget
from samplax.adaptation.windowed import Adapter, WindowState, select, window_schedule  # noqa: F401
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


def _width_slice_builder(module, params_cls, min_dim_error=None) -> Callable:
    """``build`` of a slice sampler with params ``params_cls(center, scale, width)`` and options ``width``, ``max_steps``.

    ``min_dim_error``: if given, a target of dimension < 2 is refused with this
    message (formatted with ``dim``).
    """

    def build(logdensity_fn, dim, num_warmup, num_chains, **o):
        if min_dim_error is not None and dim < 2:
            raise ValueError(min_dim_error.format(dim=dim))

        def init(key, position):
            return module.init(key, position, logdensity_fn)

        def make(c, s):
            return params_cls(c, s, jnp.asarray(o["width"], c.dtype))

        step = module.build_kernel(logdensity_fn, o["max_steps"])
        return Algorithm(init, step, moment_adapter(dim, num_warmup, num_chains, make, adapt=o["adapt"]),
                         _slice_stats)

    return build


_build_gpss = _width_slice_builder(
    gpss_m, gpss_m.GPSSParams, "method 'gpss' needs a target of dimension >= 2 (polar coordinates), got dim={dim}")
_build_hrs = _width_slice_builder(slice_m, slice_m.HitAndRunSliceParams)


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


# --------------------------------------------------------------------------- Langevin family
import dataclasses  # noqa: E402

from samplax.methods.mcmc import _adapter, _basic_stats, _common_options  # noqa: E402

langevin_m = importlib.import_module("samplax.mcmc.langevin")
kl_m = importlib.import_module("samplax.mcmc.kinetic_langevin")


def _bias(message: str) -> Callable:
    """``MethodSpec.bias`` of an unadjusted method: the engine warns and attaches a ``biased`` run warning."""
    return lambda options: message


_BIAS_MSG = ("its stationary distribution is not the target at any finite step size (the bias shrinks "
             "with the step size); lower target_accept or pass a smaller step_size to reduce it")


class _EpsImm(NamedTuple):
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


def _langevin_builder(build_kernel: Callable) -> Callable:
    """``build`` of an overdamped Langevin method whose kernel is ``build_kernel(logdensity_fn)``."""

    def build(logdensity_fn, dim, num_warmup, num_chains, **o):
        def init(key, position):
            return langevin_m.init(key, position, logdensity_fn)

        return Algorithm(init, build_kernel(logdensity_fn), _langevin_adapter(
            logdensity_fn, dim, num_warmup, num_chains, o), _basic_stats)

    return build


_build_ula = _langevin_builder(langevin_m.build_ula_kernel)
_build_rlmc = _langevin_builder(langevin_m.build_randomized_midpoint_kernel)


def _langevin_adapter(logdensity_fn, dim, num_warmup, num_chains, o):
    def make(p, in_warmup):
        return langevin_m.LangevinParams(p.step_size, p.inverse_mass_matrix, in_warmup)

    return warmup_flag_adapter(_adapter(logdensity_fn, _EpsImm, dim, num_warmup, num_chains, o), num_warmup, make)


def _kl_stats(state, info, params):
    out = _basic_stats(state, info, params)
    out["energy"] = info.energy
    return out


def _kinetic_builder(module, params_cls) -> Callable:
    """Builder for a kinetic Langevin kernel module (``init``, ``build_kernel``) whose params are
    ``params_cls(step_size, inverse_mass_matrix, friction, in_warmup)``: window adapter plus a warm-up flag."""

    def build(logdensity_fn, dim, num_warmup, num_chains, **o):
        gamma = o["friction"]

        def init(key, position):
            return module.init(key, position, logdensity_fn)

        def make(p, in_warmup):
            return params_cls(p.step_size, p.inverse_mass_matrix, jnp.full_like(p.step_size, gamma), in_warmup)

        inner = _adapter(logdensity_fn, _EpsImm, dim, num_warmup, num_chains, o)
        return Algorithm(init, module.build_kernel(logdensity_fn), warmup_flag_adapter(inner, num_warmup, make),
                         _kl_stats)

    return build


_build_kl = _kinetic_builder(kl_m, kl_m.KineticLangevinParams)


_SURROGATE = ("target acceptance statistic for dual averaging (a surrogate: the Metropolis acceptance "
              "probability the move would have had; the move is always taken)")


def _langevin_options(target_accept):
    o = _common_options(target_accept)
    o["target_accept"] = dataclasses.replace(o["target_accept"], doc=_SURROGATE)
    return o


register_method(MethodSpec(
    "ula", _build_ula,
    "Unadjusted Langevin algorithm, preconditioned; BIASED at finite step size (Roberts & Tweedie 1996)",
    _langevin_options(0.9), bias=_bias(_BIAS_MSG)))
register_method(MethodSpec(
    "randomized_midpoint_overdamped", _build_rlmc,
    "Randomized-midpoint overdamped Langevin Monte Carlo (Shen & Lee 2019; He, Balasubramanian & Erdogdu 2020; "
    "Yu & Dalalyan 2024); BIASED at finite step size",
    _langevin_options(0.9), bias=_bias(_BIAS_MSG)))
register_method(MethodSpec(
    "kinetic_langevin", _build_kl,
    "Underdamped Langevin, BAOAB splitting (Leimkuhler & Matthews 2013); BIASED at finite step size",
    {**_langevin_options(0.9),
     "friction": Option(1.0, "friction gamma (in units of the adapted metric's time scale)", _pos_float,
                        "a positive number")},
    bias=_bias(_BIAS_MSG)))

rmkl_m = importlib.import_module("samplax.mcmc.randomized_midpoint")


#: randomized-midpoint kinetic Langevin (Shen & Lee 2019), same warm-up as ``kinetic_langevin``
_build_rmkl = _kinetic_builder(rmkl_m, rmkl_m.RandomizedMidpointParams)


_RM_SURROGATE = ("target acceptance statistic for dual averaging (a surrogate: min(1, exp(-W)) with the "
                 "discretization work W = log p(x) - log p(x') + g(x_mid).(x' - x); the move is always taken)")
_rm_opts = _langevin_options(0.9)
_rm_opts["target_accept"] = dataclasses.replace(_rm_opts["target_accept"], doc=_RM_SURROGATE)
register_method(MethodSpec(
    "randomized_midpoint", _build_rmkl,
    "Underdamped (kinetic) Langevin, randomized midpoint discretization (Shen & Lee 2019; Yu & Dalalyan 2024); "
    "2 gradients per step; BIASED at finite step size",
    {**_rm_opts,
     "friction": Option(1.0, "friction gamma (in units of the adapted metric's time scale)", _pos_float,
                        "a positive number")},
    bias=_bias(_BIAS_MSG)))


# --------------------------------------------------------------------------- MCLMC
mclmc_m = importlib.import_module("samplax.mcmc.mclmc")


class MCLMCAdaptState(NamedTuple):
    """Per-chain MCLMC warm-up state (step size, L, preconditioner, decaying averages, Welford)."""

    step_size: jax.Array
    L: jax.Array
    scale: jax.Array
    x_avg: jax.Array
    w_avg: jax.Array
    welford: object


def mclmc_adapter(dim: int, num_warmup: int, num_chains: int, *, desired_energy_var: float = 5e-4,
                  trust_in_estimate: float = 1.5, num_effective_samples: float = 150.0,
                  diagonal_preconditioning: bool = True, position_fn: Callable = lambda s: s.position) -> Adapter:
    """Per-chain MCLMC warm-up (after Robnik et al. 2023, sec. 4 / Alg. 1, stages 1-2).

    Step size: with the energy error ``dE`` of each step,
    ``xi = dE^2 / (d * desired_energy_var) + 1e-8``, weight
    ``w = exp(-0.5 (log(xi) / (6 * trust_in_estimate))^2)``, decaying averages
    ``X = r X + w xi / e^6``, ``W = r W + w`` with ``r = (N - 1)/(N + 1)``, ``N = num_effective_samples``;
    ``e = (X / W)^(-1/6)`` (so that ``E[dE^2] / d`` approaches ``desired_energy_var``);
    a non-finite ``dE`` halves ``e``.
    Schedule over ``W`` warm-up steps: ``[0, 0.3W)`` step size only (``L = sqrt(d)``,
    ``s = 1``); ``[0.3W, 0.6W)`` also a Welford estimate of the variances; at ``0.6W``
    the diagonal preconditioner becomes ``s = sqrt(var)`` (if enabled) and
    ``L = sqrt(sum var / s^2)``; ``[0.6W, W)`` step size re-tuned (averages reset) and
    variances re-estimated; at ``W`` ``L = sqrt(sum var / s^2)`` from the last stage.
    (Robnik et al.'s third stage, ``L`` from the effective sample size, is not implemented.)
    """
    w1 = int(0.3 * num_warmup)
    w2 = int(0.6 * num_warmup)
    decay = (num_effective_samples - 1.0) / (num_effective_samples + 1.0)
    n_w = jnp.asarray(num_warmup, jnp.int32)

    def init(keys, states):
        c = keys.shape[0]  # the batch of chains the driver passes (may be a block)
        pos = jax.vmap(position_fn)(states)
        dt = pos.dtype
        st = MCLMCAdaptState(jnp.full((c,), 0.25 * np.sqrt(dim), dt), jnp.full((c,), np.sqrt(dim), dt),
                             jnp.ones((c, dim), dt), jnp.zeros((c,), dt), jnp.zeros((c,), dt),
                             jax.vmap(lambda _: welford_init(dim, False, dt))(jnp.arange(c)))
        return st, jnp.zeros((c,), jnp.int32)

    def update_one(a: MCLMCAdaptState, i, x, de):
        eps = a.step_size
        ok = jnp.isfinite(de)
        xi = jnp.where(ok, de**2, 0.0) / (dim * desired_energy_var) + 1e-8
        w = jnp.exp(-0.5 * (jnp.log(xi) / (6.0 * trust_in_estimate)) ** 2)
        x_avg = jnp.where(ok, decay * a.x_avg + w * xi / eps**6, a.x_avg)
        w_avg = jnp.where(ok, decay * a.w_avg + w, a.w_avg)
        eps_new = jnp.where(ok, (x_avg / w_avg) ** (-1.0 / 6.0), 0.5 * eps)
        in_stats = (i >= w1) & (i < num_warmup)
        wf = jax.tree.map(lambda p, q: jnp.where(in_stats, p, q), welford_update(a.welford, x[None, :]), a.welford)
        var = welford_covariance(wf, regularize=False)
        var = jnp.where(var > 0, var, a.scale**2)
        end1 = i == w2 - 1
        end2 = i == num_warmup - 1
        scale = jnp.where(end1 & diagonal_preconditioning, jnp.sqrt(var), a.scale)
        L = jnp.where(end1 | end2, jnp.sqrt(jnp.sum(var / scale**2)), a.L)
        # restart the step-size averages (the metric changed) and the variance estimate at stage end 1
        x_avg = jnp.where(end1, 0.0, x_avg)
        w_avg = jnp.where(end1, 0.0, w_avg)
        wf = jax.tree.map(lambda p, q: jnp.where(end1, p, q), welford_init(dim, False, x.dtype), wf)
        new = MCLMCAdaptState(eps_new, L, scale, x_avg, w_avg, wf)
        return jax.tree.map(lambda p, q: jnp.where(i < n_w, p, q), new, a)

    def update(astate, i, states, infos):
        x = jax.vmap(position_fn)(states)
        return jax.vmap(update_one, in_axes=(0, None, 0, 0))(astate, i, x, infos.energy_change)

    def params(astate):
        return mclmc_m.MCLMCParams(astate.step_size, astate.L, astate.scale)

    return Adapter(init, update, params)


def _mclmc_stats(state, info, params):
    return {"acceptance_rate": info.acceptance_rate, "step_size": params.step_size, "lp": state.logdensity,
            "nonfinite": info.is_nonfinite, "n_steps": info.num_integration_steps}


def _build_mclmc(logdensity_fn, dim, num_warmup, num_chains, **o):
    if dim < 2:
        raise ValueError(f"method 'mclmc' needs a target of dimension >= 2, got dim={dim}")

    def init(key, position):
        return mclmc_m.init(key, position, logdensity_fn)

    adapter = mclmc_adapter(dim, num_warmup, num_chains, desired_energy_var=o["desired_energy_var"],
                            diagonal_preconditioning=o["diagonal_preconditioning"])
    return Algorithm(init, mclmc_m.build_kernel(logdensity_fn), adapter, _mclmc_stats)


def _build_adjusted_mclmc(logdensity_fn, dim, num_warmup, num_chains, **o):
    if dim < 2:
        raise ValueError(f"method 'adjusted_mclmc' needs a target of dimension >= 2, got dim={dim}")

    def init(key, position):
        return mclmc_m.init(key, position, logdensity_fn)

    L = float(np.sqrt(dim))

    def make(p, in_warmup):
        del in_warmup
        imm = p.inverse_mass_matrix
        return mclmc_m.MCLMCParams(p.step_size, jnp.full_like(p.step_size, L), jnp.sqrt(imm))

    o = dict(o)
    if o["step_size"] is None:
        o["step_size"] = 0.25 * float(np.sqrt(dim))
    inner = _adapter(logdensity_fn, _EpsImm, dim, num_warmup, num_chains, {**o, "dense_mass": False}, False)
    return Algorithm(init, mclmc_m.build_adjusted_kernel(logdensity_fn, o["max_num_steps"]),
                     warmup_flag_adapter(inner, num_warmup, make), _mclmc_stats)


register_method(MethodSpec(
    "mclmc", _build_mclmc,
    "Microcanonical Langevin Monte Carlo, unadjusted, tuned by the energy-error variance (Robnik et al. 2023); "
    "BIASED at finite step size",
    {"desired_energy_var": Option(5e-4, "target energy-error variance per dimension, Var[dE]/d", _pos_float,
                                  "a positive number"),
     "diagonal_preconditioning": Option(True, "adapt a diagonal preconditioner in warm-up", _bool, "True/False")},
    bias=_bias("its stationary distribution is not the target at any finite step size; the bias "
                          "is controlled by desired_energy_var (lower it to reduce the bias)")))

_adj_opts = {k: v for k, v in _common_options(0.9).items() if k != "dense_mass"}
_adj_opts["step_size"] = dataclasses.replace(_adj_opts["step_size"],
                                             doc="initial step size (None: 0.25 sqrt(d), Robnik et al.)")
_adj_opts["max_num_steps"] = Option(1024, "cap on integration steps per trajectory", _pos_int, "an int >= 1")
register_method(MethodSpec(
    "adjusted_mclmc", _build_adjusted_mclmc,
    "Metropolis-adjusted microcanonical HMC (MAMS; Robnik, Cohn-Gordon & Seljak 2024), L = sqrt(d) in the "
    "adapted diagonal metric, step size by dual averaging to an acceptance target",
    _adj_opts))


# --------------------------------------------------------------------------- proximal (MYULA)
prox_m = importlib.import_module("samplax.mcmc.proximal")


def _prox_prepare(name: str) -> Callable:
    """``MethodSpec.prepare`` of MYULA: the target must be composite; step size and smoothing from its Lipschitz
    constant when not given (kept as ``resolved_step_size`` / ``resolved_smoothing`` in the configuration)."""
    return lambda target, options: _prox_resolve(name, target, options)


def _prox_resolve(name, target, options):
    if not isinstance(target, CompositeTarget):
        raise TypeError(f"method {name!r} needs a CompositeTarget (smooth_logdensity, nonsmooth_potential, "
                        f"prox; see samplax.targets.composite), got {type(target).__name__} {target.name!r}")
    if len(target.event_shape) != 1:
        raise ValueError(f"method {name!r} needs a flat event shape, got {target.event_shape}")
    lip = float(target.lipschitz)
    lam = options["smoothing"] if options["smoothing"] is not None else 1.0 / lip
    gamma = options["step_size"] if options["step_size"] is not None else 1.0 / (2.0 * (lip + 1.0 / lam))
    return dict(options, resolved_step_size=gamma, resolved_smoothing=lam)


def _prox_bias(options):
    return (f"unadjusted: samples a smoothed and discretized version of the target (step size "
            f"{options['resolved_step_size']:.3g}, Moreau smoothing {options['resolved_smoothing']:.3g}); "
            "the bias shrinks with both")


def _proximal_builder(kind: str) -> Callable:
    """``build`` of MYULA / Bregman MYULA: these need the composite structure of the target, not just log p."""
    from samplax.adaptation.windowed import fixed_adapter

    def build(logdensity_fn, dim, num_warmup, num_chains, *, target, resolved_step_size, resolved_smoothing, **_):
        del logdensity_fn, num_warmup, dim
        gamma, lam = resolved_step_size, resolved_smoothing
        mirror = (target.mirror_map() or prox_m.euclidean_mirror()) if kind == "bregman" else None

        def init_fn(key, position):
            if kind == "bregman":
                return prox_m.init_bregman(key, position, target.smooth_logdensity, mirror)
            return prox_m.init(key, position, target.smooth_logdensity)

        if kind == "bregman":
            step = prox_m.build_bregman_myula_kernel(target.smooth_logdensity, target.bregman_prox, mirror)
        else:
            step = prox_m.build_myula_kernel(target.smooth_logdensity, target.prox, target.nonsmooth_potential)

        def stats(state, info, params):
            return {"acceptance_rate": info.acceptance_rate, "step_size": params.step_size,
                    "lp": state.logdensity, "nonfinite": info.is_nonfinite}

        adapter = fixed_adapter(lambda: prox_m.MYULAParams(jnp.asarray(gamma), jnp.asarray(lam)), num_chains)
        return Algorithm(init_fn, step, adapter, stats)

    return build


_prox_options = {
    "step_size": Option(None, "time step gamma (None: 1 / (2 (L_f + 1/smoothing)), L_f = target.lipschitz)",
                        lambda v: v is None or _pos_float(v), "a positive number or None"),
    "smoothing": Option(None, "Moreau-Yosida smoothing lam (None: 1 / L_f, Durmus et al. 2018)",
                        lambda v: v is None or _pos_float(v), "a positive number or None"),
}
register_method(MethodSpec(
    "myula", _proximal_builder("euclidean"), "Moreau-Yosida unadjusted Langevin for f + g composite targets (Durmus, Moulines & Pereyra "
    "2018); BIASED (step size and smoothing)", _prox_options, prepare=_prox_prepare("myula"), needs_target=True,
    bias=_prox_bias, example_target="bayesian_lasso"))
register_method(MethodSpec(
    "bregman_myula", _proximal_builder("bregman"), "Bregman-Moreau mirror-Langevin for composite targets with a mirror map (after Lau & "
    "Liu 2022); BIASED (step size and smoothing)", _prox_options, prepare=_prox_prepare("bregman_myula"),
    needs_target=True, bias=_prox_bias, example_target="box_gaussian"))
