"""Registration of the gradient MCMC kernels with Stan-style windowed warm-up."""
from __future__ import annotations

import jax.numpy as jnp

from samplax.adaptation.windowed import window_adapter
import importlib

from samplax.mcmc import integrators
from samplax.methods import Algorithm, MethodSpec, Option, register_method

hmc_m = importlib.import_module("samplax.mcmc.hmc")
mala_m = importlib.import_module("samplax.mcmc.mala")
nuts_m = importlib.import_module("samplax.mcmc.nuts")
rwm_m = importlib.import_module("samplax.mcmc.rwm")


def _prob(v):
    return isinstance(v, (int, float)) and 0.0 < float(v) < 1.0


def _pos_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _bool(v):
    return isinstance(v, bool)


def _pos_float_or_none(v):
    return v is None or (isinstance(v, (int, float)) and float(v) > 0)


def _common_options(target_accept):
    return {
        "target_accept": Option(target_accept, "target acceptance statistic for dual averaging", _prob,
                                "a number in (0, 1)"),
        "dense_mass": Option(False, "adapt a dense (instead of diagonal) inverse mass matrix", _bool, "True/False"),
        "adapt_mass_matrix": Option(True, "adapt the inverse mass matrix in Stan's slow windows", _bool, "True/False"),
        "adapt_step_size": Option(True, "adapt the step size by dual averaging", _bool, "True/False"),
        "step_size": Option(None, "initial step size (None: Stan's heuristic)", _pos_float_or_none,
                            "a positive number or None"),
        "pooled_adaptation": Option(False, "share step size and mass matrix across chains", _bool, "True/False"),
    }


def _adapter(logdensity_fn, params_cls, dim, num_warmup, num_chains, o, find_initial=True):
    return window_adapter(
        logdensity_fn, params_cls, dim, num_warmup, target_accept=o["target_accept"],
        dense=o["dense_mass"], pooled=o["pooled_adaptation"], adapt_step_size=o["adapt_step_size"],
        adapt_mass_matrix=o["adapt_mass_matrix"], initial_step_size=o["step_size"],
        find_initial_step_size=find_initial, num_chains=num_chains)


def _basic_stats(state, info, params):
    return {
        "acceptance_rate": info.acceptance_rate,
        "step_size": params.step_size,
        "lp": state.logdensity,
        "nonfinite": info.is_nonfinite,
    }


def _build_rwm(logdensity_fn, dim, num_warmup, num_chains, **o):
    def init(key, position):
        return rwm_m.init(key, position, logdensity_fn)

    def stats(state, info, params):
        return _basic_stats(state, info, params)

    o = dict(o)
    if o["step_size"] is None:
        o["step_size"] = 2.38 / dim**0.5
    return Algorithm(init, rwm_m.build_kernel(logdensity_fn),
                     _adapter(logdensity_fn, rwm_m.RWMParams, dim, num_warmup, num_chains, o, False), stats)


def _build_mala(logdensity_fn, dim, num_warmup, num_chains, **o):
    def init(key, position):
        return mala_m.init(key, position, logdensity_fn)

    return Algorithm(init, mala_m.build_kernel(logdensity_fn),
                     _adapter(logdensity_fn, mala_m.MALAParams, dim, num_warmup, num_chains, o), _basic_stats)


def _hmc_stats(state, info, params):
    out = _basic_stats(state, info, params)
    out.update(diverging=info.is_divergent, energy=info.energy, n_steps=info.num_integration_steps)
    return out


def _build_hmc(logdensity_fn, dim, num_warmup, num_chains, **o):
    def init(key, position):
        return hmc_m.init(key, position, logdensity_fn)

    step = hmc_m.build_kernel(logdensity_fn, o["num_integration_steps"], o["integrator"])
    return Algorithm(init, step, _adapter(logdensity_fn, hmc_m.HMCParams, dim, num_warmup, num_chains, o),
                     _hmc_stats)


def _nuts_stats(state, info, params):
    out = _hmc_stats(state, info, params)
    out.update(tree_depth=info.tree_depth)
    return out


def _build_nuts(logdensity_fn, dim, num_warmup, num_chains, **o):
    def init(key, position):
        return nuts_m.init(key, position, logdensity_fn)

    step = nuts_m.build_kernel(logdensity_fn, o["max_tree_depth"], o["divergence_threshold"], o["integrator"])
    return Algorithm(init, step, _adapter(logdensity_fn, nuts_m.NUTSParams, dim, num_warmup, num_chains, o),
                     _nuts_stats)


def _integrator_ok(v):
    return v in integrators.INTEGRATORS


register_method(MethodSpec(
    "rwm", _build_rwm, "Random-walk Metropolis with adapted Gaussian proposal (Metropolis 1953)",
    _common_options(0.234), gradient_based=False))
register_method(MethodSpec(
    "mala", _build_mala, "Metropolis-adjusted Langevin, preconditioned (Roberts & Tweedie 1996)",
    _common_options(0.574)))
register_method(MethodSpec(
    "hmc", _build_hmc, "Hamiltonian Monte Carlo, static trajectory (Neal 2011)",
    {**_common_options(0.8),
     "num_integration_steps": Option(16, "leapfrog steps per transition", _pos_int, "an int >= 1"),
     "integrator": Option("velocity_verlet", "symplectic integrator", _integrator_ok,
                          f"one of {sorted(integrators.INTEGRATORS)}")}))
register_method(MethodSpec(
    "nuts", _build_nuts, "No-U-Turn Sampler, multinomial (Hoffman & Gelman 2014; Betancourt 2017)",
    {**_common_options(0.8),
     "max_tree_depth": Option(10, "maximum tree depth (2^depth leapfrog steps)",
                              lambda v: _pos_int(v) and v <= 30, "an int in [1, 30]"),
     "divergence_threshold": Option(1000.0, "energy error that counts as a divergence",
                                    lambda v: isinstance(v, (int, float)) and v > 0, "a positive number"),
     "integrator": Option("velocity_verlet", "symplectic integrator", _integrator_ok,
                          f"one of {sorted(integrators.INTEGRATORS)}")}))

del jnp
