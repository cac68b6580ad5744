"""Run a suite of (method, target) pairs and score each against ground truth.

Per run the table reports (all moments of the reported quantities
``target.constrain(x)``):

* ``max_z_mean``: ``max_i |mean_i - truth_i| / sqrt(mcse_i^2 + se_truth_i^2)``;
* ``max_err_mean_sd``: ``max_i |mean_i - truth_i| / truth_sd_i``;
* ``max_rel_var_err``: ``max_i |sd_i^2 / truth_sd_i^2 - 1|``;
* ``max_z_sd``: ``max_i |sd_i - truth_sd_i| / sqrt(mcse_sd_i^2 + se_truth_sd_i^2)``, where
  ``mcse_sd_i`` is at least ``truth_sd_i sqrt((kurtosis_i - 1) / (4 ESS_sd_i))`` when the
  ground truth knows the kurtosis (the delta-method error of a sample sd); quantities with
  ``kurtosis_i - 1 > ESS_sd_i`` (relative error of the sd above 1/2: the funnel's ``x_i``,
  kurtosis 3 e^9) cannot be checked from the draws and are listed in ``sd_unchecked``;
* ``min_ess_bulk``, ``ess_per_grad`` (min bulk ESS / all gradient evaluations,
  warm-up included; NaN for a gradient-free method), ``ess_per_lp_eval`` (min bulk
  ESS / all log-density evaluations, printed "ESS/lp-eval": the cost measure of
  gradient-free methods), ``ess_per_sec`` (min bulk ESS / sampling seconds after
  compilation), ``compile_s``;
* for methods that estimate the normalizing constant (SMC family, nested
  sampling): ``log_Z``, ``log_Z_se``, ``log_Z_err = log_Z - log Z_true``,
  ``log_Z_z = |log_Z_err| / sqrt(log_Z_se^2 + se_truth^2)`` (not scored when both are 0) and
  ``log_Z_sd_runs`` (the spread of the independent runs' estimates, i.e. the error of one run);
* ``pass``: the run is accurate: all z-scores (moments and, where the target's
  ``log Z`` is known, ``log_Z_z``) below ``Z_PASS`` (a Bonferroni-style bound for
  up to ~100 quantities at a 1e-4 family-wise false-alarm rate); ``None`` when
  the target has no ground truth to check against.  A run whose min bulk ESS is below ``MIN_ESS_PASS``
  (100) does not pass either: its MCSE, hence its z-scores, cannot be trusted (``ess_too_low`` True).
  Warnings never make a run pass;
* ``status``: ``passed`` or ``failed`` by that check (``no-truth`` without ground
  truth), with `` (warned)`` appended when the run raised warnings (``warnings``
  lists their codes): ``failed (warned)`` is an inaccurate run whose own diagnostics
  flagged it, ``failed`` one that looked fine to them (the worst case),
  ``passed (warned)`` an accurate run with warnings.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import time
import tomllib
from typing import Optional

import numpy as np

from samplax.core.result import Result

Z_PASS = 5.0
#: below this min bulk ESS a z-score says nothing (its MCSE is itself unreliable: a chain that wanders off has a
#: huge MCSE and a small z), so the run cannot pass (Vehtari et al. 2021 ask for ESS > 100 before trusting MCSE)
MIN_ESS_PASS = 100.0


def suite_names() -> list:
    files = importlib.resources.files("samplax.bench") / "suites"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def load_suite(name_or_path: str) -> dict:
    """Load a suite by name (``samplax/bench/suites/NAME.toml``) or from a TOML path."""
    if os.path.exists(name_or_path):
        with open(name_or_path, "rb") as f:
            return tomllib.load(f)
    files = importlib.resources.files("samplax.bench") / "suites" / f"{name_or_path}.toml"
    if not files.is_file():
        raise ValueError(f"unknown suite {name_or_path!r}; known: {suite_names()} (or pass a .toml path)")
    return tomllib.loads(files.read_text())


def evaluate(result: Result, target) -> dict:
    """Score one Result against ``target.ground_truth()`` (see module docstring)."""
    d = result.diagnostics
    row = {
        "method": result.method, "target": result.target,
        "chains": result.num_chains, "draws": result.num_draws,
        "min_ess_bulk": float(np.nanmin(d["ess_bulk"])), "min_ess_tail": float(np.nanmin(d["ess_tail"])),
        "max_rhat": float(np.nanmax(d["rhat"])),
        "grad_evals": int(result.cost.get("num_grad_evals", 0)),
        "logdensity_evals": int(result.cost.get("num_logdensity_evals", 0)),
        "compile_s": float(result.cost.get("compile_seconds", 0.0)),
        "sampling_s": float(result.cost.get("sampling_seconds", 0.0)),
        "divergences": int(np.sum(result.stats["diverging"])) if "diverging" in result.stats else 0,
        "warnings": ",".join(sorted({w["code"] for w in result.warnings})),
    }
    nan = float("nan")
    row["ess_per_grad"] = row["min_ess_bulk"] / row["grad_evals"] if row["grad_evals"] else nan
    row["ess_per_lp_eval"] = row["min_ess_bulk"] / row["logdensity_evals"] if row["logdensity_evals"] else nan
    row["ess_per_sec"] = row["min_ess_bulk"] / max(row["sampling_s"], 1e-9)
    gt = target.ground_truth()
    row["truth"] = gt.kind if gt is not None else "none"
    if gt is not None and gt.mean is not None:
        mean, sd = np.asarray(d["mean"]), np.asarray(d["sd"])
        tm, ts = np.asarray(gt.mean, float), np.asarray(gt.std, float)
        tm_se = np.zeros_like(tm) if gt.mean_se is None else np.asarray(gt.mean_se, float)
        ts_se = np.zeros_like(ts) if gt.std_se is None else np.asarray(gt.std_se, float)
        z_mean = np.abs(mean - tm) / np.sqrt(np.asarray(d["mcse_mean"]) ** 2 + tm_se**2)
        mcse_sd = np.asarray(d["mcse_sd"], float)
        checkable = np.ones(ts.shape, bool)
        if gt.kurtosis is not None:
            # the draws' own kurtosis underestimates a heavy tail; the known one gives the CLT error of the
            # sd, se(sd) = sd sqrt((kurtosis - 1) / (4 ESS_sd)).  Where kurtosis - 1 > ESS_sd that error is
            # over half the sd and the delta method itself fails: those sds are not checked (and named).
            from samplax.diagnostics import ess_sd

            draws = result.quantities if result.quantities is not None else result.samples
            ess = np.asarray(ess_sd(np.asarray(draws).reshape(draws.shape[0], draws.shape[1], -1)), float)
            kurt = np.asarray(gt.kurtosis, float)
            mcse_sd = np.maximum(mcse_sd, ts * np.sqrt(np.maximum(kurt - 1.0, 0.0) / (4.0 * ess)))
            checkable = ~(kurt - 1.0 > ess)
        z_sd = np.abs(sd - ts) / np.sqrt(mcse_sd**2 + ts_se**2)
        row.update(
            max_z_mean=float(np.nanmax(z_mean)), max_err_mean_sd=float(np.nanmax(np.abs(mean - tm) / ts)),
            max_rel_var_err=float(np.nanmax(np.abs(sd**2 / ts**2 - 1.0))),
            max_z_sd=float(np.nanmax(z_sd[checkable])) if checkable.any() else float("nan"),
            sd_unchecked=",".join(n for n, c in zip(result.quantity_names, checkable) if not c))
    else:
        row.update(max_z_mean=float("nan"), max_err_mean_sd=float("nan"), max_rel_var_err=float("nan"),
                   max_z_sd=float("nan"))
    checks = [] if gt is None or gt.mean is None else [row["max_z_mean"]] + (
        [row["max_z_sd"]] if np.isfinite(row["max_z_sd"]) else [])
    if result.log_Z is not None:
        row["log_Z"] = float(result.log_Z)
        row["log_Z_se"] = float(result.log_Z_se) if result.log_Z_se is not None else float("nan")
        sd_runs = (result.extra or {}).get("log_Z_sd_over_runs")
        row["log_Z_sd_runs"] = float(sd_runs) if sd_runs is not None else float("nan")
        if gt is not None and gt.log_Z is not None:
            row["log_Z_err"] = float(result.log_Z - gt.log_Z)
            se = float(np.sqrt(row["log_Z_se"] ** 2 + (gt.log_Z_se or 0.0) ** 2))
            if se > 0:  # an estimate without a standard error is reported, not scored
                row["log_Z_z"] = abs(row["log_Z_err"]) / se
                checks.append(row["log_Z_z"])
            else:
                row["log_Z_z"] = float("nan")
    warned = " (warned)" if result.warnings else ""
    row["ess_too_low"] = bool(row["min_ess_bulk"] < MIN_ESS_PASS)
    if checks:
        accurate = all(c <= Z_PASS for c in checks) and not row["ess_too_low"]  # a NaN score is not accurate
        row["pass"] = bool(accurate)
        row["status"] = ("passed" if accurate else "failed") + warned
    else:
        row["pass"] = None
        row["status"] = "no-truth" + warned
    return row


#: every value of a row's ``status``, in the order the summary counts them
STATUSES = ("passed", "passed (warned)", "failed (warned)", "failed", "no-truth", "no-truth (warned)", "error")


def status_counts(rows: list) -> dict:
    """How many rows have each status (every status of :data:`STATUSES`, zeros included)."""
    return {s: sum(1 for r in rows if r.get("status") == s) for s in STATUSES}


def summary_line(rows: list) -> str:
    """One line counting the runs of each status, e.g. ``2 passed, 1 failed (warned) of 3 runs``."""
    counts = status_counts(rows)
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    return f"{', '.join(parts) or 'no runs'} of {len(rows)} runs"


def num_failed(rows: list) -> int:
    """Rows whose accuracy check failed, warned or not, and runs that raised (status ``error``)."""
    return sum(1 for r in rows if str(r.get("status", "")).startswith(("failed", "error")))


def cost_label(row: dict) -> str:
    """``ESS/grad=...`` for a run that evaluated gradients, else ``ESS/lp-eval=...`` (per log-density evaluation)."""
    if row.get("grad_evals"):
        return f"ESS/grad={row['ess_per_grad']:.4f}"
    return f"ESS/lp-eval={row['ess_per_lp_eval']:.4f}"


@dataclasses.dataclass
class SuiteRun:
    name: str
    rows: list
    results: list
    out_dir: Optional[str]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (method, target, seed) run of a suite: everything a process needs to run it on its own."""

    index: int
    method: str
    target: str
    target_params: dict
    kwargs: dict  # num_chains, num_warmup, num_samples, seed
    options: dict
    budget: Optional[int] = None  # total target evaluations (learned suites, samplax.bench.learned)
    metrics: str = "standard"  # "learned": the row also gets samplax.bench.learned.learned_metrics
    error: Optional[str] = None  # why the cell cannot run (a budget too small for the method): an error row

    @property
    def run_dir(self) -> str:
        """The run's sub-folder of the suite's run folder."""
        tail = "" if self.budget is None else f"_{self.budget}"
        return f"{self.index:02d}_{self.method}_{self.target}{tail}"


def suite_cells(spec: dict, only: Optional[list] = None, overrides: Optional[dict] = None,
                budget_scale: Optional[str] = None) -> list:
    """The cells of a loaded suite, with the suite's defaults, each entry's values and ``overrides`` applied.

    A suite with ``kind = "learned"`` is expanded over its targets, methods and the budgets of
    ``budget_scale`` by :func:`samplax.bench.learned.expand_cells`."""
    meta = dict(spec.get("suite", {}))
    if meta.get("kind") == "learned":
        from samplax.bench.learned import expand_cells

        return expand_cells(spec, only, overrides, budget_scale)
    if budget_scale is not None:
        raise ValueError(f"budget_scale={budget_scale!r} applies to a learned suite (kind = \"learned\") only")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    defaults = {k: meta[k] for k in ("num_chains", "num_warmup", "num_samples", "seed") if k in meta}
    entries = spec.get("run", [])
    if only:
        entries = [e for e in entries if e["target"] in only or e["method"] in only]
    cells = []
    for i, e in enumerate(entries):
        kw = dict(defaults)
        kw.update({k: e[k] for k in ("num_chains", "num_warmup", "num_samples", "seed") if k in e})
        kw.update(overrides)
        cells.append(Cell(i, e["method"], e["target"], dict(e.get("target_params", {})), kw,
                          dict(e.get("options", {}))))
    return cells


def run_cell(cell: Cell, progress: bool = False):
    """Run one cell and score it: ``(row, result)``.  Raises what the run raises."""
    import samplax

    if cell.error is not None:
        raise ValueError(cell.error)
    target = samplax.targets.get(cell.target, **cell.target_params)
    t0 = time.perf_counter()
    res = samplax.sample(target, cell.method, progress=progress, **cell.kwargs, **cell.options)
    row = evaluate(res, target)
    row["wall_s"] = time.perf_counter() - t0
    if cell.metrics == "learned":
        from samplax.bench.learned import learned_metrics

        row["budget"] = cell.budget
        row.update(learned_metrics(res, target, seed=int(cell.kwargs.get("seed", 0))))
    return row, res


def error_row(cell: Cell, error: BaseException | str, attempts: int = 1) -> dict:
    """The row of a cell whose run raised (status ``error``; the message in ``error``)."""
    msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    row = {"method": cell.method, "target": cell.target, "status": "error", "pass": False, "error": msg,
           "attempts": attempts, "warnings": ""}
    if cell.budget is not None:
        row["budget"] = cell.budget
    return row


def run_suite(suite: str | dict, out_dir: Optional[str] = None, progress: bool = True,
              only: Optional[list] = None, overrides: Optional[dict] = None, ray: Optional[str] = None,
              retries: int = 2, budget_scale: Optional[str] = None) -> SuiteRun:
    """Run every entry of a suite; write per-run folders and the table into ``out_dir``.

    ``overrides`` (``num_chains``, ``num_warmup``, ``num_samples``, ``seed``) replace the suite's
    and every entry's values, e.g. for a short smoke run; they are recorded in the suite
    metadata (``config.json``, ``results.json``) under ``"overrides"``.  ``progress``: print
    ``run i of n: METHOD on TARGET`` (stdout) before each run, the run's own progress display
    (compile phase, steps, ETA; stderr) under it, and the run's result line after it.

    A run that raises becomes a row with status ``error`` and the message (the other runs go
    on).  ``ray``: spread the cells over a Ray cluster -- ``"local"`` starts one on this
    machine, anything else is a cluster address -- each cell retried up to ``retries`` times
    when it raises or its worker dies (:mod:`samplax.bench.ray_runner`); the rows, results
    and run folder are those of a serial run.  ``budget_scale``: which budget set of a learned
    suite to run (:mod:`samplax.bench.learned`; its rows get the columns of
    :data:`samplax.bench.learned.LEARNED_COLUMNS`, and the run folder ``learned.txt``).
    """
    spec = load_suite(suite) if isinstance(suite, str) else suite
    meta = dict(spec.get("suite", {}))
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - {"num_chains", "num_warmup", "num_samples", "seed"})
    if unknown:
        raise ValueError(f"run_suite: overrides may set num_chains, num_warmup, num_samples, seed; got {unknown}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"run_suite: retries must be an integer >= 0, got {retries!r}")
    if overrides:
        meta["overrides"] = overrides
    if budget_scale is not None:
        meta["budget_scale"] = budget_scale
    cells = suite_cells(spec, only, overrides, budget_scale)
    for c in cells:  # unknown target names fail before anything runs (the CLI turns this into one line)
        _check_cell(c)
    n = len(cells)

    def report(cell, row):
        if progress and row.get("status") == "error":
            print(f"[{cell.index + 1}/{n}] {cell.method:>8} on {cell.target:<22} error: {row['error']}", flush=True)
        elif progress and cell.metrics == "learned":
            print(f"[{cell.index + 1}/{n}] {cell.method:>8} on {cell.target:<12} budget {cell.budget:>9}: "
                  f"evals={row['total_evals']}  log Z err={row.get('log_Z_err', float('nan')):.3g}  "
                  f"({row['wall_s']:.1f}s)", flush=True)
        elif progress:
            print(f"[{cell.index + 1}/{n}] {cell.method:>8} on {cell.target:<22} {row['status']:<15}  "
                  f"max|z|={row['max_z_mean']:.2f}  minESS={row['min_ess_bulk']:.0f}  "
                  f"{cost_label(row)}  ({row['wall_s']:.1f}s)", flush=True)

    if ray is not None:
        from samplax.bench.ray_runner import run_cells

        outcomes = run_cells(cells, address=ray, retries=retries, on_done=report)
    else:
        outcomes = []
        for cell in cells:
            if progress:  # the run's own progress display (stderr) follows this line
                print(f"run {cell.index + 1} of {n}: {cell.method} on {cell.target}", flush=True)
            try:
                row, res = run_cell(cell, progress=progress)
            except Exception as e:  # noqa: BLE001 - a failed run is a row of the table, not the suite's end
                row, res = error_row(cell, e), None
            report(cell, row)
            outcomes.append((row, res))
    rows, results = [], []
    for cell, (row, res) in zip(cells, outcomes):
        row["run_dir"] = cell.run_dir
        rows.append(row)
        results.append(res)
        if out_dir is not None and res is not None:
            res.save(os.path.join(out_dir, "runs", cell.run_dir))
    if out_dir is not None:
        write_table(rows, out_dir, meta)
    return SuiteRun(meta.get("name", str(suite)), rows, results, out_dir)


def _check_cell(cell: Cell) -> None:
    import samplax
    from samplax.methods import method_names

    if cell.target not in samplax.targets.names():
        raise ValueError(f"suite entry {cell.index}: unknown target {cell.target!r}")
    if cell.method not in method_names():
        raise ValueError(f"suite entry {cell.index}: unknown method {cell.method!r}")


COLUMNS = ["method", "target", "status", "max_z_mean", "max_err_mean_sd", "max_rel_var_err", "max_z_sd",
           "min_ess_bulk", "ess_per_grad", "ess_per_lp_eval", "ess_per_sec", "compile_s", "sampling_s",
           "divergences", "max_rhat", "warnings", "sd_unchecked", "log_Z", "log_Z_err", "log_Z_se", "log_Z_z",
           "log_Z_sd_runs"]


def _cell(key: str, value) -> str:
    """One value of the terminal table as text: ratios of ESS to cost with 4 decimals, "-" where absent."""
    if isinstance(value, float):
        if np.isnan(value) and key.startswith("ess_per"):
            return "-"
        return f"{value:.4f}" if key in ("ess_per_grad", "ess_per_lp_eval") else f"{value:.3g}"
    return str(value) if value not in ("", None) else "-"


def format_table(rows: list) -> str:
    """A fixed-width text table of the main columns, the warning codes last."""
    cols = [("method", "method", -8), ("target", "target", -22), ("status", "status", -15),
            ("max_z_mean", "max|z|", 10), ("max_err_mean_sd", "err/sd", 10), ("max_rel_var_err", "var_err", 10),
            ("max_z_sd", "z_sd", 10), ("min_ess_bulk", "minESS", 10), ("ess_per_grad", "ESS/grad", 10),
            ("ess_per_lp_eval", "ESS/lp-eval", 11), ("ess_per_sec", "ESS/s", 10), ("compile_s", "compile", 10),
            ("divergences", "div", 10), ("max_rhat", "R-hat", 10), ("warnings", "warnings", 0)]

    def line(texts):
        return " ".join(t if w == 0 else f"{t:<{-w}}" if w < 0 else f"{t:>{w}}"
                        for t, (_, _, w) in zip(texts, cols)).rstrip()

    out = [line([h for _, h, _ in cols])]
    out += [line([_cell(k, r.get(k, "")) for k, _, _ in cols]) for r in rows]
    z_rows = [r for r in rows if "log_Z" in r]
    if z_rows:  # the normalizing-constant estimates, one line per run that has one
        out += ["", f"{'method':<8} {'target':<22} {'log Z':>10} {'error':>10} {'se':>10} {'|err|/se':>10} "
                    f"{'sd(runs)':>10}"]
        for r in z_rows:
            cells = [f"{r['method']:<8}", f"{r['target']:<22}"]
            cells += [f"{r[k]:>10.4g}" if isinstance(r.get(k), float) else f"{'-':>10}"
                      for k in ("log_Z", "log_Z_err", "log_Z_se", "log_Z_z", "log_Z_sd_runs")]
            out.append(" ".join(cells))
    return "\n".join(out)


def write_table(rows: list, out_dir: str, meta: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"suite": meta, "summary": status_counts(rows), "rows": rows}, f, indent=1, default=str)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(meta, f, indent=1, default=str)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = sorted({k for r in rows for k in r})
        table = pa.table({c: [None if r.get(c) is None else str(r.get(c)) if isinstance(r.get(c), str)
                              else r.get(c) for r in rows] for c in cols})
        pq.write_table(table, os.path.join(out_dir, "results.parquet"))
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    with open(os.path.join(out_dir, "results.txt"), "w") as f:
        f.write(format_table(rows) + "\n\n" + summary_line(rows) + "\n")
    if meta.get("kind") == "learned":
        from samplax.bench.learned import format_learned_table

        with open(os.path.join(out_dir, "learned.txt"), "w") as f:
            f.write(format_learned_table(rows) + "\n")
