"""The public sampling entry point :func:`sample`.

Per-call cost: one call checks its arguments, looks up the grid and plan of its
configuration (cached per solver, grid, nfe, sigma_max, sigma_end, final step, dtype)
and runs one compiled program (cached per solver, final step, denoiser structure,
batch shape and dtype) that draws the initial noise, walks the grid and denoises;
changing ``sigma_max``, ``sigma_end``, ``nfe`` (up to 255 steps), the key or the
model's numbers never recompiles. The benchmark in ``benchmarks/diffusion_vs_diffusers.py``
measures the remaining per-step overhead.

What a step costs besides the model is memory traffic over the batch, so the program avoids passes that XLA
would otherwise add (see :mod:`samplax.diffusion.solvers.ode` for the multistep carries): the per-step
non-finite check (a per-sample reduction, several times the cost of an elementwise pass on CPU) runs only
when needed. The program takes a run-time flag ``track``; a call runs it untracked, and only when some sample
may have been non-finite on the way (:func:`~samplax.diffusion.solvers.run_solver`'s ``unsure``) runs the same
executable again with tracking, which finds the step, so the reported tracker is the same as with tracking
throughout. A non-finite ``x_init`` is found the same way (it makes its samples ``unsure``) and then raises the
usual ValueError, after that run instead of before compiling.

The program is compiled ahead of time (``lower(...).compile()``, the executables kept in an
LRU cache per program and argument shapes/dtypes) so that ``info.cost`` can report the
compile seconds of this call apart from the run, which is timed to completion
(:mod:`samplax.diffusion._compiled`).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import Cost, make_cost
from samplax.diffusion._compiled import Clock, ExecutableCache
from samplax.diffusion import auto as _auto
from samplax.diffusion import correctors as _corr
from samplax.diffusion.auto import AUTO_RULE, auto_choice  # noqa: F401  (public names of samplax.diffusion)
from samplax.diffusion.checks import check_denoiser, in_staging_trace, nonfinite_report
from samplax.diffusion.grids import grid_names, make_grid
from samplax.diffusion.solvers import get_solver, mark_nonfinite, no_nonfinite, run_solver, solver_names

FINAL_STEPS = ("denoise", "integrate")


class SampleInfo(NamedTuple):
    """Diagnostics of :func:`sample`.

    Attributes:
      num_model_evals: denoiser calls made per sample (counted inside the solver loop).
      sigmas: the noise levels visited by the solver (numpy), ending at 0 when it denoised to 0.
      solver, grid, final_step: what was used (after ``"auto"`` resolution).
      sigma_end: smallest positive node of the grid.
      cost: the shared cost record (:class:`samplax.core.cost.Cost`) of this call. For a guidance wrapper
        (:mod:`samplax.diffusion.guidance`) it also has the wrapper's ``cost_per_call`` times the calls:
        ``num_denoiser_evals`` and ``num_denoiser_vjps`` (work on the base model) and, where the wrapper calls a
        user function, ``num_guide_evals`` / ``num_guide_grads``. The rest:
        ``num_model_evals`` (int, the same count as above), ``compile_seconds`` (tracing and
        compiling the sampling program; 0.0 when it came from the cache), ``sampling_seconds``
        (running it, until the samples are ready), ``num_compilations`` (1 or 0) and
        ``num_devices`` (1); with ``grid="optimized"`` also ``grid_seconds``, the host-side
        grid set-up of this call (the grid tuning when it ran; 0.0 when the grid was cached).
        For ``solver="restart"`` (eager steps around a jitted core) the compile seconds and
        compilations also count the first-use compilations of the eager operations (initial
        noise, final denoise), so ``num_compilations`` can exceed 1 there. Called
        inside a JAX transformation (the arguments are tracers) or under
        ``jax.disable_jit()``, nothing is timed and the record has only ``num_model_evals``
        (the planned count) and ``num_devices``.
      nonfinite_step: ``[batch]`` int32, per sample the first solver step after which it was
        non-finite (a non-finite denoiser output; steps ``0..N-1`` in the order they ran, ``N`` the
        final denoise), -1 for the samples that stayed finite. Tracked inside the compiled program (in a second,
        tracked run of it when some sample was non-finite; see the module docstring).
      nonfinite_sigma: ``[batch]`` the noise level at the start of that step (NaN where finite).
      warnings: run warnings (dicts with ``code``, ``value``, ``message``): ``"nonfinite_samples"``
        when some samples are non-finite (which step and sigma, how many samples). Empty inside a
        JAX transformation.
      corrector_acceptance: with ``corrector=``, ``[num_steps]`` numpy: the mean acceptance over the batch of the
        corrector run after each solver step (1 for the unadjusted kinds; NaN where it did not run, at sigma = 0).
      auto: with ``solver="auto"``, how it was resolved (:mod:`samplax.diffusion.auto`): ``tuned`` (bool),
        ``rule`` (``"tuned"`` or ``"fixed"``); for a tuned grid ``source`` (``"tuned"`` now, read from ``"disk"``
        or from ``"memory"``), ``key``, ``cache_file``, ``model_fingerprint`` and the tuning-batch endpoint errors
        ``tuning_error_start`` (the fixed rule's grid) and ``tuning_error`` (the tuned grid); for the fixed rule the
        ``reason`` (``tune=False``, a JAX transformation, ``jax.disable_jit()``); ``cache_invalid`` when a damaged
        cache file was tuned afresh and replaced. ``None`` for other solvers.
    """

    num_model_evals: jax.Array
    sigmas: np.ndarray
    solver: str
    grid: str
    final_step: str
    sigma_end: float
    cost: Cost
    nonfinite_step: Optional[jax.Array] = None
    nonfinite_sigma: Optional[jax.Array] = None
    warnings: tuple = ()
    corrector_acceptance: Optional[np.ndarray] = None
    auto: Optional[dict] = None


_PROGRAMS: "OrderedDict" = OrderedDict()  # compiled sampling programs (LRU)
_PREPARED: "OrderedDict" = OrderedDict()  # host-side grids and plans (LRU)
_SPLIT: "OrderedDict" = OrderedDict()  # denoiser -> (array leaves, static part)
_MAX_PROGRAMS, _MAX_PREPARED = 64, 512
_EXECUTABLES = ExecutableCache(_MAX_PROGRAMS)  # compiled executables of the programs (per argument shapes)


def _lru_put(cache, key, value, size):
    cache[key] = value
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def _hashable(obj):
    try:
        hash(obj)
        return True
    except TypeError:
        return False


def _frozen(v):
    """A hashable stand-in of a solver option for the cache keys: arrays and lists become nested tuples (the
    per-step ``coefficients`` of ``iia``, the ``ratios`` of ``dc_solver``)."""
    if isinstance(v, dict):
        return tuple(sorted((k, _frozen(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_frozen(x) for x in v)
    if isinstance(v, (np.ndarray, jax.Array)) and not isinstance(v, jax.core.Tracer):
        return ("array", str(v.dtype), tuple(v.shape), tuple(np.asarray(v).ravel().tolist()))
    return v


def _split(denoiser):
    """``(array leaves, static rest)`` of a denoiser, cached by identity (arrays become jit arguments)."""
    k = id(denoiser)
    hit = _SPLIT.get(k)
    if hit is not None and hit[0] is denoiser:
        return hit[1], hit[2]
    dyn, static = eqx.partition(denoiser, eqx.is_array)
    _lru_put(_SPLIT, k, (denoiser, dyn, static), _MAX_PROGRAMS)
    return dyn, static


class _Prepared(NamedTuple):
    solver: Any
    final_denoise: bool
    nodes: np.ndarray
    visited: np.ndarray
    sig_p: Optional[jax.Array]  # padded nodes (device)
    plan_p: Optional[dict]  # padded plan (device)
    n: Optional[jax.Array]
    sigma_end: float
    num_model_evals: int  # planned denoiser calls per sample


def _prepare(denoiser, solver, solver_options, grid, grid_options, nfe, sigma_max, sigma_min, sigma_end, final_step,
             dtype, event_shape, nodes=None, weights=None):
    """Grid, plan and padded device arrays of one configuration (pure host work; cached by the caller).

    ``nodes``: the positive nodes already chosen (``solver="auto"``'s tuned grid) instead of ``grid``;
    ``weights``: per-step plan entries fitted with them (the ``bespoke`` solver's ``w0, w1, ...``)."""
    s = get_solver(solver, **solver_options)
    ends_at_zero = sigma_min == 0.0
    if ends_at_zero:
        sigma_end = 0.002 if sigma_end is None else float(sigma_end)
        if not (0 < sigma_end < sigma_max):
            raise ValueError(f"sample: need 0 < sigma_end < sigma_max, got sigma_end={sigma_end}")
    else:
        sigma_end = sigma_min
    final_denoise = ends_at_zero and final_step == "denoise"
    budget = nfe - 1 if final_denoise else nfe
    solver_to_zero = ends_at_zero and final_step == "integrate"
    plan = s.plan(budget, solver_to_zero) if budget > 0 else {"order": np.zeros(0, np.int32)}
    for k, v in (weights or {}).items():
        if k not in plan or np.shape(v) != np.shape(plan[k]):  # the tuner plans as this function does
            raise AssertionError(f"sample: tuned plan entry {k!r} does not fit the plan of solver {solver!r}")
        plan[k] = np.asarray(v, np.float64)
    n = len(plan["order"])
    n_grid = n - 1 if solver_to_zero else n
    if n_grid < 1:
        raise ValueError(f"sample: nfe={nfe} is too small for solver {solver!r} with final_step={final_step!r}")
    if nodes is not None:
        nodes = np.asarray(nodes, np.float64)
        if len(nodes) != n_grid + 1:  # the tuner plans as this function does; never a silent mismatch
            raise AssertionError(f"sample: {len(nodes)} tuned nodes for {n_grid} intervals")
        sigma_end = float(nodes[-1])
    elif grid == "optimized":
        from samplax.diffusion.optimize_grid import optimized_grid
        nodes = optimized_grid(denoiser, solver=solver, solver_options=solver_options, nfe=nfe, sigma_max=sigma_max,
                               sigma_end=sigma_end, final_step=final_step if ends_at_zero else "none",
                               event_shape=event_shape, **grid_options)
        sigma_end = float(nodes[-1])
    else:
        nodes = make_grid(grid, n_grid, sigma_max, sigma_end, **grid_options)
    if s.fitted_nodes is not None:  # per-step parameters fitted on one grid (iia, dc_solver)
        fit = np.asarray(s.fitted_nodes, np.float64)
        if fit.shape != nodes.shape or not np.allclose(fit, nodes, rtol=1e-9, atol=0.0):
            raise ValueError(f"sample: solver {solver!r} was fitted on the grid {np.round(fit, 6).tolist()} "
                             f"(solver_options['nodes']), but this call's grid is {np.round(nodes, 6).tolist()}; "
                             "sample with the fit's nfe, grid, sigma_max and sigma_end (its sample_kwargs) or fit "
                             "again")
    if solver_to_zero:
        nodes = np.concatenate([nodes, [0.0]])
    expected = s.evals(plan, solver_to_zero) + (1 if final_denoise else 0)
    if expected > nfe:  # a planning bug, never a silent overrun
        raise AssertionError(f"solver {solver!r} planned {expected} calls for a budget of {nfe}")
    visited = np.concatenate([nodes, [0.0]]) if final_denoise else nodes
    if "run" in s.params:  # solvers with their own loop structure (Restart)
        return _Prepared(s, final_denoise, nodes, visited, None, None, None, sigma_end, expected)
    # pad to a bucket so that one compilation serves every nfe up to 255
    length = max(256, 1 << int(np.ceil(np.log2(len(nodes) + 1))))
    sig_p = jnp.asarray(np.concatenate([nodes, np.full(length - len(nodes), nodes[-1])]), dtype=dtype)
    plan_p = {k: jnp.asarray(np.concatenate([v, np.ones((length - len(v),) + np.shape(v)[1:], v.dtype)]))
              for k, v in plan.items()}  # per-step rows (dpm_solver_v3's EMS: [N, K + 1, *event])
    return _Prepared(s, final_denoise, nodes, visited, sig_p, plan_p, jnp.asarray(len(nodes) - 1, jnp.int32), sigma_end,
                     expected)


def _program(solver, opts_key, final_denoise, static, init_shape, dtype):
    """The jitted sampling program of one structure; ``init_shape`` set: it also draws the initial noise."""
    key = (solver.name, opts_key, final_denoise, static, init_shape, dtype)
    prog = _PROGRAMS.get(key)
    if prog is not None:
        return prog

    @jax.jit
    def run(dyn, x, key, sigmas, plan, n, track):
        denoiser = eqx.combine(dyn, static)
        k_init, k_noise = jax.random.split(key)
        if init_shape is not None:
            x = sigmas[0] * jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(k_init, b), init_shape[1:], dtype))(
                jnp.arange(init_shape[0]))
        sample_keys = jax.vmap(lambda b: jax.random.fold_in(k_noise, b))(jnp.arange(x.shape[0]))

        def dz(xb, s):
            return jax.vmap(denoiser, in_axes=(0, None))(xb, s)

        x, ne, nf, unsure = run_solver(solver, dz, x, sigmas, plan, sample_keys, {}, num_steps=n,
                                       nonfinite=no_nonfinite(x), track=jnp.asarray(track))  # also eagerly
        again = jnp.any(unsure)  # some sample may have been non-finite in the untracked loop: run again, tracked
        if final_denoise:
            x = dz(x, sigmas[n])
            ne = ne + 1
            nf = mark_nonfinite(nf, x, n, sigmas[n])
        status = jnp.stack([ne, again.astype(jnp.int32), jnp.any(nf.step >= 0).astype(jnp.int32)])
        return x, ne, nf, status

    return _lru_put(_PROGRAMS, key, run, _MAX_PROGRAMS)


def _hooked_program(solver, opts_key, final_denoise, static, init_shape, dtype, corr, static_proj, corr_gamma):
    """The sampling program with a corrector and/or a projection after every step (see :func:`sample`)."""
    key = ("hooked", solver.name, opts_key, final_denoise, static, init_shape, dtype, corr, static_proj, corr_gamma)
    prog = _PROGRAMS.get(key)
    if prog is not None:
        return prog

    @jax.jit
    def run(dyn, x, key, sigmas, plan, n, dyn_proj):
        denoiser = eqx.combine(dyn, static)
        project = None if static_proj is None else eqx.combine(dyn_proj, static_proj)
        k_init, k_noise = jax.random.split(key)
        if init_shape is not None:
            x = sigmas[0] * jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(k_init, b), init_shape[1:], dtype))(
                jnp.arange(init_shape[0]))
        b = x.shape[0]
        sample_keys = jax.vmap(lambda i: jax.random.fold_in(k_noise, i))(jnp.arange(b))
        evaluate = _corr.batched_evaluator(denoiser, corr.needs_energy) if corr is not None else None
        scale = 1.0 / corr_gamma

        def dz(xb, s):
            return jax.vmap(denoiser, in_axes=(0, None))(xb, s)

        def apply_project(i, x, bad):
            px = jax.vmap(project)(x)
            fin = lambda a: jnp.all(jnp.isfinite(a.reshape(b, -1)), axis=1)  # noqa: E731
            new_bad = fin(x) & ~fin(px) & (bad < 0)
            return px, jnp.where(new_bad, jnp.asarray(i, jnp.int32), bad)

        def after(i, x, sig, hs):
            acc_trace, bad = hs
            k = jnp.asarray(0, jnp.int32)
            if corr is not None:
                def do(xc):
                    xn, _, _, ne, acc = _corr.run(corr, evaluate, xc, sig, sample_keys, i, scale=scale)
                    return xn, jnp.asarray(ne, jnp.int32), jnp.mean(acc)

                def skip(xc):
                    return xc, jnp.asarray(0, jnp.int32), jnp.asarray(jnp.nan, dtype)

                x, k, acc = jax.lax.cond(sig > 0, do, skip, x)
                acc_trace = acc_trace.at[i].set(acc.astype(dtype))
            if project is not None:
                x, bad = apply_project(i, x, bad)
            return x, k, (acc_trace, bad)

        hs0 = (jnp.full(sigmas.shape, jnp.nan, dtype), jnp.full((b,), -1, jnp.int32))
        x, ne, nf, (acc_trace, bad) = run_solver(solver, dz, x, sigmas, plan, sample_keys, {}, num_steps=n,
                                                 nonfinite=no_nonfinite(x), after_step=after, hook_state=hs0)
        if final_denoise:
            x = dz(x, sigmas[n])
            ne = ne + 1
            if project is not None:
                x, bad = apply_project(n, x, bad)
            nf = mark_nonfinite(nf, x, n, sigmas[n])
        return x, ne, nf, acc_trace, bad

    return _lru_put(_PROGRAMS, key, run, _MAX_PROGRAMS)


_TRACK_ON, _TRACK_OFF = np.bool_(True), np.bool_(False)
_ONE_LOOP: "OrderedDict" = OrderedDict()  # (solver, options) -> runs in the one-loop program


def _one_loop(solver, solver_options) -> bool:
    """Whether the named solver with these options runs in :func:`_program` (not Restart's own loop); False when the
    options are not hashable or not valid (the caller then checks as usual, and the error comes from where it
    always did)."""
    try:
        k = (solver, tuple(sorted(solver_options.items())))
        hit = _ONE_LOOP.get(k)
    except TypeError:
        return False
    if hit is None:
        try:
            hit = "run" not in get_solver(solver, **solver_options).params
        except ValueError:
            hit = False
        _lru_put(_ONE_LOOP, k, hit, _MAX_PREPARED)
    return hit


def _check_x_init(x_init):
    """A ValueError naming the non-finite points of ``x_init``."""
    if not bool(jnp.all(jnp.isfinite(x_init))):
        n = x_init.shape[0]
        bad = np.flatnonzero(~np.all(np.isfinite(np.asarray(x_init).reshape(n, -1)), axis=1))
        raise ValueError(f"sample: x_init has non-finite values in {bad.size} of its {n} points "
                         f"(first: index {int(bad[0])})")


def _traced(args) -> bool:
    """Whether the program would be staged into a caller's trace (tracer arguments, ``jax.disable_jit()``)."""
    return jax.config.jax_disable_jit or any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(args))


_BATCHED: dict = {}


def _batched(denoiser):
    """A cached vmapped denoiser (stable identity, so jitted loops that take it do not retrace)."""
    k = id(denoiser)
    if k not in _BATCHED or _BATCHED[k][0] is not denoiser:
        _BATCHED[k] = (denoiser, lambda xb, sg: jax.vmap(denoiser, in_axes=(0, None))(xb, sg))
    return _BATCHED[k][1]


def sample(denoiser: Callable, *, key: jax.Array, shape: Optional[tuple] = None, x_init: Optional[jax.Array] = None,
           sigma_max: float, sigma_min: float = 0.0, nfe: int, solver: str = "dpmpp_2m", grid: str = "logsnr",
           sigma_end: Optional[float] = None, final_step: str = "denoise", grid_options: Optional[dict] = None,
           solver_options: Optional[dict] = None, corrector=None, project: Optional[Callable] = None,
           tune=True):
    """Draw samples from a diffusion model given as a denoiser, within ``nfe`` denoiser calls.

    The state is VE (``x = x0 + sigma * noise``); ``denoiser(x, sigma)`` returns
    ``E[x0 | x]`` for ONE point (it is vmapped here). The solver walks a grid of
    noise levels from ``sigma_max`` down to ``sigma_end`` and then, when
    ``sigma_min == 0``, either

    * ``final_step="denoise"``: returns ``D(x, sigma_end)`` (1 call; the exact
      h -> inf limit of every data-prediction update), or
    * ``final_step="integrate"``: takes its own last step from the grid's last
      positive node into sigma = 0 (order 1 for exponential integrators, full
      order for the sigma-space polynomial methods DEIS/iPNDM).

    When ``sigma_min > 0`` the solver integrates down to ``sigma_min`` and the
    output carries noise of level ``sigma_min``.

    Args:
      denoiser: ``D(x, sigma) -> E[x0|x]`` for one point (a function or equinox Module).
      key: typed PRNG key. Sample b's initial noise and step noise depend only on
        ``fold_in(key, b)`` (batch-size invariant).
      shape: ``(batch, *event_shape)``; the initial state is ``sigma_max * N(0, I)``.
      x_init: alternatively a batch ``[batch, *event_shape]`` already at ``sigma_max``.
      sigma_max, sigma_min: start and end noise levels (VE), ``sigma_max > sigma_min >= 0``.
      nfe: number of denoiser calls allowed per sample; never exceeded (``info.num_model_evals``).
      solver: one of :func:`solver_names`. ``"auto"`` (:mod:`samplax.diffusion.auto`) picks the solver for ``nfe``
        (:data:`~samplax.diffusion.auto.AUTO_TUNED`) and tunes its grid for this model on first use (a one-off
        cost: a 256-point exact PF-ODE reference and 2 x 300 Adam steps through the solver, seconds for a small
        model, shown on stderr and reported in ``info.cost``), started from the fixed rule :data:`AUTO_RULE` and
        cached on disk per model fingerprint, solver, ``nfe``, sigma range and event shape, so later calls (also
        in other processes) tune nothing. Under a JAX transformation, ``jax.disable_jit()`` or with
        ``tune=False`` it uses the fixed rule (:func:`auto_choice`). ``info.auto`` says which; ``grid``,
        ``final_step``, ``grid_options`` and ``solver_options`` are then ignored (``sigma_end`` is the start).
      grid: one of :func:`grid_names`. ``"optimized"`` tunes the grid for this denoiser, solver
        and ``nfe`` on first use (:mod:`samplax.diffusion.optimize_grid`, deterministic solvers
        only; ``grid_options`` go to :func:`~samplax.diffusion.optimize_grid.optimized_grid`)
        and caches it; it also moves the last positive node (``info.sigma_end``).
      sigma_end: the last positive node when ``sigma_min == 0`` (default 0.002, or the
        ``auto`` rule's value; the starting value for ``grid="optimized"``); ignored when
        ``sigma_min > 0``.
      final_step: ``"denoise"`` or ``"integrate"`` (see above).
      grid_options, solver_options: passed to the grid and solver factories.
      corrector: ``None``, a kind (``"ula"``, ``"mala"``, ``"hmc"``, ``"underdamped"``) or
        :func:`samplax.diffusion.corrector` ``(kind, num_steps=, step_size=, ...)``: MCMC steps on the model's density
        at the noise level each solver step lands on (:mod:`samplax.diffusion.correctors`; MALA and HMC need an
        energy-parameterized model or a composition of such models). Their evaluations come on top of ``nfe``:
        ``info.num_model_evals`` counts all, ``info.cost["num_corrector_evals"]`` the corrector's. Best with a
        one-step solver (``ddpm``, ``euler_maruyama``, ``ddim``, ``euler``): a multistep solver's history stays the
        one of the uncorrected points. Not with ``solver="restart"``.
      project: a map ``P(x)`` of one point onto a set (e.g. :func:`samplax.diffusion.compose.box`), applied to every
        sample after each step and after the final denoise (projected diffusion). A ``P`` that returns another
        shape, or non-finite values for a finite point, is a ValueError naming ``project``.
      tune: for ``solver="auto"`` only: ``True`` (tune with the defaults
        :data:`samplax.diffusion.auto.TUNE_DEFAULTS` and ``$SAMPLAX_AUTO_TUNE``), ``False`` (the fixed rule) or a dict of settings
        (``batch``, ``iters``, ``learning_rate``, ``seed``, ``rtol``, ``progress``: bool, ``cache_dir``: a folder
        instead of ``$SAMPLAX_CACHE_DIR`` / the user cache folder).

    Returns:
      ``(samples, info)`` with ``samples`` shaped like the batch and ``info`` a :class:`SampleInfo`
      (``info.cost``: evaluations, compile and sampling seconds; the samples are ready on return).
    """
    grid_options = dict(grid_options or {})
    solver_options = dict(solver_options or {})
    needs = getattr(denoiser, "sampler_required", None)
    if isinstance(needs, str) and needs:  # e.g. a guidance wrapper with a recurrence (guidance.recurrent_sample)
        raise ValueError(f"sample: {needs}")
    if not isinstance(nfe, (int, np.integer)) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"sample: nfe must be a positive int, got {nfe!r}")
    nfe = int(nfe)
    is_auto = solver == "auto"
    if is_auto:
        _auto.check_tune(tune)  # resolved below, once the event shape and dtype are known
        solver, grid, final_step = "dpmpp_2m", "logsnr", "denoise"  # placeholders for the checks below
    elif tune is not True:
        raise ValueError(f"sample: tune= applies to solver='auto' only, got tune={tune!r} with solver={solver!r}")
    if solver not in solver_names():
        raise ValueError(f"sample: unknown solver {solver!r}; choose one of {solver_names()}")
    if grid not in grid_names():
        raise ValueError(f"sample: unknown grid {grid!r}; choose one of {grid_names()}")
    if final_step not in FINAL_STEPS:
        raise ValueError(f"sample: final_step must be one of {FINAL_STEPS}, got {final_step!r}")
    try:
        sigma_max = float(sigma_max)
        sigma_min = float(sigma_min)
    except TypeError:
        raise ValueError("sample: sigma_max and sigma_min must be numbers") from None
    if not (np.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"sample: sigma_max must be positive and finite, got {sigma_max}")
    if not (0.0 <= sigma_min < sigma_max):
        raise ValueError(f"sample: need 0 <= sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if key is None:
        raise ValueError("sample: key is required (a typed key from jax.random.key)")
    if (shape is None) == (x_init is None):
        raise ValueError("sample: give exactly one of shape= and x_init=")
    x_check = None  # an x_init whose finiteness is still to be checked
    if x_init is None:
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2 or any(d < 1 for d in shape):
            raise ValueError(f"sample: shape must be (batch, *event_shape) with positive sizes, got {shape}")
        dtype = jnp.dtype(jnp.result_type(float))
    else:
        if not isinstance(x_init, jax.Array):
            x_init = jnp.asarray(x_init)
        if x_init.ndim < 2:
            raise ValueError(f"sample: x_init must be a batch [batch, *event_shape], got shape {x_init.shape}")
        shape, dtype = tuple(x_init.shape), x_init.dtype
        if not isinstance(x_init, jax.core.Tracer):
            # the one-loop sampling program notices a non-finite x_init in its end-of-run check (run_solver's
            # `unsure`): the check (a pass over x_init) is left to then
            if not is_auto and corrector is None and project is None and _one_loop(solver, solver_options):
                x_check = x_init
            else:
                _check_x_init(x_init)
    check_denoiser(denoiser, shape[1:], dtype, "sample", "x_init" if x_init is not None else "shape")
    auto_plan = None
    if is_auto:
        auto_plan = _auto.resolve(denoiser, nfe=nfe, sigma_max=sigma_max, sigma_min=sigma_min, sigma_end=sigma_end,
                                  event_shape=shape[1:], dtype=dtype, tune=tune)
        solver, grid, sigma_end, final_step = auto_plan.solver, auto_plan.grid, auto_plan.sigma_end, auto_plan.final_step
        grid_options, solver_options = {}, {}
    corr = _corr.as_corrector(corrector, "sample")
    if (corr is not None or project is not None) and solver == "restart":
        raise ValueError("sample: corrector= and project= need a solver with one step per interval, not 'restart'")
    if corr is not None and corr.needs_energy:
        _corr.batched_evaluator(denoiser, True)  # a ValueError when the model has no energy
    static_proj = dyn_proj = None
    if project is not None:
        _check_project(project, shape[1:], dtype, "sample")
        dyn_proj, static_proj = eqx.partition(project, eqx.is_array)
        if not _hashable(static_proj):
            raise ValueError("sample: project's non-array parts must be hashable (use a function or an equinox Module)")
    opts_key = _frozen(solver_options)
    grid_key = tuple(sorted(grid_options.items()))
    tuned_nodes = auto_plan.nodes if auto_plan is not None else None
    per_model = grid == "optimized" and tuned_nodes is None  # the grid is tuned for this denoiser object
    pkey = (solver, opts_key, grid, grid_key, nfe, sigma_max, sigma_min, sigma_end, final_step, str(dtype),
            id(denoiser) if per_model else None, shape[1:] if per_model else None,
            auto_plan.key if tuned_nodes is not None else None)
    cacheable = _hashable(pkey)
    prep = _PREPARED.get(pkey) if cacheable else None
    grid_seconds = 0.0
    if prep is None or (per_model and prep[0] is not denoiser):
        t0 = time.perf_counter()
        prep = (denoiser if per_model else None,
                _prepare(denoiser, solver, solver_options, grid, grid_options, nfe, sigma_max, sigma_min,
                         sigma_end, final_step, dtype, shape[1:], nodes=tuned_nodes,
                         weights=auto_plan.weights if tuned_nodes is not None else None))
        grid_seconds = time.perf_counter() - t0
        if cacheable and not in_staging_trace():  # under jit its device arrays are tracers of this trace only
            _lru_put(_PREPARED, pkey, prep, _MAX_PREPARED)
    prep = prep[1]
    s = prep.solver
    clock = Clock()
    status = None  # the one-loop program's [evaluations, needs a tracked run, any non-finite sample] (host)
    if "run" in s.params:  # solvers with their own loop structure (Restart)
        if x_check is not None:
            _check_x_init(x_check)
        t0 = time.perf_counter()
        with clock.eager():  # the eager steps' first-use compilations count as compile time
            k_init, k_noise = jax.random.split(key)
            if x_init is None:
                x_init = sigma_max * jax.vmap(
                    lambda b: jax.random.normal(jax.random.fold_in(k_init, b), shape[1:], dtype))(jnp.arange(shape[0]))
            dz = _batched(denoiser)
            sample_keys = jax.vmap(lambda b: jax.random.fold_in(k_noise, b))(jnp.arange(shape[0]))
            x, ne, nf = s.params["run"](dz, x_init, prep.nodes, None, sample_keys, {},
                                        call=lambda f, a, static: clock.call(f, a, _EXECUTABLES, static))
            num_steps = len(prep.nodes) - 1 + s.params["extra_steps"]
            if prep.final_denoise:
                sig_end = jnp.asarray(prep.nodes[-1], dtype)
                x = dz(x, sig_end)
                ne = ne + 1
                nf = mark_nonfinite(nf, x, num_steps, sig_end)
            if clock.timed:
                x, ne, nf = jax.block_until_ready((x, ne, nf))
        clock.run_seconds = max(0.0, time.perf_counter() - t0 - clock.compile_seconds)
    else:
        dyn, static = _split(denoiser)
        if not _hashable(static):
            raise ValueError("sample: the denoiser's non-array parts must be hashable (use an equinox Module or a function)")
        if corr is None and project is None:
            run = _program(s, opts_key, prep.final_denoise, static, shape if x_init is None else None, dtype)
            args = (dyn, x_init, key, prep.sig_p, prep.plan_p, prep.n)
            # no per-step non-finite tracking unless a sample was non-finite (run_solver's track): a run without it
            # whose samples all stayed finite has the same tracker; otherwise the same executable runs again, tracked
            lazy = not _traced(args)
            if x_check is not None and not lazy:
                _check_x_init(x_check)
            x, ne, nf, status = clock.call(run, args + (_TRACK_OFF if lazy else _TRACK_ON,), _EXECUTABLES)
            if clock.timed:
                status = np.asarray(status)  # [evaluations, ended the loop non-finite untracked, any non-finite]
                if status[1]:
                    if x_check is not None:
                        _check_x_init(x_check)
                    x, ne, nf, status = clock.call(run, args + (_TRACK_ON,), _EXECUTABLES)
                    status = np.asarray(status)
            else:
                status = None
        else:
            if x_check is not None:
                _check_x_init(x_check)
            gamma = getattr(denoiser, "exponent_sum", 1.0)
            gamma = float(gamma) if isinstance(gamma, (int, float)) and gamma > 0 else 1.0
            run = _hooked_program(s, opts_key, prep.final_denoise, static, shape if x_init is None else None, dtype,
                                  corr, static_proj, gamma)
            x, ne, nf, acc_trace, bad_proj = clock.call(
                run, (dyn, x_init, key, prep.sig_p, prep.plan_p, prep.n, dyn_proj), _EXECUTABLES)
        num_steps = len(prep.nodes) - 1
    planned = prep.num_model_evals
    if corr is not None:
        planned += corr.evals_per_level() * int(np.sum(prep.nodes[1:] > 0))
    if status is not None:  # the evaluations made, on the host (None inside a JAX transformation)
        ne_host = int(status[0])
    else:
        ne_host = None if isinstance(ne, jax.core.Tracer) else int(ne)
    if clock.timed:
        cost = make_cost(num_model_evals=ne_host, compile_seconds=clock.compile_seconds,
                         sampling_seconds=clock.run_seconds, num_compilations=clock.num_compilations, num_devices=1)
    else:
        cost = make_cost(num_model_evals=planned, num_devices=1)
    acc_out = None
    if corr is not None:
        cost["num_corrector_evals"] = planned - prep.num_model_evals
        if ne_host is not None and ne_host != planned:  # a counting bug, never a silent mismatch
            raise AssertionError(f"sample: made {ne_host} model evaluations per sample, planned {planned}")
        if not isinstance(acc_trace, jax.core.Tracer):
            acc_out = np.asarray(acc_trace)[:num_steps]
    if project is not None and not isinstance(bad_proj, jax.core.Tracer):
        bad = np.asarray(bad_proj)
        if np.any(bad >= 0):
            first = int(bad[bad >= 0].min())
            where = "the final denoise" if first == num_steps else f"step {first} of {num_steps}"
            raise ValueError(f"sample: project returned non-finite values (NaN or inf) for {int(np.sum(bad >= 0))} of "
                             f"{bad.size} samples whose input was finite; the first at {where}")
    if per_model:
        cost["grid_seconds"] = grid_seconds
    if auto_plan is not None:
        cost.update(auto_plan.cost)
    per_call = getattr(denoiser, "cost_per_call", None)
    if isinstance(per_call, dict):  # a guidance wrapper: its base-model work per call (guidance.Guided)
        calls = ne_host if clock.timed else planned
        cost.update({f"num_{k}": calls * int(v) for k, v in per_call.items()})
    warns = ()
    if not isinstance(nf.step, jax.core.Tracer) and (status is None or status[2]):
        warns = tuple(nonfinite_report("sample", np.asarray(nf.step), np.asarray(nf.sigma), num_steps))
    return x, SampleInfo(ne, prep.visited, solver, grid, final_step, prep.sigma_end, cost, nf.step, nf.sigma, warns,
                         acc_out, None if auto_plan is None else dict(auto_plan.info))


def _check_project(project, event_shape, dtype, who):
    """``jax.eval_shape`` of ``project`` on one point: a ValueError naming ``project`` unless it returns the point's
    shape."""
    if not callable(project):
        raise ValueError(f"{who}: project must be a function P(x) of one point, got {type(project).__name__}")
    point = jax.ShapeDtypeStruct(tuple(event_shape), dtype)
    try:
        out = jax.eval_shape(project, point)
    except Exception as e:  # noqa: BLE001 - re-raised naming the argument
        raise ValueError(f"{who}: project fails on one point of shape {tuple(event_shape)}: {type(e).__name__}: "
                         f"{str(e).rstrip('. ')}") from None
    if getattr(out, "shape", None) != tuple(event_shape):
        raise ValueError(f"{who}: project must return a point of the input's shape {tuple(event_shape)}, got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
