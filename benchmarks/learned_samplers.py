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
    python benchmarks/learned_samplers.py            # reads benchmarks/results/learned/*/results.json

This script only collects: the table of every (target, method, budget) row with the columns of
samplax.bench.learned.LEARNED_COLUMNS, the error-vs-evaluations plot per target
(benchmarks/results/learned/learned_<target>.png), and the published numbers beside them.  The
hand-written analysis below the generated part ("## Notes" onwards) is kept when the file is rewritten.
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

#: published numbers, each with its source, its budget and what the number is
PUBLISHED = [
    ("gmm25", "NS (best nested sampler)", "|log Z err| 0.016", "Sendera et al. 2024, Table 1 (via benchmarks/logz.py)",
     "not stated per method in the table"),
    ("gmm25", "SMC", "|log Z err| 0.569", "Sendera et al. 2024, Table 1 (via benchmarks/logz.py)",
     "not stated per method in the table"),
    ("funnel", "NS", "|log Z err| 0.033", "Sendera et al. 2024, Table 1", "-"),
    ("funnel", "SMC", "|log Z err| 0.561", "Sendera et al. 2024, Table 1", "-"),
    ("many_well32", "NS", "|log Z err| 0.292", "Sendera et al. 2024, Table 1", "-"),
    ("many_well32", "SMC", "|log Z err| 14.99", "Sendera et al. 2024, Table 1", "-"),
    ("gmm25 / funnel / many_well32", "PIS, DDS, TB, VarGrad, +Expl., +LS, +LP (diffusion samplers)",
     "not retrieved in this session (Table 1 of the paper; the stored copies hold only its abstract)",
     "Sendera et al. 2024, Table 1 (mean +- sd over 5 runs)",
     "code defaults (gfn-diffusion energy_sampling/train.py): 25 000 iterations x 300 trajectories x T = 100 "
     "steps = 7.5e6 terminal energy evaluations, 7.5e8 gradient evaluations with the Langevin parametrization"),
    ("2-D MoG (DGFS's, not GMM-25)", "PIS / DDS", "|log Z err| 0.036 / 0.028 (reported); ~0.4 / 0.3 when "
     "re-run by a user", "Zhang et al. 2024 (DGFS), as quoted in zdhNarsil/Diffusion-Generative-Flow-Samplers "
     "issue #1", "dt = 0.05 (20 steps)"),
    ("many_well32", "TB+Expl., FL-SubTB+LP, VarGrad+Expl.+LP+LS", "a re-run gives Delta log Z 10-15, far from "
     "the paper's Table 1", "GFNOrg/gfn-diffusion issue #6", "the paper's defaults"),
    ("gmm40, dw4, lj13", "iDEM, FAB, PIS, DDS", "not retrieved in this session", "Akhound-Sadegh et al. 2024 "
     "(iDEM), Tables 1-2; Blessing et al. 2024 (Beyond ELBOs), Tables", "-"),
]

#: variant run folders (same budgets, one setting changed) and the label added to their method names
VARIANTS = {"cmcd_logvar": "+logvar",  # loss="logvar" (benchmarks/results/learned_cmcd_logvar.toml)
            "funnel_clip100": "+clip100",  # score_clip=100 (benchmarks/results/learned_funnel_clip100.toml)
            "dw4_pis_nanfix": " (NaN fix)"}  # after the NaN-score fix (benchmarks/results/learned_dw4_pis.toml)

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

    lines = ["# Learned samplers vs classical samplers at equal target evaluations", "",
             "Generated by `benchmarks/learned_samplers.py` from `samplax bench learned --budget-scale small` and `large` "
             "(suite `samplax/bench/suites/learned.toml`; how each method's settings follow from the budget: "
             "`samplax/bench/learned.py`).  Machine: 2 shared CPU cores, float32, one seed (0), one run per cell.",
             "",
             "**Budget** = total target evaluations (a value-and-gradient counts once): training + sampling for "
             "pis / dds / cmcd, everything for smc / nested_sampling / parallel_tempering.  `evals` is what the "
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
            continue
        rows = [r for f in files for r in json.loads(f.read_text())["rows"]]
        for folder, suffix in VARIANTS.items():
            variant = RUNS / folder / "results.json"
            if variant.exists():
                rows += [{**r, "method": r["method"] + suffix} for r in json.loads(variant.read_text())["rows"]
                         if r["target"] == t]
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
    if have:
        learned_plots(have, str(RUNS))
    lines += ["## Published numbers", "",
              "| target | method | number | source | budget |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(p) + " |" for p in PUBLISHED]
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
