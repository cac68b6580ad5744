"""Per-step overhead of the run engine (``samplax.sample``) against a bare jitted ``lax.scan`` over the same kernel.

For each target and kernel (NUTS, HMC, MALA with a fixed step size and the
identity metric), 4 chains, float64, no warm-up, the same initial points:

* **bare**: one ``jax.jit`` program, ``lax.scan`` over ``N`` steps with the 4
  chains under one ``vmap`` (as the engine runs 4 chains: one block), returning the
  positions; the time is the call plus the copy of the draws to the host.  The key
  of chain ``c`` at step ``i`` is the engine's,
  ``fold_in(fold_in(fold_in(key(seed), 1), c), i)``, so both follow the same
  trajectories (NUTS trees have the same sizes) and the draws are checked equal.
* **engine, kernel=**: ``samplax.sample(target, kernel=samplax.mcmc.<k>(logp, eps),
  num_warmup=0, num_samples=N, num_chains=4, init=x0)`` (a user kernel runs without
  adaptation); the time is ``result.cost["sampling_seconds"]`` (the host loop over
  chunks after compilation: dispatch, stats, counters, copies).
* **engine, method=**: ``samplax.sample(target, "<k>", num_warmup=0,
  adapt_step_size=False, adapt_mass_matrix=False, step_size=eps, ...)``: the
  registered method with its windowed adapter frozen (identity metric).

each with the engine's default chunking (``chunk_size=None``: about 10 chunks of at
most 1000 steps) and with one chunk (``chunk_size=N``).  Compilation is excluded
everywhere; each configuration runs ``--repeats`` times (interleaved, so that other
jobs on a shared machine slow all of them alike) and the fastest is kept.  Step
sizes and initial points come from a short adaptive pilot run (identity metric).

``--profile`` adds bare variants that add the engine's pieces one at a time
(stats and counters, the ``lax.cond`` on the adapter, chunked dispatch from a host
loop) to show where the engine's extra time goes.

    python benchmarks/engine_overhead.py [--targets std_gaussian,german_credit --kernels nuts,hmc,mala
                                          --repeats 7 --profile --out benchmarks/results/engine_overhead.md]
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import samplax  # noqa: E402
from samplax.adaptation.windowed import window_adapter  # noqa: E402
from samplax.run.kernel import kernel_method  # noqa: E402

CHAINS = 4
SEED = 0
#: steps per run, per (target, kernel): each bare run takes about 0.3-2 s on an idle core
STEPS = {("std_gaussian", "nuts"): 4000, ("std_gaussian", "hmc"): 4000, ("std_gaussian", "mala"): 20000,
         ("german_credit", "nuts"): 300, ("german_credit", "hmc"): 1000, ("german_credit", "mala"): 5000,
         ("correlated_gaussian", "nuts"): 2000, ("correlated_gaussian", "hmc"): 4000,
         ("correlated_gaussian", "mala"): 20000}
HMC_STEPS = 10
#: seconds of sleep before each timed run (on a shared machine the run after a busy one is often slower)
PAUSE = 0.3
MAX_TREE_DEPTH = 10


def load():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return ["?", "?", "?"]


# ------------------------------------------------------------------ set-up
def pilot(target, kernel):
    """Adapted step size (identity metric; median over chains) and the chains' last draws."""
    opts = dict(adapt_mass_matrix=False)
    if kernel == "hmc":
        opts["num_integration_steps"] = HMC_STEPS
    r = samplax.sample(target, kernel, seed=SEED + 100, num_chains=CHAINS, num_warmup=500, num_samples=1,
                       progress=False, **opts)
    eps = float(np.median(r.extra["final_step_size"]))
    x0 = np.asarray(r.samples[:, -1]).reshape(CHAINS, -1)
    return float(f"{eps:.3g}"), x0


def make_kernel(kernel, logp, eps):
    if kernel == "nuts":
        return samplax.mcmc.nuts(logp, eps, max_tree_depth=MAX_TREE_DEPTH)
    if kernel == "hmc":
        return samplax.mcmc.hmc(logp, eps, num_integration_steps=HMC_STEPS)
    return samplax.mcmc.mala(logp, eps)


def method_options(kernel, eps):
    o = dict(adapt_step_size=False, adapt_mass_matrix=False, step_size=eps)
    if kernel == "nuts":
        o["max_tree_depth"] = MAX_TREE_DEPTH
    if kernel == "hmc":
        o["num_integration_steps"] = HMC_STEPS
    return o


def engine_run_key(seed=SEED):
    """The engine's run key of a chain method: ``fold_in(key(seed), 1)``."""
    return jax.random.fold_in(jax.random.key(seed), 1)


class _Clock:
    """Stands in for the ``time`` module of ``samplax.run.chains`` during an engine run: its
    ``perf_counter`` is the real one, and it notes the process CPU time at every reading, so that the
    CPU time of exactly the interval the engine reports as ``sampling_seconds`` can be found
    (the readings whose difference is ``sampling_seconds``).  CPU time is what other jobs on a
    shared machine disturb least.  Nothing of samplax is changed."""

    def __init__(self):
        self.log = []

    def perf_counter(self):
        c = time.process_time()
        w = time.perf_counter()
        self.log.append((w, c))
        return w

    def __getattr__(self, name):
        return getattr(time, name)

    def cpu_of(self, seconds):
        for i, (wi, ci) in enumerate(self.log):
            for wj, cj in self.log[i + 1:]:
                if wj - wi == seconds:
                    return cj - ci
        return float("nan")


def sample_with_cpu(*args, **kwargs):
    """``samplax.sample`` and the process CPU time of its ``sampling_seconds`` interval."""
    import samplax.run.chains as chains_module

    clock = _Clock()
    chains_module.time = clock
    try:
        r = samplax.sample(*args, **kwargs)
    finally:
        chains_module.time = time
    return r, clock.cpu_of(r.cost["sampling_seconds"])


# ------------------------------------------------------------------ bare programs
def bare_program(kern, n_steps, *, variant="plain", chunk=None, low_level=None):
    """``jit(lax.scan)`` over ``chunk or n_steps`` steps of ``kern`` on 4 chains (one ``vmap``).

    variant ``plain``: the positions only.  ``stats``: also the per-step stats the engine records for
    a user kernel (lp and the info fields) and its evaluation counters.  ``stats+cond``: ``stats`` plus
    an identity ``lax.cond`` on a per-chain scalar.  ``params``: the low-level kernel
    (``low_level = (step, adapter)``) with its params read from the adapter's state every step, as
    the registered method runs it (numbers at run time instead of constants).  ``params+cond``:
    ``params`` plus the engine's ``lax.cond(i < num_warmup, adapter.update, identity, ...)`` on that
    state (num_warmup = 0).
    """
    length = chunk or n_steps
    stat_fields = ("acceptance_rate", "is_divergent", "energy", "num_integration_steps", "tree_depth")

    def run(states, k_run, start, extra):
        chain_keys = jax.vmap(lambda c: jax.random.fold_in(k_run, c))(jnp.arange(CHAINS))

        def one(carry, i):
            states, extra = carry
            keys = jax.vmap(lambda kc: jax.random.fold_in(kc, i))(chain_keys)
            if variant.startswith("params"):
                step, adapter = low_level
                new, info = jax.vmap(step)(keys, states, adapter.params(extra))
                if variant == "params+cond":
                    extra = jax.lax.cond(i < 0, adapter.update, lambda a, *_: a, extra, i, new, info)
                return (new, extra), new.position
            new, info = jax.vmap(kern.step)(keys, states)
            if variant == "plain":
                return (new, extra), new.position
            astate, n_lp, n_grad = extra
            if variant == "stats+cond":
                astate = jax.lax.cond(i < 0, lambda a: a + 1.0, lambda a: a, astate)
            stats = {"lp": new.logdensity}
            stats.update({f: getattr(info, f) for f in stat_fields if hasattr(info, f)})
            extra = (astate, n_lp + info.num_logdensity_evals, n_grad + info.num_grad_evals)
            return (new, extra), (new.position, stats)

        return jax.lax.scan(one, (states, extra), start + jnp.arange(length, dtype=jnp.int32))

    return jax.jit(run)


def low_level_kernel(kernel, logp):
    """The kernel's ``build_kernel`` step and params class (what the registered method runs)."""
    if kernel == "nuts":
        return samplax.mcmc.nuts.build_kernel(logp, MAX_TREE_DEPTH), samplax.mcmc.nuts.NUTSParams
    if kernel == "hmc":
        return samplax.mcmc.hmc.build_kernel(logp, HMC_STEPS), samplax.mcmc.hmc.HMCParams
    return samplax.mcmc.mala.build_kernel(logp), samplax.mcmc.mala.MALAParams


def bare_extra():
    z = jnp.zeros((CHAINS,), jnp.int32)
    return (jnp.ones((CHAINS,)), z, z)


def time_bare(compiled, states0, k_run, n_steps, chunk=None, extra=None):
    """Seconds for the whole run incl. copying draws (and stats) to the host; returns (seconds, draws)."""
    extra = bare_extra() if extra is None else extra
    if chunk is None:
        t0 = time.perf_counter()
        (_, _), out = compiled(states0, k_run, jnp.asarray(0, jnp.int32), extra)
        out = jax.tree.map(np.asarray, out)
        dt = time.perf_counter() - t0
        pos = out if isinstance(out, np.ndarray) else out[0]
        return dt, np.swapaxes(pos, 0, 1)
    # chunked host loop with asynchronous dispatch, as the engine's
    n_chunks = math.ceil(n_steps / chunk)
    draws = np.zeros((CHAINS, n_chunks * chunk) + states0.position.shape[1:])
    t0 = time.perf_counter()
    pending = compiled(states0, k_run, jnp.asarray(0, jnp.int32), extra)
    for c in range(n_chunks):
        (states, ex), out = pending
        if c + 1 < n_chunks:
            pending = compiled(states, k_run, jnp.asarray((c + 1) * chunk, jnp.int32), ex)
        out = jax.tree.map(np.asarray, out)
        pos = out if isinstance(out, np.ndarray) else out[0]
        draws[:, c * chunk:(c + 1) * chunk] = np.swapaxes(pos, 0, 1)
    dt = time.perf_counter() - t0
    return dt, draws[:, :n_steps]


def grab_engine_program(target, x0):
    """The chunk program of the engine's last run, which compiled (so it is the newest entry of the
    program cache), with its inputs: to time the program without the engine's host loop."""
    import equinox as eqx

    from samplax.run.cache import PROGRAMS
    from samplax.run.keys import run_keys

    init_jit, compiled = list(PROGRAMS._entries.values())[-1]
    keys = run_keys(jax.random.key(SEED), 1)
    dyn_target, _ = eqx.partition(target, eqx.is_array)
    ids = jnp.arange(CHAINS)
    states, astate, _ = init_jit(dyn_target, jnp.asarray(x0), keys.init, keys.adapt, ids)
    zeros = jnp.zeros((CHAINS,), jnp.int32)
    return compiled, (dyn_target, (states, astate, zeros, zeros), jnp.asarray(0, jnp.int32), keys.run, ids)


def time_engine_program(compiled, args):
    """One call of the engine's one-chunk program plus the copy of its draws and stats (no host loop)."""
    t0 = time.perf_counter()
    _, (pos, stats) = compiled(*args)
    pos = np.asarray(pos)
    jax.tree.map(np.asarray, stats)
    dt = time.perf_counter() - t0
    return dt, np.swapaxes(pos, 0, 1)


def default_chunk(n):
    return int(min(max(math.ceil(n / 10), 10), 1000))


# ------------------------------------------------------------------ one (target, kernel)
def bench(name, kernel, repeats, n_steps, profile, with_method):
    target = samplax.targets.get(name)
    logp = target.flat_logdensity()
    eps, x0 = pilot(target, kernel)
    kern = make_kernel(kernel, logp, eps)
    k_run = engine_run_key()
    states0 = jax.jit(jax.vmap(kern.init))(jax.random.split(jax.random.key(0), CHAINS), jnp.asarray(x0))
    extra = bare_extra()
    zero = jnp.asarray(0, jnp.int32)
    chunk_d = default_chunk(n_steps)

    # bare programs (compiled once, ahead of time): name -> (program, chunk or None, extra carry)
    def compiled(variant="plain", chunk=None, low_level=None, ex=extra):
        prog = bare_program(kern, n_steps, variant=variant, chunk=chunk, low_level=low_level)
        return prog.lower(states0, k_run, zero, ex).compile(), chunk, ex

    bare = {"bare": compiled()}
    if profile:
        bare["bare+stats"] = compiled("stats")
        bare["bare+stats+cond"] = compiled("stats+cond")
        bare[f"bare, chunks of {chunk_d}"] = compiled(chunk=chunk_d)
        bare[f"bare+stats+cond, chunks of {chunk_d}"] = compiled("stats+cond", chunk=chunk_d)
        step_fn, params_cls = low_level_kernel(kernel, logp)
        adapter = window_adapter(logp, params_cls, target.dim, 0, target_accept=0.8, adapt_step_size=False,
                                 adapt_mass_matrix=False, initial_step_size=eps, num_chains=CHAINS)
        astate0, _ = jax.jit(adapter.init)(jax.random.split(jax.random.key(2), CHAINS), states0)
        for v in ("params", "params+cond"):
            bare[f"bare+{v}"] = compiled(v, low_level=(step_fn, adapter), ex=astate0)

    # The engine's kernel= path is ``kernel_method(kernel, event_shape)`` run as a chain method
    # (samplax.sample does exactly this).  samplax.sample(kernel=...) builds that spec anew on every
    # call, so every call compiles; the timed repeats reuse one spec (its program is cached) and the
    # warm-up round checks that a real kernel= call gives the same draws.
    spec = kernel_method(kern, target.event_shape)

    def run_engine(how, chunk_size, real_kernel_arg=False):
        common = dict(seed=SEED, num_chains=CHAINS, num_warmup=0, num_samples=n_steps, init=x0, progress=False,
                      chunk_size=chunk_size)
        if real_kernel_arg:
            r, c = sample_with_cpu(target, kernel=make_kernel(kernel, logp, eps), **common)
        elif how == "kernel":
            r, c = sample_with_cpu(target, spec, **common)
        else:
            r, c = sample_with_cpu(target, kernel, **common, **method_options(kernel, eps))
        engine_cpu[(how, chunk_size)] = c
        return r.cost["sampling_seconds"], np.asarray(r.samples).reshape(CHAINS, n_steps, -1), r

    engine_cpu = {}
    engine_cfgs = [("kernel", None), ("kernel", n_steps)]
    if with_method:
        engine_cfgs += [("method", None), ("method", n_steps)]
    ref = time_bare(bare["bare"][0], states0, k_run, n_steps)[1]
    mismatch = {}
    grads = None
    runs = {}
    for k, (prog, chunk, ex) in bare.items():
        runs[k] = (lambda prog=prog, chunk=chunk, ex=ex: time_bare(prog, states0, k_run, n_steps, chunk, ex))
    for cfg in engine_cfgs:
        runs[cfg] = (lambda cfg=cfg: run_engine(*cfg)[:2])
    # warm-up round: compiles everything, checks samplax.sample(kernel=...) itself
    compile_s = {}
    for cfg in engine_cfgs:
        _, draws, r = run_engine(*cfg)
        compile_s[cfg] = r.cost["compile_seconds"]
        if profile and cfg[1] == n_steps and r.cost["num_compilations"] == 1:  # newest in the cache
            prog_args = grab_engine_program(target, x0)
            runs[f"engine {cfg[0]}= program alone"] = (lambda a=prog_args: time_engine_program(*a))
        if cfg[0] == "kernel":
            grads = r.cost["num_grad_evals"] - CHAINS  # less the initial points' gradients
            _, draws_k, r_k = run_engine(*cfg, real_kernel_arg=True)
            mismatch[("kernel=", cfg[1])] = float(np.max(np.abs(draws_k - ref)))
    for k in runs:
        runs[k]()
    times = {k: [] for k in runs}
    cpu = {k: [] for k in runs}  # process CPU time of the program calls / of the engine's sampling_seconds
    order = list(runs)
    rng = np.random.default_rng(0)
    for rep in range(repeats):
        rng.shuffle(order)  # no configuration always runs right after another
        for k in order:
            time.sleep(PAUSE)  # let the scheduler forget the previous run's CPU use
            c0 = time.process_time()
            dt, draws = runs[k]()
            cpu[k].append(time.process_time() - c0 if isinstance(k, str) else engine_cpu[k])
            times[k].append(dt)
            mismatch[k] = max(mismatch.get(k, 0.0), float(np.max(np.abs(draws - ref))))
        print(f"  rep {rep}: " + " ".join(f"{_label(k, n_steps)}={times[k][-1]:.3f}" for k in runs)
              + f"  load={' '.join(load())}", flush=True)
    best = {k: min(v) for k, v in times.items()}
    median = {k: float(np.median(v)) for k, v in times.items()}
    cpu_best = {k: min(v) for k, v in cpu.items()}
    return dict(target=name, kernel=kernel, eps=eps, n=n_steps, chunk_d=chunk_d, best=best, median=median,
                cpu_best=cpu_best,
                times=times, mismatch=mismatch, grads=grads, dim=target.dim, compile_s=compile_s)


def _label(k, n):
    if isinstance(k, str):
        return k
    how, chunk = k
    return f"{how}/{'default' if chunk is None else 'one'}"


# ------------------------------------------------------------------ report
def _ratio_table(rows, args, stat):
    hows = ("kernel", "method") if args.method else ("kernel",)
    cols = ["target (d)", "kernel", "steps", "bare s", "bare us/step"]
    cols += [f"{h}= {c}" for h in hows for c in ("default chunks", "one chunk")]
    cols += ["engine - bare, us/step (kernel=, default chunks)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        t = r[stat]
        b, n = t["bare"], r["n"]
        cells = [f"{t[(h, c)] / b:.2f}x ({t[(h, c)]:.3f} s)" for h in hows for c in (None, n)]
        over = (t[("kernel", None)] - b) / n * 1e6
        lines.append(f"| {r['target']} ({r['dim']}) | {r['kernel']} | {n} | {b:.3f} | {b / n * 1e6:.1f} | "
                     + " | ".join(cells) + f" | {over:+.1f} |")
    return lines


def report(rows, args, loads):
    cpu = ""
    try:
        cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")][0]
    except (OSError, IndexError):
        pass
    lines = [f"machine: {os.cpu_count()} CPUs ({cpu}), jax {jax.__version__}, backend {jax.default_backend()}, "
             f"float64; load average (1/5/15 min) at the start: {' / '.join(loads[0])}, after each "
             "(target, kernel): " + "; ".join(" / ".join(x) for x in loads[1:]),
             f"{CHAINS} chains, no warm-up, {args.repeats} timed repeats per configuration in shuffled order "
             f"({PAUSE} s pause before each), compile excluded; ratio = engine `sampling_seconds` / bare wall time",
             "", "Fastest of the repeats:", ""]
    lines += _ratio_table(rows, args, "best")
    lines += ["", "Median of the repeats (for the noise):", ""]
    lines += _ratio_table(rows, args, "median")
    lines += ["", "Process CPU time, fastest of the repeats (engine: CPU time of its `sampling_seconds` interval, "
              "all threads; bare: of the call and copy): what other jobs disturb least, but blind to idle waits:",
              ""]
    lines += _ratio_table(rows, args, "cpu_best")
    lines += ["", "Set-up and checks (max |draws - bare draws| over all repeats; 0 = bit for bit):", "",
              "| target | kernel | step size | grads/step/chain | kernel= (real call) | kernel= (spec, timed) | "
              "method= | engine compile s (kernel=, default chunks) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mm = r["mismatch"]

        def worst(pred):
            v = [x for k, x in mm.items() if not isinstance(k, str) and pred(k)]
            return f"{max(v):.1g}" if v else "-"

        lines.append(f"| {r['target']} | {r['kernel']} | {r['eps']:g} | {r['grads'] / (r['n'] * CHAINS):.1f} | "
                     f"{worst(lambda k: k[0] == 'kernel=')} | {worst(lambda k: k[0] == 'kernel')} | "
                     f"{worst(lambda k: k[0] == 'method')} | {r['compile_s'][('kernel', None)]:.1f} |")
    if args.profile:
        lines += ["", "Bare variants with the engine's pieces added, and the engine's one-chunk program called alone; "
                  "us/step: fastest wall / median wall / fastest process CPU time (ratio of fastest wall to bare's):",
                  ""]
        for r in rows:
            b, n = r["best"]["bare"], r["n"]
            parts = []
            for k, v in r["best"].items():
                c = r["cpu_best"].get(k)
                parts.append(f"{_label(k, n)} {v / n * 1e6:.1f} / {r['median'][k] / n * 1e6:.1f}"
                             + (f" / {c / n * 1e6:.1f}" if c is not None else "") + f" ({v / b:.2f}x)")
            lines.append(f"* {r['target']} / {r['kernel']} (default chunk {r['chunk_d']}): " + "; ".join(parts))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="std_gaussian,german_credit")
    ap.add_argument("--kernels", default="nuts,hmc,mala")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default: per target and kernel)")
    ap.add_argument("--no-method", dest="method", action="store_false",
                    help="skip the registered-method runs (method=..., adaptation off)")
    ap.add_argument("--profile", action="store_true", help="also time bare variants with the engine's pieces")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    loads = [load()]
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    rows = []
    for name in args.targets.split(","):
        for kernel in args.kernels.split(","):
            n = args.steps or STEPS.get((name, kernel), 2000)
            print(f"{name} / {kernel}: {n} steps", flush=True)
            rows.append(bench(name, kernel, args.repeats, n, args.profile, args.method))
            loads.append(load())
    text = report(rows, args, loads)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
