"""Learned samplers vs classical ones at equal total target evaluations: writes benchmarks/learned_samplers.md.

The runs are `samplax bench learned` (samplax/bench/suites/learned.toml, one run folder per target):

    for t in gmm25 funnel many_well32 dw4 gmm40 lj13; do
      python -m samplax bench learned --only $t --budget-scale small --out benchmarks/results/learned/$t --no-report
    done
    for t in gmm25; do   # the third budget, 1e7: only GMM-25 fitted this session (Many-Well-32 was stopped)
      python -m samplax bench learned --only $t --budget-scale large --out benchmarks/results/learned/${t}_large \
        --no-report
    done
    python -m samplax bench benchmarks/results/learned_funnel_clip100.toml --budget-scale small \
      --out benchmarks/results/learned/funnel_clip100 --no-report      # pis, dds with score_clip=100
    python -m samplax bench benchmarks/results/learned_cmcd_logvar.toml --budget-scale small \
      --out benchmarks/results/learned/cmcd_logvar --no-report         # cmcd with loss="logvar"
    python -m samplax bench benchmarks/results/learned_dw4_pis.toml --budget-scale small \
      --out benchmarks/results/learned/dw4_pis_nanfix --no-report      # pis on DW-4 after the NaN-score fix
    python -m samplax bench benchmarks/results/learned_many_well32_sigma1.toml --budget-scale small \
      --out benchmarks/results/learned/many_well32_sigma1 --no-report  # Many-Well-32: sigma = 1, K = 64
    python -m samplax bench learned --budget-scale one --only tb --only dgfs --only dis --only snf --only mixflow \
      --only idem --only flow --only fab --out benchmarks/results/learned/new --no-report  # issue #13's methods, 1e6
    python -m samplax bench learned --budget-scale one --only flow --only fab --only flow_perturbation --only dgfs \
      --out benchmarks/results/learned/new_rerun --no-report  # flow, fab after their batch_size fix, dgfs after its
                                                              # anchor floor, flow_perturbation (merged later)
    python -m samplax bench learned --budget-scale one --only mixflow \
      --out benchmarks/results/learned/new_mixflow --no-report  # mixflow after its tuning fix (LJ-13 stopped)
    python -m samplax bench learned --budget-scale one --only tb \
      --out benchmarks/results/learned/tb_rerun --no-report  # tb with the long local-search schedule (its default)
    python benchmarks/learned_samplers.py --goal NAME ...   # the goal runs (GOAL_RUNS), one samplax.sample call each
    python benchmarks/learned_samplers.py            # reads benchmarks/results/learned/*/results.json

This script only collects: the table of every (target, method, budget) row with the columns of
samplax.bench.learned.LEARNED_COLUMNS, the error-vs-evaluations plot per target
(benchmarks/results/learned/learned_<target>.png), the published numbers of each target beside them (from the
versioned data file benchmarks/published_learned.toml, each with its paper, metric and training budget), and
the "goal" table: single `samplax.sample` runs (GOAL_RUNS, results in benchmarks/results/learned/goal.json)
against the best published learned sampler at no more than its training budget.  The hand-written analysis
below the generated part ("## Notes" onwards) is kept when the file is rewritten.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "learned"
OUT = ROOT / "benchmarks" / "learned_samplers.md"
TARGETS = ["gmm25", "gmm40", "funnel", "many_well32", "dw4", "lj13"]

#: what each target is here, checked against /work/shared/TARGETS.md
DEFINITIONS = {
    "gmm25": "25 equal-weight N(m, 0.3 I), m in {-10,-5,0,5,10}^2, log Z = 0 (TARGETS.md GMM-25; PIS / Sendera et al.)",
    "gmm40": "40 equal-weight N(m, I), m ~ U[-40,40]^2 from jax PRNGKey(0) (TARGETS.md variant (a): fab-jax gmm_v0, "
             "Beyond ELBOs); iDEM / FAB-torch use std 1.3133 and other means (variant b): not the same target",
    "funnel": "x0 ~ N(0, 3^2), x1..9 | x0 ~ N(0, e^x0 I), log Z = 0 (TARGETS.md Funnel-10, the 'hard' funnel of "
              "Sendera et al.)",
    "many_well32": "16 copies of -x1^4 + 6 x1^2 + 0.5 x1 - 0.5 x2^2, log Z = 164.695675 (TARGETS.md Many-Well-32)",
    "dw4": "4 particles in 2-D, sum_{i<j} 0.9 (d-4)^4 - 4 (d-4)^2 (TARGETS.md DW-4 = 1/2 sum_{i!=j}); DEM reference "
           "draws (approximate: virial 5.49 +- 0.12 vs 6)",
    "lj13": "13 particles in 3-D, LJ eps = r_m = 1 summed over ORDERED pairs (2x the i<j sum) + harmonic c = 1 "
            "(TARGETS.md LJ-13, the convention of the DEM reference draws)",
}

PUBLISHED_FILE = ROOT / "benchmarks" / "published_learned.toml"
GOAL_FILE = RUNS / "goal.json"

#: The goal runs of issue #13: (name, target, method, options, seed).  Each is one
#: ``samplax.sample(target, method=..., seed=..., num_chains=1, num_samples=2000, training_evals=..., **options)`` call
#: (2000 draws: the K = 2000 evaluation paths of Sendera et al.); `budget` in the table is training +
#: sampling target evaluations, to be compared with the published *training* budget.
_GMM25 = {"sigma": 6.0, "num_time_steps": 32, "batch_size": 64, "loss": "logvar", "exploration": 0.5}
_MW32 = {"sigma": 1.0, "num_time_steps": 64, "batch_size": 32}
_FUNNEL = {"sigma": 2.0, "num_time_steps": 16, "batch_size": 64}
_FLOW = {"kind": "coupling", "layers": 6, "width": 64}
_FAB_GMM25 = {"kind": "coupling", "layers": 4, "width": 32, "base_scale": 8.0, "batch_size": 128, "num_ais_steps": 8,
              "num_leapfrog_steps": 4, "step_size": 1.0, "buffer": True}
_FAB_MW32 = {**_FLOW, "base_scale": 1.5, "step_size": 0.1, "buffer": True}
_FAB_FUNNEL = {**_FLOW, "base_scale": 3.0, "step_size": 0.3, "buffer": True}
GOAL_RUNS = [
    ("gmm25_dds_logvar_1e6_s0", "gmm25", "dds", {**_GMM25, "training_evals": 1_000_000}, 0),
    ("gmm25_dds_logvar_1e6_s1", "gmm25", "dds", {**_GMM25, "training_evals": 1_000_000}, 1),
    ("gmm25_dds_logvar_5e6_s0", "gmm25", "dds", {**_GMM25, "training_evals": 5_000_000}, 0),
    ("gmm25_dds_logvar_k64_1e7_s0", "gmm25", "dds", {**_GMM25, "num_time_steps": 64, "training_evals": 10_000_000}, 0),
    ("gmm25_dds_logvar_k64_expl1_1e7_s0", "gmm25", "dds", {**_GMM25, "num_time_steps": 64, "exploration": 1.0,
                                                           "training_evals": 10_000_000}, 0),
    ("gmm25_dds_logvar_k100_1.8e7_s0", "gmm25", "dds", {**_GMM25, "num_time_steps": 100,
                                                        "training_evals": 18_000_000}, 0),
    ("gmm25_dds_logvar_k100_1.8e7_s1", "gmm25", "dds", {**_GMM25, "num_time_steps": 100,
                                                        "training_evals": 18_000_000}, 1),
    ("mw32_pis_kl_1e7_s0", "many_well32", "pis", {**_MW32, "training_evals": 10_000_000}, 0),
    ("mw32_pis_logvar_1e7_s0", "many_well32", "pis", {**_MW32, "loss": "logvar", "exploration": 0.5,
                                                      "training_evals": 10_000_000}, 0),
    ("mw32_pis_logvar_3e7_s0", "many_well32", "pis", {**_MW32, "loss": "logvar", "exploration": 0.5,
                                                      "training_evals": 30_000_000}, 0),
    # fab (Midgley et al. 2023) with the settings of its gmm25 test and the new-flows suite, five seeds
    *[(f"gmm25_fab_1e6_s{s}", "gmm25", "fab", {**_FAB_GMM25, "training_evals": 1_000_000}, s) for s in range(5)],
    *[(f"gmm25_fab_1e7_s{s}", "gmm25", "fab", {**_FAB_GMM25, "training_evals": 10_000_000}, s) for s in range(5)],
    # flow (reverse KL, coupling splines) with the settings of the new-flows suite, five seeds
    *[(f"mw32_flow_1e6_s{s}", "many_well32", "flow", {**_FLOW, "base_scale": 1.5, "training_evals": 1_000_000}, s)
      for s in range(5)],
    *[(f"mw32_flow_1e7_s{s}", "many_well32", "flow", {**_FLOW, "base_scale": 1.5, "training_evals": 10_000_000}, s)
      for s in range(3)],
    *[(f"funnel_flow_1e6_s{s}", "funnel", "flow", {**_FLOW, "base_scale": 3.0, "training_evals": 1_000_000}, s)
      for s in range(5)],
    # fab with the settings of the learned suite (samplax/bench/suites/learned.toml), five seeds
    *[(f"mw32_fab_1e6_s{s}", "many_well32", "fab", {**_FAB_MW32, "training_evals": 1_000_000}, s) for s in range(5)],
    *[(f"funnel_fab_1e6_s{s}", "funnel", "fab", {**_FAB_FUNNEL, "training_evals": 1_000_000}, s) for s in range(5)],
    *[(f"funnel_fab_1e7_s{s}", "funnel", "fab", {**_FAB_FUNNEL, "training_evals": 10_000_000}, s) for s in range(5)],
    *[(f"mw32_fab_1e7_s{s}", "many_well32", "fab", {**_FAB_MW32, "training_evals": 10_000_000}, s) for s in range(5)],
    ("funnel_pis_kl_1e6_s0", "funnel", "pis", {**_FUNNEL, "training_evals": 1_000_000}, 0),
    ("funnel_pis_kl_1e6_s1", "funnel", "pis", {**_FUNNEL, "training_evals": 1_000_000}, 1),
]


def published() -> list:
    """The entries of benchmarks/published_learned.toml with their source's citation (``cite``)."""
    import tomllib

    data = tomllib.loads(PUBLISHED_FILE.read_text())
    sources = {src["key"]: src for src in data.get("source", [])}
    out = []
    for e in data.get("entry", []):
        src = sources.get(e["source"], {})
        out.append({**e, "cite": src.get("cite", e["source"]), "where": src.get("where", "")})
    return out


def not_retrieved() -> list:
    """The ``[[not_retrieved]]`` tables of benchmarks/published_learned.toml (paper, summary, what was tried)."""
    import tomllib

    return tomllib.loads(PUBLISHED_FILE.read_text()).get("not_retrieved", [])


def rms(e: dict) -> float:
    """``sqrt(value^2 + sd^2)``: one run's typical error when ``value`` is the mean of signed errors.

    An entry without ``sd`` (an absolute error printed with its standard error ``se``) gives its ``value``.
    """
    return math.hypot(float(e["value"]), float(e.get("sd", 0.0)))


def typical_error(e: dict) -> float:
    """One run's typical log Z error of a published entry: a published mean absolute error (``abs_dlogZ_rw``) as
    it is, else :func:`rms` of the signed mean and its sd."""
    return float(e["value"]) if e["metric"].startswith("abs_") else rms(e)


def published_block(target: str, entries: list) -> list:
    """Markdown lines of the published numbers of ``target`` (paper, method, metric, value, budget)."""
    rows = [e for e in entries if e["target"] == target]
    if not rows:
        return ["*No published number retrieved for this target (see benchmarks/published_learned.toml).*", ""]
    lines = ["Published (benchmarks/published_learned.toml; `value +- sd` over `runs` training runs, or `(se ...)` "
             "where the source printed the standard error of the mean; `rms` = sqrt(value^2 + sd^2), one run's "
             "typical error; budget = training target evaluations):", "",
             "| paper | method | metric | value +- sd | rms | budget | how the budget was counted |",
             "|---|---|---|---|---|---|---|"]
    order = {"dlogZ_rw": 0, "abs_dlogZ_rw": 1, "dlogZ_elbo": 2}
    for e in sorted(rows, key=lambda e: (e.get("classical", False), "variant" in e, order.get(e["metric"], 2),
                                         rms(e))):
        paper = e["cite"].split("(")[0].strip().split(",")[0] + " et al. " + e["cite"].split("(")[1].split(")")[0]
        budget = fmt(float(e["budget"])) if "budget" in e else "not stated"
        how = e.get("budget_how", "") + (f" (uncertain: {e['uncertain']})" if "uncertain" in e else "")
        flag = " **(best)**" if e.get("best") else (" **(best rms)**" if e.get("best_rms") else "")
        flag += f" (different variant: {e['variant']})" if "variant" in e else ""
        spread = f"(se {e['se']})" if "se" in e else f"+- {e.get('sd', '-')}"
        lines.append(f"| {paper} | {e['method']}{flag} | {e['metric']} | {e['value']} {spread} | "
                     f"{rms(e):.3g} | {budget} | {how or '-'} |")
    return lines + [""]


def run_goal(names) -> None:
    """Run the GOAL_RUNS named in ``names`` (all with ``all``) and merge their rows into GOAL_FILE."""
    import time

    import samplax

    old = {r["name"]: r for r in json.loads(GOAL_FILE.read_text())} if GOAL_FILE.exists() else {}
    for name, target, method, options, seed in GOAL_RUNS:
        if "all" not in names and name not in names:
            continue
        t = samplax.targets.get(target)
        t0 = time.time()
        r = samplax.sample(t, method=method, seed=seed, num_chains=1, num_samples=2000, **options)
        c = r.cost
        train = int(max(c.get("training_logdensity_evals", 0) or 0, c.get("training_grad_evals", 0) or 0))
        total = int(max(c.get("num_logdensity_evals", 0) or 0, c.get("num_grad_evals", 0) or 0))
        true = float(t.ground_truth().log_Z)
        row = {"name": name, "target": target, "method": method, "options": options, "seed": seed,
               "training_evals": train, "total_evals": total, "log_Z": float(r.log_Z),
               "abs_log_Z_err": abs(float(r.log_Z) - true), "log_Z_se": float(r.log_Z_se),
               "elbo_gap": true - float(r.extra["elbo"]), "ess_fraction": float(r.extra["ess_fraction"]),
               "wall_s": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        old[name] = row
        GOAL_FILE.parent.mkdir(parents=True, exist_ok=True)
        GOAL_FILE.write_text(json.dumps(list(old.values()), indent=1))


def goal_block(entries: list) -> list:
    """Markdown lines of the goal table: each goal run beside the best published learned sampler of its target."""
    if not GOAL_FILE.exists():
        return []
    rows = json.loads(GOAL_FILE.read_text())
    lines = ["## Goal check (issue #13): single runs against the best published learned sampler", "",
             "Each row is one `samplax.sample(target, method, seed, num_chains=1, num_samples=2000, **options)` call "
             "(`python benchmarks/learned_samplers.py --goal NAME`); `abs(dlogZ)` is the importance-weighted "
             "(log-mean-exp) error over the 2000 paths, like Sendera et al.'s dlogZ^RW with K = 2000; "
             "`ELBO gap` = log Z - mean log w (their dlogZ).  Published: the best learned sampler by signed mean "
             "(dlogZ_rw) and by typical error (the rms of a signed mean, or a published mean absolute error), with "
             "its training budget.  `wall s` excludes compilation when an identical "
             "configuration compiled earlier in the same process (the second seeds).", "",
             "| name | target | method | options | seed | train evals | total evals | abs(dlogZ) | se | ELBO gap | "
             "ESS frac | wall s | best published (mean / rms, budget) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def best_published(target, source=None):
        """(best signed mean of dlogZ_rw, best typical error) of the learned samplers on ``target`` (of one
        ``source`` only, if given)."""
        pub = [e for e in entries if e["target"] == target and e["metric"] in ("dlogZ_rw", "abs_dlogZ_rw")
               and not e.get("classical") and "variant" not in e and "budget" in e
               and (source is None or e["source"] == source)]
        signed = [e for e in pub if e["metric"] == "dlogZ_rw"]
        return (min(signed, key=lambda e: abs(float(e["value"])), default=None),
                min(pub, key=typical_error, default=None))

    for r in sorted(rows, key=lambda r: (r["target"], r["training_evals"], r["name"])):
        best, best_typ = best_published(r["target"])
        ref = "-"
        if best is not None:
            ref = (f"{best['method']} {best['value']} ({fmt(float(best['budget']))}) / {best_typ['method']} "
                   f"{typical_error(best_typ):.3g} ({fmt(float(best_typ['budget']))})")
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        lines.append(f"| {r['name']} | {r['target']} | {r['method']} | {opts} | {r['seed']} | "
                     f"{fmt(r['training_evals'])} | {fmt(r['total_evals'])} | {fmt(r['abs_log_Z_err'])} | "
                     f"{fmt(r['log_Z_se'])} | {fmt(r['elbo_gap'])} | {fmt(r['ess_fraction'])} | {fmt(r['wall_s'])} | "
                     f"{ref} |")
    # per (target, method, training budget): the typical error over the seeds, against the best published one
    groups = {}
    for r in rows:
        key = (r["target"], r["method"], round(r["training_evals"], -5), tuple(sorted(
            (k, str(v)) for k, v in r["options"].items() if k != "training_evals")))
        groups.setdefault(key, []).append(r)
    lines += ["Summary: each group of goal runs (same target, method, options and budget), its rms and mean of "
              "abs(dlogZ) over the seeds, against the best published learned sampler's typical error (`rms` = "
              "sqrt(mean^2 + sd^2) of a signed mean, or a published mean absolute error as it is) and its budget.", "",
              "| target | method | seeds | train evals | rms abs(dlogZ) | mean abs(dlogZ) | best published (typical "
              "error, budget) | ours below it at <= its budget | best of Sendera et al.'s benchmark | below it |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for (target, method, _, _), rs in sorted(groups.items(), key=lambda kv: kv[0][:3]):
        errs = [r["abs_log_Z_err"] for r in rs]
        r_ms = math.sqrt(sum(e * e for e in errs) / len(errs))
        train = max(r["training_evals"] for r in rs)
        cells = []
        for source in (None, "sendera2024"):
            _, best_typ = best_published(target, source)
            ref, verdict = "-", "-"
            if best_typ is not None:
                typ, budget = typical_error(best_typ), float(best_typ["budget"])
                ref = f"{best_typ['method']} {typ:.3g} ({fmt(budget)})"
                verdict = "yes" if (r_ms < typ and train <= budget) else "no"
            cells += [ref, verdict]
        lines.append(f"| {target} | {method} | {len(rs)} | {fmt(train)} | {r_ms:.3g} | {sum(errs) / len(errs):.3g} | "
                     + " | ".join(cells) + " |")
    return lines + [""]


#: variant run folders (same budgets, one setting changed) and the label added to their method names
VARIANTS = {"cmcd_logvar": "+logvar",  # loss="logvar" (benchmarks/results/learned_cmcd_logvar.toml)
            "funnel_clip100": "+clip100",  # score_clip=100 (benchmarks/results/learned_funnel_clip100.toml)
            "dw4_pis_nanfix": " (NaN fix)",  # after the NaN-score fix (benchmarks/results/learned_dw4_pis.toml)
            # sigma = 1, K = 64, batch 32 (cmcd sigma = 1): the suite's Many-Well-32 settings since the fix
            # (benchmarks/results/learned_many_well32_sigma1.toml)
            "many_well32_sigma1": " (sigma=1,K=64)",
            # the methods added for issue #13 at 1e6 (the learned suite, budget set `one`): their own names.  A later
            # folder's row replaces an earlier one of the same target, method and budget: new_rerun has flow / fab
            # after the suite gave them their batch_size (the shared `learned` block's 64 / 32 had replaced their
            # 256 on four targets), dgfs after its anchor floor (LJ-13 stopped at step 1) and flow_perturbation;
            # new_mixflow has mixflow after its tuning fix (LJ-13 stopped at step 0)
            # tb_rerun: tb after its default became the long local-search schedule of Sendera et al.'s code
            "new": "", "new_rerun": "", "new_mixflow": "", "tb_rerun": ""}

COLS = [("method", "method"), ("budget", "budget"), ("total_evals", "evals"), ("training_evals", "train"),
        ("abs_log_Z_err", "abs(dlogZ)"), ("log_Z_se", "se"), ("elbo", "ELBO"), ("eubo", "EUBO"),
        ("mode_coverage", "EMC"), ("sliced_w2", "SW2"), ("energy_distance", "E-dist"), ("energy_w2", "energy W2"),
        ("distance_w2", "dist W2"), ("wall_s", "wall s"), ("status", "status")]


def fmt(v) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}".replace(",", " ")
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v.is_integer() and abs(v) >= 1000:
            return f"{int(v):,}".replace(",", " ")
        return f"{v:.3g}"
    return str(v)


def main() -> int:
    from samplax.bench.learned import learned_plots

    if len(sys.argv) > 2 and sys.argv[1] == "--goal":
        run_goal(sys.argv[2:])
        return 0
    entries = published()
    missing = not_retrieved()

    lines = ["# Learned samplers vs classical samplers at equal target evaluations", "",
             "Generated by `benchmarks/learned_samplers.py` from `samplax bench learned --budget-scale small` and "
             "`large` (pis, dds, cmcd and the classical methods) and `one` (the methods added for issue #13, "
             "1e6; the commands are in the script's docstring) (suite `samplax/bench/suites/learned.toml`; how each "
             "method's settings follow from the budget: `samplax/bench/learned.py`).  Machine: 2 shared CPU cores, "
             "float32, one seed (0), one run per cell.",
             "",
             "**Budget** = total target evaluations (a value-and-gradient counts once): training + sampling for "
             "the learned (trained) methods, everything for smc / nested_sampling / parallel_tempering.  `evals` is what the "
             "run actually spent (nested sampling stops on its own, so it misses its budget most).",
             "",
             "Columns: `abs(dlogZ)` = |log Z estimate - true log Z| (targets with known log Z); `se` its reported "
             "standard error; ELBO = mean log w over the sampler's paths; EUBO = mean log w over reverse paths "
             "from exact target draws (learned samplers, targets with an exact sampler); EMC = entropic mode "
             "coverage (GMMs); SW2 = sliced Wasserstein-2 (128 directions) and E-dist = energy distance "
             "(squared-distance form) to 2000 exact draws; energy W2 / dist W2 = 1-D W2 (not squared, no "
             "binning) between the energies / interatomic distances of the draws and of 2000 DEM reference "
             "draws.  All from `samplax.metrics`.", ""]
    have = []
    for t in TARGETS:
        files = [f for f in (RUNS / t / "results.json", RUNS / f"{t}_large" / "results.json") if f.exists()]
        if not files:
            lines += [f"## {t}", "", f"Definition: {DEFINITIONS[t]}", "", "*Not run in this session.*", ""]
            lines += published_block(t, entries)
            continue
        rows = [r for f in files for r in json.loads(f.read_text())["rows"]]
        for folder, suffix in VARIANTS.items():
            variant = RUNS / folder / "results.json"
            if variant.exists():
                new = [{**r, "method": r["method"] + suffix} for r in json.loads(variant.read_text())["rows"]
                       if r["target"] == t]
                replaced = {(r["method"], r.get("budget")) for r in new}
                rows = [r for r in rows if (r["method"], r.get("budget")) not in replaced] + new
        have += rows
        lines += [f"## {t}", "", f"Definition: {DEFINITIONS[t]}", ""]
        lines.append("| " + " | ".join(h for _, h in COLS) + " |")
        lines.append("|" + "---|" * len(COLS))
        for r in sorted(rows, key=lambda r: (r.get("budget", 0), r["method"])):
            cells = []
            for k, _ in COLS:
                v = r.get(k)
                if k == "status" and v == "error":
                    v = "error: " + str(r.get("error", ""))[:80].replace("|", "/")
                cells.append(fmt(v))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"![{t}](results/learned/learned_{t}.png)", ""]
        lines += published_block(t, entries)
    if have:
        learned_plots(have, str(RUNS))
    lines += goal_block(entries)
    lines += ["## Published numbers: sources", ""]
    for src in {e["cite"]: e for e in entries}.values():
        lines.append(f"* {src['cite']}: {src['where']}")
    lines += ["", "Not retrieved (tables not reachable this session; what each paper's code says about its targets "
              "and budgets is recorded under `[[not_retrieved]]` in benchmarks/published_learned.toml):", ""]
    for m in missing:
        lines.append(f"* {m['paper']}: {m['summary']}")
    lines.append("")
    notes = ""
    if OUT.exists():
        old = OUT.read_text()
        if "\n## Notes" in old:
            notes = old[old.index("\n## Notes") + 1:]
    OUT.write_text("\n".join(lines) + ("\n" + notes if notes else ""))
    print(f"wrote {OUT} ({len(have)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
