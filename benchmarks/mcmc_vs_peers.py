"""samplax ``auto`` and NUTS vs BlackJAX NUTS (window adaptation) vs NumPyro NUTS vs nutpie, in one process.

Same targets, same number of chains / warm-up / draws, float64, CPU.  For
samplax ``auto`` ``--warmup`` is the most warm-up steps it may take (it stops
early when its convergence rule holds).  For each (library, target, seed) we
report: min bulk ESS over the reported quantities, ESS per gradient evaluation
(every gradient counted, warm-up included), ESS per second (run time after
compilation, warm-up included), compile seconds, and accuracy: max |z| over the
posterior means AND standard deviations against ground truth,
``z = |estimate - truth| / sqrt(MCSE^2 + se_truth^2)``.  nutpie (``nutpie``: its defaults, a diagonal
metric from draws and gradients; ``nutpie-lowrank``: ``low_rank_modified_mass_matrix=True``) samples the
same jitted JAX log-density and gradient through ``nutpie.compiled_pyfunc.from_pyfunc`` (its compiled Rust
sampler calls back into Python once per gradient), ``cores=1``, from the same initial points; its gradients are
the leapfrog steps of its warm-up and sampling draws, its run time the wall time of ``nutpie.sample`` (the JAX
function compiled before).  The status of a samplax
``auto`` run is the bench's (``samplax.bench.harness``): "passed" when max |z| <= 5 and
min bulk ESS >= 100 (below that the MCSE, hence z, cannot be trusted), else "failed", with " (warned)" appended when the run raised warnings (a warning
never turns a failed check into a pass).  Ratios are
samplax / peer, per target the median over seeds, then the median over targets.
Usage:

    python benchmarks/mcmc_vs_peers.py [--chains 4 --warmup 1000 --samples 1000 --seeds 0,1 --targets a,b
                                        --libs auto,nuts,blackjax,numpyro,nutpie,nutpie-lowrank --suite standard]
"""
from __future__ import annotations

import argparse
import re
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import samplax  # noqa: E402
from samplax.diagnostics import ess_bulk, mcse_mean, mcse_sd  # noqa: E402
from samplax.postprocess import quantities_of  # noqa: E402

DEFAULT_TARGETS = ["std_gaussian", "correlated_gaussian", "ill_conditioned_gaussian", "banana", "funnel",
                   "eight_schools", "german_credit"]
#: posteriordb posteriors with Stan-oracle-checked model programs (eight_schools is above)
PDB_TARGETS = ["pdb:arK-arK", "pdb:arma-arma11", "pdb:diamonds-diamonds", "pdb:earnings-logearn_interaction",
               "pdb:garch-garch11", "pdb:gp_pois_regr-gp_pois_regr", "pdb:gp_pois_regr-gp_regr",
               "pdb:hmm_example-hmm_example", "pdb:kidiq-kidscore_interaction", "pdb:kidiq-kidscore_momhsiq",
               "pdb:kilpisjarvi_mod-kilpisjarvi", "pdb:low_dim_gauss_mix-low_dim_gauss_mix",
               "pdb:mesquite-logmesquite_logvas", "pdb:nes2000-nes", "pdb:sblrc-blr"]


def _score(target, draws):
    """draws: [chains, n, d] unconstrained -> (min ESS, max |z| of means and sds, sd of quantity 0)."""
    q = quantities_of(target, np.asarray(draws))
    ess = ess_bulk(q)
    gt = target.ground_truth()
    z = float("nan")
    if gt is not None and gt.mean is not None:
        se = np.zeros_like(gt.mean) if gt.mean_se is None else np.asarray(gt.mean_se)
        z = float(np.max(np.abs(q.mean(axis=(0, 1)) - gt.mean) / np.sqrt(mcse_mean(q) ** 2 + se**2)))
        if gt.std is not None:
            sse = np.zeros_like(gt.std) if gt.std_se is None else np.asarray(gt.std_se)
            sd = q.reshape(-1, q.shape[-1]).std(axis=0, ddof=1)
            z = max(z, float(np.max(np.abs(sd - gt.std) / np.sqrt(mcse_sd(q) ** 2 + sse**2))))
    sd0 = float(q[..., 0].std(ddof=1))
    return float(np.min(ess)), z, sd0


#: timed repetitions of each run (same seed, same work); run time = the fastest (robust on a shared machine)
REPEATS = 1


def _run_samplax(method, target, chains, warmup, samples, seed):
    r = samplax.sample(target, method, seed=seed, num_chains=chains, num_warmup=warmup, num_samples=samples,
                       progress=False)
    for _ in range(REPEATS - 1):  # compiled programs are cached: these only re-run
        again = samplax.sample(target, method, seed=seed, num_chains=chains, num_warmup=warmup,
                               num_samples=samples, progress=False)
        r.cost["sampling_seconds"] = min(r.cost["sampling_seconds"], again.cost["sampling_seconds"])
    ess, z, sd0 = _score(target, r.samples.reshape(chains, samples, -1))
    # the cost is gradient evaluations; log-density-only evaluations (auto's coordinate-wise slice fallback)
    # count as one gradient each, which overstates their cost
    evals = max(r.cost["num_grad_evals"], r.cost["num_logdensity_evals"] or 0)
    return dict(ess=ess, z=z, sd0=sd0, grads=evals, run_s=r.cost["sampling_seconds"],
                compile_s=r.cost["compile_seconds"], compilations=r.cost["num_compilations"],
                warnings=sorted({w["code"] for w in r.warnings}), warmup_used=r.extra.get("warmup_steps", warmup))


def run_samplax(target, chains, warmup, samples, seed):
    return _run_samplax("nuts", target, chains, warmup, samples, seed)


def run_auto(target, chains, warmup, samples, seed):
    return _run_samplax("auto", target, chains, warmup, samples, seed)


def _init_points(target, chains, seed):
    keys = jax.random.split(jax.random.key(seed + 1000), chains)
    return jax.vmap(lambda k: jnp.reshape(target.initial_point(k), (-1,)))(keys)


def run_blackjax(target, chains, warmup, samples, seed):
    import blackjax

    shape = tuple(target.event_shape)

    def lp(x):
        return target.logdensity(jnp.reshape(x, shape))

    def one_chain(key, x0):
        k_warm, k_samp = jax.random.split(key)
        wa = blackjax.window_adaptation(blackjax.nuts, lp, target_acceptance_rate=0.8)
        (state, params), winfo = wa.run(k_warm, x0, num_steps=warmup)
        kernel = blackjax.nuts(lp, **params)

        def body(s, k):
            s, info = kernel.step(k, s)
            return s, (s.position, info.num_integration_steps)

        _, (xs, n) = jax.lax.scan(body, state, jax.random.split(k_samp, samples))
        return xs, jnp.sum(n) + jnp.sum(winfo.info.num_integration_steps)

    run = jax.jit(jax.vmap(one_chain))
    x0 = _init_points(target, chains, seed)
    keys = jax.random.split(jax.random.key(seed), chains)
    t0 = time.perf_counter()
    jax.block_until_ready(run(keys, x0))
    first = time.perf_counter() - t0
    keys = jax.random.split(jax.random.key(seed + 1), chains)
    t0 = time.perf_counter()
    xs, n = jax.block_until_ready(run(keys, x0))
    second = time.perf_counter() - t0
    for _ in range(REPEATS - 1):
        t0 = time.perf_counter()
        jax.block_until_ready(run(keys, x0))
        second = min(second, time.perf_counter() - t0)
    ess, z, sd0 = _score(target, xs)
    return dict(ess=ess, z=z, sd0=sd0, grads=int(np.sum(n)), run_s=second, compile_s=max(first - second, 0.0),
                compilations=1)


def run_numpyro(target, chains, warmup, samples, seed):
    from numpyro.infer import MCMC, NUTS

    shape = tuple(target.event_shape)

    def potential(x):
        return -target.logdensity(jnp.reshape(x, shape))

    x0 = _init_points(target, chains, seed)
    res = []
    for rep in range(2):
        mcmc = MCMC(NUTS(potential_fn=potential, target_accept_prob=0.8), num_warmup=warmup,
                    num_samples=samples, num_chains=chains, chain_method="vectorized", progress_bar=False)
        t0 = time.perf_counter()
        mcmc.warmup(jax.random.key(seed + rep), init_params=x0, collect_warmup=True, extra_fields=("num_steps",))
        n_warm = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
        mcmc.run(jax.random.key(seed + 10 + rep), extra_fields=("num_steps",))
        xs = mcmc.get_samples(group_by_chain=True)
        jax.block_until_ready(xs)
        res.append((time.perf_counter() - t0, xs, n_warm + int(np.sum(mcmc.get_extra_fields()["num_steps"]))))
    (first, _, _), (second, xs, n) = res
    ess, z, sd0 = _score(target, xs)
    # NumPyro re-traces per MCMC object; 'first - second' under-states compile time when both compile.
    return dict(ess=ess, z=z, sd0=sd0, grads=n, run_s=second, compile_s=max(first - second, 0.0), compilations=2)


def run_nutpie(target, chains, warmup, samples, seed, low_rank=False):
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    shape = tuple(target.event_shape)
    dim = int(np.prod(shape))
    value_and_grad = jax.jit(jax.value_and_grad(lambda x: target.logdensity(jnp.reshape(x, shape))))
    x0 = np.asarray(_init_points(target, chains, seed), np.float64)
    t0 = time.perf_counter()
    jax.block_until_ready(value_and_grad(jnp.asarray(x0[0])))
    compile_s = time.perf_counter() - t0

    def make_logp():
        def logp(x):
            v, g = value_and_grad(x)
            return float(v), np.asarray(g, np.float64)
        return logp

    def make_expand(seed1, seed2, chain):
        return lambda x: {"x": np.array(x, np.float64)}

    starts = iter(np.concatenate([x0] * 4))  # nutpie asks once per chain (more on a retry)

    model = from_pyfunc(dim, make_logp, make_expand, [np.dtype(np.float64)], [(dim,)], ["x"],
                        make_initial_point_fn=lambda _seed: next(starts))
    t0 = time.perf_counter()
    idata = nutpie.sample(model, draws=samples, tune=warmup, chains=chains, seed=seed, cores=1, progress_bar=False,
                          save_warmup=True, low_rank_modified_mass_matrix=low_rank)
    run_s = time.perf_counter() - t0
    grads = int(idata.sample_stats["n_steps"].sum()) + int(idata.warmup_sample_stats["n_steps"].sum())
    xs = np.asarray(idata.posterior["x"].values)
    ess, z, sd0 = _score(target, xs)
    div = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
    return dict(ess=ess, z=z, sd0=sd0, grads=grads, run_s=run_s, compile_s=compile_s, compilations=1,
                warnings=["divergences"] if div else [])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--suite", default="standard", help="standard: DEFAULT_TARGETS + PDB_TARGETS; base: DEFAULT_TARGETS")
    ap.add_argument("--targets", default=None)
    ap.add_argument("--libs", default="auto,nuts,blackjax,numpyro")
    ap.add_argument("--out", default=None, help="write the markdown tables to this file")
    ap.add_argument("--repeats", type=int, default=1,
                    help="time each samplax/BlackJAX run this many times (same work) and keep the fastest")
    ap.add_argument("--from-logs", nargs="+", default=None, metavar="LOG",
                    help="no runs: rebuild the tables from the per-run lines this script printed (several logs, e.g. "
                    "of invocations on disjoint --targets, are merged; --libs and --seeds say which to use)")
    args = ap.parse_args()
    global REPEATS
    REPEATS = max(1, args.repeats)
    runners = {"auto": run_auto, "nuts": run_samplax, "blackjax": run_blackjax, "numpyro": run_numpyro,
               "nutpie": run_nutpie, "nutpie-lowrank": lambda *a: run_nutpie(*a, low_rank=True)}
    libs = [p for p in args.libs.split(",") if p]
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.targets.split(",") if args.targets else (
        DEFAULT_TARGETS + (PDB_TARGETS if args.suite == "standard" else []))
    rows = []
    if args.from_logs:
        rows = [r for path in args.from_logs for r in _parse_log(path) if r["lib"] in libs and r["seed"] in seeds]
        names = []
    for name in names:
        if name not in samplax.targets.names():
            print(f"skip {name}: not registered")
            continue
        target = samplax.targets.get(name)
        for seed in seeds:
            for lib in libs:
                r = runners[lib](target, args.chains, args.warmup, args.samples, seed)
                r.update(lib=lib, target=name, seed=seed, ess_per_grad=r["ess"] / max(r["grads"], 1),
                         ess_per_s=r["ess"] / max(r["run_s"], 1e-9))
                rows.append(r)
                print(f"{name:<40} s{seed} {lib:<9} minESS={r['ess']:8.1f} grads={r['grads']:>9} "
                      f"ESS/grad={r['ess_per_grad']:.4f} ESS/s={r['ess_per_s']:9.1f} compile={r['compile_s']:.2f}s "
                      f"max|z|={r['z']:.2f} sd[0]={r['sd0']:.3f} warm={r.get('warmup_used', '')} "
                      f"{','.join(r.get('warnings', []))}", flush=True)
    if "nutpie" in libs and "nutpie-lowrank" in libs:  # the better nutpie setting per (target, seed), on ESS/grad
        for name in dict.fromkeys(r["target"] for r in rows):
            for seed in seeds:
                pair = [r for r in rows if r["target"] == name and r["seed"] == seed
                        and r["lib"] in ("nutpie", "nutpie-lowrank")]
                if len(pair) == 2:
                    rows.append(dict(max(pair, key=lambda r: r["ess_per_grad"]), lib="nutpie-best"))
        libs = libs + ["nutpie-best"]
    out = [report(rows, libs, args)]
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


_LINE = re.compile(r"^(?P<target>\S+)\s+s(?P<seed>\d+) (?P<lib>\S+)\s+minESS=\s*(?P<ess>[\d.]+) grads=\s*(?P<grads>\d+) "
                   r"ESS/grad=(?P<epg>[\d.]+) ESS/s=\s*(?P<eps>[\d.]+) compile=(?P<compile>[\d.]+)s "
                   r"max\|z\|=(?P<z>[\d.naif]+) sd\[0\]=(?P<sd0>[-\d.naif]+) warm=(?P<warm>\d*) ?(?P<warnings>\S*)")


def _parse_log(path):
    """The per-run lines printed by :func:`main` -> row dicts (as :func:`main` builds them)."""
    rows = []
    with open(path) as f:
        for line in f:
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            g = m.groupdict()
            ess, grads = float(g["ess"]), int(g["grads"])
            rows.append(dict(target=g["target"], seed=int(g["seed"]), lib=g["lib"], ess=ess, grads=grads,
                             ess_per_grad=ess / max(grads, 1), ess_per_s=float(g["eps"]), z=float(g["z"]),
                             sd0=float(g["sd0"]), compile_s=float(g["compile"]),
                             warmup_used=int(g["warm"]) if g["warm"] else 0,
                             warnings=[w for w in g["warnings"].split(",") if w]))
    return rows


def _med(rows, key):
    return float(np.median([r[key] for r in rows]))


def _status(runs):
    """The bench's status over one target's seeds: "failed" if any run has max |z| > 5 or min ESS < 100 ("(warned)" when every
    failed run raised warnings), else "passed" ("(warned)" when any run raised warnings)."""
    failed = [r for r in runs if not (r["z"] <= 5 and r["ess"] >= 100)]  # the bench's MIN_ESS_PASS
    if failed:
        return "failed (warned)" if all(r["warnings"] for r in failed) else "failed"
    return "passed (warned)" if any(r["warnings"] for r in runs) else "passed"


def report(rows, libs, args):
    lines = [f"chains={args.chains} warmup={args.warmup} (auto: at most) samples={args.samples} seeds={args.seeds}", ""]
    peers = [p for p in libs if p in ("blackjax", "numpyro", "nutpie", "nutpie-lowrank", "nutpie-best")]
    mine = [m for m in libs if m in ("auto", "nuts")]
    cols = (["target"] + [f"{l} ESS/grad" for l in libs] + [f"{m}/{p} ESS/grad" for m in mine for p in peers]
            + [f"{m}/{p} ESS/s" for m in mine for p in peers] + [f"max\\|z\\| {l}" for l in libs]
            + ["auto warm-up", "auto warnings", "auto status"])
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    ratios = {}
    for name in dict.fromkeys(r["target"] for r in rows):
        by = {l: [r for r in rows if r["target"] == name and r["lib"] == l] for l in libs}
        cells = [f"{_med(by[l], 'ess_per_grad'):.4f}" for l in libs]
        rg, rs = [], []
        for m in mine:
            for p in peers:
                a = _med(by[m], "ess_per_grad") / _med(by[p], "ess_per_grad")
                b = _med(by[m], "ess_per_s") / _med(by[p], "ess_per_s")
                ratios.setdefault((m, p), []).append((a, b))
                rg.append(f"{a:.2f}")
                rs.append(f"{b:.2f}")
        zs = [f"{max(r['z'] for r in by[l]):.1f}" for l in libs]
        auto = by.get("auto", [])
        warm = f"{_med(auto, 'warmup_used'):.0f}" if auto else ""
        warns = ",".join(sorted({w for r in auto for w in r["warnings"]})) if auto else ""
        status = _status(auto) if auto else ""
        lines.append(f"| {name} | " + " | ".join(cells + rg + rs + zs) + f" | {warm} | {warns} | {status} |")
    lines.append("")
    for (m, p), v in ratios.items():
        v = np.array(v)
        lines.append(f"median over {len(v)} targets, {m} vs {p}: ESS/grad x{np.median(v[:, 0]):.2f}, "
                     f"ESS/s x{np.median(v[:, 1]):.2f}; targets where {m} loses on ESS/grad: "
                     f"{int(np.sum(v[:, 0] < 1))}")
    if any(r["target"] == "funnel" for r in rows):
        lines.append("")
        lines.append("funnel sd[x0] (truth 3, i.e. Var[v] = 9): " + ", ".join(
            f"{l} {np.median([r['sd0'] for r in rows if r['target'] == 'funnel' and r['lib'] == l]):.2f}"
            for l in libs))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
