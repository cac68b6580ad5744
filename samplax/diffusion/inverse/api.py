"""The one call :func:`sample` of the posterior samplers: checks, the plan, one compiled program, the cost record.

Per call: the arguments and options are checked, the method plans its noise levels and parameters on the
host, and one program (cached per method, structural options, denoiser and problem structure, number of
samples and shapes; compiled ahead of time so that ``info["cost"]`` reports compile and run seconds apart)
draws the samples. The denoiser's and the problem's arrays are arguments of the program, so a new
measurement ``y``, noise level or model weights never recompile.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import make_cost
from samplax.diffusion._compiled import Clock, ExecutableCache
from samplax.diffusion.checks import MODEL_REMEDY, check_denoiser, nonfinite_report
from samplax.diffusion.inverse.problems import LinearGaussian, Nonlinear
from samplax.diffusion.inverse.registry import get_method

_PROGRAMS: "OrderedDict" = OrderedDict()
_MAX_PROGRAMS = 64
_EXECUTABLES = ExecutableCache(_MAX_PROGRAMS)


def _program(method, static_opts, static_d, static_p, num_samples, shape, dtype):
    key = (method.name, static_opts, static_d, static_p, num_samples, shape, str(dtype))
    prog = _PROGRAMS.get(key)
    if prog is not None:
        _PROGRAMS.move_to_end(key)
        return prog

    @jax.jit
    def run(dyn_d, dyn_p, key, sigmas, params):
        denoiser = eqx.combine(dyn_d, static_d)
        problem = eqx.combine(dyn_p, static_p)
        return method.run(denoiser, problem, key, sigmas, params, num_samples, shape, **dict(static_opts))

    _PROGRAMS[key] = run
    while len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return run


def _per_sample(total: int, n: int):
    return total // n if total % n == 0 else total / n


def sample(denoiser: Callable, problem, *, key: jax.Array, num_samples: int, nfe: int, sigma_max: float,
           method: str = "dps", **options):
    """Draw ``num_samples`` approximate posterior samples of ``x0`` given a measurement, with a diffusion prior.

    The prior is a diffusion model given as its denoiser ``D(x, sigma) = E[x0 | x0 + sigma eps = x]`` for
    ONE point (VE convention, as :func:`samplax.diffusion.sample`); the measurement is ``problem``, a
    :class:`~samplax.diffusion.inverse.problems.LinearGaussian` or
    :class:`~samplax.diffusion.inverse.problems.Nonlinear`. ``method`` is one of :func:`method_names`:

    * ``dps`` (Chung et al. 2023), ``mcg`` (Chung et al. 2022): reverse diffusion with the gradient of
      ``log N(y; A D(x, sigma), sigma_y^2)`` through the denoiser (MCG adds a projection onto ``A x = y``);
    * ``daps`` (Zhang et al. 2024): decoupled annealing, Langevin on ``x0`` at each noise level;
    * ``pnp_ula`` (Laumont et al. 2022): unadjusted Langevin with the denoiser as prior score;
    * ``tds`` (Wu et al. 2023): twisted diffusion sampler, asymptotically exact Feynman–Kac SMC with a
      log-evidence estimate;
    * ``ambient_dps`` (Aali et al. 2025): DPS with an ambient model ``h(x, sigma, mask)`` trained on corrupted
      data (pass ``h`` as ``denoiser`` and the option ``mask``).

    Args:
      denoiser: ``D(x, sigma)`` for one point of ``problem.shape``.
      problem: the measurement model (``problem.shape`` is the unknown's event shape).
      key: a typed PRNG key (``jax.random.key``).
      num_samples: how many samples to return.
      nfe: the denoiser-evaluation budget *per sample* (per particle for ``tds``); never exceeded.
        Vector-Jacobian products through the denoiser are counted apart (``info["cost"]``).
      sigma_max: the largest noise level (where the reverse diffusion starts).
      method: the sampler's name.
      options: the method's options (see ``samplax.diffusion.inverse.get_method(name).options``).

    Returns:
      ``(samples, info)``: samples ``[num_samples, *problem.shape]`` and a dict with ``method``, ``options``
      (resolved), ``sigmas`` (the noise levels planned), ``cost`` (a :class:`samplax.core.cost.Cost`:
      ``num_model_evals`` and ``num_model_vjps`` per returned sample, ``total_model_evals``,
      ``total_model_vjps``, ``num_likelihood_grads`` (gradients of ``log p(y|x)`` outside the denoiser,
      total), compile and sampling seconds, compilations), ``nonfinite_step`` / ``nonfinite_sigma`` (per
      sample, or per particle for a particle method: the first step after which it was non-finite, -1 if
      never, and its noise level), ``warnings`` (a ``"nonfinite_samples"`` entry when some are non-finite),
      and the method's own entries (``tds``: ``log_evidence``, ``log_evidence_se``, ESS history).

    Raises:
      ValueError: unknown method, a problem that is not a measurement model (or a nonlinear one for a
      method that needs ``A``), a denoiser that does not fit the problem's shape, bad ``num_samples``,
      ``nfe`` or ``sigma_max``, invalid option values, every sample non-finite. TypeError: unknown options.
    """
    m = get_method(method)
    if not isinstance(problem, (LinearGaussian, Nonlinear)):
        raise ValueError(f"inverse.sample: problem must be a LinearGaussian or Nonlinear measurement model, "
                         f"got {type(problem).__name__}")
    if m.linear_only and not problem.linear:
        raise ValueError(f"inverse.sample: method {method!r} needs a LinearGaussian problem (it uses A and its "
                         f"pseudo-inverse), got {type(problem).__name__}")
    opts = m.resolve_options(options)
    for name, v in (("num_samples", num_samples), ("nfe", nfe)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"inverse.sample: {name} must be a positive int, got {v!r}")
    num_samples, nfe = int(num_samples), int(nfe)
    try:
        sigma_max = float(sigma_max)
    except (TypeError, ValueError):
        raise ValueError(f"inverse.sample: sigma_max must be a number, got {sigma_max!r}") from None
    if not (np.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"inverse.sample: sigma_max must be positive and finite, got {sigma_max}")
    if key is None:
        raise ValueError("inverse.sample: key is required (a typed key from jax.random.key)")
    dtype = jnp.dtype(jnp.result_type(float))
    if isinstance(problem, Nonlinear):
        problem.check(dtype)
    shape = tuple(problem.shape)
    if m.adapt_denoiser is not None:
        denoiser = m.adapt_denoiser(denoiser, opts, shape)
    if not callable(denoiser):
        raise ValueError(f"inverse.sample: denoiser must be callable D(x, sigma), got {type(denoiser).__name__}")
    try:
        jax.eval_shape(denoiser, jax.ShapeDtypeStruct(shape, dtype), jax.ShapeDtypeStruct((), dtype))
    except Exception as e:  # noqa: BLE001 - re-raised naming the arguments
        raise ValueError(f"inverse.sample: the denoiser fails on one point of the problem's shape {shape} (A, or "
                         f"forward_fn, acts on points of {int(np.prod(shape))} entries; the model must have the same "
                         f"shape): {type(e).__name__}: {str(e).rstrip('. ')}") from None
    check_denoiser(denoiser, shape, dtype, "inverse.sample", "problem")  # the output's shape (cached per denoiser)
    plan = m.plan(problem, nfe, sigma_max, num_samples, opts)

    dyn_d, static_d = eqx.partition(denoiser, eqx.is_array)
    dyn_p, static_p = eqx.partition(problem, eqx.is_array)
    try:
        hash((static_d, static_p, plan.static))
    except TypeError:
        raise ValueError("inverse.sample: the denoiser's and the problem's non-array parts must be hashable "
                         "(use equinox Modules or functions)") from None
    run = _program(m, plan.static, static_d, static_p, num_samples, shape, dtype)
    sigmas = jnp.asarray(plan.sigmas, dtype)
    params = {k: jnp.asarray(v, dtype) for k, v in plan.params.items()}
    clock = Clock()
    out = clock.call(run, (dyn_d, dyn_p, key, sigmas, params), _EXECUTABLES)
    concrete = not isinstance(out.model_evals, jax.core.Tracer)
    if concrete:
        ne, nv = int(out.model_evals), int(out.model_vjps)
        if (ne, nv) != (plan.model_evals, plan.model_vjps):  # a planning bug, never a silent mismatch
            raise AssertionError(f"inverse.sample: method {method!r} made {ne} denoiser evaluations and {nv} VJPs, "
                                 f"planned {plan.model_evals} and {plan.model_vjps}")
        if plan.model_evals > nfe * max(plan.items, num_samples):
            raise AssertionError(f"inverse.sample: method {method!r} exceeded nfe={nfe} per item")
    timing = {}
    if clock.timed:
        timing = dict(compile_seconds=clock.compile_seconds, sampling_seconds=clock.run_seconds,
                      num_compilations=clock.num_compilations)
    cost = make_cost(num_model_evals=_per_sample(plan.model_evals, num_samples),
                     num_model_vjps=_per_sample(plan.model_vjps, num_samples), num_devices=1,
                     total_model_evals=plan.model_evals, total_model_vjps=plan.model_vjps,
                     num_likelihood_grads=plan.likelihood_grads, **timing)
    warns = ()
    if concrete:
        if m.remedy:  # the method's own update may be what diverged
            cause = "the state became non-finite (NaN or inf)"
            remedy = (f"Either the denoiser returned non-finite values ({MODEL_REMEDY}) or {method}'s update "
                      f"diverged: {m.remedy}")
        else:
            cause, remedy = "the denoiser returned non-finite values (NaN or inf)", MODEL_REMEDY
        warns = tuple(nonfinite_report(f"inverse.sample ({method})", np.asarray(out.nonfinite.step),
                                       np.asarray(out.nonfinite.sigma), plan.num_steps, what=plan.item,
                                       cause=cause, remedy=remedy))
    info = {"method": method, "options": opts, "sigmas": plan.sigmas, "cost": cost,
            "nonfinite_step": out.nonfinite.step, "nonfinite_sigma": out.nonfinite.sigma, "warnings": warns}
    if m.finish is not None and concrete:
        info.update(m.finish({k: np.asarray(v) for k, v in out.extras.items()}, plan))
    else:
        info.update(out.extras)
    return out.samples, info
