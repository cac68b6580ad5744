"""Fitting the per-step parameters of the ``iia``, ``dc_solver``, ``dpm_solver_v3`` and ``usf`` solvers to a model.

These solvers make one denoiser call per step and carry per-step numbers in their plan, as ``bespoke`` carries its
weights: IIA's coefficients (:func:`samplax.diffusion.solvers.ode.iia_corrected`) and DC-Solver's compensation
ratios (:func:`samplax.diffusion.solvers.ode.dc_solver`), and the per-step choices of a USF schedule
(:func:`samplax.diffusion.solvers.ode.usf`). The functions here fit those numbers once per (model,
solver, nfe, grid) on a batch of initial noises ``sigma_max * z_b`` (``z_b`` from ``fold_in(key, b)``) and return a
:class:`FittedSolver` whose ``sample_kwargs`` reproduce the configuration::

    fit = fit_iia(model, key=jax.random.key(0), base="ddim", nfe=10, sigma_max=80.0, event_shape=(2,))
    x, info = sample(model, key=jax.random.key(1), shape=(1000, 2), **fit.sample_kwargs)

* :func:`fit_iia` follows the IIA paper (Zhang, Niwa & Kleijn, ICLR 2024): step by step along the fitted sampler's
  own trajectory, the coefficients of step ``i`` minimise (least squares, over the batch) the distance between the
  corrected coarse step and the base solver run over the same interval on ``fine_steps`` sub-steps (uniform in
  ``log sigma``). The correction is linear in the coefficients, so one linearisation of the step gives its terms
  without extra calls.
* :func:`fit_dc` follows DC-Solver (Zhao, Wang, Zhou & Lu, ECCV 2024): step by step, the ratio ``rho_i`` minimises
  the mean squared distance between the sampler's corrected state at ``sigma_{i+1}`` (after the final denoise,
  for the last step) and the exact PF-ODE state there (an adaptive solve, :func:`samplax.diffusion.solve_pf_ode`),
  over the batch; a grid of candidates around 1, refined around the best (the paper: 40 AdamW steps from 1).
* :func:`search_schedule` follows S^3 (Liu et al. 2023, "Enhancing diffusion model sampling via a unified sampling
  framework"): the per-step choices of ``solver="usf"`` (order, data/noise prediction, corrector, ``B(h)``) and the
  grid, by coordinate descent on the mean endpoint error against exact PF-ODE endpoints (the paper: an evolutionary
  search).

The fitted configuration ends at sigma = 0 with a final denoise (``final_step="denoise"``, ``sample``'s default).
The coefficients belong to that grid: ``sample`` refuses another (``solver_options["nodes"]``) and another number
of steps (a ValueError naming ``coefficients`` / ``ratios``).
"""
from __future__ import annotations

import itertools
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.checks import check_denoiser, check_sigma_range, point_shape, positive_int
from samplax.diffusion.grids import grid_names, make_grid
from samplax.diffusion.reference import solve_pf_ode
from samplax.diffusion.solvers import IIA_BASES, USF_PREDICTIONS, USF_VARIANTS, StepContext, get_solver, run_solver


class FittedSolver(NamedTuple):
    """A solver fitted to a model by :func:`fit_iia`, :func:`fit_dc` or :func:`search_schedule`.

    Attributes:
      solver: the registered solver (``"iia"``, ``"dc_solver"`` or ``"usf"``).
      solver_options: its options, with the fitted ``coefficients`` / ``ratios`` / per-step choices and the
        ``nodes`` of the grid.
      sample_kwargs: ``solver``, ``solver_options``, ``nfe``, ``sigma_max``, ``sigma_end``, ``grid``,
        ``grid_options`` and ``final_step`` for :func:`samplax.diffusion.sample`.
      nodes: the positive grid (numpy), ``sigma_max`` down to ``sigma_end``.
      diagnostics: per-step errors on the fitting batch before and after the fit, the denoiser calls the fit made
        (``num_model_evals``, summed over the batch) and its ``seconds``.
    """

    solver: str
    solver_options: dict
    sample_kwargs: dict
    nodes: np.ndarray
    diagnostics: dict


def _no_noise(i, j):  # pragma: no cover - deterministic solvers never draw
    raise ValueError("the fitted solvers are deterministic")




def _setup(who, denoiser, key, solver, nfe, sigma_max, sigma_end, grid, grid_options, event_shape, num_samples):
    """Checks, the plan of ``nfe - 1`` steps (one call left for the final denoise), the grid and the fitting batch."""
    nfe = positive_int(nfe, "nfe", who, 2)
    num_samples = positive_int(num_samples, "num_samples", who)
    if key is None:
        raise ValueError(f"{who}: key is required (a typed key from jax.random.key)")
    sigma_max, sigma_end = check_sigma_range(who, sigma_max, sigma_end)
    if grid not in grid_names() or grid == "optimized":
        raise ValueError(f"{who}: grid must be one of {[g for g in grid_names() if g != 'optimized']}, got {grid!r}")
    event_shape = point_shape(event_shape, who)
    dtype = jnp.dtype(jnp.result_type(float))
    check_denoiser(denoiser, event_shape, dtype, who, "event_shape")
    plan = solver.plan(nfe - 1, False)
    nodes = make_grid(grid, len(plan["order"]), sigma_max, sigma_end, **dict(grid_options or {}))
    x0 = sigma_max * jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(key, b), event_shape, dtype))(
        jnp.arange(num_samples))
    return nfe, plan, np.asarray(nodes, np.float64), x0, dtype


def _batched(denoiser) -> Callable:
    return lambda xb, sg: jax.vmap(denoiser, in_axes=(0, None))(xb, sg)


def _sample_kwargs(solver, options, nfe, sigma_max, sigma_end, grid, grid_options):
    return {"solver": solver, "solver_options": options, "nfe": nfe, "sigma_max": float(sigma_max),
            "sigma_end": float(sigma_end), "grid": grid, "grid_options": dict(grid_options or {}),
            "final_step": "denoise"}


def fit_iia(denoiser: Callable, *, key: jax.Array, nfe: int, sigma_max: float, event_shape: tuple,
            base: str = "ddim", sigma_end: float = 0.002, grid: str = "logsnr", grid_options: Optional[dict] = None,
            num_samples: int = 64, fine_steps: int = 10, num_terms: int = 3, ridge: float = 1e-10,
            base_options: Optional[dict] = None) -> FittedSolver:
    """Fit the per-step coefficients of ``solver="iia"`` on ``base`` to ``denoiser`` (module docstring).

    For step ``i`` with state ``x_i`` (the fitted sampler's own, from the batch of initial noises), base output
    ``x'_{i+1}``, terms ``f_{i,k}`` (:func:`samplax.diffusion.solvers.ode.iia_corrected`) and the fine target
    ``y_{i+1}`` (``base`` from ``x_i`` over ``[sigma_i, sigma_{i+1}]`` in ``fine_steps`` steps uniform in
    ``log sigma``), the coefficients solve ``min_c sum_b |y_{i+1} - x'_{i+1} - sum_k c_k f_{i,k}|^2 + ridge
    tr(A^T A)/K |c|^2`` (least squares; a term that does not exist yet gets 0).

    Args:
      denoiser: ``D(x, sigma)`` for one point.
      key: typed PRNG key of the fitting noises.
      nfe: the call budget of the sampler it is fitted for (``nfe - 1`` steps and a final denoise).
      sigma_max, sigma_end, grid, grid_options: the grid, as in :func:`samplax.diffusion.sample`.
      event_shape: shape of one point.
      base: one of :data:`~samplax.diffusion.solvers.ode.IIA_BASES`; ``base_options`` its options.
      num_samples: fitting batch size (the paper: a batch of trajectories).
      fine_steps: sub-steps of the fine integration of each interval (the paper's fine-grained timesteps).
      num_terms: ``K``, the terms of the correction (1..4).
      ridge: relative Tikhonov weight of the least-squares problem.

    Returns:
      :class:`FittedSolver`; ``diagnostics`` has per step the RMS distance to the fine target of the base step
      (``local_error_base``) and of the fitted step (``local_error``).
    """
    who = "fit_iia"
    t0 = time.perf_counter()
    base_options = dict(base_options or {})
    if base not in IIA_BASES:
        raise ValueError(f"{who}: base must be one of {IIA_BASES}, got {base!r}")
    fine_steps = positive_int(fine_steps, "fine_steps", who)
    num_terms = positive_int(num_terms, "num_terms", who)
    if not (isinstance(ridge, (int, float)) and not isinstance(ridge, bool) and np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"{who}: ridge must be a finite number >= 0, got {ridge!r}")
    s = get_solver("iia", base=base, num_terms=num_terms, **base_options)
    base_s = get_solver(base, **base_options)
    nfe, plan, nodes, x0, dtype = _setup(who, denoiser, key, s, nfe, sigma_max, sigma_end, grid, grid_options,
                                         event_shape, num_samples)
    n, k_terms = len(plan["order"]), num_terms
    sig = jnp.asarray(nodes, dtype)
    dz = _batched(denoiser)
    fine_plan = {k: jnp.asarray(v) for k, v in base_s.plan(fine_steps, False).items()}
    plan_j = {k: jnp.asarray(v) for k, v in plan.items()}

    @jax.jit
    def probe(carry, i, plan_j):
        """The step's base output, its terms ``[K, B, ...]`` (the step is affine in its coefficients) and carry."""
        def x_of(cvec):
            p = dict(plan_j)
            for j in range(k_terms):
                p[f"c{j}"] = p[f"c{j}"].at[i].set(cvec[j])
            c2, _ = s.step(carry, i, StepContext(dz, sig, p, _no_noise, {}))
            return c2.x, c2

        x_b, lin, c2 = jax.linearize(x_of, jnp.zeros((k_terms,), dtype), has_aux=True)
        return x_b, jax.vmap(lin)(jnp.eye(k_terms, dtype=dtype)), c2

    @jax.jit
    def fine(x, fine_nodes):
        return run_solver(base_s, dz, x, fine_nodes, fine_plan, None, {})[0]

    coefs = np.zeros((n, k_terms))
    err_base, err_fit = np.zeros(n), np.zeros(n)
    carry = s.init(x0, sig, plan_j)
    for i in range(n):
        x_b, feats, c2 = probe(carry, i, plan_j)
        fine_nodes = jnp.asarray(np.exp(np.linspace(np.log(nodes[i]), np.log(nodes[i + 1]), fine_steps + 1)), dtype)
        target = fine(carry.x, fine_nodes)
        a = np.asarray(feats, np.float64).reshape(k_terms, -1).T
        r = np.asarray(target - x_b, np.float64).ravel()
        on = np.any(a != 0.0, axis=0)  # the terms that exist at this step (differences need older values)
        gram, rhs = a[:, on].T @ a[:, on], a[:, on].T @ r
        reg = ridge * np.trace(gram) / max(int(on.sum()), 1)
        c = np.zeros(k_terms)
        c[on] = np.linalg.lstsq(gram + reg * np.eye(int(on.sum())), rhs, rcond=None)[0]
        if not np.all(np.isfinite(c)):
            raise ValueError(f"{who}: the least-squares problem of step {i} has non-finite values (the denoiser's "
                             "outputs on the fitting batch are not finite)")
        coefs[i] = c
        err_base[i] = np.sqrt(np.mean(r * r))
        err_fit[i] = np.sqrt(np.mean((r - a @ c) ** 2))
        for j in range(k_terms):
            plan_j[f"c{j}"] = plan_j[f"c{j}"].at[i].set(c[j])
        carry = c2._replace(x=x_b + jnp.tensordot(jnp.asarray(c, dtype), feats, axes=1))
    options = {"base": base, "coefficients": tuple(tuple(float(v) for v in row) for row in coefs),
               "nodes": tuple(float(v) for v in nodes), **base_options}
    evals = int(num_samples) * n * (1 + fine_steps)  # the step's call and the fine solve's
    diag = {"local_error_base": err_base, "local_error": err_fit, "num_model_evals": evals,
            "seconds": time.perf_counter() - t0}
    return FittedSolver("iia", options, _sample_kwargs("iia", options, nfe, sigma_max, sigma_end, grid, grid_options),
                        nodes, diag)


def fit_dc(denoiser: Callable, *, key: jax.Array, nfe: int, sigma_max: float, event_shape: tuple,
           sigma_end: float = 0.002, grid: str = "logsnr", grid_options: Optional[dict] = None, num_samples: int = 32,
           order: int = 2, variant: str = "bh2", dc_order: int = 2, search: tuple = (0.0, 2.0),
           num_candidates: int = 41, refinements: int = 2, rtol: float = 1e-9) -> FittedSolver:
    """Fit the compensation ratios of ``solver="dc_solver"`` to ``denoiser`` (module docstring).

    Step by step (ratios of the steps before ``dc_order`` stay 1), ``rho_i`` minimises the mean over the batch of
    ``|x^c_{i+1}(rho) - x*(sigma_{i+1})|^2``: ``x^c_{i+1}`` the sampler's state at ``sigma_{i+1}`` after UniC's
    correction (for the last step, the final denoise ``D(x_n, sigma_n)`` against the exact endpoint), ``x*`` the
    exact PF-ODE trajectory of the same initial noise. Search: ``num_candidates`` values evenly over ``search``
    (1 among them), then ``refinements`` times as many over the two grid cells around the best so far.

    Args:
      denoiser, key, nfe, sigma_max, event_shape, sigma_end, grid, grid_options, num_samples: as in
        :func:`fit_iia`.
      order, variant, dc_order: of the :func:`samplax.diffusion.solvers.ode.dc_solver`.
      search: ``(low, high)`` range of the first candidates, ``low < 1 < high``.
      num_candidates: candidates per round (odd, >= 3).
      refinements: rounds of refinement.
      rtol: tolerance of the exact reference solve.

    Returns:
      :class:`FittedSolver`; ``diagnostics`` has per step the fitting-batch loss with ``rho = 1``
      (``loss_uncompensated``) and with the fitted ratio (``loss``); ``num_model_evals`` counts the search's
      calls, ``reference_steps`` the Dopri8 steps of the reference solve (summed over the batch).
    """
    who = "fit_dc"
    t0 = time.perf_counter()
    try:
        lo, hi = (float(v) for v in search)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: search must be a pair (low, high), got {search!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < 1.0 < hi):
        raise ValueError(f"{who}: search must be a range (low, high) with low < 1 < high, got {search!r}")
    num_candidates = positive_int(num_candidates, "num_candidates", who, 3)
    if num_candidates % 2 == 0:
        raise ValueError(f"{who}: num_candidates must be odd (the refinement is centred on the best), got "
                         f"{num_candidates}")
    refinements = positive_int(refinements, "refinements", who, 0)
    s = get_solver("dc_solver", order=order, variant=variant, dc_order=dc_order)
    nfe, plan, nodes, x0, dtype = _setup(who, denoiser, key, s, nfe, sigma_max, sigma_end, grid, grid_options,
                                         event_shape, num_samples)
    n = len(plan["order"])
    sig = jnp.asarray(nodes, dtype)
    dz = _batched(denoiser)
    ref, ref_steps = solve_pf_ode(denoiser, x0, float(nodes[0]), 0.0, rtol=rtol, atol=rtol, return_steps=True,
                                  save_sigmas=np.concatenate([nodes, [0.0]]))
    plan_j = {k: jnp.asarray(v) for k, v in plan.items()}

    def with_rho(plan_j, i, r):
        p = dict(plan_j)
        p["rho"] = p["rho"].at[i].set(r)
        return p

    @jax.jit
    def advance(carry, i, plan_j):
        return s.step(carry, i, StepContext(dz, sig, plan_j, _no_noise, {}))[0]

    def make_losses(last):
        @jax.jit
        def losses(carry, i, plan_j, cands):
            def one(r):
                ctx = StepContext(dz, sig, with_rho(plan_j, i, r), _no_noise, {})
                c1, _ = s.step(carry, i, ctx)
                if last:
                    y, target = dz(c1.x, sig[n]), ref[n + 1]
                else:  # UniC of step i + 1 corrects x_{i+1}: the next step's x_prev (its corrected start)
                    c2, _ = s.step(c1, i + 1, ctx)
                    y, target = c2.x_prev, ref[i + 1]
                d = (y - target).reshape(y.shape[0], -1)
                return jnp.mean(jnp.sum(d * d, axis=-1))
            return jax.vmap(one)(cands)
        return losses

    losses_mid, losses_last = make_losses(False), make_losses(True)
    ratios = np.ones(n)
    loss_one, loss_fit = np.full(n, np.nan), np.full(n, np.nan)
    evals = 0
    carry = s.init(x0, sig, plan_j)
    half = num_candidates // 2
    for i in range(n):
        if i >= dc_order:
            f = losses_last if i == n - 1 else losses_mid
            step = max(1.0 - lo, hi - 1.0) / half  # the wider spacing of the two sides of 1
            cands = np.concatenate([np.linspace(lo, 1.0, half + 1), np.linspace(1.0, hi, num_candidates - half)[1:]])
            tried, vals = [], []
            for rnd in range(refinements + 1):
                v = np.asarray(f(carry, i, plan_j, jnp.asarray(cands, dtype)), np.float64)
                evals += num_samples * (1 + len(cands))
                tried.append(cands)
                vals.append(v)
                all_c, all_v = np.concatenate(tried), np.concatenate(vals)
                ok = np.isfinite(all_v)
                if not np.any(ok):
                    raise ValueError(f"{who}: every candidate ratio of step {i} gives a non-finite loss (the "
                                     "denoiser's outputs on the fitting batch are not finite)")
                best = float(all_c[ok][np.argmin(all_v[ok])])
                if rnd == 0:
                    loss_one[i] = float(v[half])  # cands[half] == 1.0
                cands = np.linspace(best - step, best + step, num_candidates)
                step = 2 * step / (num_candidates - 1)
            ratios[i] = best
            loss_fit[i] = float(np.min(all_v[ok]))
            plan_j = with_rho(plan_j, i, jnp.asarray(best, dtype))
        carry = advance(carry, i, plan_j)
        evals += num_samples
    options = {"order": order, "variant": variant, "dc_order": dc_order,
               "ratios": tuple(float(v) for v in ratios), "nodes": tuple(float(v) for v in nodes)}
    diag = {"loss_uncompensated": loss_one, "loss": loss_fit, "num_model_evals": evals,
            "reference_steps": int(np.sum(np.asarray(ref_steps))), "seconds": time.perf_counter() - t0}
    return FittedSolver("dc_solver", options,
                        _sample_kwargs("dc_solver", options, nfe, sigma_max, sigma_end, grid, grid_options), nodes, diag)


def _schedule_plan(orders, noise, corr, bh1):
    """The ``usf`` plan of requested per-step choices (numpy ``[..., n]``): orders clamped to the history there."""
    n = orders.shape[-1]
    return {"order": np.minimum(orders, np.arange(n) + 1).astype(np.int32), "noise": noise.astype(np.int32),
            "bh1": bh1.astype(np.int32), "corrector": corr.astype(np.int32)}


def search_schedule(denoiser: Callable, *, key: jax.Array, nfe: int, sigma_max: float, event_shape: tuple,
                    sigma_end=0.002, grid="logsnr", grid_options: Optional[dict] = None, num_samples: int = 256,
                    orders: tuple = (1, 2, 3), predictions: tuple = ("data", "noise"),
                    correctors: tuple = (False, True), variants: tuple = ("bh1", "bh2"), max_passes: int = 3,
                    refine_nodes: bool = True, rtol: float = 1e-9) -> FittedSolver:
    """Search a per-step solver schedule of ``solver="usf"`` for ``denoiser`` (S^3 of Liu et al. 2023, "Enhancing
    diffusion model sampling via a unified sampling framework").

    The schedule is the per-step choice of :func:`samplax.diffusion.solvers.ode.usf`: predictor order, data or noise
    prediction, UniC corrector on or off and ``B(h)`` variant, from ``orders x predictions x correctors x
    variants`` at each of the ``nfe - 1`` steps (a final denoise ends at sigma = 0), and the timesteps, one of the
    grids ``grid x sigma_end`` (each may be one value or a sequence of candidates). The objective is the mean
    over ``num_samples`` initial noises ``sigma_max * z_b`` of the L2 distance between the sampler's output and the
    exact PF-ODE endpoint of the same noise (:func:`samplax.diffusion.solve_pf_ode`, tolerance ``rtol``).

    Search (coordinate descent; the paper uses an evolutionary search with a learned predictor of the metric,
    affordable here without one because the objective is exact and cheap): on each grid, every uniform strategy
    (one choice for all steps: the fixed solvers ``dpmpp_2m``, ``unipc_bh2``, ... of that grid, as ``usf``
    configurations) is evaluated and the best is the start; then greedy passes over the steps, first to last: at
    step ``i`` every choice is tried with the others fixed (one batched call) and the best kept if it lowers the
    objective; passes repeat until one changes nothing or ``max_passes``. The grid of the lowest objective is kept
    and, with ``refine_nodes``, its nodes after the first are searched jointly with the choices: alternating
    passes (up to ``max_passes``) move each node in turn in ``log sigma`` to the best of 24 points within the
    gaps to its neighbours (the last node, ``sigma_end``, also below), the moves halved each pass, and repeat the
    choice pass; the result then samples with ``grid="given"`` and these nodes. So on the fitting noises the result is never worse than the best uniform strategy of
    the candidates it searched (on other noises it may be: measure held out).

    Cost: each candidate schedule costs ``num_samples * nfe`` denoiser calls; ``diagnostics["num_model_evals"]``
    sums them (plus the reference solve's Dopri8 steps, ``reference_steps``), ``seconds`` is the wall time.

    Args:
      denoiser: ``D(x, sigma)`` for one point.
      key: typed PRNG key of the fitting noises.
      nfe: the sampler's call budget (``nfe - 1`` steps and a final denoise).
      sigma_max, event_shape: as in :func:`fit_iia`; ``grid_options`` go to every candidate grid.
      sigma_end, grid: one value or a sequence of candidates each; every pair is searched.
      num_samples: fitting batch size.
      orders, predictions, correctors, variants: the choices searched per step (subsets of ``(1, 2, 3)``,
        ``("data", "noise")``, ``(False, True)``, ``("bh1", "bh2")``).
      max_passes: greedy passes over the steps per grid (and alternating node/choice passes).
      refine_nodes: whether to search the nodes of the best grid as well (otherwise it stays a named grid).
      rtol: tolerance of the exact reference solve.

    Returns:
      :class:`FittedSolver` of ``"usf"``: ``solver_options`` has the per-step ``order``, ``prediction``,
      ``corrector``, ``variant`` and the grid's ``nodes``; ``sample_kwargs`` reproduce it. ``diagnostics``: the
      fitting objective of the schedule (``error``) and of the best uniform strategy on the chosen grid
      (``best_fixed``: its options and error; on the final nodes, where the uniform strategies are evaluated again
      after ``refine_nodes`` moved them, and the schedule replaced by the best of them, then one more choice pass,
      should one be better), per grid the best uniform strategy and the searched error
      (``grids``), ``passes``, ``node_passes``, ``candidates`` (schedules evaluated), ``num_model_evals``, ``reference_steps`` and
      ``seconds``.
    """
    who = "search_schedule"
    t0 = time.perf_counter()
    grids = (grid,) if isinstance(grid, str) else tuple(grid)
    try:
        ends = (float(sigma_end),) if np.ndim(sigma_end) == 0 else tuple(float(v) for v in sigma_end)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: sigma_end must be a number or a sequence of numbers, got {sigma_end!r}") from None
    if not grids or not ends:
        raise ValueError(f"{who}: grid and sigma_end need at least one candidate each")
    max_passes = positive_int(max_passes, "max_passes", who)
    for name, vals, allowed in (("orders", orders, (1, 2, 3)), ("predictions", predictions, USF_PREDICTIONS),
                                ("correctors", correctors, (False, True)), ("variants", variants, USF_VARIANTS)):
        ok = isinstance(vals, (tuple, list)) and len(vals) > 0 and all(
            (v in allowed) and not (name == "orders" and isinstance(v, bool)) for v in vals)
        if not ok:
            raise ValueError(f"{who}: {name} must be a non-empty sequence of values from {allowed}, got {vals!r}")
    s = get_solver("usf")
    for g in grids:
        _setup(who, denoiser, key, s, nfe, sigma_max, ends[0], g, grid_options, event_shape, 1)
    for e in ends:
        check_sigma_range(who, sigma_max, e)
    nfe, plan, _, x0, dtype = _setup(who, denoiser, key, s, nfe, sigma_max, ends[0], grids[0], grid_options,
                                     event_shape, num_samples)
    n = len(plan["order"])
    dz = _batched(denoiser)
    ref, ref_steps = solve_pf_ode(denoiser, x0, float(sigma_max), 0.0, rtol=rtol, atol=rtol, return_steps=True)

    @jax.jit
    def errors(sigs, plans):
        """Mean endpoint error of each candidate (grid ``[C, n + 1]``, plan entries ``[C, n]``) on the fitting batch."""
        def one(sig, p):
            x = run_solver(s, dz, x0, sig, p, None, {})[0]
            d = (dz(x, sig[-1]) - ref).reshape(x.shape[0], -1)
            return jnp.mean(jnp.sqrt(jnp.sum(d * d, axis=-1)))
        return jax.vmap(one)(sigs, plans)

    combos = list(itertools.product(orders, predictions, correctors, variants))
    cv = [np.asarray([c[0] for c in combos], np.int32), np.asarray([c[1] == "noise" for c in combos], np.int32),
          np.asarray([bool(c[2]) for c in combos], np.int32), np.asarray([c[3] == "bh1" for c in combos], np.int32)]
    evals, candidates = 0, 0

    def evaluate(nodes_c, sched_c):
        nonlocal evals, candidates
        p = {k: jnp.asarray(v) for k, v in _schedule_plan(*sched_c).items()}
        e = np.asarray(errors(jnp.asarray(nodes_c, dtype), p), np.float64)
        evals += int(nodes_c.shape[0]) * num_samples * nfe
        candidates += int(nodes_c.shape[0])
        return np.where(np.isfinite(e), e, np.inf)

    def choice_pass(nodes, cur, best):
        """One greedy pass over the steps' choices; returns ``(schedule, objective, changed)``."""
        changed = False
        for i in range(n):
            trial = [np.repeat(v[None], len(combos), 0) for v in cur]
            for t_arr, c_all in zip(trial, cv):
                t_arr[:, i] = c_all
            errs = evaluate(np.repeat(nodes[None], len(combos), 0), trial)
            k = int(np.argmin(errs))
            if errs[k] < best:
                best, changed, cur = float(errs[k]), True, [t[k].copy() for t in trial]
        return cur, best, changed

    def node_pass(nodes, cur, best, scale):
        """One greedy pass over the nodes after the first (the last one, sigma_end, included): each moved in log sigma
        by fractions ``scale * (1..12)/13`` of the gap to either neighbour (below the last node: the gap above)."""
        changed = False
        frac = scale * np.arange(1, 13) / 13.0
        for j in range(1, n + 1):
            ln = np.log(nodes)
            up = ln[j - 1] - ln[j]
            down = (ln[j] - ln[j + 1]) if j < n else up
            cand = np.repeat(nodes[None], 2 * len(frac), 0)
            cand[:, j] = np.exp(np.concatenate([ln[j] + frac * up, ln[j] - frac * down]))
            errs = evaluate(cand, [np.repeat(v[None], len(cand), 0) for v in cur])
            k = int(np.argmin(errs))
            if errs[k] < best:
                best, changed, nodes = float(errs[k]), True, cand[k].copy()
        return nodes, best, changed

    results = []
    for g, e_end in itertools.product(grids, ends):
        nodes = np.asarray(make_grid(g, n, sigma_max, e_end, **dict(grid_options or {})), np.float64)
        ones = np.ones((1, n), np.int32)
        fixed = evaluate(np.repeat(nodes[None], len(combos), 0), [v[:, None] * ones for v in cv])
        j = int(np.argmin(fixed))
        if not np.isfinite(fixed[j]):
            raise ValueError(f"{who}: every uniform strategy gives a non-finite error on grid {g!r}, sigma_end "
                             f"{e_end} (the denoiser's outputs on the fitting batch are not finite)")
        cur, best, passes = [np.full(n, v[j], np.int32) for v in cv], float(fixed[j]), 0
        for _ in range(max_passes):
            passes += 1
            cur, best, changed = choice_pass(nodes, cur, best)
            if not changed:
                break
        results.append({"grid": g, "sigma_end": e_end, "nodes": nodes, "schedule": cur, "error": best,
                        "passes": passes, "best_fixed": ({"order": int(cv[0][j]), "prediction": combos[j][1],
                                                          "corrector": bool(cv[2][j]), "variant": combos[j][3]},
                                                         float(fixed[j]))})
    r = dict(min(results, key=lambda q: q["error"]))
    node_passes = 0
    if refine_nodes:  # alternate node and choice passes on the best grid, finer node moves each time
        nodes, cur, best = r["nodes"], r["schedule"], r["error"]
        for k in range(max_passes):
            node_passes += 1
            nodes, best, moved = node_pass(nodes, cur, best, 0.5 ** k)
            cur, best, changed = choice_pass(nodes, cur, best)
            if not (moved or changed) and k > 0:
                break
        # the uniform strategies on the final nodes: the schedule contains them, so it must not be worse
        ones = np.ones((1, n), np.int32)
        fixed = evaluate(np.repeat(nodes[None], len(combos), 0), [v[:, None] * ones for v in cv])
        j = int(np.argmin(fixed))
        if fixed[j] < best:
            cur, best = [np.full(n, v[j], np.int32) for v in cv], float(fixed[j])
            cur, best, _ = choice_pass(nodes, cur, best)
        r.update(nodes=nodes, schedule=cur, error=best, best_fixed=(
            {"order": int(cv[0][j]), "prediction": combos[j][1], "corrector": bool(cv[2][j]),
             "variant": combos[j][3]}, float(fixed[j])))
    o, nz, c, b = r["schedule"]
    eff = _schedule_plan(o, nz, c, b)["order"]
    options = {"order": tuple(int(v) for v in eff), "prediction": tuple("noise" if v else "data" for v in nz),
               "corrector": tuple(bool(v) for v in c), "variant": tuple("bh1" if v else "bh2" for v in b),
               "nodes": tuple(float(v) for v in r["nodes"])}
    diag = {"error": r["error"], "best_fixed": r["best_fixed"], "passes": r["passes"], "node_passes": node_passes,
            "grids": [{k: q[k] for k in ("grid", "sigma_end", "error", "best_fixed", "passes")} for q in results],
            "candidates": candidates, "num_model_evals": evals, "reference_steps": int(np.sum(np.asarray(ref_steps))),
            "seconds": time.perf_counter() - t0}
    if refine_nodes:
        sample_kwargs = _sample_kwargs("usf", options, nfe, sigma_max, float(r["nodes"][-1]), "given",
                                       {"nodes": options["nodes"]})
        return FittedSolver("usf", options, sample_kwargs, r["nodes"], diag)
    return FittedSolver("usf", options, _sample_kwargs("usf", options, nfe, sigma_max, r["sigma_end"], r["grid"],
                                                       grid_options), r["nodes"], diag)


def fit_v3(denoiser: Callable, *, key: jax.Array, nfe: int, sigma_max: float, event_shape: tuple,
           sigma_end: float = 0.002, grid: str = "logsnr", grid_options: Optional[dict] = None,
           num_samples: int = 1024, sub_steps: int = 16, num_probes: Optional[int] = None, order: int = 3,
           pseudo: bool = False, corrector: bool = True, rtol: float = 1e-7, chunk: int = 16) -> FittedSolver:
    """Empirical model statistics (EMS) of ``solver="dpm_solver_v3"`` for ``denoiser`` (Zheng, Lu, Chen & Zhu,
    NeurIPS 2023, "DPM-Solver-v3", Sec. 3.1-3.2), on the sampling grid refined ``sub_steps`` times uniformly in
    ``lambda = -log sigma`` per interval.

    Data: ``num_samples`` initial noises ``sigma_max * z_b`` (``z_b`` from ``fold_in(key, b)``) carried along the
    PF-ODE by one adaptive solve (:func:`samplax.diffusion.solve_pf_ode`, ``save_sigmas`` at every EMS point), so
    ``x_lambda`` follows the model's own marginals, as in the paper. At each EMS point, per dimension (VE form,
    ``alpha = 1``; ``D`` the denoiser, ``J = dD/dx``):

    * ``l = E[diag J]``, the minimiser of ``E ||J - diag(l)||_F^2`` (the Frobenius norm of the Jacobian of the
      linearised residual ``N = D - l x``); ``diag J`` exactly (one JVP per coordinate) or with ``num_probes``
      Rademacher probes (Hutchinson, ``v * (J v)``), as in the paper;
    * ``N' = dD/dlambda - l' x - l (D - x)``, the derivative of ``N`` along the ODE (``dD/dlambda`` by one JVP in the
      direction ``(dx/dlambda, dsigma/dlambda) = (D - x, -sigma)``; ``l' = E[d diag J / dlambda]`` by a JVP of each
      probe's JVP in that direction: the data move along the ODE, so the derivative of the mean is the mean of the
      derivatives, with no finite differences, whose error ``l'`` would carry into ``l' x`` with ``|x| ~ sigma``),
      and ``f' = N' - l N`` (the derivative of ``f = e^{-int l} N`` in the frame of the point itself);
    * ``s, b`` the least-squares fit ``f' ~ s N + b``: ``s = Cov(f', N) / Var(N)``, ``b = E[f'] - s E[N]`` (the
      first-order fit of what remains nonlinear; ``s = 0`` where ``Var(N) = 0``).

    Args:
      denoiser, key, nfe, sigma_max, event_shape, sigma_end, grid, grid_options: as in :func:`fit_iia`.
      num_samples: data points per EMS point (the paper: about a thousand).
      sub_steps: ``K``, EMS points per sampling interval (``K + 1`` with both nodes).
      num_probes: ``None``: the exact Jacobian diagonal; an int: Hutchinson probes.
      order, pseudo, corrector: of the :func:`samplax.diffusion.solvers.ode.dpm_solver_v3` it returns (the EMS
        do not depend on them).
      rtol: tolerance of the PF-ODE solve that draws the data.
      chunk: EMS points evaluated per compiled call.

    Returns:
      :class:`FittedSolver` (``solver="dpm_solver_v3"``, options ``l, s, b`` ``[nfe - 1, K + 1, *event_shape]``,
      ``order``, ``pseudo``, ``corrector`` and ``nodes``); ``diagnostics``: ``lambdas`` (the EMS grid, flat), ``num_model_evals``
      (denoiser outputs at the EMS points), ``num_jvps`` (``2 * probes + 1`` per data point: ``J v``, its
      derivative, ``dD/dlambda``), ``reference_steps`` (Dopri8 steps of the data solve,
      summed over the batch; about 13 calls each) and ``seconds``.
    """
    who = "fit_v3"
    t0 = time.perf_counter()
    sub_steps = positive_int(sub_steps, "sub_steps", who)
    chunk = positive_int(chunk, "chunk", who)
    if num_probes is not None:
        num_probes = positive_int(num_probes, "num_probes", who)
    if not isinstance(pseudo, (bool, np.bool_)):
        raise ValueError(f"{who}: pseudo must be a bool, got {pseudo!r}")
    s = get_solver("dpm_solver_v3", order=order, pseudo=pseudo, corrector=corrector)
    nfe, plan, nodes, x0, dtype = _setup(who, denoiser, key, s, nfe, sigma_max, sigma_end, grid, grid_options,
                                         event_shape, num_samples)
    n, kk = len(plan["order"]), sub_steps
    lam_nodes = -np.log(nodes)
    lams = np.concatenate([np.linspace(lam_nodes[i], lam_nodes[i + 1], kk + 1)[:-1] for i in range(n)]
                          + [lam_nodes[-1:]])
    sig_f = np.exp(-lams)
    sig_f[0], sig_f[-1] = nodes[0], nodes[-1]
    xs, ref_steps = solve_pf_ode(denoiser, x0, float(nodes[0]), float(nodes[-1]), rtol=rtol, atol=rtol,
                                 return_steps=True, save_sigmas=sig_f)
    dim = int(np.prod(event_shape))
    probes = dim if num_probes is None else num_probes

    def one(x, sg, pkey):
        """Per data point: ``D``, ``diag J`` (estimate), its derivative along the ODE and ``dD/dlambda``."""
        if num_probes is None:
            vs = jnp.eye(dim, dtype=dtype).reshape((dim,) + tuple(event_shape))
        else:
            vs = jax.random.rademacher(pkey, (num_probes,) + tuple(event_shape), dtype)
        d = denoiser(x, sg)
        tangent = (d - x, -sg)  # (dx/dlambda, dsigma/dlambda) along the PF-ODE
        _, dd = jax.jvp(denoiser, (x, sg), tangent)

        def jv_and_rate(v):  # J v and d(J v)/dlambda along the ODE (a JVP of the JVP)
            jv_fn = lambda y, sgy: jax.jvp(lambda z: denoiser(z, sgy), (y,), (v,))[1]  # noqa: E731
            return jax.jvp(jv_fn, (x, sg), tangent)

        jv, djv = jax.vmap(jv_and_rate)(vs)
        norm = 1.0 if num_probes is None else float(num_probes)
        return d, jnp.sum(vs * jv, axis=0) / norm, jnp.sum(vs * djv, axis=0) / norm, dd

    @jax.jit
    def stats(xc, sgc, keys):
        return jax.vmap(lambda xb, sg, k: jax.vmap(one, (0, None, 0))(
            xb, sg, jax.random.split(k, xb.shape[0])))(xc, sgc, keys)

    m = len(lams)
    ds, diags, rates, dds = [], [], [], []
    for a in range(0, m, chunk):
        idx = np.arange(a, min(a + chunk, m))
        idx_p = np.concatenate([idx, np.full(chunk - len(idx), idx[-1])])  # one compiled shape
        keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.fold_in(key, 1_000_003), j))(jnp.asarray(idx_p))
        d, dg, rg, dd = stats(xs[idx_p], jnp.asarray(sig_f[idx_p], dtype), keys)
        ds.append(np.asarray(d[: len(idx)], np.float64))
        diags.append(np.asarray(dg[: len(idx)], np.float64))
        rates.append(np.asarray(rg[: len(idx)], np.float64))
        dds.append(np.asarray(dd[: len(idx)], np.float64))
    d, diag, rate, ddl = (np.concatenate(v, 0) for v in (ds, diags, rates, dds))  # [M, B, *e]
    x = np.asarray(xs, np.float64)
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(diag)) and np.all(np.isfinite(rate))
            and np.all(np.isfinite(ddl))):
        raise ValueError(f"{who}: the denoiser's outputs or JVPs on the fitting data are not finite")
    shp = (m, 1) + tuple(event_shape)
    lv = diag.mean(axis=1)  # [M, *e]
    dl = rate.mean(axis=1)  # dl/dlambda: the samples move along the ODE, so d/dlambda E[.] = E[d/dlambda .]
    nv = d - lv.reshape(shp) * x
    n1 = ddl - dl.reshape(shp) * x - lv.reshape(shp) * (d - x)
    f1 = n1 - lv.reshape(shp) * nv
    nm, fm = nv.mean(axis=1), f1.mean(axis=1)
    var = ((nv - nm[:, None]) ** 2).mean(axis=1)
    cov = ((nv - nm[:, None]) * (f1 - fm[:, None])).mean(axis=1)
    sv = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 0.0)
    bv = fm - sv * nm

    def per_step(v):
        return np.stack([v[i * kk: i * kk + kk + 1] for i in range(n)])  # [n, K + 1, *e]

    options = {"order": order, "pseudo": bool(pseudo), "corrector": bool(corrector), "l": per_step(lv), "s": per_step(sv), "b": per_step(bv),
               "nodes": tuple(float(v) for v in nodes)}
    diag_out = {"lambdas": lams, "num_model_evals": int(num_samples) * m,
                "num_jvps": int(num_samples) * m * (2 * probes + 1),
                "reference_steps": int(np.sum(np.asarray(ref_steps))), "seconds": time.perf_counter() - t0}
    return FittedSolver("dpm_solver_v3", options,
                        _sample_kwargs("dpm_solver_v3", options, nfe, sigma_max, sigma_end, grid, grid_options), nodes,
                        diag_out)
