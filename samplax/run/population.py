"""The population loop: independent runs of a population method (SMC, nested sampling, parallel
tempering, ensembles, particle flows), batched, sharded over devices, compiled once.

A population method plans ONE run (:class:`~samplax.core.method.PopulationPlan`):
``run(key, run_index, target, *inputs)``.  The engine gives run ``c`` the key
``fold_in(keys.run, c)`` (so run ``c`` of 8 equals run ``c`` of 2), maps the
runs with ``lax.map`` (one run at a time, so run ``c`` is computed identically
whatever the number of runs or devices), splits them over devices with
``jax.shard_map`` when they divide evenly, compiles once (timed
apart from the run), and assembles the Result from the plan's ``finish``.
"""
from __future__ import annotations

import threading
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import make_cost
from samplax.core.method import MethodSpec, PopulationContext
from samplax.core.result import Result
from samplax.postprocess import finish_result
from samplax.run import sharding
from samplax.run.cache import PROGRAMS, program_key
from samplax.run.checkpoint import array_digest, target_id
from samplax.run.init import find_initial_points, search_evaluations
from samplax.run.keys import RunKeys, batch_keys
from samplax.run.progress import Progress


class _Active:
    """The progress display of the population run now executing.  A compiled program is cached and
    re-used by later runs, so its host callbacks must not close over one run's display: they call
    :func:`_note` and :func:`_run_started`, which find it here.  (Module-level, not thread-local: XLA
    calls host callbacks from its own threads.  Two population runs at once from two threads would
    share one display.)"""

    bar = None
    counter = None


_ACTIVE = _Active()


def _note(text: str) -> None:
    """``ctx.progress``: a family's report from inside its compiled run (the status line's note)."""
    bar = _ACTIVE.bar
    if bar is not None:
        bar.note(text)


def _run_started(run_index) -> None:
    """Host side of the per-run ``jax.debug.callback``: run ``run_index`` starts, so the runs before it
    on its device are done.  Runs are split over devices in contiguous slices of ``per_device``."""
    bar, counter = _ACTIVE.bar, _ACTIVE.counter
    if bar is None or counter is None:
        return
    c = int(np.asarray(run_index))
    per_device = counter["per_device"]
    dev, local = divmod(c, per_device)
    with counter["lock"]:
        counter["done"][dev] = max(counter["done"].get(dev, 0), local)
        done = sum(counter["done"].values())
    bar.update(min(done, bar.total - 1))  # 100 % only once the program has returned


def run_population(target, spec: MethodSpec, options: dict, *, keys: RunKeys, seed_id, num_chains: int,
                   num_warmup: int, num_samples: int, init=None, progress: bool = False,
                   devices=None) -> Result:
    """Run ``num_chains`` independent runs of a population method and assemble the Result."""
    label = f"{spec.name}/{target.name}"
    dtype = jnp.result_type(float)

    # evaluations made while planning, outside the run's program (the initial-point search)
    start_evals = {"lp": 0, "grad": 0}

    def initial_points(key, n, gradient_based):
        x, attempts = find_initial_points(target, key, n, gradient_based, dtype)
        evals = search_evaluations(attempts)
        start_evals["lp"] += evals
        start_evals["grad"] += evals if gradient_based else 0
        return x

    # The whole population run is one compiled program: the display counts finished runs (a callback
    # compiled in only when progress is on) and shows what the family reports from inside a run.
    bar = Progress(progress, num_chains, 0, label, unit="runs", what="runs")
    ctx = PopulationContext(num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples, init=init,
                            progress=_note, show_progress=bool(progress),
                            initial_points=initial_points,
                            init_key=keys.init, label=label, method=spec.name)
    plan = spec.population(target, ctx, **options)
    shard_devices = sharding.resolve_devices(devices, num_chains, what="runs")
    num_devices = 1 if shard_devices is None else len(shard_devices)
    dyn, static = eqx.partition(target, eqx.is_array)
    run_keys_ = batch_keys(keys.run, num_chains)
    ids = jnp.arange(num_chains)
    inputs = tuple(plan.inputs)
    num_traces = [0]

    shared = plan.shared

    def run_all(dyn, sh, ks, ids, *inputs):
        num_traces[0] += 1
        tgt = eqx.combine(dyn, static)
        kw = {} if sh is None else {"shared": sh}
        # one run at a time: a run's arithmetic then depends neither on how many runs there are nor on
        # the devices (XLA vectorizes another batch width differently, and adaptive schedules amplify
        # round-off), and only one run's population is in memory

        def one(a):
            if progress:  # no callback in the program when progress is off
                jax.debug.callback(_run_started, a[1])
            return plan.run(a[0], a[1], tgt, *a[2:], **kw)

        return jax.lax.map(one, (ks, ids) + inputs)

    # Always through shard_map (a one-device mesh when not sharded): XLA compiles the per-run program
    # the same way for every number of devices, so a sharded run equals a single-device one.
    mesh = sharding.make_mesh(shard_devices if shard_devices is not None else jax.devices()[:1])
    prog = sharding.shard_batch(run_all, mesh, (None, None, 0, 0) + (0,) * len(inputs), 0)
    dyn = sharding.put(dyn, mesh, None)
    shared = sharding.put(shared, mesh, None)
    run_keys_, ids = sharding.put(run_keys_, mesh, 0), sharding.put(ids, mesh, 0)
    inputs = tuple(sharding.put(a, mesh, 0) for a in inputs)

    # Everything a plan closes over is a function of these (options, the target's static part and
    # shapes, run lengths, progress); per-run data travel in ``inputs``.
    cache_key = program_key(spec.name, id(spec.population), options, static, dyn, num_chains, num_warmup,
                            num_samples, num_devices, bool(progress), init is None,
                            tuple((a.shape, str(a.dtype)) for a in inputs),
                            jax.tree.structure(shared), tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(shared)),
                            dtype)
    t0 = time.perf_counter()
    compiled = PROGRAMS.get(cache_key)
    if compiled is None:
        bar.compiling()
        compiled = jax.jit(prog).lower(dyn, shared, run_keys_, ids, *inputs).compile()
        PROGRAMS.put(cache_key, compiled)
        t1 = time.perf_counter()
        bar.compiled(t1 - t0)
    else:
        t1 = time.perf_counter()
        bar.reused()
    bar.message(f"running {num_chains} run{'s' if num_chains != 1 else ''} as one compiled program ...")
    bar.start(0)
    _ACTIVE.bar, _ACTIVE.counter = bar, {"per_device": num_chains // num_devices, "done": {},
                                         "lock": threading.Lock()}
    try:
        out = compiled(dyn, shared, run_keys_, ids, *inputs)
        out = jax.block_until_ready(out)
    finally:
        _ACTIVE.bar = _ACTIVE.counter = None
    t2 = time.perf_counter()
    bar.update(num_chains)
    bar.close()
    res = plan.finish(out)
    samples = np.asarray(res.samples)
    warnings = list(res.warnings or [])
    n_bad = int(np.sum(~np.all(np.isfinite(samples.reshape(samples.shape[:2] + (-1,))), axis=-1)))
    if n_bad:  # never a silent NaN result
        warnings.append({"code": "nonfinite_draws", "value": n_bad,
                         "message": f"{n_bad} returned draws of {spec.name!r} are not finite (the population "
                                    "diverged: lower the step size or check the target)"})
    cost = make_cost(num_logdensity_evals=int(res.num_logdensity_evals) + start_evals["lp"],
                     num_grad_evals=int(res.num_grad_evals) + start_evals["grad"],
                     compile_seconds=t1 - t0, sampling_seconds=t2 - t1, num_compilations=num_traces[0],
                     num_devices=num_devices, num_model_evals=None if res.num_model_evals is None
                     else int(res.num_model_evals))
    config = {"method": spec.name, "options": options, "target": target_id(target), "seed": seed_id,
              "num_chains": num_chains, "num_warmup": num_warmup, "num_samples": num_samples,
              "dtype": str(dtype), "init": None if init is None else array_digest(init), **(res.config or {})}
    return finish_result(target, spec.name, samples, dict(res.stats), cost, config, log_Z=res.log_Z,
                         log_Z_se=res.log_Z_se, log_weights=res.log_weights, extra=dict(res.extra or {}),
                         extra_warnings=warnings)

