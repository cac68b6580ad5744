"""``solver="auto"``: a step grid tuned once per model and cached on disk, or a fixed rule where tuning cannot run.

The rule (what :func:`samplax.diffusion.sample` does with ``solver="auto"``):

1. **Solver.** :data:`AUTO_TUNED` names the solver for the call budget ``nfe``: ``bespoke``, a linear
   multistep method in iPNDM's form whose per-step weights are fitted to the model (chosen from measurements on
   random Gaussian mixtures, ``benchmarks/diffusion_auto_rule.py``: with a tuned grid alone, UniPC, DPM-Solver++
   (3M) and iPNDM reached 0.47-0.57x of the best diffusers-like configuration at NFE 5, the fitted weights
   0.33-0.45x), with the final step ``"denoise"`` when the run ends at sigma = 0.
2. **Grid and weights.** The log-sigma step lengths and the last positive node of the grid, then grid and
   weights together, are tuned for the model: Adam through the solver on the mean L2 distance between its
   endpoints and exact probability-flow ODE endpoints (an adaptive diffrax solve) of a tuning batch of initial
   noises (a fixed seed), as :mod:`samplax.diffusion.optimize_grid` does for a grid: 256 noises, 300 Adam steps
   for the grid, then 300 for grid and weights (the weights' steps scaled by 0.05; in chunks, with a progress
   display on stderr), started from the fixed rule's grid (:data:`samplax.diffusion.AUTO_RULE`) and iPNDM's
   weights, keeping the best seen, so the result is never worse than that start on the tuning batch. One
   reference solve serves every ``nfe`` of a model; the Adam program is compiled once per model structure and
   NFE.
3. **Cache.** The tuned nodes are kept in memory and on disk, one JSON file per key in
   ``$SAMPLAX_CACHE_DIR/diffusion_auto/v<version>/`` (default: the user cache folder,
   ``$XDG_CACHE_HOME/samplax`` or ``~/.cache/samplax``; ``%LOCALAPPDATA%\\samplax`` on Windows,
   ``~/Library/Caches/samplax`` on macOS), written atomically (a temporary file, then ``os.replace``). A
   later call with the same key, in this process or another, reads the grid and tunes nothing. A file that does
   not fit its key (unreadable, nodes or weights of the wrong length, not finite or not decreasing) is tuned
   afresh and replaced (``info.auto["cache_invalid"]`` says why).
4. **Fallback.** Where tuning cannot run -- ``sample`` is called under a JAX transformation (the model's
   arrays or outputs are tracers: ``jit``, ``grad``, ``vmap`` over the model), under ``jax.disable_jit()``,
   or the user passes ``tune=False`` -- ``auto`` uses the fixed rule :data:`samplax.diffusion.AUTO_RULE`
   (:func:`samplax.diffusion.auto_choice`) and ``info.auto`` says so and why.

Tuning settings: :data:`TUNE_DEFAULTS`, overridden by the JSON object in ``$SAMPLAX_AUTO_TUNE`` (e.g.
``{"batch": 64, "iters": 25}``: quicker, rougher grids, as the test suite uses), overridden by ``tune={...}`` of the
call. They are part of the key.

The key: ``(AUTO_CACHE_VERSION, model fingerprint, event shape, dtype, solver, nfe, sigma_max, sigma_min,
final step, initial grid and sigma_end, tuning settings)``. The **model fingerprint** is a SHA-256 of the
denoiser's outputs, rounded to float32, on a fixed probe batch (8 standard-normal points from a fixed numpy seed,
scaled by each of 6 noise levels ``sigma_max * 10^(-4 k / 5)``, ``k = 0..5``), together with the event
shape and dtype: a model whose numbers change (new weights, another mixture) gives other outputs, so another
key, and is tuned afresh; two models that agree on all 48 probe outputs to float32 precision share a grid.
``AUTO_CACHE_VERSION`` changes whenever the tuning procedure does, so grids of an older procedure are never
read.

Cost: ``info.cost`` of the call that tuned has ``tuning_seconds`` (reference solve plus Adam, compile included),
``num_tuning_model_evals`` (denoiser calls: the reference solve's, summed over its points, plus one forward
solve of the tuning batch per Adam step) and ``num_tuning_model_vjps`` (the backward passes); a call that read the cache reports zeros.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Any, Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplax.core.caches import register
from samplax.diffusion.checks import in_staging_trace
from samplax.diffusion.grids import make_grid
from samplax.diffusion.reference import solve_pf_ode
from samplax.diffusion.solvers import get_solver, run_solver

#: Bumped whenever the tuning procedure (or the meaning of a stored grid) changes: older files are not read.
AUTO_CACHE_VERSION = 1

#: (max nfe, solver whose grid ``auto`` tunes). The first row whose max nfe >= nfe is used.
AUTO_TUNED = (
    (10**9, "bespoke"),
)

#: The fixed rule (used where tuning cannot run, and the tuning's starting grid):
#: (max nfe, solver, grid, sigma_end, final_step). The first row whose max nfe >= nfe is used.
#: Chosen from the configurations that won on ring8, grid25 and the 64-D mixture at NFE 5/10/20.
AUTO_RULE = (
    (7, "unipc_bh2", "logsnr", 0.1, "denoise"),
    (14, "ipndm", "logsnr", 0.01, "denoise"),
    (10**9, "ipndm", "polynomial", 0.01, "integrate"),
)

#: Tuning settings of ``auto`` (``tune={...}`` of :func:`samplax.diffusion.sample` overrides them).
TUNE_DEFAULTS = {"batch": 256, "iters": 300, "learning_rate": 0.05, "seed": 0, "rtol": 1e-7}
_TUNE_KEYS = set(TUNE_DEFAULTS) | {"progress", "cache_dir"}
_CHUNK = 25  # Adam steps per compiled chunk (one progress update each)
_WEIGHT_SCALE = 0.05  # the per-step weights' Adam steps relative to the grid's (measured: 0.05 beat 0.2 and 1)
_DOPRI8_STAGES = 13  # denoiser calls per diffrax Dopri8 step (FSAL: 14 stages, the first reused)

_PROBE_POINTS, _PROBE_LEVELS = 8, 6


def auto_choice(nfe: int):
    """The fixed rule's solver, grid, ``sigma_end`` and final step for ``nfe`` calls (:data:`AUTO_RULE`)."""
    for max_nfe, solver, grid, send, final in AUTO_RULE:
        if nfe <= max_nfe:
            return solver, grid, send, final
    raise AssertionError("unreachable")


def tuned_solver(nfe: int) -> str:
    """The solver whose grid ``auto`` tunes for ``nfe`` calls (:data:`AUTO_TUNED`)."""
    for max_nfe, solver in AUTO_TUNED:
        if nfe <= max_nfe:
            return solver
    raise AssertionError("unreachable")


def cache_dir(override: Optional[str] = None) -> str:
    """The folder of samplax's on-disk caches: ``override``, ``$SAMPLAX_CACHE_DIR``, or the user cache folder."""
    if override:
        return os.path.abspath(os.path.expanduser(str(override)))
    env = os.environ.get("SAMPLAX_CACHE_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "samplax")


# ------------------------------------------------------------------ in-memory caches
class _LRU:
    """A small LRU map that :func:`samplax.clear_caches` empties."""

    def __init__(self, size):
        self.size = size
        self._items: "OrderedDict" = OrderedDict()
        register(self)

    def get(self, key):
        return self._items.get(key)

    def put(self, key, value):
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def clear(self):
        self._items.clear()


_FINGERPRINTS = _LRU(64)  # id(denoiser) -> (denoiser, {(event_shape, dtype, sigma_max): fingerprint or None})
_REFERENCES = _LRU(16)  # reference solves: key -> (x0, ref, evals, seconds)
_GRIDS = _LRU(512)  # file key -> stored record
_TUNE_PROGRAMS = _LRU(32)  # compiled Adam chunks per structure


def _has_tracer(tree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def model_fingerprint(denoiser: Callable, event_shape: tuple, dtype, sigma_max: float) -> Optional[str]:
    """SHA-256 (hex) of the denoiser's outputs on the fixed probe batch (module docstring), or ``None`` when they
    are tracers (called under a JAX transformation: also for a denoiser fingerprinted before, so that a call
    under ``jit`` takes the fixed rule whatever ran earlier). Cached per denoiser object."""
    if in_staging_trace():
        return None
    event_shape = tuple(int(d) for d in event_shape)
    dtype = jnp.dtype(dtype)
    sub = (event_shape, str(dtype), float(sigma_max))
    hit = _FINGERPRINTS.get(id(denoiser))
    if hit is not None and hit[0] is denoiser and sub in hit[1]:
        return hit[1][sub]
    if _has_tracer(denoiser):
        return None
    rng = np.random.default_rng(20261207)
    z = rng.standard_normal((_PROBE_POINTS,) + event_shape)
    sig = float(sigma_max) * 10.0 ** (-4.0 * np.arange(_PROBE_LEVELS) / (_PROBE_LEVELS - 1))
    xs = jnp.asarray(sig.reshape((-1, 1) + (1,) * len(event_shape)) * z[None], dtype)
    out = jax.vmap(jax.vmap(denoiser, (0, None)), (0, 0))(xs, jnp.asarray(sig, dtype))
    if _has_tracer(out):
        return None
    out = np.asarray(out)
    h = hashlib.sha256()
    h.update(json.dumps([list(event_shape), str(dtype), list(out.shape), str(out.dtype)]).encode())
    h.update(np.ascontiguousarray(out.astype(np.float32)).tobytes())
    fp = h.hexdigest()
    if hit is None or hit[0] is not denoiser:
        hit = _FINGERPRINTS.put(id(denoiser), (denoiser, {}))
    hit[1][sub] = fp
    return fp


# ------------------------------------------------------------------ tuning
def _nodes(theta, u_end, u_max):
    w = jax.nn.softmax(theta)
    frac = jnp.concatenate([jnp.zeros((1,), theta.dtype), jnp.cumsum(w)])
    return jnp.exp(u_max + (u_end - u_max) * frac)


def _reference(denoiser, fp, sigma_max, stop, event_shape, dtype, batch, seed, rtol):
    """Tuning noises ``x0 = sigma_max z`` and their exact PF-ODE endpoints (cached per model and settings)."""
    key = (fp, float(sigma_max), float(stop), event_shape, str(dtype), int(batch), int(seed), float(rtol))
    hit = _REFERENCES.get(key)
    if hit is not None:
        return hit, True
    t0 = time.perf_counter()
    k = jax.random.key(seed)
    x0 = sigma_max * jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(k, b), event_shape, dtype))(
        jnp.arange(batch))
    tol = max(float(rtol), 50 * float(jnp.finfo(dtype).eps))  # no tighter than the arithmetic allows
    ref, steps = solve_pf_ode(denoiser, x0, float(sigma_max), float(stop), rtol=tol, atol=tol, return_steps=True)
    ref = jax.block_until_ready(ref)
    evals = int(np.sum(1 + _DOPRI8_STAGES * np.asarray(steps))) + (batch if stop == 0.0 else 0)
    out = (x0, ref, evals, time.perf_counter() - t0)
    return _REFERENCES.put(key, out), False


def _tune_program(static, solver, opts_key, plan_key, final_denoise, to_zero, optimise_end, lr, chunk, batch):
    """The jitted Adam chunk ``(dyn, x0, ref, u_max, lo, hi, wscale, carry) -> (carry, losses)`` of one structure
    and the optimizer (cached per structure: another model of the same structure and shapes compiles nothing).

    The parameters are ``(theta, u_end, W)``: the grid's and, for a solver whose plan has per-step weights
    ``w0, w1, ...`` (``bespoke``), the weights ``W`` ``[order, steps]`` (``[0, steps]`` otherwise); ``wscale``
    scales their Adam updates (0: the weights stay fixed)."""
    key = (static, solver, opts_key, plan_key, final_denoise, to_zero, optimise_end, float(lr), chunk, batch)
    try:
        prog = _TUNE_PROGRAMS.get(key)
    except TypeError:  # an unhashable static part: compile without caching
        prog, key = None, None
    if prog is not None:
        return prog
    s = get_solver(solver, **dict(opts_key))
    plan_j = {k: np.asarray(v, np.int32) for k, v in plan_key}  # the integer entries (the weights are params)
    opt = optax.adam(lr)

    def loss_fn(params, dyn, x0, ref, u_max, lo, hi):
        denoiser = eqx.combine(dyn, static)
        theta, u_end, w = params
        plan = dict(plan_j)
        plan.update({f"w{k}": w[k] for k in range(w.shape[0])})
        u_end = jnp.clip(u_end, lo, hi) if optimise_end else jax.lax.stop_gradient(u_end)
        nodes = _nodes(theta, u_end, u_max)
        if to_zero:
            nodes = jnp.concatenate([nodes, jnp.zeros((1,), nodes.dtype)])

        def dz(xb, sg):
            return jax.vmap(denoiser, in_axes=(0, None))(xb, sg)

        x, _ = run_solver(s, dz, x0, nodes, plan, None, {})
        if final_denoise:
            x = dz(x, nodes[-1])
        d = (x - ref).reshape(batch, -1)
        return jnp.mean(jnp.sqrt(jnp.sum(d * d, axis=-1) + 1e-30))

    @jax.jit
    def run_chunk(dyn, x0, ref, u_max, lo, hi, wscale, carry):
        def body(c, _):
            p, st, best_p, best_l = c
            loss, g = jax.value_and_grad(loss_fn)(p, dyn, x0, ref, u_max, lo, hi)
            g = jax.tree_util.tree_map(lambda a: jnp.where(jnp.isfinite(a), a, 0.0), g)
            g = (g[0], g[1], jnp.where(wscale > 0, g[2], 0.0))
            better = jnp.isfinite(loss) & (loss < best_l)
            best_p = jax.tree_util.tree_map(lambda b, q: jnp.where(better, q, b), best_p, p)
            best_l = jnp.where(better, loss, best_l)
            upd, st = opt.update(g, st, p)
            upd = (upd[0], upd[1], wscale * upd[2])
            return (optax.apply_updates(p, upd), st, best_p, best_l), loss

        return jax.lax.scan(body, carry, None, length=chunk)

    prog = (run_chunk, opt)
    if key is not None:
        _TUNE_PROGRAMS.put(key, prog)
    return prog


class _Progress:
    """One status line on stderr while tuning (rewritten in place on a terminal)."""

    def __init__(self, enabled: bool, head: str):
        self.enabled, self.head = enabled, head
        self.tty = enabled and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()

    def show(self, msg: str, final: bool = False):
        if not self.enabled:
            return
        line = f"{self.head}: {msg}"
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def tune_grid(denoiser: Callable, *, fingerprint: str, solver: str, nfe: int, sigma_max: float, sigma_min: float,
              final_step: str, event_shape: tuple, dtype, init_nodes: np.ndarray, batch: int, iters: int,
              learning_rate: float, seed: int, rtol: float, progress: bool = True) -> dict:
    """Tune the grid of ``solver`` for ``nfe`` calls on this model, starting from ``init_nodes``.

    Minimises the mean endpoint error against exact PF-ODE endpoints of ``batch`` noises (module docstring) with
    ``iters`` Adam steps on the softmax step-length parameters ``theta`` (``u_i = u_max + (u_end - u_max)
    sum_{j<i} softmax(theta)_j``, ``u = log sigma``) and, when the run ends at sigma = 0, ``u_end``. Returns a
    record with the best nodes seen (the start included, so never worse than ``init_nodes`` on the batch), the
    tuning-batch errors before and after, and the cost.
    """
    t_start = time.perf_counter()
    s = get_solver(solver)
    ends_at_zero = sigma_min == 0.0
    final_denoise = ends_at_zero and final_step == "denoise"
    to_zero = ends_at_zero and final_step == "integrate"
    budget = nfe - 1 if final_denoise else nfe
    plan = s.plan(budget, to_zero)
    n_steps = len(plan["order"])
    n_grid = n_steps - 1 if to_zero else n_steps
    init_nodes = np.asarray(init_nodes, np.float64)
    if len(init_nodes) != n_grid + 1:
        raise AssertionError(f"tune_grid: {len(init_nodes)} initial nodes for {n_grid} intervals")
    per_solve = s.evals(plan, to_zero) + (1 if final_denoise else 0)
    head = f"samplax.diffusion auto: tuning the {solver} grid for nfe={nfe} (model {fingerprint[:8]})"
    bar = _Progress(progress, head)
    stop = 0.0 if ends_at_zero else float(sigma_min)
    bar.show(f"exact PF-ODE reference of {batch} noises (once per model) ...")
    (x0, ref, ref_evals, ref_seconds), was_cached = _reference(denoiser, fingerprint, sigma_max, stop,
                                                               tuple(event_shape), jnp.dtype(dtype), batch, seed, rtol)
    dtype = x0.dtype
    u = np.log(init_nodes)
    steps = np.diff(u)  # negative
    theta0 = jnp.asarray(np.log(steps / np.sum(steps)), dtype)
    wkeys = sorted((k for k in plan if k.startswith("w") and k[1:].isdigit()), key=lambda k: int(k[1:]))
    w0 = np.stack([np.asarray(plan[k], np.float64) for k in wkeys]) if wkeys else np.zeros((0, n_steps))
    params = (theta0, jnp.asarray(u[-1], dtype), jnp.asarray(w0, dtype))
    u_max = jnp.asarray(np.log(sigma_max), dtype)
    lo, hi = jnp.asarray(np.log(1e-5), dtype), u_max - 0.1
    optimise_end = ends_at_zero
    dyn, static = eqx.partition(denoiser, eqx.is_array)
    plan_key = tuple((k, tuple(int(v) for v in np.asarray(a))) for k, a in sorted(plan.items()) if k not in wkeys)
    num_chunks = -(-iters // _CHUNK)
    chunk = -(-iters // num_chunks)  # equal chunks; iters is rounded up to a multiple of the number of chunks
    run_chunk, opt = _tune_program(static, solver, (), plan_key, final_denoise, to_zero, optimise_end,
                                   learning_rate, chunk, batch)
    # best_l starts at inf: the first step scores the starting grid, so the best is never worse than the start.
    # Stage 1 moves the grid only; with per-step weights, stage 2 (a fresh Adam) moves grid and weights, the
    # weights' steps scaled by _WEIGHT_SCALE.
    stages = [("grid", 0.0)] + ([("grid and weights", _WEIGHT_SCALE)] if wkeys else [])
    carry = (params, opt.init(params), params, jnp.asarray(np.inf, dtype))
    done, start_loss = 0, None
    for stage, wscale in stages:
        carry = (carry[2], opt.init(carry[2]), carry[2], carry[3])
        for _ in range(num_chunks):
            carry, losses = run_chunk(dyn, x0, ref, u_max, lo, hi, jnp.asarray(wscale, dtype), carry)
            if start_loss is None:
                start_loss = float(losses[0])
            done += chunk
            bar.show(f"{stage}: Adam step {done}/{len(stages) * num_chunks * chunk}, endpoint error "
                     f"{start_loss:.3g} -> {float(carry[3]):.3g}")
    best_p, best_l = carry[2], float(carry[3])
    theta, u_end, w_best = best_p
    u_end = jnp.clip(u_end, lo, hi) if optimise_end else params[1]
    nodes = np.array(_nodes(theta, u_end, u_max), dtype=np.float64)
    nodes[0] = float(sigma_max)
    if not ends_at_zero:
        nodes[-1] = float(sigma_min)
    if not (np.all(np.diff(nodes) < 0) and np.all(nodes > 0)):  # pragma: no cover - softmax steps are positive
        raise AssertionError(f"tune_grid: produced an invalid grid {nodes}")
    seconds = time.perf_counter() - t_start
    forward = done * batch * per_solve  # one solve of the tuning batch per Adam step (whole chunks)
    evals = forward + (0 if was_cached else ref_evals)
    bar.show(f"done in {seconds:.1f} s ({evals} model calls): endpoint error {start_loss:.3g} -> {best_l:.3g}",
             final=True)
    weights = {k: np.asarray(w_best[j], np.float64).tolist() for j, k in enumerate(wkeys)}
    return {"nodes": nodes.tolist(), "weights": weights, "tuning_error_start": start_loss, "tuning_error": best_l,
            "tuning_seconds": seconds, "num_tuning_model_evals": evals, "num_tuning_model_vjps": done * batch * per_solve,
            "reference_cached": was_cached}


# ------------------------------------------------------------------ the auto decision
class AutoPlan(NamedTuple):
    """What ``solver="auto"`` resolved to for one call (see :func:`resolve`)."""

    solver: str
    grid: str  # "optimized" when tuned, else the fixed rule's grid
    sigma_end: Optional[float]
    final_step: str
    nodes: Optional[np.ndarray]  # the tuned positive nodes (None: use ``grid``)
    weights: Optional[dict]  # the tuned per-step weights of the plan (``bespoke``), or None
    key: Optional[str]  # the cache key (hex) of the tuned grid
    info: dict  # reported as ``SampleInfo.auto``
    cost: dict  # tuning cost entries for ``SampleInfo.cost``


def _env_defaults() -> dict:
    """:data:`TUNE_DEFAULTS` with the overrides of ``$SAMPLAX_AUTO_TUNE`` (a JSON object, e.g. ``{"iters": 50}`` for
    quicker, rougher tuning on a CI machine; a ValueError naming the variable when it is not one)."""
    out = dict(TUNE_DEFAULTS, progress=True, cache_dir=None)
    env = os.environ.get("SAMPLAX_AUTO_TUNE")
    if env:
        try:
            extra = json.loads(env)
        except ValueError:
            extra = None
        if not isinstance(extra, dict) or set(extra) - _TUNE_KEYS:
            raise ValueError(f"SAMPLAX_AUTO_TUNE must be a JSON object with keys among {sorted(_TUNE_KEYS)}, "
                             f"got {env!r}")
        out.update(extra)
    return out


def check_tune(tune, who: str = "sample") -> Optional[dict]:
    """``tune`` as a dict of tuning settings, or ``None`` for ``tune=False`` (a ValueError naming ``tune`` when
    it is neither a bool nor a dict of known settings with valid values). Settings not given come from
    :data:`TUNE_DEFAULTS` and ``$SAMPLAX_AUTO_TUNE``."""
    if tune is False:
        return None
    if tune is not True and not isinstance(tune, dict):
        raise ValueError(f"{who}: tune must be True, False or a dict of tuning settings, got {type(tune).__name__}")
    tune = {} if tune is True else tune
    bad = sorted(set(tune) - _TUNE_KEYS)
    if bad:
        raise ValueError(f"{who}: unknown tune settings {bad}; known: {sorted(_TUNE_KEYS)}")
    out = _env_defaults()
    out.update(tune)
    for name in ("batch", "iters"):
        v = out[name]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{who}: tune[{name!r}] must be a positive int, got {v!r}")
    for name in ("learning_rate", "rtol"):
        v = out[name]
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) or not (
                np.isfinite(v) and v > 0):
            raise ValueError(f"{who}: tune[{name!r}] must be a positive number, got {v!r}")
    if not isinstance(out["seed"], (int, np.integer)) or isinstance(out["seed"], bool):
        raise ValueError(f"{who}: tune['seed'] must be an int, got {out['seed']!r}")
    # numpy scalars as Python numbers: the settings go into the JSON cache key (np.int64 is not serializable)
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in out.items()}


def _fixed(nfe, sigma_end, reason) -> AutoPlan:
    solver, grid, send, final = auto_choice(nfe)
    info = {"tuned": False, "rule": "fixed", "reason": reason}
    return AutoPlan(solver, grid, send if sigma_end is None else sigma_end, final, None, None, None, info, {})


def _file_for(folder, key_hex):
    return os.path.join(folder, "diffusion_auto", f"v{AUTO_CACHE_VERSION}", key_hex + ".json")


def _read(path):
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("version") != AUTO_CACHE_VERSION or "nodes" not in rec:
        return None
    return rec


def _record_problem(rec: dict, n_grid: int, weight_keys: list, sigma_max: float, sigma_min: float) -> Optional[str]:
    """Why a stored record cannot serve this call (``None``: it can): ``n_grid + 1`` finite, positive, strictly
    decreasing nodes from ``sigma_max`` (to ``sigma_min`` when it is positive), one finite weight per step for each
    of the plan's weights, and the numbers the call reports. A damaged or hand-edited file is tuned afresh."""
    def numbers(v, n):
        try:
            a = np.asarray(v, np.float64)
        except (TypeError, ValueError):
            return None
        return a if a.shape == (n,) and np.all(np.isfinite(a)) else None

    nodes = numbers(rec.get("nodes"), n_grid + 1)
    if nodes is None:
        return f"'nodes' is not a list of {n_grid + 1} finite numbers"
    if not (np.all(np.diff(nodes) < 0) and nodes[-1] > 0 and nodes[0] == float(sigma_max)
            and (sigma_min == 0.0 or nodes[-1] == float(sigma_min))):
        return "'nodes' is not a decreasing positive grid over the sigma range"
    weights = rec.get("weights", {})
    if not isinstance(weights, dict) or sorted(weights) != sorted(weight_keys) or any(
            numbers(weights[k], n_grid) is None for k in weight_keys):
        return f"'weights' is not {n_grid} finite numbers for each of {weight_keys}"
    for k in ("tuning_error_start", "tuning_error", "tuning_seconds", "num_tuning_model_evals",
              "num_tuning_model_vjps"):
        if isinstance(rec.get(k), bool) or not isinstance(rec.get(k), (int, float)):
            return f"{k!r} is not a number"
    return None


def _write(path, rec) -> Optional[str]:
    """Atomic write (temporary file in the same folder, then ``os.replace``); returns an error text or None."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(rec, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return None


def resolve(denoiser: Callable, *, nfe: int, sigma_max: float, sigma_min: float, sigma_end: Optional[float],
            event_shape: tuple, dtype, tune: Any = True) -> AutoPlan:
    """Resolve ``solver="auto"`` for one call: the tuned grid (from memory, disk, or tuned now) or the fixed rule.

    ``tune``: ``True`` (the defaults :data:`TUNE_DEFAULTS`), ``False`` (the fixed rule) or a dict overriding
    ``batch``, ``iters``, ``learning_rate``, ``seed``, ``rtol`` and setting ``progress`` (bool) and
    ``cache_dir`` (a folder instead of :func:`cache_dir`).
    """
    settings = check_tune(tune)
    if settings is None:
        return _fixed(nfe, sigma_end, "tune=False: the fixed rule AUTO_RULE")
    if jax.config.jax_disable_jit:
        return _fixed(nfe, sigma_end, "jax.disable_jit() is active, so the grid was not tuned: the fixed rule "
                                      "AUTO_RULE")
    event_shape = tuple(int(d) for d in event_shape)
    fp = model_fingerprint(denoiser, event_shape, dtype, sigma_max)
    if fp is None:
        return _fixed(nfe, sigma_end, "called under a JAX transformation (the model's arrays or outputs are "
                                      "tracers), so the grid was not tuned: the fixed rule AUTO_RULE")
    solver = tuned_solver(nfe)
    ends_at_zero = sigma_min == 0.0
    final_step = "denoise"
    rule_solver, rule_grid, rule_send, _ = auto_choice(nfe)
    send0 = float(rule_send if sigma_end is None else sigma_end)
    if not ends_at_zero:
        send0 = float(sigma_min)
    elif not (0.0 < send0 < sigma_max):
        raise ValueError(f"sample: need 0 < sigma_end < sigma_max, got sigma_end={send0}")
    s = get_solver(solver)
    budget = nfe - 1 if ends_at_zero else nfe
    if budget < 1:  # too few calls to tune anything: one denoise (or one step)
        return _fixed(nfe, sigma_end, f"nfe={nfe} leaves no step to tune: the fixed rule AUTO_RULE")
    plan = s.plan(budget, False)
    n_grid = len(plan["order"])
    tune_keys = {k: settings[k] for k in TUNE_DEFAULTS}
    key = {"version": AUTO_CACHE_VERSION, "model": fp, "event_shape": list(event_shape),
           "dtype": str(jnp.dtype(dtype)), "solver": solver, "nfe": int(nfe), "sigma_max": float(sigma_max),
           "sigma_min": float(sigma_min), "final_step": final_step if ends_at_zero else "none",
           "init": {"grid": rule_grid, "sigma_end": send0}, "tuning": tune_keys}
    key_json = json.dumps(key, sort_keys=True)
    key_hex = hashlib.sha256(key_json.encode()).hexdigest()[:40]
    folder = cache_dir(settings["cache_dir"])
    path = _file_for(folder, key_hex)
    info = {"tuned": True, "rule": "tuned", "solver": solver, "key": key_hex, "cache_file": path,
            "model_fingerprint": fp}
    cost = {"tuning_seconds": 0.0, "num_tuning_model_evals": 0, "num_tuning_model_vjps": 0}
    rec = _GRIDS.get(key_hex)
    source = "memory"
    if rec is None:
        rec = _read(path)
        source = "disk"
        if rec is not None and rec.get("key") != key:
            rec = None  # a hash collision or a hand-edited file: tune afresh
        if rec is not None:
            wkeys = [k for k in plan if k.startswith("w") and k[1:].isdigit()]
            problem = _record_problem(rec, n_grid, wkeys, sigma_max, sigma_min)
            if problem is not None:  # a damaged or hand-edited file: tune afresh (and replace it)
                info["cache_invalid"] = f"{path}: {problem}; tuned afresh"
                rec = None
    if rec is None:
        source = "tuned"
        try:
            init = make_grid(rule_grid, n_grid, sigma_max, send0)
        except ValueError:  # e.g. a sigma range outside the rule grid's schedule: start from the log-SNR grid
            init = make_grid("logsnr", n_grid, sigma_max, send0)
        res = tune_grid(denoiser, fingerprint=fp, solver=solver, nfe=nfe, sigma_max=sigma_max, sigma_min=sigma_min,
                        final_step=final_step, event_shape=event_shape, dtype=dtype, init_nodes=init,
                        batch=tune_keys["batch"], iters=tune_keys["iters"], learning_rate=tune_keys["learning_rate"],
                        seed=tune_keys["seed"], rtol=tune_keys["rtol"], progress=bool(settings["progress"]))
        rec = {"version": AUTO_CACHE_VERSION, "key": key, "nodes": res["nodes"], "weights": res["weights"],
               "tuning_error_start": res["tuning_error_start"], "tuning_error": res["tuning_error"],
               "tuning_seconds": res["tuning_seconds"], "num_tuning_model_evals": res["num_tuning_model_evals"],
               "num_tuning_model_vjps": res["num_tuning_model_vjps"]}
        err = _write(path, rec)
        if err is not None:
            info["cache_error"] = f"the tuned grid was kept in memory only: writing {path} failed ({err})"
        cost = {k: rec[k] for k in cost}
    _GRIDS.put(key_hex, rec)
    info["source"] = source
    info["tuning_error_start"], info["tuning_error"] = rec["tuning_error_start"], rec["tuning_error"]
    nodes = np.asarray(rec["nodes"], np.float64)
    weights = {k: np.asarray(v, np.float64) for k, v in rec.get("weights", {}).items()} or None
    return AutoPlan(solver, "optimized", float(nodes[-1]), final_step, nodes, weights, key_hex, info, cost)
