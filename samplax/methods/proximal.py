"""Registration of the proximal samplers ``myula`` and ``bregman_myula``: unadjusted (BIASED: step size and
Moreau smoothing) Langevin for composite targets ``-f(x) - g(x)``
(:class:`~samplax.core.composite.CompositeTarget`: its smooth part, prox and mirror map).

Any other target is read as the composite target with ``f = -log p`` and no nonsmooth part
(``g = 0``, ``prox`` the identity, Euclidean mirror map): both samplers are then the
unadjusted Langevin algorithm (ULA) with step size ``gamma``, and the smoothing has no
effect.  The Lipschitz constant ``L`` of ``grad log p`` that sets the default step size
(``gamma = 1 / (2 (L + 1/lam))``, ``lam = 1/L``, so ``gamma = 1 / (4 L)``) is estimated
(:func:`estimate_lipschitz`: the largest ``|eigenvalue|`` of the Hessian of ``log p`` at
the zero point and at 8 fixed Stan-style initial points); pass ``step_size`` to set it.
Known bias on a Gaussian ``N(m, Sigma)``: ULA's stationary law is ``N(m, Sigma_gamma)``
with, along each eigenvector of ``Sigma`` of variance ``s^2``, the variance
``s^2 / (1 - gamma / (2 s^2))`` (the mean is exact); at the default step size the variance
is at most ``8/7`` of the truth (standard deviations at most 6.9% too large).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.composite import CompositeTarget, euclidean_mirror
from samplax.core.method import fixed_adapter
from samplax.core.options import pos_float_or_none
from samplax.mcmc.registry import get_kernel
from samplax.methods import Algorithm, MethodSpec, Option, register_method


def _prox_prepare(name: str) -> Callable:
    """``MethodSpec.prepare`` of MYULA: the target must be composite; step size and smoothing from its Lipschitz
    constant when not given (kept as ``resolved_step_size`` / ``resolved_smoothing`` in the configuration)."""
    return lambda target, options: _prox_resolve(name, target, options)


def estimate_lipschitz(target, num_points: int = 8, seed: int = 0) -> float:
    """An estimate of the Lipschitz constant of ``grad log p`` for a target without one.

    The largest ``|eigenvalue|`` of the Hessian of the flat log-density, over the zero
    point and ``num_points`` Stan-style initial points (``target.initial_point`` with the
    fixed keys ``fold_in(key(seed), i)``) whose Hessian is finite.  Exact for a Gaussian;
    a local estimate otherwise (the step size it sets can be too large where the curvature
    is higher than at these points).  Dense Hessians up to 256 coordinates, 100 steps of
    power iteration on Hessian-vector products above.
    """
    lp = target.flat_logdensity()
    d = target.dim
    dtype = jnp.result_type(float)
    key = jax.random.key(seed)
    pts = jnp.concatenate([jnp.zeros((1, d), dtype), jax.vmap(
        lambda i: jnp.reshape(target.initial_point(jax.random.fold_in(key, i)), (d,)).astype(dtype))(
        jnp.arange(num_points))])
    if d <= 256:
        def norm_at(x):
            return jnp.max(jnp.abs(jnp.linalg.eigvalsh(jax.hessian(lp)(x))))
    else:
        def norm_at(x):
            def hvp(v):
                return jax.jvp(jax.grad(lp), (x,), (v,))[1]

            def body(_, v):
                w = hvp(v)
                return w / jnp.linalg.norm(w)

            v0 = jax.random.normal(jax.random.fold_in(key, 10_000), (d,), dtype)
            v = jax.lax.fori_loop(0, 100, body, v0 / jnp.linalg.norm(v0))
            return jnp.linalg.norm(hvp(v))
    norms = np.asarray(jax.jit(jax.vmap(norm_at))(pts))
    norms = norms[np.isfinite(norms)]
    if norms.size == 0 or not np.max(norms) > 0:
        raise ValueError(f"could not estimate the curvature of {target.name!r} (its Hessian is zero or non-finite "
                         "at the zero point and at the initial points); pass step_size")
    return float(np.max(norms))


def _prox_resolve(name, target, options):
    composite = isinstance(target, CompositeTarget)
    if composite:
        if len(target.event_shape) != 1:
            raise ValueError(f"method {name!r} needs a flat event shape, got {target.event_shape}")
        lip = float(target.lipschitz)
    elif options["step_size"] is None or options["smoothing"] is None:
        try:
            lip = estimate_lipschitz(target)
        except ValueError as e:
            raise ValueError(f"method {name!r}: {e}") from None
    else:
        lip = None
    lam = options["smoothing"] if options["smoothing"] is not None else 1.0 / lip
    gamma = options["step_size"] if options["step_size"] is not None else 1.0 / (2.0 * (lip + 1.0 / lam))
    out = dict(options, resolved_step_size=gamma, resolved_smoothing=lam, nonsmooth_part=composite)
    if not composite and lip is not None:
        out["estimated_lipschitz"] = lip
    return out


def _prox_bias(options):
    if not options.get("nonsmooth_part", True):
        gamma = options["resolved_step_size"]
        return (f"unadjusted: the target has no nonsmooth part (g = 0, prox = identity), so this is the "
                f"unadjusted Langevin algorithm with step size {gamma:.3g}"
                + ("" if options.get("estimated_lipschitz") is None else
                   f" (from the estimated Lipschitz constant {options['estimated_lipschitz']:.3g} of grad log p)")
                + "; on a Gaussian the variance along an eigenvector of variance s^2 is s^2 / (1 - step/(2 s^2)) "
                "(the mean is exact); the bias shrinks with the step size")
    return (f"unadjusted: samples a smoothed and discretized version of the target (step size "
            f"{options['resolved_step_size']:.3g}, Moreau smoothing {options['resolved_smoothing']:.3g}); "
            "the bias shrinks with both")


def _identity_prox(x, lam):
    del lam
    return x


def _zero_potential(x):
    return jnp.zeros((), x.dtype)


def _proximal_builder(kernel: str) -> Callable:
    """``build`` of MYULA / Bregman MYULA (registered kernel ``kernel``): these need the composite structure of
    the target, not just log p."""
    spec = get_kernel(kernel)
    bregman = kernel == "bregman_myula"

    def build(logdensity_fn, dim, num_warmup, num_chains, *, target, resolved_step_size, resolved_smoothing, **_):
        del num_warmup, dim
        gamma, lam = resolved_step_size, resolved_smoothing
        if isinstance(target, CompositeTarget):
            smooth, prox, bprox, g = (target.smooth_logdensity, target.prox, target.bregman_prox,
                                      target.nonsmooth_potential)
            mirror = target.mirror_map() or euclidean_mirror()
        else:  # a smooth target: g = 0 and its prox is the identity (ULA; module docstring)
            smooth, prox, bprox, g = logdensity_fn, _identity_prox, _identity_prox, _zero_potential
            mirror = euclidean_mirror()
        if bregman:
            extra = (mirror,)
            step = spec.build_kernel(smooth, bprox, mirror)
        else:
            extra = ()
            step = spec.build_kernel(smooth, prox, g)

        def init_fn(key, position):
            return spec.init(key, position, smooth, *extra)

        def stats(state, info, params):
            return {"acceptance_rate": info.acceptance_rate, "step_size": params.step_size,
                    "lp": state.logdensity, "nonfinite": info.is_nonfinite}

        adapter = fixed_adapter(lambda: spec.params_cls(jnp.asarray(gamma), jnp.asarray(lam)), num_chains)
        return Algorithm(init_fn, step, adapter, stats)

    return build


_prox_options = {
    "step_size": Option(None, "time step gamma (None: 1 / (2 (L_f + 1/smoothing)), L_f = target.lipschitz, "
                        "estimated from Hessians for a target that is not composite)",
                        pos_float_or_none, "a positive number or None"),
    "smoothing": Option(None, "Moreau-Yosida smoothing lam (None: 1 / L_f, Durmus et al. 2018)",
                        pos_float_or_none, "a positive number or None"),
}
register_method(MethodSpec(
    "myula", _proximal_builder("myula"), "Moreau-Yosida unadjusted Langevin for f + g composite targets (Durmus, "
    "Moulines & Pereyra 2018); BIASED (step size and smoothing); on a target without a nonsmooth part it is ULA",
    _prox_options, prepare=_prox_prepare("myula"), needs_target=True, bias=_prox_bias,
    example_target="bayesian_lasso"))
register_method(MethodSpec(
    "bregman_myula", _proximal_builder("bregman_myula"), "Bregman-Moreau mirror-Langevin for composite targets "
    "with a mirror map (after Lau & Liu 2022); BIASED (step size and smoothing); on a smooth target it is ULA",
    _prox_options, prepare=_prox_prepare("bregman_myula"), needs_target=True, bias=_prox_bias,
    example_target="box_gaussian"))
