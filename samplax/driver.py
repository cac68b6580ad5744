"""The multi-chain driver behind :func:`samplax.sample`.

One compiled program per run: ``lax.scan`` over a chunk of steps inside ``jit``,
``vmap`` over chains; a host loop over chunks drives the progress bar, writes
atomic checkpoints and stops cleanly on Ctrl-C.  The key of step ``i`` of chain
``c`` is ``fold_in(fold_in(fold_in(key(seed), 1), c), i)``, so draws depend only
on ``(seed, chain, step)``: 8 chains reproduce the first 8 of 64 (with per-chain
adaptation) and a resumed run equals an uninterrupted one bit for bit.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import sys
import time
from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.result import Result, _atomic_savez, _atomic_write
from samplax.core.target import Target
from samplax.methods import MethodSpec, get_method

MAX_INIT_ATTEMPTS = 100


#: Chains per vectorized block on CPU (``chain_method="blocked"``).
CHAIN_BLOCK = 4

#: Compiled programs of recent runs, keyed by everything structural about a run
#: (method, options, the target's static part and array shapes, chains, lengths,
#: chunking).  A second run that differs only in seed, data values or initial
#: points reuses them and compiles nothing.
_COMPILED: dict = {}
_CACHE_SIZE = 32


def _cache_key(spec, options, static_target, dyn_target, *rest):
    try:
        leaves = tuple((tuple(l.shape), str(l.dtype)) for l in jax.tree.leaves(dyn_target))
        key = (spec.name, id(spec.build), repr(sorted(options.items())), static_target, jax.tree.structure(dyn_target), leaves,
               tuple(str(r) for r in rest))
        hash(key)
        return key
    except TypeError:  # unhashable static parts: no caching
        return None


class CheckpointMismatchError(ValueError):
    """The checkpoint in ``checkpoint_dir`` was written by a run with a different configuration."""


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"sample: {name} must be an int >= {lo}, got {v!r}")
    return int(v)


def _flat_logdensity(target: Target):
    shape = tuple(target.event_shape)

    def lp(x):
        return target.logdensity(jnp.reshape(x, shape))

    return lp


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _target_id(target: Target) -> dict:
    prov = target.provenance() if hasattr(target, "provenance") else {}
    leaves = [np.asarray(l) for l in jax.tree.leaves(target) if hasattr(l, "shape")]
    h = hashlib.sha256()
    for l in leaves:
        h.update(np.ascontiguousarray(l).tobytes())
    return {"name": target.name, "event_shape": list(target.event_shape),
            "provenance": {k: str(v) for k, v in prov.items()}, "data_sha256": h.hexdigest()[:16]}


@eqx.filter_jit
def _initial_point_search(target, key, chain_ids, gradient_based: bool, dtype):
    """Jitted once per target structure (module-level, so repeated runs reuse it)."""
    lp = _flat_logdensity(target)
    vg = jax.value_and_grad(lp)
    d = target.dim

    def ok(x):
        if gradient_based:
            v, g = vg(x)
            return jnp.isfinite(v) & jnp.all(jnp.isfinite(g)), v
        v = lp(x)
        return jnp.isfinite(v), v

    def one(c):
        kc = jax.random.fold_in(key, c)

        def draw(a):
            return jnp.reshape(target.initial_point(jax.random.fold_in(kc, a)), (d,)).astype(dtype)

        def cond(s):
            return (~s[2]) & (s[1] < MAX_INIT_ATTEMPTS)

        def body(s):
            x = draw(s[1])
            good, v = ok(x)
            return x, s[1] + 1, good, v

        x0 = draw(0)
        good0, v0 = ok(x0)
        return jax.lax.while_loop(cond, body, (x0, jnp.asarray(1, jnp.int32), good0, v0))

    return jax.vmap(one)(chain_ids)


def _find_initial_points(target, key, num_chains, gradient_based, dtype):
    """Stan-style: uniform(-2, 2) in unconstrained space, up to 100 attempts per chain."""
    x, attempts, good, value = _initial_point_search(target, key, jnp.arange(num_chains), bool(gradient_based),
                                                     jnp.dtype(dtype))
    good = np.asarray(good)
    if not good.all():
        bad = int(np.flatnonzero(~good)[0])
        raise ValueError(
            f"sample: could not find a finite initial point for target {target.name!r} "
            f"(chain {bad}: log-density {float(np.asarray(value)[bad])} after {MAX_INIT_ATTEMPTS} "
            "uniform(-2, 2) attempts); pass init= with a point where the log-density "
            + ("and its gradient are finite" if gradient_based else "is finite"))
    return x, attempts


@eqx.filter_jit
def _values_and_grads(target, x):
    return jax.vmap(jax.value_and_grad(_flat_logdensity(target)))(x)


def _check_user_init(target, init, num_chains, gradient_based, dtype):
    init = np.asarray(init, dtype=np.float64)
    shape = tuple(target.event_shape)
    if init.shape == shape:
        init = np.broadcast_to(init, (num_chains,) + shape)
    elif init.shape != (num_chains,) + shape:
        raise ValueError(
            f"sample: init must have shape {shape} or {(num_chains,) + shape} (num_chains, *event_shape), "
            f"got {init.shape}")
    x = jnp.asarray(init.reshape(num_chains, -1), dtype=dtype)
    v, g = _values_and_grads(target, x)
    v, g = np.asarray(v), np.asarray(g)
    bad = ~np.isfinite(v)
    if gradient_based:
        bad |= ~np.all(np.isfinite(g), axis=-1)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        what = f"log-density {v[c]}" if not np.isfinite(v[c]) else "a non-finite gradient"
        raise ValueError(f"sample: init for chain {c} gives {what} on target {target.name!r}; "
                         "choose a point inside the support")
    return x


class _Progress:
    def __init__(self, enabled, total, num_warmup, label):
        self.enabled = enabled
        self.total, self.num_warmup, self.label = total, num_warmup, label
        self.tty = enabled and sys.stderr.isatty()
        self.last_pct = -1
        self.t0 = time.perf_counter()

    def update(self, done):
        if not self.enabled:
            return
        pct = int(100 * done / max(self.total, 1))
        if not self.tty and pct // 10 == self.last_pct // 10 and done < self.total:
            return
        self.last_pct = pct
        phase = "warmup" if done <= self.num_warmup and self.num_warmup > 0 else "sampling"
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        msg = f"[samplax {self.label}] {phase} {done}/{self.total} ({pct}%) {rate:,.0f} it/s"
        sys.stderr.write(("\r" + msg) if self.tty else (msg + "\n"))
        if self.tty and done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def sample(target: Target, method: Any = "nuts", *, seed: int = 0, num_chains: int = 4,
           num_warmup: int = 1000, num_samples: int = 1000, init=None,
           checkpoint_dir: Optional[str] = None, progress: bool = True, thinning: int = 1,
           chunk_size: Optional[int] = None, checkpoint_interval: float = 30.0,
           chain_method: str = "auto", **method_options) -> Result:
    """Draw ``num_samples`` post-warm-up draws from each of ``num_chains`` chains.

    Args:
      target: a :class:`~samplax.core.target.Target` (see :func:`samplax.from_logdensity`).
      method: a name from :func:`samplax.method_names` (default ``"nuts"``).
      seed: integer seed; all randomness derives from ``(seed, chain, step)``.
      num_chains, num_warmup, num_samples, thinning: run length.
      init: initial point ``[*event_shape]`` or ``[num_chains, *event_shape]``; default:
        uniform(-2, 2) in unconstrained space, retried up to 100 times per chain (Stan).
      checkpoint_dir: folder for atomic checkpoints; a run with the same configuration
        resumes from it (bitwise-identical draws), a different configuration is refused.
      progress: show a progress line on stderr.
      chunk_size: steps per compiled chunk (structural; part of the configuration).
      checkpoint_interval: minimum seconds between checkpoints (0: after every chunk).
      chain_method: ``"vectorized"`` (one ``vmap`` over all chains), ``"blocked"`` (``vmap``
        inside blocks of ``CHAIN_BLOCK`` chains, ``lax.map`` over blocks; the last block is
        padded), ``"sequential"`` (blocks of one) or ``"auto"`` (blocked on CPU, vectorized on
        accelerators).  XLA may vectorize reductions differently for different batch sizes,
        so under one ``vmap`` over all chains, draws of runs with different numbers of chains
        agree only to round-off, which chaotic dynamics amplify.  In blocked and sequential
        mode chain ``c`` always sits at the same place of a block of the same size: 8 chains
        reproduce the first 8 of 64 bit for bit.  Pooled adaptation is always vectorized.
      **method_options: options of the method (see ``samplax list methods``).

    Returns:
      a :class:`~samplax.core.result.Result`.
    """
    if not isinstance(target, Target):
        raise TypeError(
            f"sample: target must be a samplax Target, got {type(target).__name__}; wrap a function "
            "with samplax.from_logdensity(fn, event_shape) or use samplax.targets.get(name)")
    spec = method if isinstance(method, MethodSpec) else get_method(method)
    seed = _check_int("seed", seed, 0)
    num_chains = _check_int("num_chains", num_chains, 1)
    num_warmup = _check_int("num_warmup", num_warmup, 0)
    num_samples = _check_int("num_samples", num_samples, 1)
    thinning = _check_int("thinning", thinning, 1)
    if chain_method not in ("auto", "vectorized", "sequential", "blocked"):
        raise ValueError("sample: chain_method must be 'auto', 'blocked', 'vectorized' or 'sequential', "
                         f"got {chain_method!r}")
    options = spec.resolve_options(method_options)
    if spec.runner is not None:
        extra_kw = {}
        if "driver_options" in inspect.signature(spec.runner).parameters:
            # runners that wrap this driver get its remaining arguments too
            extra_kw["driver_options"] = dict(
                thinning=thinning, chunk_size=chunk_size, checkpoint_dir=checkpoint_dir,
                checkpoint_interval=checkpoint_interval, chain_method=chain_method)
        elif checkpoint_dir is not None or thinning != 1:
            raise ValueError(f"sample: method {spec.name!r} does not support checkpoint_dir or thinning")
        result = spec.runner(target, spec, seed=seed, num_chains=num_chains, num_warmup=num_warmup,
                             num_samples=num_samples, init=init, progress=progress, **extra_kw, **options)
        n_bad = int(np.sum(~np.isfinite(result.samples)))
        if n_bad:  # never a silent NaN result
            result.warnings.append({"code": "nonfinite_samples", "value": n_bad,
                                    "message": f"{n_bad} non-finite values in the returned samples of {spec.name!r}"})
        return result
    total = num_warmup + num_samples * thinning
    if chunk_size is None:
        # ~10 chunks: progress and checkpoints stay frequent while per-chunk host work stays small
        chunk_size = int(min(max(math.ceil(total / 10), 10), 1000))
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    num_chunks = math.ceil(total / chunk_size)
    dtype = jnp.result_type(float)
    d = target.dim

    config = {
        "method": spec.name, "options": options, "target": _target_id(target), "seed": seed,
        "num_chains": num_chains, "num_warmup": num_warmup, "num_samples": num_samples,
        "thinning": thinning, "chunk_size": chunk_size, "dtype": str(dtype),
        "init": None if init is None else hashlib.sha256(np.asarray(init, np.float64).tobytes()).hexdigest()[:16],
    }

    key = jax.random.key(seed)
    k_init, k_run, k_adapt = (jax.random.fold_in(key, i) for i in range(3))
    # Arrays of the target travel as arguments (new data never retraces); the rest is static.
    dyn_target, static_target = eqx.partition(target, eqx.is_array)

    def build(dyn):
        return spec.build(_flat_logdensity(eqx.combine(dyn, static_target)), d, num_warmup, num_chains, **options)

    per_chain = build(dyn_target).adapter.per_chain
    if chain_method == "auto":
        chain_method = "blocked" if jax.default_backend() == "cpu" else "vectorized"
    if not per_chain:  # pooled adaptation couples the chains: one batch
        chain_method = "vectorized"
    block = {"sequential": 1, "blocked": CHAIN_BLOCK, "vectorized": num_chains}[chain_method]
    num_padded = -(-num_chains // block) * block  # extra chains only fill the last block
    num_blocks = num_padded // block
    chain_ids = jnp.arange(num_padded)
    config["chain_method"] = chain_method
    config_hash = _config_hash(config)
    if init is None:
        x0, _ = _find_initial_points(target, k_init, num_padded, spec.gradient_based, dtype)
    else:
        x0 = _check_user_init(target, init, num_chains, spec.gradient_based, dtype)
    if num_padded > num_chains and init is not None:
        x0 = jnp.concatenate([x0, jnp.broadcast_to(x0[-1:], (num_padded - num_chains,) + x0.shape[1:])])

    def in_blocks(fn):
        """Apply a batched-over-chains function block by block (``lax.map`` over blocks, ``vmap`` inside).

        Chain ``c`` always sits at position ``c % block`` of a block of the same size, so its
        arithmetic does not depend on how many chains run.
        """
        if num_blocks == 1:
            return fn

        def mapped(*args):
            split = jax.tree.map(lambda v: v.reshape((num_blocks, block) + v.shape[1:]), args)
            out = jax.lax.map(lambda a: fn(*a), split)
            return jax.tree.map(lambda v: v.reshape((num_padded,) + v.shape[2:]), out)

        return mapped

    def init_all(tgt, x0, k_init, k_adapt):
        algo = build(tgt)
        k_i = jax.vmap(lambda c: jax.random.fold_in(k_init, c))(chain_ids)
        k_a = jax.vmap(lambda c: jax.random.fold_in(k_adapt, c))(chain_ids)

        def init_batch(ki, x, ka):
            states = jax.vmap(algo.init)(ki, x)
            astate, n_grad = algo.adapter.init(ka, states)
            return states, astate, jnp.broadcast_to(n_grad, (ki.shape[0],))

        return in_blocks(init_batch)(k_i, x0, k_a)

    num_traces = [0]

    def run_chunk(tgt, carry, start, k_run):
        num_traces[0] += 1
        algo = build(tgt)

        after = algo.adapter.sampling_update or (lambda a, *_: a)

        def step_batch(keys, states, astate, i):
            params = algo.adapter.params(astate)
            new_states, infos = jax.vmap(algo.step)(keys, states, params)
            # warm-up iterations adapt; afterwards the adapter is (nearly always) frozen,
            # and a real branch saves its per-step work
            new_astate = jax.lax.cond(i < num_warmup, algo.adapter.update, after, astate, i, new_states, infos)
            stats = jax.vmap(algo.stats)(new_states, infos, params)
            return new_states, new_astate, infos, stats

        chain_keys = jax.vmap(lambda c: jax.random.fold_in(k_run, c))(chain_ids)

        def one(carry, i):
            states, astate, n_lp, n_grad = carry
            keys = jax.vmap(lambda kc: jax.random.fold_in(kc, i))(chain_keys)
            ii = jnp.broadcast_to(i, (num_padded,))
            new_states, new_astate, infos, stats = in_blocks(
                lambda k, s, a, j: step_batch(k, s, a, j[0]))(keys, states, astate, ii)
            if total % chunk_size:  # only then does the last chunk run past the end
                active = i < total
                new_states = jax.tree.map(lambda a, b: jnp.where(active, a, b), new_states, states)
                new_astate = jax.tree.map(lambda a, b: jnp.where(active, a, b), new_astate, astate)
                n_lp = n_lp + jnp.where(active, infos.num_logdensity_evals, 0)
                n_grad = n_grad + jnp.where(active, infos.num_grad_evals, 0)
            else:
                n_lp = n_lp + infos.num_logdensity_evals
                n_grad = n_grad + infos.num_grad_evals
            return (new_states, new_astate, n_lp, n_grad), (jax.vmap(algo.position)(new_states), stats)

        return jax.lax.scan(one, carry, start + jnp.arange(chunk_size, dtype=jnp.int32))

    # ---------------------------------------------------------- state / resume
    # Per-chain methods compile the same program for every chain count that pads to the same size.
    cache_key = _cache_key(spec, options, static_target, dyn_target, num_padded if per_chain else num_chains,
                           num_warmup, total,
                           chunk_size, chain_method, dtype)
    cached = _COMPILED.get(cache_key) if cache_key is not None else None
    init_jit = cached[0] if cached is not None else jax.jit(init_all)
    states, astate, n_init_grad = init_jit(dyn_target, x0, k_init, k_adapt)
    zeros = jnp.zeros((num_padded,), jnp.int32)
    carry = (states, astate, zeros, zeros)
    draws = np.zeros((num_chains, num_samples, d), dtype=np.dtype(str(dtype)))
    stats_store: dict = {}
    next_chunk = 0
    n_init = int(np.sum(np.asarray(n_init_grad)[:num_chains]))
    totals = {"lp": int(num_chains) + n_init,
              "grad": (int(num_chains) if spec.gradient_based else 0) + n_init}
    seconds_before = 0.0
    ckpt_path = None
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        ckpt_path = os.path.join(checkpoint_dir, "checkpoint.npz")
        cfg_path = os.path.join(checkpoint_dir, "checkpoint_config.json")
        if os.path.exists(ckpt_path):
            carry, draws, stats_store, next_chunk, totals, seconds_before = _load_checkpoint(
                ckpt_path, cfg_path, config_hash, carry)
        else:
            _atomic_write(cfg_path, json.dumps({"hash": config_hash, "config": config}, indent=1, default=str))

    # ---------------------------------------------------------- compile once
    t0 = time.perf_counter()
    if cached is not None:
        compiled = cached[1]
    else:
        compiled = jax.jit(run_chunk).lower(dyn_target, carry, jnp.asarray(0, jnp.int32), k_run).compile()
        if cache_key is not None:
            _COMPILED[cache_key] = (init_jit, compiled)
            while len(_COMPILED) > _CACHE_SIZE:
                _COMPILED.pop(next(iter(_COMPILED)))
    compile_seconds = time.perf_counter() - t0

    bar = _Progress(progress, total, num_warmup, f"{spec.name}/{target.name}")
    interrupted = False
    last_ckpt = time.perf_counter()
    t_loop = time.perf_counter()

    def run_seconds():
        return time.perf_counter() - t_loop

    def save_ckpt():
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, config_hash, carry, draws, stats_store, next_chunk, totals,
                             seconds_before + run_seconds())

    def dispatch(chunk, carry):
        # asynchronous: returns at once, the host copies the previous chunk meanwhile
        return compiled(dyn_target, carry, jnp.asarray(chunk * chunk_size, jnp.int32), k_run)

    try:
        pending = dispatch(next_chunk, carry) if next_chunk < num_chunks else None
        while next_chunk < num_chunks:
            start = next_chunk * chunk_size
            new_carry, (pos, stats) = pending
            next_carry = (new_carry[0], new_carry[1], zeros, zeros)
            if next_chunk + 1 < num_chunks:
                pending = dispatch(next_chunk + 1, next_carry)
            pos = np.asarray(pos)  # blocks until this chunk is done
            stats = jax.tree.map(np.asarray, stats)
            n_lp_chunk = np.asarray(new_carry[2])[:num_chains]
            n_grad_chunk = np.asarray(new_carry[3])[:num_chains]
            new_totals = {"lp": totals["lp"] + int(n_lp_chunk.sum()),
                          "grad": totals["grad"] + int(n_grad_chunk.sum())}
            steps = start + np.arange(chunk_size)
            keep = (steps >= num_warmup) & (steps < total) & ((steps - num_warmup) % thinning == 0)
            if keep.any():
                idx = (steps[keep] - num_warmup) // thinning
                draws[:, idx] = np.swapaxes(pos[keep][:, :num_chains], 0, 1)
                for k, v in stats.items():
                    if k not in stats_store:
                        stats_store[k] = np.zeros((num_chains, num_samples), dtype=v.dtype)
                    stats_store[k][:, idx] = np.swapaxes(v[keep][:, :num_chains], 0, 1)
            # one assignment, so that a Ctrl-C checkpoint is always consistent
            carry, totals, next_chunk = next_carry, new_totals, next_chunk + 1
            bar.update(min(next_chunk * chunk_size, total))
            if ckpt_path is not None and (time.perf_counter() - last_ckpt >= checkpoint_interval
                                          or next_chunk == num_chunks):
                save_ckpt()
                last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
        save_ckpt()
        if progress:
            sys.stderr.write("\n[samplax] interrupted: "
                             + (f"checkpoint saved in {checkpoint_dir}\n" if ckpt_path else "no checkpoint_dir\n"))
    run_total = run_seconds()

    done_steps = min(next_chunk * chunk_size, total)
    n_kept = max(0, min(num_samples, (done_steps - num_warmup + thinning - 1) // thinning)) if done_steps > num_warmup else 0
    samples = draws[:, :n_kept]
    stats_out = {k: v[:, :n_kept] for k, v in stats_store.items()}
    final_params = jax.tree.map(np.asarray, build(dyn_target).adapter.params(carry[1]))
    # adapted parameters per chain (step size, inverse mass matrix, ...), for inspection and re-use
    final_params_dict = ({k: np.asarray(v).tolist() for k, v in final_params._asdict().items()}
                         if hasattr(final_params, "_asdict") else {})
    cost = {
        "num_logdensity_evals": totals["lp"], "num_grad_evals": totals["grad"],
        "compile_seconds": compile_seconds, "sampling_seconds": seconds_before + run_total,
        "num_compilations": num_traces[0],
    }
    from samplax.postprocess import finish_result

    return finish_result(target, spec.name, samples, stats_out, cost, config, complete=not interrupted,
                         extra={"final_params": final_params_dict,
                                "final_step_size": final_params_dict.get("step_size"),
                                "config_hash": config_hash})


def _save_checkpoint(path, config_hash, carry, draws, stats_store, next_chunk, totals, seconds):
    leaves = jax.tree.leaves(carry)
    arrays = {f"leaf_{i}": np.asarray(l) for i, l in enumerate(leaves)}
    arrays["draws"] = draws
    for k, v in stats_store.items():
        arrays[f"stat__{k}"] = v
    arrays["meta"] = np.frombuffer(json.dumps({
        "hash": config_hash, "next_chunk": next_chunk, "totals": totals, "seconds": seconds,
        "num_leaves": len(leaves)}).encode(), dtype=np.uint8)
    _atomic_savez(path, arrays)


def _load_checkpoint(path, cfg_path, config_hash, carry_template):
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays["meta"]).decode())
    except Exception as e:  # noqa: BLE001
        raise CheckpointMismatchError(f"sample: checkpoint {path} is unreadable or corrupt ({e}); "
                                      "delete it to start over") from e
    if meta.get("hash") != config_hash:
        raise CheckpointMismatchError(
            f"sample: checkpoint in {os.path.dirname(path)} was written by a run with a different "
            f"configuration (hash {meta.get('hash')} != {config_hash}); refusing to resume. "
            "Use another checkpoint_dir or delete the old checkpoint.")
    template_leaves, treedef = jax.tree.flatten(carry_template)
    if meta["num_leaves"] != len(template_leaves):
        raise CheckpointMismatchError(f"sample: checkpoint {path} does not match this sampler's state")
    leaves = []
    for i, t in enumerate(template_leaves):
        a = arrays[f"leaf_{i}"]
        if a.shape != t.shape or a.dtype != np.asarray(t).dtype:
            raise CheckpointMismatchError(f"sample: checkpoint {path} leaf {i} has shape/dtype "
                                          f"{a.shape}/{a.dtype}, expected {t.shape}/{np.asarray(t).dtype}")
        leaves.append(jnp.asarray(a) if not jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key) else t)
    carry = jax.tree.unflatten(treedef, leaves)
    stats = {k[len("stat__"):]: v for k, v in arrays.items() if k.startswith("stat__")}
    return carry, arrays["draws"], stats, int(meta["next_chunk"]), meta["totals"], float(meta["seconds"])
