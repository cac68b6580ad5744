"""samplax ``auto`` on NumPyro and PyMC models vs NumPyro's NUTS vs nutpie, in one process.

The posteriordb posteriors written in both frameworks
(``samplax.targets.posteriordb.numpyro_models`` / ``pymc_models``) run as:

* ``auto/numpyro``: ``samplax.sample(samplax.from_numpyro(model, **data), "auto")``;
* ``auto/pymc``: ``samplax.sample(samplax.from_pymc(model), "auto")``;
* ``numpyro``: ``numpyro.infer.MCMC(NUTS(model))`` with its defaults (diagonal mass matrix,
  ``target_accept_prob=0.8``), ``chain_method="vectorized"``;
* ``nutpie``: ``nutpie.sample(nutpie.compile_pymc_model(model))`` with its defaults (numba
  backend, diagonal Fisher adaptation), ``cores=1`` (chains one after another on one core);
  ``nutpie-lowrank``: the same with ``low_rank_modified_mass_matrix=True`` (the low-rank +
  diagonal metric that samplax ``auto`` switches to on correlated posteriors).

Same chains / warm-up / draws (``auto``: warm-up is the most it may take), float64,
CPU.  Per (posterior, library): min bulk ESS over the reference quantities (the
named constrained variables in posteriordb's order), gradient evaluations (every
one, warm-up included), ESS per gradient, ESS per second of run time after
compilation (warm-up included), compile seconds (samplax: the engine's compile
time plus building the target; NumPyro: first run minus a second, identical run;
nutpie: ``compile_pymc_model``), and max |z| of the means against posteriordb's
reference, ``z = |mean - ref| / sqrt(MCSE^2 + se_ref^2)``.

Usage::

    python benchmarks/frameworks.py [--chains 4 --warmup 1000 --samples 1000 --seed 0
                                     --posteriors a,b --libs auto/numpyro,auto/pymc,numpyro,nutpie,nutpie-lowrank
                                     --out benchmarks/results/frameworks.md]
"""
from __future__ import annotations

import argparse
import re
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import samplax  # noqa: E402
from samplax.diagnostics import ess_bulk, mcse_mean  # noqa: E402
from samplax.targets import posteriordb as pdb  # noqa: E402
from samplax.targets.posteriordb import _bundle, numpyro_models, pymc_models  # noqa: E402

LIBS = ["auto/numpyro", "auto/pymc", "numpyro", "nutpie", "nutpie-lowrank"]
#: cheapest first, so that a time-limited run covers as many posteriors as it can
ORDER = ["eight_schools-eight_schools_noncentered", "kidiq-kidscore_momhsiq", "sblrc-blr", "arK-arK",
         "earnings-logearn_interaction", "mesquite-logmesquite_logvas", "gp_pois_regr-gp_regr",
         "kidiq-kidscore_interaction", "low_dim_gauss_mix-low_dim_gauss_mix", "diamonds-diamonds"]


def reference_draws(posterior: dict, names) -> np.ndarray:
    """``{name: [chains, draws, *shape]}`` -> ``[chains, draws, k]`` in the order of the reference ``names``
    (``theta[1]`` is ``theta[..., 0]``: posteriordb's names are 1-based)."""
    cols = []
    for n in names:
        m = re.fullmatch(r"(\w+)\[([\d,]+)\]", n)
        if m is None:
            cols.append(np.asarray(posterior[n]))
        else:
            idx = tuple(int(i) - 1 for i in m.group(2).split(","))
            cols.append(np.asarray(posterior[m.group(1)])[(slice(None), slice(None)) + idx])
    return np.stack(cols, axis=-1)


def score(posterior, gt):
    q = reference_draws(posterior, gt.names)
    z = np.abs(q.mean(axis=(0, 1)) - gt.mean) / np.sqrt(mcse_mean(q) ** 2 + np.asarray(gt.mean_se) ** 2)
    return float(np.min(ess_bulk(q))), float(np.max(z))


def run_auto(build, name, chains, warmup, samples, seed):
    t0 = time.perf_counter()
    target = build(name)
    build_s = time.perf_counter() - t0
    r = samplax.sample(target, "auto", seed=seed, num_chains=chains, num_warmup=warmup, num_samples=samples,
                       progress=False)
    return dict(posterior=r.posterior, grads=r.cost["num_grad_evals"], run_s=r.cost["sampling_seconds"],
                compile_s=r.cost["compile_seconds"] + build_s, dim=target.dim,
                note=f"warm-up {r.extra.get('warmup_steps')}, {r.extra.get('metric')}"
                     + (f", {','.join(sorted({w['code'] for w in r.warnings}))}" if r.warnings else ""))


def run_numpyro(name, chains, warmup, samples, seed):
    from numpyro.infer import MCMC, NUTS

    model = numpyro_models.MODELS[name]
    data = _bundle.program_data(model, _bundle.load_data(name))
    res = []
    for _ in range(2):  # the second, identical run times the sampling alone
        mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=samples, num_chains=chains,
                    chain_method="vectorized", progress_bar=False)
        t0 = time.perf_counter()
        mcmc.warmup(jax.random.PRNGKey(seed), collect_warmup=True, extra_fields=("num_steps",), **data)
        n_warm = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
        mcmc.run(jax.random.PRNGKey(seed + 1), extra_fields=("num_steps",), **data)
        draws = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        n = n_warm + int(np.sum(mcmc.get_extra_fields()["num_steps"]))
        res.append((time.perf_counter() - t0, draws, n))
    (first, _, _), (second, draws, n) = res
    div = int(np.sum(mcmc.get_extra_fields().get("diverging", 0)))
    return dict(posterior={k: np.asarray(v) for k, v in draws.items()}, grads=n, run_s=second,
                compile_s=max(first - second, 0.0), note=f"{div} divergences" if div else "")


_NUTPIE_COMPILED = {}  # posterior -> (compiled model, compile seconds): both nutpie variants sample one compiled model


def run_nutpie(name, chains, warmup, samples, seed, low_rank=False):
    import nutpie

    if name not in _NUTPIE_COMPILED:
        model = pymc_models.model(name)
        t0 = time.perf_counter()
        _NUTPIE_COMPILED[name] = (nutpie.compile_pymc_model(model), time.perf_counter() - t0)
    compiled, compile_s = _NUTPIE_COMPILED[name]
    t0 = time.perf_counter()
    idata = nutpie.sample(compiled, draws=samples, tune=warmup, chains=chains, seed=seed, cores=1,
                          progress_bar=False, save_warmup=True, low_rank_modified_mass_matrix=low_rank)
    run_s = time.perf_counter() - t0
    grads = int(idata.sample_stats["n_steps"].sum()) + int(idata.warmup_sample_stats["n_steps"].sum())
    div = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
    posterior = {k: np.asarray(v.values) for k, v in idata.posterior.data_vars.items()}
    return dict(posterior=posterior, grads=grads, run_s=run_s, compile_s=compile_s,
                note=f"{div} divergences" if div else "")


RUNNERS = {
    "auto/numpyro": lambda *a: run_auto(numpyro_models.target, *a),
    "auto/pymc": lambda *a: run_auto(pymc_models.target, *a),
    "numpyro": run_numpyro,
    "nutpie": run_nutpie,
    "nutpie-lowrank": lambda *a: run_nutpie(*a, low_rank=True),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--posteriors", default=None, help="comma-separated posteriordb names (default: all)")
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--budget", type=float, default=None, help="stop starting new posteriors after this many seconds")
    ap.add_argument("--out", default=None, help="write the markdown table to this file")
    args = ap.parse_args()
    libs = [lib for lib in args.libs.split(",") if lib]
    unknown = [lib for lib in libs if lib not in RUNNERS]
    if unknown:
        ap.error(f"--libs: unknown {unknown}; choose from {LIBS}")
    names = args.posteriors.split(",") if args.posteriors else ORDER
    t_start = time.perf_counter()
    rows = []
    for name in names:
        if args.budget is not None and time.perf_counter() - t_start > args.budget:
            print(f"budget of {args.budget:.0f}s spent: not starting {name}", flush=True)
            break
        gt = pdb.load(name).ground_truth()
        for lib in libs:
            r = RUNNERS[lib](name, args.chains, args.warmup, args.samples, args.seed)
            ess, z = score(r.pop("posterior"), gt)
            r.update(lib=lib, posterior=name, ess=ess, z=z, ess_per_grad=ess / max(r["grads"], 1),
                     ess_per_s=ess / max(r["run_s"], 1e-9))
            rows.append(r)
            print(f"{name:<40} {lib:<13} minESS={ess:8.1f} grads={r['grads']:>9} ESS/grad={r['ess_per_grad']:.4f} "
                  f"ESS/s={r['ess_per_s']:9.1f} run={r['run_s']:.2f}s compile={r['compile_s']:.2f}s "
                  f"max|z|={z:.2f} {r['note']}", flush=True)
    text = report(rows, libs, args)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


def report(rows, libs, args) -> str:
    lines = [f"chains={args.chains} warmup={args.warmup} (auto: at most) samples={args.samples} seed={args.seed}; "
             f"CPU, float64, one process; {jax.devices()[0].platform}", ""]
    cols = ["posterior", "d", "library", "min ESS", "grads", "ESS/grad", "ESS/s", "run s", "compile s",
            "max \\|z\\|", "notes"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    dims = {r["posterior"]: r.get("dim") for r in rows if r.get("dim")}
    for r in rows:
        lines.append(f"| {r['posterior']} | {dims.get(r['posterior'], '')} | {r['lib']} | {r['ess']:.0f} | "
                     f"{r['grads']:,} | {r['ess_per_grad']:.4f} | {r['ess_per_s']:.1f} | {r['run_s']:.2f} | "
                     f"{r['compile_s']:.2f} | {r['z']:.1f} | {r['note']} |")
    lines.append("")
    mine = [lib for lib in libs if lib.startswith("auto/")]
    peers = [lib for lib in libs if not lib.startswith("auto/")]
    by = {(r["posterior"], r["lib"]): r for r in rows}
    posteriors = list(dict.fromkeys(r["posterior"] for r in rows))
    for m in mine:
        for p in peers:
            pairs = [(by[(n, m)], by[(n, p)]) for n in posteriors if (n, m) in by and (n, p) in by]
            if not pairs:
                continue
            g = np.array([a["ess_per_grad"] / b["ess_per_grad"] for a, b in pairs])
            s = np.array([a["ess_per_s"] / b["ess_per_s"] for a, b in pairs])
            lines.append(f"{m} vs {p} over {len(pairs)} posteriors: median ESS/grad ratio x{np.median(g):.2f} "
                         f"(range {g.min():.2f}-{g.max():.2f}), median ESS/s ratio x{np.median(s):.2f} "
                         f"(range {s.min():.2f}-{s.max():.2f})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
