"""Optimized step grids for a given model, solver and NFE (in the spirit of Align Your Steps).

Align Your Steps (Sabour, Fidler & Kreis 2024) chooses the noise levels of a sampler by
minimising an upper bound on the discretisation error of the solver for a given model.
Here we minimise the discretisation error itself, measured where it matters: the mean
L2 distance between the solver's endpoint and the exact probability-flow ODE endpoint,

``L(grid) = 1/B sum_b | Solve_grid(x_b) - ODE(x_b) |``,  ``x_b = sigma_max z_b``,

on a tuning batch of ``B`` initial noises (a fixed seed), with the exact endpoints
``ODE(x_b)`` from an adaptive diffrax solve (:func:`samplax.diffusion.solve_pf_ode`).

Parameterisation (always a valid, strictly decreasing grid): with ``u = log sigma``,
``u_i = u_max + (u_end - u_max) * sum_{j < i} softmax(theta)_j`` for ``i = 0..n``, so the
``n`` step lengths are positive and sum to ``u_max - u_end``. The last positive node
``sigma_end = exp(u_end)`` is also optimised (``free_end=True``, when the run ends at
sigma = 0). Initial value: the log-SNR grid (``theta = 0``) with the given ``sigma_end``.
The solver loop has a static trip count here, so ``L`` is differentiated through the
solver (reverse mode) and minimised with Adam; the best grid seen on the tuning batch is
kept, so it is never worse there than the log-SNR start.

Results are cached per (model, solver, solver options, NFE, sigma_max, sigma_end, final
step, event shape, tuning settings): the first ``sample(..., grid="optimized")`` pays the
tuning, later calls reuse the grid; ``cache_file`` also persists grids on disk (the CLI keeps
them in a checkpoint's folder). Only deterministic solvers are supported (the target is the
ODE endpoint).
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplax.diffusion.reference import solve_pf_ode
from samplax.diffusion.solvers import get_solver, run_solver

_CACHE: "OrderedDict" = OrderedDict()
_CACHE_SIZE = 128


def _nodes(theta, u_end, u_max):
    w = jax.nn.softmax(theta)
    frac = jnp.concatenate([jnp.zeros((1,), theta.dtype), jnp.cumsum(w)])
    return jnp.exp(u_max + (u_end - u_max) * frac)


def optimized_grid(denoiser: Callable, *, solver: str, nfe: int, sigma_max: float, sigma_end: float,
                   final_step: str = "denoise", event_shape: tuple, solver_options: Optional[dict] = None,
                   batch: int = 256, iters: int = 300, learning_rate: float = 0.05, seed: int = 0,
                   free_end: bool = True, rtol: float = 1e-7, n: Optional[int] = None,
                   cache_file: Optional[str] = None, cache_tag: str = "") -> np.ndarray:
    """The positive nodes ``[sigma_max, ..., sigma_end*]`` minimising the tuning-batch endpoint error (module docstring).

    Args:
      denoiser: ``D(x, sigma)`` for one point.
      solver, solver_options: a deterministic solver of :func:`samplax.diffusion.solver_names`.
      nfe: denoiser-call budget, split exactly as :func:`samplax.diffusion.sample` does.
      sigma_max, sigma_end: first node and the initial last positive node.
      final_step: ``"denoise"`` / ``"integrate"`` (the run ends at sigma = 0) or ``"none"``
        (the run ends at ``sigma_end``, which is then fixed).
      event_shape: shape of one point.
      batch, iters, learning_rate, seed: tuning batch size, Adam iterations and step size, noise seed.
      free_end: also optimise ``sigma_end`` (only when the run ends at 0).
      rtol: tolerance of the reference solve.
      n: optional check of the number of grid intervals the caller expects.
      cache_file, cache_tag: optional JSON file that persists grids across processes, keyed by
        ``cache_tag`` (which must identify the model, e.g. a checkpoint's step) and all settings.

    Returns:
      numpy array of ``n_grid + 1`` strictly decreasing positive noise levels.
    """
    solver_options = dict(solver_options or {})
    if final_step not in ("denoise", "integrate", "none"):
        raise ValueError(f"optimized_grid: final_step must be 'denoise', 'integrate' or 'none', got {final_step!r}")
    for name, v in (("batch", batch), ("iters", iters)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"optimized_grid: {name} must be a positive int, got {v!r}")
    s = get_solver(solver, **solver_options)
    if s.stochastic or "run" in s.params:
        raise ValueError(f"optimized_grid: solver {solver!r} is stochastic; the optimized grid targets the "
                         "probability-flow ODE endpoint and needs a deterministic solver")
    dtype = jnp.result_type(float)
    event_shape = tuple(int(d) for d in event_shape)
    ck = (id(denoiser), solver, tuple(sorted(solver_options.items())), int(nfe), float(sigma_max), float(sigma_end),
          final_step, event_shape, int(batch), int(iters), float(learning_rate), int(seed), bool(free_end),
          float(rtol), str(jnp.dtype(dtype)))
    hit = _CACHE.get(ck)
    if hit is not None and hit[0] is denoiser:
        return hit[1].copy()
    file_key = json.dumps([cache_tag] + [list(v) if isinstance(v, tuple) else v for v in ck[1:]], default=str)
    if cache_file is not None and os.path.isfile(cache_file):
        with open(cache_file) as f:
            stored = json.load(f).get(file_key)
        if stored is not None:
            nodes = np.asarray(stored, dtype=np.float64)
            _CACHE[ck] = (denoiser, nodes)
            return nodes.copy()

    final_denoise = final_step == "denoise"
    to_zero = final_step == "integrate"
    budget = nfe - 1 if final_denoise else nfe
    plan = s.plan(budget, to_zero)
    n_steps = len(plan["order"])
    n_grid = n_steps - 1 if to_zero else n_steps
    if n_grid < 1:
        raise ValueError(f"optimized_grid: nfe={nfe} is too small for solver {solver!r}")
    if n is not None and n != n_grid:
        raise AssertionError(f"optimized_grid: expected {n} intervals, the plan has {n_grid}")
    plan_j = {k: jnp.asarray(v) for k, v in plan.items()}

    key = jax.random.key(seed)
    x0 = sigma_max * jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(key, b), event_shape, dtype))(
        jnp.arange(batch))
    stop = 0.0 if final_step != "none" else float(sigma_end)
    tol = max(float(rtol), 50 * float(jnp.finfo(dtype).eps))  # no tighter than the arithmetic allows
    ref = solve_pf_ode(denoiser, x0, float(sigma_max), stop, rtol=tol, atol=tol)

    def dz(xb, sg):
        return jax.vmap(denoiser, in_axes=(0, None))(xb, sg)

    u_max = jnp.log(jnp.asarray(sigma_max, dtype))
    lo, hi = jnp.log(jnp.asarray(1e-5, dtype)), u_max - 0.1
    optimise_end = free_end and final_step != "none"

    def endpoint_error(params):
        theta, u_end = params
        u_end = jnp.clip(u_end, lo, hi) if optimise_end else jax.lax.stop_gradient(u_end)
        nodes = _nodes(theta, u_end, u_max)
        if to_zero:
            nodes = jnp.concatenate([nodes, jnp.zeros((1,), dtype)])
        x, _ = run_solver(s, dz, x0, nodes, plan_j, None, {})
        if final_denoise:
            x = dz(x, nodes[-1])
        d = (x - ref).reshape(batch, -1)
        return jnp.mean(jnp.sqrt(jnp.sum(d * d, axis=-1) + 1e-30))

    opt = optax.adam(learning_rate)
    params0 = (jnp.zeros((n_grid,), dtype), jnp.log(jnp.asarray(sigma_end, dtype)))

    @jax.jit
    def tune(params):
        def body(carry, _):
            p, st, best_p, best_l = carry
            loss, g = jax.value_and_grad(endpoint_error)(p)
            g = jax.tree_util.tree_map(lambda a: jnp.where(jnp.isfinite(a), a, 0.0), g)
            better = jnp.isfinite(loss) & (loss < best_l)
            best_p = jax.tree_util.tree_map(lambda b, c: jnp.where(better, c, b), best_p, p)
            best_l = jnp.where(better, loss, best_l)
            upd, st = opt.update(g, st, p)
            return (optax.apply_updates(p, upd), st, best_p, best_l), loss

        (p, _, best_p, best_l), losses = jax.lax.scan(
            body, (params, opt.init(params), params, jnp.asarray(jnp.inf, dtype)), None, length=iters)
        last = endpoint_error(p)
        better = jnp.isfinite(last) & (last < best_l)
        best_p = jax.tree_util.tree_map(lambda b, c: jnp.where(better, c, b), best_p, p)
        return best_p, losses

    best, _ = tune(params0)
    theta, u_end = best
    u_end = jnp.clip(u_end, lo, hi) if optimise_end else params0[1]
    nodes = np.array(_nodes(theta, u_end, u_max), dtype=np.float64)
    nodes[0] = float(sigma_max)
    if not np.all(np.diff(nodes) < 0) or not np.all(nodes > 0):  # pragma: no cover - softmax steps are positive
        raise AssertionError(f"optimized_grid: produced an invalid grid {nodes}")
    _CACHE[ck] = (denoiser, nodes)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    if cache_file is not None:
        table = {}
        if os.path.isfile(cache_file):
            with open(cache_file) as f:
                table = json.load(f)
        table[file_key] = nodes.tolist()
        tmp = cache_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(table, f, indent=1)
        os.replace(tmp, cache_file)
    return nodes.copy()
