"""The chain loop: one compiled program per run for every chain method (and any user ``Kernel``).

``lax.scan`` over a chunk of steps inside ``jit``, chains mapped inside (in
blocks, see ``chain_method``), sharded over devices with ``jax.shard_map``; a
host loop over chunks drives the progress line, writes atomic checkpoints and
stops cleanly on Ctrl-C.  The key of step ``i`` of chain ``c`` is
``fold_in(fold_in(keys.run, c), i)``, so draws depend only on ``(seed, chain,
step)``: 8 chains reproduce the first 8 of 64 (with per-chain adaptation), a
resumed run equals an uninterrupted one bit for bit, and a run sharded over
devices equals a single-device one.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import make_cost
from samplax.core.method import MethodSpec
from samplax.core.result import Result, atomic_write
from samplax.postprocess import finish_result, nonfinite_warmup_warning
from samplax.run import sharding
from samplax.run.cache import PROGRAMS, program_key
from samplax.run.checkpoint import (
    array_digest, config_hash, load_checkpoint, load_warmup, save_checkpoint, target_id,
)
from samplax.run.init import check_user_init, find_initial_points, search_evaluations
from samplax.run.keys import RunKeys
from samplax.run.progress import Progress

#: Chains per vectorized block on CPU (``chain_method="blocked"``).
CHAIN_BLOCK = 4

CHAIN_METHODS = ("auto", "vectorized", "sequential", "blocked")


def build_algorithm(spec: MethodSpec, target, num_warmup: int, num_chains: int, options: dict):
    """``spec.build`` on the target's flat log-density (and the target itself when ``spec.needs_target``)."""
    extra = {"target": target} if spec.needs_target else {}
    return spec.build(target.flat_logdensity(), target.dim, num_warmup, num_chains, **extra, **options)


def _plan_sharding(devices, num_chains: int, block: int):
    """The devices to shard the chains over and the block size: whole blocks per device when the blocks
    divide evenly (draws then equal a single-device run bit for bit); otherwise, when the chains divide
    evenly, one block of ``num_chains / devices`` chains per device (equal up to round-off: XLA
    vectorizes a block of another width differently); otherwise one device."""
    num_blocks = -(-num_chains // block)
    try:
        chosen = sharding.resolve_devices(devices, num_blocks, what="blocks of chains")
    except ValueError:
        if devices is None:
            raise
        chosen = None
    if chosen is not None:
        return chosen, block
    if num_blocks > 1 and devices is None:
        return None, block
    chosen = sharding.resolve_devices(devices, num_chains, what="chains")
    if chosen is None:
        return None, block
    return chosen, num_chains // len(chosen)


def run_chains(target, spec: MethodSpec, options: dict, *, keys: RunKeys, seed_id, num_chains: int,
               num_warmup: int, num_samples: int, init=None, checkpoint_dir: Optional[str] = None,
               progress: bool = True, thinning: int = 1, chunk_size: Optional[int] = None,
               checkpoint_interval: float = 30.0, chain_method: str = "auto", devices=None,
               keep_warmup: bool = False) -> Result:
    """Run ``num_chains`` chains of a chain method (``spec.build``) and assemble the Result.

    See :func:`samplax.sample` for the arguments; ``seed_id`` is what identifies the root key in
    the run configuration (the seed, or a digest of the user's key).  ``keep_warmup``: also return
    the warm-up draws (every ``thinning``-th warm-up step) and their stats.
    """
    total = num_warmup + num_samples * thinning
    if chunk_size is None:
        # ~10 chunks: progress and checkpoints stay frequent while per-chunk host work stays small
        chunk_size = int(min(max(math.ceil(total / 10), 10), 1000))
    num_chunks = math.ceil(total / chunk_size)
    dtype = jnp.result_type(float)
    d = target.dim

    config = {
        "method": spec.name, "options": options, "target": target_id(target), "seed": seed_id,
        "num_chains": num_chains, "num_warmup": num_warmup, "num_samples": num_samples,
        "thinning": thinning, "chunk_size": chunk_size, "dtype": str(dtype),
        "init": None if init is None else array_digest(init),
    }
    if keep_warmup:  # only when set: the configuration (and its hash) of other runs is unchanged
        config["keep_warmup"] = True
    k_init, k_run, k_adapt = keys.init, keys.run, keys.adapt
    # Arrays of the target travel as arguments (new data never retraces); the rest is static.
    dyn_target, static_target = eqx.partition(target, eqx.is_array)

    def build(dyn):
        return build_algorithm(spec, eqx.combine(dyn, static_target), num_warmup, num_chains, options)

    per_chain = build(dyn_target).adapter.per_chain
    if chain_method == "auto":
        chain_method = "blocked" if jax.default_backend() == "cpu" else "vectorized"
    if not per_chain:  # pooled adaptation couples the chains: one batch
        chain_method = "vectorized"
    block = {"sequential": 1, "blocked": CHAIN_BLOCK, "vectorized": num_chains}[chain_method]
    if per_chain:
        shard_devices, block = _plan_sharding(devices, num_chains, block)
    else:
        if devices not in (None, 1):
            raise ValueError(f"sample: method {spec.name!r} with pooled adaptation couples its chains and "
                             "runs on one device; use devices=None or 1")
        shard_devices = None
    num_padded = -(-num_chains // block) * block  # extra chains only fill the last block
    num_devices = 1 if shard_devices is None else len(shard_devices)
    mesh = None if shard_devices is None else sharding.make_mesh(shard_devices)
    chain_ids = jnp.arange(num_padded)
    config["chain_method"] = chain_method
    cfg_hash = config_hash(config)
    # the initial points of the chains asked for; the padding chains of the last block start where the last
    # real chain does (they are computed and thrown away, so their start does not matter)
    if init is None:
        x0, attempts = find_initial_points(target, k_init, num_chains, spec.gradient_based, dtype)
        n_start = search_evaluations(attempts)
    else:
        x0 = check_user_init(target, init, num_chains, spec.gradient_based, dtype)
        n_start = num_chains
    if num_padded > num_chains:
        x0 = jnp.concatenate([x0, jnp.broadcast_to(x0[-1:], (num_padded - num_chains,) + x0.shape[1:])])

    def in_blocks(fn, n):
        """Apply a batched-over-chains function block by block (``lax.map`` over blocks, ``vmap`` inside)
        on a batch of ``n`` chains.  Chain ``c`` always sits at position ``c % block`` of a block of the
        same size, so its arithmetic depends neither on how many chains run nor on the devices."""
        nb = n // block
        if nb == 1:
            return fn

        def mapped(*args):
            split = jax.tree.map(lambda v: v.reshape((nb, block) + v.shape[1:]), args)
            out = jax.lax.map(lambda a: fn(*a), split)
            return jax.tree.map(lambda v: v.reshape((n,) + v.shape[2:]), out)

        return mapped

    def init_all(tgt, x0, k_init, k_adapt, ids):
        algo = build(tgt)
        k_i = jax.vmap(lambda c: jax.random.fold_in(k_init, c))(ids)
        k_a = jax.vmap(lambda c: jax.random.fold_in(k_adapt, c))(ids)

        def init_batch(ki, x, ka):
            states = jax.vmap(algo.init)(ki, x)
            astate, n_grad = algo.adapter.init(ka, states)
            return states, astate, jnp.broadcast_to(n_grad, (ki.shape[0],))

        return in_blocks(init_batch, ids.shape[0])(k_i, x0, k_a)

    num_traces = [0]

    def run_chunk(tgt, carry, start, k_run, ids):
        num_traces[0] += 1
        algo = build(tgt)
        n = ids.shape[0]

        after = algo.adapter.sampling_update or (lambda a, *_: a)

        def step_batch(keys, states, astate, i):
            params = algo.adapter.params(astate)
            new_states, infos = jax.vmap(algo.step)(keys, states, params)
            # warm-up iterations adapt; afterwards the adapter is (nearly always) frozen,
            # and a real branch saves its per-step work
            new_astate = jax.lax.cond(i < num_warmup, algo.adapter.update, after, astate, i, new_states, infos)
            stats = jax.vmap(algo.stats)(new_states, infos, params)
            return new_states, new_astate, infos, stats

        chain_keys = jax.vmap(lambda c: jax.random.fold_in(k_run, c))(ids)

        def advance(states, astate, i):
            keys = jax.vmap(lambda kc: jax.random.fold_in(kc, i))(chain_keys)
            ii = jnp.broadcast_to(i, (n,))
            new_states, new_astate, infos, stats = in_blocks(
                lambda k, s, a, j: step_batch(k, s, a, j[0]), n)(keys, states, astate, ii)
            return (new_states, new_astate, jnp.broadcast_to(infos.num_logdensity_evals, (n,)),
                    jnp.broadcast_to(infos.num_grad_evals, (n,)), stats)

        def one(carry, i):
            states, astate, n_lp, n_grad = carry
            if total % chunk_size:
                # the last chunk runs past the end: its steps there are skipped (a real branch: the
                # step index is the same for every chain), not computed and thrown away
                shapes = jax.eval_shape(advance, states, astate, i)

                def skip(states, astate, i):
                    del i
                    return (states, astate, *jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes[2:]))

                new_states, new_astate, d_lp, d_grad, stats = jax.lax.cond(i < total, advance, skip,
                                                                            states, astate, i)
            else:
                new_states, new_astate, d_lp, d_grad, stats = advance(states, astate, i)
            return (new_states, new_astate, n_lp + d_lp, n_grad + d_grad), (jax.vmap(algo.position)(new_states),
                                                                              stats)

        return jax.lax.scan(one, carry, start + jnp.arange(chunk_size, dtype=jnp.int32))

    if mesh is not None:
        init_prog = sharding.shard_batch(init_all, mesh, (None, 0, None, None, 0), 0)
        chunk_prog = sharding.shard_batch(run_chunk, mesh, (None, 0, None, None, 0), (0, 1))
        x0 = sharding.put(x0, mesh, 0)
        chain_ids = sharding.put(chain_ids, mesh, 0)
        dyn_target = sharding.put(dyn_target, mesh, None)
    else:
        init_prog, chunk_prog = init_all, run_chunk

    # ---------------------------------------------------------- state / resume
    # Per-chain methods compile the same program for every chain count that pads to the same size.
    cache_key = program_key(spec.name, id(spec.build), options, static_target, dyn_target,
                            num_padded if per_chain else num_chains, num_warmup, total, chunk_size, chain_method,
                            block, num_devices, dtype)
    cached = PROGRAMS.get(cache_key)
    bar = Progress(progress, total, num_warmup, f"{spec.name}/{target.name}")
    if cached is None:
        bar.compiling()  # the init program compiles on its first call, the chunk program below
    init_jit = cached[0] if cached is not None else jax.jit(init_prog)
    states, astate, n_init_grad = init_jit(dyn_target, x0, k_init, k_adapt, chain_ids)
    zeros = jnp.zeros((num_padded,), jnp.int32)
    if mesh is not None:
        zeros = sharding.put(zeros, mesh, 0)
    carry = (states, astate, zeros, zeros)
    draws = np.zeros((num_chains, num_samples, d), dtype=np.dtype(str(dtype)))
    stats_store: dict = {}
    num_warm_kept = len(range(0, num_warmup, thinning)) if keep_warmup else 0
    warm_draws = np.zeros((num_chains, num_warm_kept, d), dtype=np.dtype(str(dtype))) if keep_warmup else None
    warm_stats: dict = {}
    next_chunk = 0
    n_init = int(np.sum(np.asarray(n_init_grad)[:num_chains]))
    # the initial-point search (or the check of the user's init), each chain's init, the adapter's init
    totals = {"lp": n_start + int(num_chains) + n_init,
              "grad": ((n_start + int(num_chains)) if spec.gradient_based else 0) + n_init,
              "nonfinite_warmup": 0}
    seconds_before = 0.0
    ckpt_path = None
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        ckpt_path = os.path.join(checkpoint_dir, "checkpoint.npz")
        cfg_path = os.path.join(checkpoint_dir, "checkpoint_config.json")
        if os.path.exists(ckpt_path):
            carry, draws, stats_store, next_chunk, totals, seconds_before = load_checkpoint(
                ckpt_path, cfg_hash, carry, config)
            if keep_warmup:
                warm_draws, warm_stats = load_warmup(ckpt_path)
            if mesh is not None:
                carry = sharding.put(carry, mesh, 0)
        else:
            atomic_write(cfg_path, json.dumps({"hash": cfg_hash, "config": config}, indent=1, default=str))

    # ---------------------------------------------------------- compile once
    t0 = time.perf_counter()
    if cached is not None:
        compiled = cached[1]
    else:
        compiled = jax.jit(chunk_prog).lower(dyn_target, carry, jnp.asarray(0, jnp.int32), k_run,
                                             chain_ids).compile()
        PROGRAMS.put(cache_key, (init_jit, compiled))
    compile_seconds = time.perf_counter() - t0
    if cached is None:
        bar.compiled()
    else:
        bar.reused()
    bar.start(min(next_chunk * chunk_size, total))  # the rate counts only this call's steps
    interrupted = False
    last_ckpt = time.perf_counter()
    t_loop = time.perf_counter()

    def run_seconds():
        return time.perf_counter() - t_loop

    def save_ckpt():
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, cfg_hash, carry, draws, stats_store, next_chunk, totals,
                            seconds_before + run_seconds(),
                            warmup=(warm_draws, warm_stats) if keep_warmup else None)

    def dispatch(chunk, carry):
        # asynchronous: returns at once, the host copies the previous chunk meanwhile
        return compiled(dyn_target, carry, jnp.asarray(chunk * chunk_size, jnp.int32), k_run, chain_ids)

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
            steps = start + np.arange(chunk_size)
            warm = (steps < num_warmup) & (steps < total)
            # non-finite proposals in warm-up (rejected; the warm-up draws are not kept, so count them here)
            n_nf_warm = (int(np.sum(stats["nonfinite"][warm][:, :num_chains]))
                         if "nonfinite" in stats and warm.any() else 0)
            new_totals = {"lp": totals["lp"] + int(n_lp_chunk.sum()),
                          "grad": totals["grad"] + int(n_grad_chunk.sum()),
                          "nonfinite_warmup": totals.get("nonfinite_warmup", 0) + n_nf_warm}
            if keep_warmup:
                wkeep = warm & (steps % thinning == 0)
                if wkeep.any():
                    widx = steps[wkeep] // thinning
                    warm_draws[:, widx] = np.swapaxes(pos[wkeep][:, :num_chains], 0, 1)
                    for k, v in stats.items():
                        if k not in warm_stats:
                            warm_stats[k] = np.zeros((num_chains, num_warm_kept), dtype=v.dtype)
                        warm_stats[k][:, widx] = np.swapaxes(v[wkeep][:, :num_chains], 0, 1)
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
        bar.message("interrupted: " + (f"checkpoint saved in {checkpoint_dir}" if ckpt_path else "no checkpoint_dir"))
    bar.close()
    run_total = run_seconds()

    done_steps = min(next_chunk * chunk_size, total)
    n_kept = max(0, min(num_samples, (done_steps - num_warmup + thinning - 1) // thinning)) if done_steps > num_warmup else 0
    samples = draws[:, :n_kept]
    stats_out = {k: v[:, :n_kept] for k, v in stats_store.items()}
    warm_out = warm_stats_out = None
    if keep_warmup:
        n_warm = len(range(0, min(done_steps, num_warmup), thinning))
        warm_out = warm_draws[:, :n_warm]
        warm_stats_out = {k: v[:, :n_warm] for k, v in warm_stats.items()}
    final_params = jax.tree.map(np.asarray, build(dyn_target).adapter.params(carry[1]))
    # adapted parameters per chain (step size, inverse mass matrix, ...), for inspection and re-use
    final_params_dict = ({k: np.asarray(v)[:num_chains].tolist() if np.ndim(v) else np.asarray(v).tolist()
                          for k, v in final_params._asdict().items()}
                         if hasattr(final_params, "_asdict") else {})
    cost = make_cost(num_logdensity_evals=totals["lp"], num_grad_evals=totals["grad"],
                     compile_seconds=compile_seconds, sampling_seconds=seconds_before + run_total,
                     num_compilations=num_traces[0], num_devices=num_devices)
    warm_warning = nonfinite_warmup_warning(totals.get("nonfinite_warmup", 0), min(done_steps, num_warmup))
    return finish_result(target, spec.name, samples, stats_out, cost, config, complete=not interrupted,
                         extra={"final_params": final_params_dict,
                                "final_step_size": final_params_dict.get("step_size"),
                                "config_hash": cfg_hash},
                         extra_warnings=[warm_warning] if warm_warning else None,
                         warmup_samples=warm_out, warmup_stats=warm_stats_out)
