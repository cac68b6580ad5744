"""Registration of the proximal samplers ``myula`` and ``bregman_myula``: unadjusted (BIASED: step size and
Moreau smoothing) Langevin for composite targets ``-f(x) - g(x)``; they need a
:class:`~samplax.core.composite.CompositeTarget` (its smooth part, prox and mirror map)."""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from samplax.core.composite import CompositeTarget, euclidean_mirror
from samplax.core.method import fixed_adapter
from samplax.core.options import pos_float_or_none
from samplax.mcmc.registry import get_kernel
from samplax.methods import Algorithm, MethodSpec, Option, register_method


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


def _proximal_builder(kernel: str) -> Callable:
    """``build`` of MYULA / Bregman MYULA (registered kernel ``kernel``): these need the composite structure of
    the target, not just log p."""
    spec = get_kernel(kernel)
    bregman = kernel == "bregman_myula"

    def build(logdensity_fn, dim, num_warmup, num_chains, *, target, resolved_step_size, resolved_smoothing, **_):
        del logdensity_fn, num_warmup, dim
        gamma, lam = resolved_step_size, resolved_smoothing
        if bregman:
            mirror = target.mirror_map() or euclidean_mirror()
            extra = (mirror,)
            step = spec.build_kernel(target.smooth_logdensity, target.bregman_prox, mirror)
        else:
            extra = ()
            step = spec.build_kernel(target.smooth_logdensity, target.prox, target.nonsmooth_potential)

        def init_fn(key, position):
            return spec.init(key, position, target.smooth_logdensity, *extra)

        def stats(state, info, params):
            return {"acceptance_rate": info.acceptance_rate, "step_size": params.step_size,
                    "lp": state.logdensity, "nonfinite": info.is_nonfinite}

        adapter = fixed_adapter(lambda: spec.params_cls(jnp.asarray(gamma), jnp.asarray(lam)), num_chains)
        return Algorithm(init_fn, step, adapter, stats)

    return build


_prox_options = {
    "step_size": Option(None, "time step gamma (None: 1 / (2 (L_f + 1/smoothing)), L_f = target.lipschitz)",
                        pos_float_or_none, "a positive number or None"),
    "smoothing": Option(None, "Moreau-Yosida smoothing lam (None: 1 / L_f, Durmus et al. 2018)",
                        pos_float_or_none, "a positive number or None"),
}
register_method(MethodSpec(
    "myula", _proximal_builder("myula"), "Moreau-Yosida unadjusted Langevin for f + g composite targets (Durmus, "
    "Moulines & Pereyra 2018); BIASED (step size and smoothing)", _prox_options, prepare=_prox_prepare("myula"),
    needs_target=True, bias=_prox_bias, example_target="bayesian_lasso"))
register_method(MethodSpec(
    "bregman_myula", _proximal_builder("bregman_myula"), "Bregman-Moreau mirror-Langevin for composite targets "
    "with a mirror map (after Lau & Liu 2022); BIASED (step size and smoothing)", _prox_options,
    prepare=_prox_prepare("bregman_myula"), needs_target=True, bias=_prox_bias, example_target="box_gaussian"))
