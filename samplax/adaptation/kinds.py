"""The kinds of warm-up a kernel's chain method can declare (:class:`samplax.mcmc.registry.ChainMethod`
``adapter=``): each kind knows its own options and builds the
:class:`~samplax.core.method.Adapter` for a registered kernel.

* ``"windowed"``: Stan's windowed adaptation (dual averaging of the step size to
  ``target_accept``; diagonal or dense inverse mass matrix in the slow windows;
  :func:`~samplax.adaptation.windowed.window_adapter`).  Params
  ``params_cls(step_size, inverse_mass_matrix)``.
* ``"windowed_flag"``: the same adapter, plus a warm-up flag
  (:func:`~samplax.adaptation.windowed.warmup_flag_adapter`), for unadjusted kernels
  that Metropolize their moves during warm-up only; params
  ``make_params(p, in_warmup, dim, options)``.
* ``"moments"``: the centre and scales of a whitening, per chain
  (:func:`~samplax.adaptation.moments.moment_adapter`); params
  ``make_params(center, scale, options)`` (default ``params_cls(center, scale)``).
* ``"mclmc"``: microcanonical Langevin's energy-variance tuning
  (:func:`~samplax.adaptation.mclmc.mclmc_adapter`).

A kind is ``AdapterKind(options, make)``: ``options(kernel) -> {name: Option}`` (its
defaults may come from the kernel, e.g. its acceptance target) and
``make(kernel, logdensity_fn, dim, num_warmup, num_chains, options) -> Adapter``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from samplax.adaptation.mclmc import mclmc_adapter
from samplax.adaptation.moments import moment_adapter
from samplax.adaptation.windowed import EpsImm, warmup_flag_adapter, window_adapter
from samplax.core.method import Option
from samplax.core.options import boolean, pos_float, pos_number_or_none, prob
from samplax.registry import Registry


class AdapterKind(NamedTuple):
    """A kind of warm-up: its options and how to build it for a kernel (see the module docstring)."""

    options: Callable
    make: Callable


ADAPTER_KINDS = Registry("adapter kind")


def windowed_options(target_accept) -> dict:
    """The options of Stan's windowed warm-up, with the acceptance target ``target_accept``."""
    return {
        "target_accept": Option(target_accept, "target acceptance statistic for dual averaging", prob,
                                "a number in (0, 1)"),
        "dense_mass": Option(False, "adapt a dense (instead of diagonal) inverse mass matrix", boolean, "True/False"),
        "adapt_mass_matrix": Option(True, "adapt the inverse mass matrix in Stan's slow windows", boolean, "True/False"),
        "adapt_step_size": Option(True, "adapt the step size by dual averaging", boolean, "True/False"),
        "step_size": Option(None, "initial step size (None: Stan's heuristic)", pos_number_or_none,
                            "a positive number or None"),
        "pooled_adaptation": Option(False, "share step size and mass matrix across chains", boolean, "True/False"),
    }


def _window(kernel, logdensity_fn, params_cls, dim, num_warmup, num_chains, o):
    """The window adapter with the kernel's declared fixed settings and initial step size."""
    decl = kernel.method
    o = {**o, **decl.settings.get("fixed_options", {})}
    if o["step_size"] is None and decl.default_step_size is not None:
        o["step_size"] = decl.default_step_size(dim)
    return window_adapter(
        logdensity_fn, params_cls, dim, num_warmup, target_accept=o["target_accept"],
        dense=o["dense_mass"], pooled=o["pooled_adaptation"], adapt_step_size=o["adapt_step_size"],
        adapt_mass_matrix=o["adapt_mass_matrix"], initial_step_size=o["step_size"],
        find_initial_step_size=decl.settings.get("find_initial_step_size", True), num_chains=num_chains)


def _windowed(kernel, logdensity_fn, dim, num_warmup, num_chains, o):
    return _window(kernel, logdensity_fn, kernel.params_cls, dim, num_warmup, num_chains, o)


def _windowed_flag(kernel, logdensity_fn, dim, num_warmup, num_chains, o):
    inner = _window(kernel, logdensity_fn, EpsImm, dim, num_warmup, num_chains, o)
    make = kernel.method.make_params

    def make_params(p, in_warmup):
        return make(p, in_warmup, dim, o)

    return warmup_flag_adapter(inner, num_warmup, make_params)


def _moments(kernel, logdensity_fn, dim, num_warmup, num_chains, o):
    del logdensity_fn
    make = kernel.method.make_params
    if make is None:
        make_params = kernel.params_cls
    else:
        def make_params(c, s):
            return make(c, s, o)
    return moment_adapter(dim, num_warmup, num_chains, make_params, adapt=o["adapt"])


def _mclmc(kernel, logdensity_fn, dim, num_warmup, num_chains, o):
    del logdensity_fn
    return mclmc_adapter(kernel.params_cls, dim, num_warmup, num_chains, desired_energy_var=o["desired_energy_var"],
                         diagonal_preconditioning=o["diagonal_preconditioning"])


def _window_opts(kernel) -> dict:
    return windowed_options(kernel.target_accept)


def _moment_opts(kernel) -> dict:
    del kernel
    return {"adapt": Option(True, "estimate the centre and scales of the whitening x = c + s z in warm-up",
                            boolean, "True/False")}


ADAPTER_KINDS.register("windowed")(AdapterKind(_window_opts, _windowed))
ADAPTER_KINDS.register("windowed_flag")(AdapterKind(_window_opts, _windowed_flag))
ADAPTER_KINDS.register("moments")(AdapterKind(_moment_opts, _moments))
def _mclmc_opts(kernel) -> dict:
    del kernel
    return {"desired_energy_var": Option(5e-4, "target energy-error variance per dimension, Var[dE]/d", pos_float,
                                         "a positive number"),
            "diagonal_preconditioning": Option(True, "adapt a diagonal preconditioner in warm-up", boolean,
                                               "True/False")}


ADAPTER_KINDS.register("mclmc")(AdapterKind(_mclmc_opts, _mclmc))
