"""The run of a trained method (PIS, DDS, ...): training through :func:`samplax.run.train`, then sampling.

A trained method plans its run (:class:`~samplax.core.method.TrainingPlan`): the initial state from
``keys.init``, training step ``i`` with ``fold_in(keys.adapt, i)`` (chunks, progress, checkpoints,
non-finite loss stop: :mod:`samplax.run.training`), then ``num_chains`` groups of ``num_samples`` draws
from the trained state, chain ``c`` with ``fold_in(keys.run, c)`` (``lax.map`` over chains: chain ``c`` is
computed the same way whatever the number of chains), compiled once and cached.  The cost counts the
target evaluations of training and of sampling apart (``training_*`` and ``sampling_*`` entries; the
standard totals are their sums) and the training steps.
"""
from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import make_cost
from samplax.core.method import MethodSpec, TrainingContext
from samplax.core.result import Result
from samplax.postprocess import finish_result
from samplax.run.cache import PROGRAMS, program_key
from samplax.run.checkpoint import target_id
from samplax.run.keys import RunKeys, batch_keys
from samplax.run.progress import Progress
from samplax.run.training import train


def run_trained(target, spec: MethodSpec, options: dict, *, keys: RunKeys, seed_id, num_chains: int,
                num_samples: int, init=None, checkpoint_dir=None, progress: bool = False, chunk_size=None,
                checkpoint_interval: float = 30.0, devices=None) -> Result:
    """Train ``spec``'s sampler on ``target`` and draw ``num_chains x num_samples`` from it (see
    :func:`samplax.sample`; ``num_warmup`` does not apply: the training length is the method's budget)."""
    if init is not None:
        raise ValueError(f"sample: init: method {spec.name!r} learns a sampler that starts from its reference "
                         "process, so it takes no initial point (leave init=None)")
    if devices not in (None, 1):
        raise ValueError(f"sample: devices={devices!r}: method {spec.name!r} trains and samples on one device; "
                         "use devices=None or 1")
    label = f"{spec.name}/{target.name}"
    dtype = jnp.result_type(float)
    ctx = TrainingContext(num_chains=num_chains, num_samples=num_samples, label=label, method=spec.name)
    plan = spec.trainer(target, ctx, **options)
    dyn, static = eqx.partition(target, eqx.is_array)

    def step(key, state, dyn_):
        return plan.step(key, state, eqx.combine(dyn_, static))

    cache_key = program_key(spec.name, id(spec.trainer), options, static, dyn, dtype)
    # training does not depend on the number of draws: a checkpoint serves any num_chains / num_samples
    config = {"method": spec.name, "options": options, "target": target_id(target), "seed": seed_id,
              "dtype": str(dtype)}
    state0 = plan.init(keys.init)
    bar = Progress(progress, plan.num_steps, 0, label, what="training")
    out = train(step, state0, keys.adapt, plan.num_steps, data=dyn, chunk_size=chunk_size,
                checkpoint_dir=checkpoint_dir, checkpoint_interval=checkpoint_interval, config=config,
                progress=bar, label=label, cache_key=cache_key)
    bar.close()
    train_cost = {"training_logdensity_evals": out.totals["num_logdensity_evals"],
                  "training_grad_evals": out.totals["num_grad_evals"],
                  "num_training_steps": out.steps_done, "training_seconds": out.seconds}
    training = {"metrics": out.metrics, "num_steps": plan.num_steps}
    full_config = {**config, "num_chains": num_chains, "num_samples": num_samples,
                   "chunk_size": chunk_size, "num_training_steps": plan.num_steps}
    if not out.complete:
        cost = make_cost(num_logdensity_evals=out.totals["num_logdensity_evals"],
                         num_grad_evals=out.totals["num_grad_evals"], compile_seconds=out.compile_seconds,
                         sampling_seconds=0.0, num_compilations=out.num_compilations, num_devices=1, **train_cost)
        empty = np.zeros((num_chains, 0, target.dim), np.dtype(str(dtype)))
        result = finish_result(target, spec.name, empty, {}, cost, full_config, complete=False,
                               extra={"training": training})
        result.warnings = [w for w in result.warnings if w["code"] != "interrupted"]
        result.warnings.append({"code": "interrupted", "value": out.steps_done,
                                "message": f"training interrupted after {out.steps_done} of {plan.num_steps} "
                                           "steps; nothing sampled (run again with the same checkpoint_dir to "
                                           "resume)"})
        return result

    chain_keys = batch_keys(keys.run, num_chains)

    def sample_all(state, dyn_, ks):
        tgt = eqx.combine(dyn_, static)
        return jax.lax.map(lambda k: plan.sample(k, state, tgt), ks)

    s_key = ("sample", cache_key, num_chains, num_samples)
    t0 = time.perf_counter()
    compiled = PROGRAMS.get(s_key if cache_key is not None else None)
    n_comp = 0
    if compiled is None:
        bar.compiling("sampling")
        compiled = jax.jit(sample_all).lower(out.state, dyn, chain_keys).compile()
        PROGRAMS.put(s_key if cache_key is not None else None, compiled)
        n_comp = 1
        bar.compiled()
    t1 = time.perf_counter()
    drawn = jax.block_until_ready(compiled(out.state, dyn, chain_keys))
    t2 = time.perf_counter()
    bar.close()
    res = plan.finish(out.state, jax.tree.map(np.asarray, drawn))
    cost = make_cost(num_logdensity_evals=out.totals["num_logdensity_evals"] + int(res.num_logdensity_evals),
                     num_grad_evals=out.totals["num_grad_evals"] + int(res.num_grad_evals),
                     compile_seconds=out.compile_seconds + (t1 - t0), sampling_seconds=t2 - t1,
                     num_compilations=out.num_compilations + n_comp, num_devices=1, **train_cost,
                     sampling_logdensity_evals=int(res.num_logdensity_evals),
                     sampling_grad_evals=int(res.num_grad_evals),
                     **({} if res.num_model_evals is None else {"num_model_evals": int(res.num_model_evals)}))
    extra = {**dict(res.extra or {}), "training": training}
    return finish_result(target, spec.name, np.asarray(res.samples), dict(res.stats), cost,
                         {**full_config, **(res.config or {})}, log_Z=res.log_Z, log_Z_se=res.log_Z_se,
                         log_weights=res.log_weights, extra=extra, extra_warnings=list(res.warnings or []))
