"""Guidance that acts on the sampler's steps, not on the denoiser: soft value-based decoding (SVDD) and
TFG's recurrence. Both are small samplers with :func:`samplax.diffusion.sample`'s keyword contract
(``key``, ``shape`` or ``x_init``, ``sigma_max``, ``nfe``, ``grid``, ``sigma_end``) that return
``(samples, SampleInfo)``; the samples are clean (a final denoise at the grid's last node).

Why samplers: SVDD chooses among several candidate NEXT states drawn from the model's stochastic transition,
and a recurrence re-noises a finished step back to its start; neither is a function ``D(x, sigma)`` of the
current point alone (a denoiser sees neither the next noise level nor the transition noise), so they cannot be
wrappers that every solver runs. Randomness follows ``sample``: sample ``b`` uses ``fold_in(key, b)`` only
(batch-size invariant); step ``i`` folds in ``i``.
"""
from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import make_cost
from samplax.diffusion._compiled import Clock, ExecutableCache
from samplax.diffusion.checks import check_denoiser, nonfinite_report
from samplax.diffusion.grids import grid_names, make_grid
from samplax.diffusion.guidance._base import as_key, check_callable, check_nonneg, check_positive_int, inner_cost
from samplax.diffusion.sampling import SampleInfo
from samplax.diffusion.solvers import mark_nonfinite, no_nonfinite

_EXECUTABLES = ExecutableCache(32)


def _setup(who, denoiser, key, shape, x_init, sigma_max, nfe, calls_per_step, fixed_calls, grid, sigma_end,
           grid_options):
    """Checks the sampler arguments; returns ``(key, x_init, shape, dtype, nodes)``."""
    check_callable(denoiser, who, "denoiser", "D(x, sigma)")
    key = as_key(key, who)
    if not isinstance(nfe, (int, np.integer)) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"{who}: nfe must be a positive int, got {nfe!r}")
    n_steps = (int(nfe) - fixed_calls) // calls_per_step
    if n_steps < 1:
        raise ValueError(f"{who}: nfe={nfe} is too small: one step costs {calls_per_step} denoiser calls and the "
                         f"sampler needs {fixed_calls} more")
    try:
        sigma_max = float(sigma_max)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: sigma_max must be a number, got {sigma_max!r}") from None
    if not (np.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"{who}: sigma_max must be positive and finite, got {sigma_max}")
    sigma_end = 0.002 if sigma_end is None else float(sigma_end)
    if not (0 < sigma_end < sigma_max):
        raise ValueError(f"{who}: need 0 < sigma_end < sigma_max, got sigma_end={sigma_end}, sigma_max={sigma_max}")
    if grid not in grid_names() or grid == "optimized":
        raise ValueError(f"{who}: grid must be one of {[g for g in grid_names() if g != 'optimized']}, got {grid!r}")
    if (shape is None) == (x_init is None):
        raise ValueError(f"{who}: give exactly one of shape= and x_init=")
    if x_init is None:
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2 or any(d < 1 for d in shape):
            raise ValueError(f"{who}: shape must be (batch, *event_shape) with positive sizes, got {shape}")
        dtype = jnp.dtype(jnp.result_type(float))
    else:
        x_init = jnp.asarray(x_init)
        if x_init.ndim < 2:
            raise ValueError(f"{who}: x_init must be a batch [batch, *event_shape], got shape {x_init.shape}")
        if not bool(jnp.all(jnp.isfinite(x_init))):
            raise ValueError(f"{who}: x_init has non-finite values")
        shape, dtype = tuple(x_init.shape), x_init.dtype
    check_denoiser(denoiser, shape[1:], dtype, who, "x_init" if x_init is not None else "shape")
    nodes = make_grid(grid, n_steps, sigma_max, sigma_end, **dict(grid_options or {}))
    return key, x_init, shape, dtype, np.asarray(nodes, dtype=np.float64)


def _initial(key, x, init_shape, sigma0, dtype):
    """The initial state and per-sample keys, drawn exactly as :func:`samplax.diffusion.sample` draws them."""
    k_init, k_noise = jax.random.split(key)
    if init_shape is not None:
        x = sigma0 * jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(k_init, b), init_shape[1:], dtype))(
            jnp.arange(init_shape[0]))
    keys = jax.vmap(lambda b: jax.random.fold_in(k_noise, b))(jnp.arange(x.shape[0]))
    return x, keys


def _finish(who, solver, grid, x, ne, nf, nodes, clock, denoiser, num_steps, extra=None):
    calls = int(ne)
    per = inner_cost(denoiser)
    more = {f"num_{k}": calls * int(v) for k, v in per.items()}
    more.update(extra or {})
    if clock.timed:
        cost = make_cost(num_model_evals=calls, compile_seconds=clock.compile_seconds,
                         sampling_seconds=clock.run_seconds, num_compilations=clock.num_compilations, num_devices=1,
                         **more)
    else:
        cost = make_cost(num_model_evals=calls, num_devices=1, **more)
    warns = tuple(nonfinite_report(who, np.asarray(nf.step), np.asarray(nf.sigma), num_steps))
    visited = np.concatenate([nodes, [0.0]])
    return x, SampleInfo(ne, visited, solver, grid, "denoise", float(nodes[-1]), cost, nf.step, nf.sigma, warns)


# ---------------------------------------------------------------- SVDD
def select_candidate(key, values, alpha):
    """SVDD's selection among candidates with ``values`` ``[M]``: an index drawn from
    ``softmax(values / alpha)`` (``alpha > 0``), or ``argmax(values)`` (``alpha = 0``)."""
    soft = jax.random.categorical(key, values / jnp.where(alpha > 0, alpha, 1.0))
    return jnp.where(alpha > 0, soft, jnp.argmax(values))


@eqx.filter_jit
def _svdd_program(denoiser, value_fn, x, key, sigmas, alpha, num_candidates, noisy_value, init_shape, dtype):
    x, sample_keys = _initial(key, x, init_shape, sigmas[0], dtype)
    b, m, event = x.shape[0], num_candidates, x.shape[1:]

    def dz(xb, s):
        return jax.vmap(denoiser, in_axes=(0, None))(xb, s)

    d0 = dz(x, sigmas[0])
    n = sigmas.shape[0] - 1

    def body(carry, i):
        x, d, nf = carry
        s, t = sigmas[i], sigmas[i + 1]
        r2 = (t / s) ** 2
        mean = r2 * x + (1.0 - r2) * d  # DDPM ancestral transition, the exact q(x_t | x_s, x0 = D(x_s))
        scale = t * jnp.sqrt(1.0 - r2)

        def candidates(kb, mb):
            z = jax.random.normal(jax.random.fold_in(jax.random.fold_in(kb, i), 0), (m,) + event, dtype)
            return mb[None] + scale * z

        cands = jax.vmap(candidates)(sample_keys, mean)  # [B, M, ...]
        dc = dz(cands.reshape((b * m,) + event), t).reshape(cands.shape)
        if noisy_value:
            v = jax.vmap(jax.vmap(value_fn, in_axes=(0, None)), in_axes=(0, None))(cands, t)
        else:
            v = jax.vmap(jax.vmap(value_fn))(dc)

        sel = jax.vmap(lambda kb, vb: select_candidate(jax.random.fold_in(jax.random.fold_in(kb, i), 1), vb,
                                                       alpha))(sample_keys, v)
        rows = jnp.arange(b)
        xn, dn = cands[rows, sel], dc[rows, sel]
        nf = mark_nonfinite(nf, xn, i, s)
        return (xn, dn, nf), None

    (x, d, nf), _ = jax.lax.scan(body, (x, d0, no_nonfinite(x)), jnp.arange(n))
    nf = mark_nonfinite(nf, d, n, sigmas[n])
    return d, jnp.asarray(1 + n * m, jnp.int32), nf


def svdd(denoiser: Callable, value_fn: Callable, *, key, num_candidates: int = 4, alpha=0.0,
         value_on: str = "clean", shape: Optional[tuple] = None, x_init=None, sigma_max: float, nfe: int,
         grid: str = "logsnr", sigma_end: Optional[float] = None, grid_options: Optional[dict] = None):
    """Soft value-based decoding (SVDD, Li et al. 2024, "Derivative-free guidance in continuous and discrete
    diffusion models with soft value-based decoding"): derivative-free guidance that, at every step, draws
    several candidate next states from the model's own stochastic transition and keeps one chosen by a value
    function.

    Update rule, step ``s -> t`` of the grid (each sample separately):

    1. ``M = num_candidates`` candidates from the DDPM ancestral transition
       ``x_t^m = (t/s)^2 x_s + (1 - (t/s)^2) D(x_s, s) + t sqrt(1 - (t/s)^2) z_m``;
    2. their values ``v_m``: SVDD-PM, ``value_on="clean"``: ``v_m = value_fn(D(x_t^m, t))`` (a reward of the
       clean estimate); or ``value_on="noisy"``: ``v_m = value_fn(x_t^m, t)`` (a soft value function of the noisy
       state, e.g. the exact ``log p(y | x_t)``);
    3. keep ``x_t = x_t^m`` with ``m ~ Categorical(softmax(v / alpha))``, or ``argmax v`` when ``alpha = 0``.

    The chosen candidate's ``D(x_t^m, t)`` is the next step's ``D(x_s, s)``, so each step costs ``M`` denoiser
    calls, and at the last node it is the returned clean sample (no extra call). With ``alpha = 1`` and the
    exact soft value ``log p(y | x_t)`` the selection is self-normalized importance resampling of the
    posterior's reverse transition (exact as ``M -> inf`` up to the transition's discretization); with the
    plug-in value ``ell(D(x_t))`` it inherits DPS's approximation; ``alpha -> 0`` is greedy (reward
    maximization, no longer a posterior). Biases measured in the tests. ``M = 1`` is DDPM ancestral sampling
    (the same draws as ``diffusion.sample(..., solver="ddpm")``).

    Why a sampler and not a denoiser wrapper: the candidates are next states of the stochastic transition,
    which a denoiser ``D(x, sigma)`` never sees. ``sample``'s contract is kept: same keyword arguments, same
    initial noise for the same key, ``(samples, SampleInfo)`` back.

    Cost: ``1 + n M`` denoiser calls per sample for ``n = (nfe - 1) // M`` steps (never more than ``nfe``;
    ``info.num_model_evals``) and ``n M`` value evaluations (``info.cost["num_value_evals"]``); no VJP.

    Args:
      denoiser: ``D(x, sigma)`` (a guided wrapper too: its ``cost_per_call`` enters ``info.cost``).
      value_fn: ``value_fn(x0) -> scalar`` (``value_on="clean"``) or ``value_fn(x, sigma) -> scalar``
        (``"noisy"``).
      key: typed PRNG key. num_candidates: ``M``. alpha: temperature ``>= 0``.
      shape, x_init, sigma_max, nfe, grid, sigma_end, grid_options: as in :func:`samplax.diffusion.sample`
        (``grid="optimized"`` is not available).

    Returns:
      ``(samples, info)``, clean samples and a :class:`~samplax.diffusion.SampleInfo` (``solver="svdd"``).
    """
    who = "svdd"
    check_callable(value_fn, who, "value_fn", "value_fn(x0) -> scalar")
    m = check_positive_int(num_candidates, who, "num_candidates")
    a = check_nonneg(alpha, who, "alpha")
    if value_on not in ("clean", "noisy"):
        raise ValueError(f"{who}: value_on must be 'clean' or 'noisy', got {value_on!r}")
    key, x_init, shape, dtype, nodes = _setup(who, denoiser, key, shape, x_init, sigma_max, nfe, m, 1, grid,
                                              sigma_end, grid_options)
    point = jax.ShapeDtypeStruct(shape[1:], dtype)
    args = (point, jax.ShapeDtypeStruct((), dtype)) if value_on == "noisy" else (point,)
    try:
        out = jax.eval_shape(value_fn, *args)
    except Exception as e:  # noqa: BLE001 - re-raised with the argument named
        raise ValueError(f"{who}: value_fn fails on one point of shape {shape[1:]}: {type(e).__name__}: {e}") from None
    if getattr(out, "shape", None) != ():
        raise ValueError(f"{who}: value_fn must return a scalar value for one point; it returned "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    clock = Clock()
    sig = jnp.asarray(nodes, dtype)
    x, ne, nf = clock.call(_svdd_program, (denoiser, value_fn, x_init, key, sig, jnp.asarray(a, dtype), m,
                                           value_on == "noisy", shape if x_init is None else None, str(dtype)),
                           _EXECUTABLES)
    n = len(nodes) - 1
    return _finish(who, "svdd", grid, x, ne, nf, nodes, clock, denoiser, n, {"num_value_evals": n * m})


# ---------------------------------------------------------------- recurrence
@eqx.filter_jit
def _recurrent_program(denoiser, x, key, sigmas, recurrence, init_shape, dtype):
    x, sample_keys = _initial(key, x, init_shape, sigmas[0], dtype)
    event = x.shape[1:]

    def dz(xb, s):
        return jax.vmap(denoiser, in_axes=(0, None))(xb, s)

    n = sigmas.shape[0] - 1

    def body(carry, i):
        x, nf = carry
        s, t = sigmas[i], sigmas[i + 1]
        r = t / s

        def repeat(j, x):  # a DDIM step s -> t, then back to s with fresh noise
            xt = r * x + (1.0 - r) * dz(x, s)
            z = jax.vmap(lambda kb: jax.random.normal(jax.random.fold_in(jax.random.fold_in(kb, i), j), event,
                                                      dtype))(sample_keys)
            return xt + jnp.sqrt(s * s - t * t) * z

        x = jax.lax.fori_loop(0, recurrence - 1, repeat, x)
        x = r * x + (1.0 - r) * dz(x, s)
        return (x, mark_nonfinite(nf, x, i, s)), None

    (x, nf), _ = jax.lax.scan(body, (x, no_nonfinite(x)), jnp.arange(n))
    x = dz(x, sigmas[n])
    nf = mark_nonfinite(nf, x, n, sigmas[n])
    return x, jnp.asarray(1 + n * recurrence, jnp.int32), nf


def recurrent_sample(denoiser: Callable, *, key, recurrence: Optional[int] = None, shape: Optional[tuple] = None,
                     x_init=None, sigma_max: float, nfe: int, grid: str = "logsnr", sigma_end: Optional[float] = None,
                     grid_options: Optional[dict] = None):
    """DDIM sampling with recurrence ("time travel"): each step is repeated ``recurrence`` times, re-noising its
    result back to the step's start in between (FreeDoM, Yu et al. 2023; universal guidance, Bansal et al.
    2023; TFG's recurrence, Ye et al. 2024).

    Update rule, step ``s -> t``: ``recurrence - 1`` times ``x <- [(t/s) x + (1 - t/s) D(x, s)] +
    sqrt(s^2 - t^2) z`` (a DDIM step and the forward noising back to ``s``), then the DDIM step
    ``x_t = (t/s) x + (1 - t/s) D(x, s)``; a final ``D(x, sigma_end)``. For a guided ``D`` the repeats let the
    guidance act several times at one noise level while the noising keeps the state on the noise level's
    marginal. ``recurrence = 1`` is ``diffusion.sample(..., solver="ddim")`` (same grid, same draws).

    Cost: ``1 + n R`` denoiser calls per sample, ``n = (nfe - 1) // R`` steps, ``R = recurrence`` (default:
    the denoiser's own ``recurrence``, e.g. a :func:`~samplax.diffusion.guidance.tfg` wrapper's, else 1).

    Returns ``(samples, info)`` as :func:`samplax.diffusion.sample` (``info.solver == "recurrent_ddim"``).
    """
    who = "recurrent_sample"
    if recurrence is None:
        recurrence = int(getattr(denoiser, "recurrence", 1))
    rec = check_positive_int(recurrence, who, "recurrence")
    key, x_init, shape, dtype, nodes = _setup(who, denoiser, key, shape, x_init, sigma_max, nfe, rec, 1, grid,
                                              sigma_end, grid_options)
    clock = Clock()
    x, ne, nf = clock.call(_recurrent_program, (denoiser, x_init, key, jnp.asarray(nodes, dtype), rec,
                                                shape if x_init is None else None, str(dtype)), _EXECUTABLES)
    return _finish(who, "recurrent_ddim", grid, x, ne, nf, nodes, clock, denoiser, len(nodes) - 1)
