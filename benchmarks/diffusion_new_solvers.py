"""The solvers fitted to a model (and the few-step methods) against diffusers' best, on the testbed of
``benchmarks/diffusion_vs_diffusers.py``.

Not a test. Needs ``pip install torch diffusers`` (the testbed module imports them).

Same data (ring8, grid25, the 64-D mixture), same tuning (1024) and evaluation (4096) noises (seed 1234),
same reference (diffrax Dopri8 PF-ODE solve, rtol = atol = 1e-10) and metric (mean L2 endpoint error) as
``diffusion_vs_diffusers.py``. Each method fits what it fits to the model on its OWN noises (its ``key``),
its free choices (base solver, lambda, sigma_end) are selected on the tuning noises, and its error is reported
on the evaluation noises. The ratio divides by the best diffusers configuration's error on the same evaluation
noises, read from the "Mean L2 endpoint error" table of ``--diffusers-table`` (diffusers is deterministic on
these noises, so rerunning its sweep would give the same numbers). The fit's model calls and seconds are a
one-off cost per (model, NFE), not part of the NFE.

Usage: python benchmarks/diffusion_new_solvers.py [--quick] [--out benchmarks/results/diffusion_vs_diffusers.md]
(writes/replaces the section "## Solvers fitted to the model" of --out)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

import jax
import jax.numpy as jnp

import diffusion_vs_diffusers as base  # noqa: E402  (sets float64, the testbed constants)
from samplax import diffusion as sd  # noqa: E402

SIGMA_MAX = base.SIGMA_MAX
SECTION = "## Solvers fitted to the model"


def diffusers_best(path):
    """``{(data, nfe): (config, error)}`` from the "Mean L2 endpoint error" table of the testbed's results."""
    out = {}
    txt = open(path).read()
    start = txt.index("## Mean L2 endpoint error")
    for line in txt[start:].splitlines()[4:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[(cells[0], int(cells[1]))] = (cells[2], float(cells[4]))
    return out


def run(kwargs, model, x):
    xs, info = sd.sample(model, key=jax.random.key(0), x_init=x, **kwargs)
    return np.asarray(xs), int(info.num_model_evals)


# ----------------------------------------------------------------- candidates
# Each: (model, nfe, key) -> list of (config label, sample kwargs, fit cost dict); the list is selected on the
# tuning noises.
def _auto_grid(nfe):
    solver, grid, sigma_end, _ = sd.auto_choice(nfe)
    return solver, grid, sigma_end


def cand_iia(model, nfe, key):
    out = []
    auto_solver, grid, se = _auto_grid(nfe)
    for b in dict.fromkeys((auto_solver, "dpmpp_2m", "ddim")):
        t0 = time.perf_counter()
        fit = sd.fit_iia(model, key=key, nfe=nfe, sigma_max=SIGMA_MAX, event_shape=(model.dim,), base=b,
                         sigma_end=se, grid=grid)
        out.append((f"iia on {b} / {grid} / {se}", fit.sample_kwargs,
                    {"evals": fit.diagnostics["num_model_evals"], "seconds": time.perf_counter() - t0}))
    return out


def cand_dc(model, nfe, key):
    _, grid, se = _auto_grid(nfe)
    t0 = time.perf_counter()
    fit = sd.fit_dc(model, key=key, nfe=nfe, sigma_max=SIGMA_MAX, event_shape=(model.dim,), sigma_end=se, grid=grid)
    return [(f"dc_solver / {grid} / {se}", fit.sample_kwargs,
             {"evals": fit.diagnostics["num_model_evals"], "seconds": time.perf_counter() - t0})]


def cand_conjugate(model, nfe, key):
    _, grid, se = _auto_grid(nfe)
    return [(f"conjugate lam={lam} / {grid} / {se}",
             dict(solver="conjugate", solver_options={"lam": lam}, nfe=nfe, sigma_max=SIGMA_MAX, sigma_end=se,
                  grid=grid), {"evals": 0, "seconds": 0.0})
            for lam in (-0.5, -0.25, 0.0, 0.25, 0.5, 1.0)]


def cand_v3(model, nfe, key):
    out = []
    _, grid, se = _auto_grid(nfe)
    for g, e in dict.fromkeys(((grid, se), ("logsnr", 0.002))):
        t0 = time.perf_counter()
        fit = sd.fit_v3(model, key=key, nfe=nfe, sigma_max=SIGMA_MAX, event_shape=(model.dim,), sigma_end=e, grid=g,
                        num_samples=1024 if model.dim <= 8 else 512, num_probes=None if model.dim <= 8 else 4)
        out.append((f"dpm_solver_v3 (order 3, corrector) / {g} / {e}", fit.sample_kwargs,
                    {"evals": fit.diagnostics["num_model_evals"], "seconds": time.perf_counter() - t0}))
    return out


CANDIDATES = {"iia": cand_iia, "dc_solver": cand_dc, "conjugate": cand_conjugate, "dpm_solver_v3": cand_v3}
METHOD_ORDER = ["iia", "dc_solver", "conjugate", "usf", "dpm_solver_v3"]


def usf_rows(path, best_d):
    """The searched ``usf`` schedules of ``benchmarks/usf_schedule.py`` (same testbed, same evaluation noises; its
    search is minutes per cell, so its results are read rather than recomputed)."""
    rows = []
    for line in open(path).read().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 12 or cells[0] not in ("ring8", "grid25", "mixture64"):
            continue
        nfe = int(cells[1].split()[0])
        err = float(cells[3].strip("*"))
        calls_s = cells[11].split(",")
        d_cfg, d_err = best_d[(cells[0], nfe)]
        rows.append(dict(data=cells[0], nfe=nfe, method="usf", cfg=f"searched {cells[2]}", calls=nfe, err=err,
                         d_cfg=d_cfg, d_err=d_err, ratio=err / d_err, fit_evals=int(float(calls_s[0])),
                         fit_seconds=float(calls_s[1].strip().rstrip("s").strip())))
    return rows


def section(rows, note):
    lines = [SECTION, "", note, "",
             "| data | NFE | method | selected config | calls | error | best diffusers (error) | method/diffusers "
             "| one-off fit (model calls, s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['nfe']} | {r['method']} | {r['cfg']} | {r['calls']} | {r['err']:.4g} | "
                     f"{r['d_cfg']} ({r['d_err']:.4g}) | **{r['ratio']:.3f}** | {r['fit_evals']}, "
                     f"{r['fit_seconds']:.1f} s |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="ring8 only, 256 tuning / 1024 evaluation noises")
    ap.add_argument("--out", default="benchmarks/results/diffusion_vs_diffusers.md")
    ap.add_argument("--diffusers-table", default="benchmarks/results/diffusion_vs_diffusers.md")
    ap.add_argument("--methods", default=",".join(CANDIDATES), help="comma-separated, or '' for none")
    ap.add_argument("--usf", default=None, help="read the searched usf rows from this results file "
                    "(benchmarks/results/usf_schedule.md)")
    ap.add_argument("--rows", default="benchmarks/results/diffusion_new_solvers.json",
                    help="rows of earlier runs (kept unless recomputed here) and of this one")
    args = ap.parse_args()
    best_d = diffusers_best(args.diffusers_table)
    datasets = [("ring8", sd.ring8()), ("grid25", sd.grid25()), ("mixture64", sd.random_mixture(0, 64, 10))]
    n_tune, n_eval = 1024, 4096
    if args.quick:
        datasets, n_tune, n_eval = datasets[:1], 256, 1024
    rows = []
    methods = [m for m in args.methods.split(",") if m]
    for name, model in datasets:
        if not methods:
            break
        rng = np.random.default_rng(1234)  # the testbed's noises: tuning first, then evaluation
        z = {"tune": rng.normal(size=(n_tune, model.dim)), "eval": rng.normal(size=(n_eval, model.dim))}
        scale = math.sqrt(1 + SIGMA_MAX**2)
        x = {k: jnp.asarray(v * scale) for k, v in z.items()}
        ref = {k: np.asarray(sd.solve_pf_ode(model, x[k], SIGMA_MAX, 0.0, rtol=1e-10, atol=1e-10)) for k in x}
        for nfe in base.NFES:
            d_cfg, d_err = best_d[(name, nfe)]
            for method in methods:
                cands = CANDIDATES[method](model, nfe, jax.random.key(7))
                scored = []
                for label, kw, cost in cands:
                    xs, _ = run(kw, model, x["tune"])
                    scored.append((base.err(xs, ref["tune"]), label, kw, cost))
                scored = [s for s in scored if np.isfinite(s[0])]
                _, label, kw, _ = min(scored, key=lambda s: s[0])
                xs, calls = run(kw, model, x["eval"])
                e = base.err(xs, ref["eval"])
                fit_evals = sum(c["evals"] for _, _, _, c in scored)
                fit_seconds = sum(c["seconds"] for _, _, _, c in scored)
                rows.append(dict(data=name, nfe=nfe, method=method, cfg=label, calls=calls, err=e, d_cfg=d_cfg,
                                 d_err=d_err, ratio=e / d_err, fit_evals=fit_evals, fit_seconds=fit_seconds))
                print(rows[-1], flush=True)
    if args.usf:
        rows += usf_rows(args.usf, best_d)
    old = json.load(open(args.rows)) if os.path.exists(args.rows) and not args.quick else []
    done = {(r["data"], r["nfe"], r["method"]) for r in rows}
    rows = [r for r in old if (r["data"], r["nfe"], r["method"]) not in done] + rows
    order = {name: i for i, (name, _) in enumerate(datasets)}
    rows.sort(key=lambda r: (order.get(r["data"], 99), r["nfe"], METHOD_ORDER.index(r["method"])
                             if r["method"] in METHOD_ORDER else 99))
    if not args.quick:
        with open(args.rows, "w") as f:
            json.dump(rows, f, indent=1)
    note = ("Produced by `python benchmarks/diffusion_new_solvers.py` (methods may come from separate runs, kept in "
            "`benchmarks/results/diffusion_new_solvers.json`; 2 shared CPU cores). Testbed, noises, reference and metric of the tables above; every method's "
            "free choices selected on the tuning noises, its fitted values fitted on its own noises; error on the "
            f"{n_eval} evaluation noises; the diffusers column is the best diffusers configuration of the table "
            "above. The grid and sigma_end of each fitted solver are the fixed rule's (`auto_choice(nfe)`); the "
            "one-off fit cost sums the fits of all candidates that were selected among. The `usf` rows (S^3-style "
            "searched per-step schedules) are read from `benchmarks/results/usf_schedule.md` (`--usf`; same testbed "
            "and evaluation noises, its own grid search; its seconds were measured under heavy load).")
    new = "\n".join(section(rows, note)) + "\n"
    base.replace_section(args.out, SECTION, new)
    print(new)


if __name__ == "__main__":
    main()
