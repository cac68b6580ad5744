"""The training loop: one generic trainer for every method that learns its sampler (PIS, DDS, ...).

A training run is a pytree ``state`` (parameters, optimizer state, anything else) and a pure
``step(key, state[, data]) -> (state, metrics)``.  :func:`train` runs ``num_steps`` steps:

* step ``i`` gets ``fold_in(key, i)`` (the engine passes ``keys.adapt``, see :mod:`samplax.run.keys`),
  so a run split into chunks, or interrupted and resumed, computes exactly the same steps;
* the steps run in chunks of ``chunk_size`` inside ONE compiled program (``lax.scan``; the steps of
  the last chunk that run past the end are skipped with a ``lax.cond``, not computed), compiled once
  and cached in :data:`samplax.run.PROGRAMS` under the caller's ``cache_key``;
* a host loop over chunks shows progress (loss, the step's log Z estimate when the step reports
  one, target evaluations used), writes atomic checkpoints (``checkpoint_dir``; the configuration's
  hash guards them, a resumed run equals an uninterrupted one bit for bit) and stops cleanly on
  Ctrl-C (checkpoint saved, ``TrainOutput.complete`` False);
* a step whose loss (or whose updated state) is not finite is not applied: the chunk skips its
  remaining steps and :func:`train` raises :class:`NonFiniteLossError`, which names the step and
  carries the last good state (``error.state``) and the metrics up to it.

``metrics`` is a dict of scalars with at least ``"loss"``; ``"num_logdensity_evals"`` and
``"num_grad_evals"`` (the target evaluations of the step) are summed into ``TrainOutput.totals``
and ``"log_Z"`` is shown in the progress line.  (``samplax.diffusion.train`` keeps its own
trainer for denoisers.)
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.result import atomic_write
from samplax.run.cache import PROGRAMS
from samplax.run.checkpoint import config_hash, load_checkpoint, save_checkpoint
from samplax.run.progress import Progress

#: Metrics summed into ``TrainOutput.totals`` (the target evaluations of each step).
COUNTED = ("num_logdensity_evals", "num_grad_evals")


class NonFiniteLossError(ValueError, FloatingPointError):
    """Training met a non-finite loss (or a non-finite state after an update).

    Attributes:
      step: the index of the first step whose loss or updated state is not finite.
      state: the last good state (after step ``step - 1``); the bad update was not applied.
      metrics: ``{name: [step]}``: the metrics of the steps before ``step``.
    """

    def __init__(self, message: str, step: int, state, metrics: dict):
        super().__init__(message)
        self.step = step
        self.state = state
        self.metrics = metrics


class TrainOutput(NamedTuple):
    """What :func:`train` returns.

    Attributes:
      state: the state after the steps run (the final state when ``complete``).
      metrics: ``{name: [steps_done]}`` per-step metrics (numpy), restored ones included.
      steps_done: steps run so far (``num_steps`` when complete).
      complete: False when the run was interrupted (Ctrl-C); the checkpoint then holds ``state``.
      totals: ``{"num_logdensity_evals", "num_grad_evals"}`` summed over the steps run.
      num_compilations: programs this call compiled (0 or 1: the chunk program).
      compile_seconds, seconds: compiling, and running the steps (restored seconds included).
    """

    state: object
    metrics: dict
    steps_done: int
    complete: bool
    totals: dict
    num_compilations: int
    compile_seconds: float
    seconds: float


def default_chunk_size(num_steps: int) -> int:
    """About ten chunks (at least 10 steps, at most 1000 per chunk): progress and checkpoints stay
    frequent while the host's work per chunk stays small."""
    return int(min(max(math.ceil(num_steps / 10), 10), 1000))


def _is_float(a) -> bool:
    return jnp.issubdtype(jnp.result_type(a), jnp.inexact)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree) if _is_float(a)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _chunk_program(step: Callable, with_data: bool, num_steps: int, chunk_size: int):
    """``chunk(state, data, key, start) -> (state, metrics [chunk_size], bad)``: ``bad`` is the first step
    of the chunk whose loss or new state is non-finite (-1: none); steps from there on are skipped."""

    def call(k, s, data):
        return step(k, s, data) if with_data else step(k, s)

    def chunk(state, data, key, start):
        metric_shapes = jax.eval_shape(lambda s: call(key, s, data)[1], state)

        def active(s, i):
            new, metrics = call(jax.random.fold_in(key, i), s, data)
            ok = jnp.isfinite(metrics["loss"]) & _all_finite(new)
            new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, s)
            return new, metrics, ok

        def skip(s, i):
            del i
            return s, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metric_shapes), jnp.asarray(True)

        def one(carry, i):
            s, bad = carry
            go = (i < num_steps) & (bad < 0)
            new, metrics, ok = jax.lax.cond(go, active, skip, s, i)
            bad = jnp.where(go & ~ok, i, bad)
            return (new, bad), metrics

        (state, bad), metrics = jax.lax.scan(one, (state, jnp.asarray(-1, jnp.int32)),
                                             start + jnp.arange(chunk_size, dtype=jnp.int32))
        return state, metrics, bad

    return chunk


def _note(metrics: dict, i: int, totals: dict) -> str:
    parts = [f"loss {float(metrics['loss'][i]):.4g}"]
    if "log_Z" in metrics:
        parts.append(f"log Z {float(metrics['log_Z'][i]):.4g}")
    parts.append(f"{totals.get('num_logdensity_evals', 0):,} evals")
    return " | ".join(parts)


def train(step: Callable, state, key, num_steps: int, *, data=None, chunk_size: Optional[int] = None,
          checkpoint_dir: Optional[str] = None, checkpoint_interval: float = 30.0, config: Optional[dict] = None,
          progress=False, label: str = "train", cache_key=None) -> TrainOutput:
    """Run ``num_steps`` steps of ``step`` from ``state`` (see the module docstring).

    Args:
      step: ``step(key, state) -> (state, metrics)``, or ``step(key, state, data)`` when ``data`` is given
        (a pytree of arrays passed to the compiled program as an argument: new data never retraces).
      state: the initial state (a pytree of arrays), used when no checkpoint is resumed.
      key: the training key; step ``i`` uses ``fold_in(key, i)``.
      num_steps: steps to run (an int >= 0).
      chunk_size: steps per compiled chunk (default :func:`default_chunk_size`); part of the configuration.
      checkpoint_dir: folder for atomic checkpoints (``checkpoint.npz`` and ``checkpoint_config.json``); a
        checkpoint there with the same configuration is resumed, another one is refused
        (:class:`~samplax.run.CheckpointMismatchError`).
      checkpoint_interval: least seconds between checkpoints (0: after every chunk; the last chunk always).
      config: what identifies the run (method, options, target, seed, ...) for the checkpoint's hash;
        ``num_steps`` and ``chunk_size`` are added.
      progress: True / False, or a :class:`~samplax.run.Progress` to draw on.
      label: the progress line's ``[samplax LABEL]``.
      cache_key: key of the compiled chunk program in :data:`samplax.run.PROGRAMS` (it must identify
        ``step`` and everything it closes over); None: not cached.

    Returns:
      a :class:`TrainOutput`.  Raises :class:`NonFiniteLossError` at a non-finite loss.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"train: num_steps must be an int >= 0, got {num_steps!r}")
    num_steps = int(num_steps)
    if chunk_size is None:
        chunk_size = default_chunk_size(num_steps)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"train: chunk_size must be an int >= 1, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    num_chunks = math.ceil(num_steps / chunk_size)
    bar = progress if isinstance(progress, Progress) else Progress(bool(progress), num_steps, 0, label,
                                                                     what="training")
    config = {**(config or {}), "num_steps": num_steps, "chunk_size": chunk_size}
    cfg_hash = config_hash(config)
    metrics_store: dict = {}
    totals = {k: 0 for k in COUNTED}
    next_chunk, seconds_before = 0, 0.0
    ckpt_path = None
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        ckpt_path = os.path.join(checkpoint_dir, "checkpoint.npz")
        if os.path.exists(ckpt_path):
            state, _, metrics_store, next_chunk, totals, seconds_before = load_checkpoint(
                ckpt_path, cfg_hash, state, config)
        else:
            atomic_write(os.path.join(checkpoint_dir, "checkpoint_config.json"),
                         json.dumps({"hash": cfg_hash, "config": config}, indent=1, default=str))
    with_data = data is not None
    key_entry = None if cache_key is None else ("train", cache_key, num_steps, chunk_size, with_data)
    compiled = PROGRAMS.get(key_entry)
    num_compilations = 0
    t0 = time.perf_counter()
    if compiled is None and next_chunk < num_chunks:
        bar.compiling("training")
        compiled = jax.jit(_chunk_program(step, with_data, num_steps, chunk_size)).lower(
            state, data, key, jnp.asarray(0, jnp.int32)).compile()
        PROGRAMS.put(key_entry, compiled)
        num_compilations = 1
        bar.compiled()
    elif compiled is not None:
        bar.reused()
    compile_seconds = time.perf_counter() - t0
    done = min(next_chunk * chunk_size, num_steps)
    bar.start(done)
    t_loop = time.perf_counter()
    last_ckpt = t_loop
    complete = True

    def save():
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, cfg_hash, state, np.zeros(0), metrics_store, next_chunk, totals,
                            seconds_before + time.perf_counter() - t_loop)

    try:
        while next_chunk < num_chunks:
            start = next_chunk * chunk_size
            new_state, metrics, bad = compiled(state, data, key, jnp.asarray(start, jnp.int32))
            metrics = jax.tree.map(np.asarray, metrics)
            bad = int(bad)
            n_ok = (bad - start) if bad >= 0 else min(chunk_size, num_steps - start)
            new_store = {k: np.concatenate([metrics_store.get(k, np.zeros(0, v.dtype)), v[:n_ok]])
                         for k, v in metrics.items()}
            new_totals = {k: int(totals.get(k, 0)) + (int(np.sum(metrics[k][:n_ok])) if k in metrics else 0)
                          for k in COUNTED}
            if bad >= 0:
                loss = float(metrics["loss"][n_ok])
                what = (f"the loss is {loss}" if not math.isfinite(loss) else
                        f"the loss is finite ({loss:.6g}) but the updated state is not")
                bar.close()
                raise NonFiniteLossError(
                    f"{label}: non-finite training at step {bad}: {what}; training stopped there and the last "
                    f"good state (after step {bad - 1}) is kept in this error's .state. Lower the learning "
                    "rate, check the target's log-density where the sampler goes, or use float64",
                    bad, new_state, new_store)
            # one assignment, so that a Ctrl-C checkpoint is always consistent
            state, metrics_store, totals, next_chunk = new_state, new_store, new_totals, next_chunk + 1
            done = min(next_chunk * chunk_size, num_steps)
            bar.note(_note(metrics, n_ok - 1, totals))
            bar.update(done)
            if ckpt_path is not None and (time.perf_counter() - last_ckpt >= checkpoint_interval
                                          or next_chunk == num_chunks):
                save()
                last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        complete = False
        save()
        bar.message("interrupted: " + (f"checkpoint saved in {checkpoint_dir}" if ckpt_path else "no checkpoint_dir"))
    if not isinstance(progress, Progress):
        bar.close()
    return TrainOutput(state, metrics_store, min(next_chunk * chunk_size, num_steps), complete,
                       {k: int(v) for k, v in totals.items() if k in COUNTED}, num_compilations,
                       compile_seconds, seconds_before + time.perf_counter() - t_loop)
