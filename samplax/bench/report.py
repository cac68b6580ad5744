"""Plots and a self-contained HTML report for a run folder.

A run folder holds ``results.json`` and ``samples.npz`` (``samplax run``), or a
bench folder holds ``results.json`` with a table and ``runs/*/`` sub-folders
(``samplax bench``).  ``make_report(folder)`` writes PNGs and ``report.html``
with the images embedded, so the file can be mailed or archived on its own.

For a bench folder the page has

* the summary line and an HTML table of every run, failures and warnings first,
  the status coloured, every column sortable (click its header);
* the log Z table of the runs that estimate one;
* comparison plots across methods: ESS per gradient (or per log-density
  evaluation, for gradient-free methods) and ESS per second by target, and the
  error to the ground truth against the cost (evaluations);
* one collapsible section per run (failures open) with its plots.

Per run: traces and rank plots, a pair plot with divergent transitions marked,
the energy plot with E-BFMI (methods that report the Hamiltonian), the ESS
evolution (ArviZ's ``plot_trace``, ``plot_rank``, ``plot_pair``, ``plot_energy``,
``plot_ess``), the marginals against the ground truth, and R-hat/ESS bars.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os

import numpy as np

from samplax.core.result import STAT_NAMES, Result

MAX_PLOTTED = 6

#: Row order of the table: what needs attention first.
STATUS_ORDER = ("error", "failed", "failed (warned)", "passed (warned)", "no-truth (warned)", "passed", "no-truth")
_STATUS_CLASS = {"error": "bad", "failed": "bad", "failed (warned)": "bad", "passed (warned)": "warn",
                 "no-truth (warned)": "warn", "passed": "good", "no-truth": "none"}

#: (row key, header, tooltip) of the HTML table.
TABLE_COLUMNS = [
    ("method", "method", ""), ("target", "target", ""), ("status", "status", "accuracy check; (warned): the run "
                                                                          "raised warnings"),
    ("max_z_mean", "max|z|", "max over quantities of |mean - truth| / sqrt(MCSE^2 + se_truth^2)"),
    ("max_err_mean_sd", "err/sd", "max |mean - truth| / truth sd"),
    ("max_rel_var_err", "var err", "max |sd^2 / truth sd^2 - 1|"),
    ("max_z_sd", "z sd", "max z-score of the standard deviations"),
    ("min_ess_bulk", "min ESS", "smallest bulk ESS over quantities"),
    ("ess_per_grad", "ESS/grad", "min bulk ESS / gradient evaluations (warm-up included)"),
    ("ess_per_lp_eval", "ESS/lp-eval", "min bulk ESS / log-density evaluations"),
    ("ess_per_sec", "ESS/s", "min bulk ESS / sampling seconds after compilation"),
    ("grad_evals", "grads", "gradient evaluations"), ("logdensity_evals", "lp evals", "log-density evaluations"),
    ("compile_s", "compile s", "compile seconds"), ("divergences", "div", "divergent transitions"),
    ("max_rhat", "R-hat", "max rank-normalized split R-hat"), ("warnings", "warnings", "warning codes"),
]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1300px;margin:auto;padding:0 12px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
td.txt,th.txt{text-align:left}
th{background:#eee;cursor:pointer;user-select:none;position:sticky;top:0}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
td.good{background:#d8f0d8} td.warn{background:#fbe9c0} td.bad{background:#f6cccc;font-weight:bold}
td.none{background:#eee}
pre{background:#f4f4f4;padding:8px;overflow-x:auto;font-size:12px}
details{margin:6px 0;border:1px solid #ddd;padding:4px 8px} summary{cursor:pointer;font-size:15px}
img{max-width:100%}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var asc = !th.classList.contains('sorted-asc');
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc')});
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        var nx = parseFloat(x), ny = parseFloat(y), r;
        if (!isNaN(nx) && !isNaN(ny)) r = nx - ny;
        else if (!isNaN(nx)) r = -1; else if (!isNaN(ny)) r = 1;
        else r = x < y ? -1 : x > y ? 1 : 0;
        return asc ? r : -r;
      });
      rows.forEach(function(r){body.appendChild(r)});
    });
  });
});
// report.html#sort=KEY (or #sort=-KEY, descending) opens the page sorted by that column of the runs table
(function(){
  var m = /^#sort=(-?)(\w+)$/.exec(window.location.hash);
  if (!m) return;
  var th = document.querySelector('#runs th[data-key="' + m[2] + '"]');
  if (!th) return;
  th.click();
  if (m[1]) th.click();
})();
"""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _truth(result: Result):
    """The ground truth recorded with the run (``extra["ground_truth"]``), if any."""
    gt = (result.extra or {}).get("ground_truth")
    if not gt or gt.get("mean") is None or len(gt["mean"]) != result.quantities.shape[-1]:
        return None

    class _GT:
        mean = np.asarray(gt["mean"], float)
        std = np.asarray(gt["std"], float)

    return _GT


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=80)
    _plt().close(fig)
    return path


def _short_idata(result: Result, k: int):
    """An ArviZ InferenceData of the first ``k`` reported quantities and the run's statistics."""
    import arviz as az

    names = [n.replace("[", "_").replace("]", "").replace(",", "_") or f"q{i}"
             for i, n in enumerate(result.quantity_names[:k])]
    seen = {}
    for i, n in enumerate(names):  # keep names distinct after the replacement
        names[i] = n if n not in seen else f"{n}_{i}"
        seen[names[i]] = True
    posterior = {n: np.asarray(result.quantities[:, :, i]) for i, n in enumerate(names)}
    stats = {STAT_NAMES.get(s, s): np.asarray(v) for s, v in result.stats.items()
             if np.asarray(v).shape[:2] == result.quantities.shape[:2]}
    return az.from_dict(posterior=posterior, sample_stats=stats), names


def plot_run(result: Result, folder: str) -> list:
    """Write the per-run PNGs of ``result`` into ``folder``; return their paths.

    trace.png and rank.png (ArviZ), pair.png with divergences marked (ArviZ; two or more
    quantities), energy.png with E-BFMI (ArviZ; runs with an ``energy`` statistic),
    ess_evolution.png (ArviZ), marginals.png (against the ground truth or exact draws) and
    diagnostics.png (R-hat and ESS bars).  Runs with a single draw per chain get the last three.
    """
    plt = _plt()
    q = result.quantities
    names = list(result.quantity_names)
    k = min(q.shape[-1], MAX_PLOTTED)
    paths = []
    if q.shape[1] == 0:
        return paths
    gt = _truth(result)
    if q.shape[1] >= 4:
        paths += _arviz_plots(result, folder, k)

    fig, axes = plt.subplots(1, k, figsize=(2.6 * k, 2.4), squeeze=False)
    for i in range(k):
        ax = axes[0, i]
        ax.hist(q[:, :, i].ravel(), bins=50, density=True, alpha=0.6, color="C0", label="samplax")
        if result.reference_draws is not None:
            ax.hist(result.reference_draws[:, i], bins=50, density=True, histtype="step", color="k",
                    lw=1.2, label="exact draws")
        elif gt is not None and gt.mean is not None:
            m, s = gt.mean[i], gt.std[i]
            xs = np.linspace(m - 4 * s, m + 4 * s, 200)
            ax.plot(xs, np.exp(-0.5 * ((xs - m) / s) ** 2) / (s * np.sqrt(2 * np.pi)), "k--", lw=1,
                    label="truth mean/sd")
            ax.axvline(m, color="k", lw=0.8)
        ax.set_title(names[i], fontsize=8)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("marginals vs ground truth", fontsize=9)
    fig.tight_layout()
    paths.append(_save(fig, os.path.join(folder, "marginals.png")))

    d = result.diagnostics
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
    idx = np.arange(len(names))
    axes[0].bar(idx, d["rhat"], color="C1")
    axes[0].axhline(1.01, color="r", ls="--", lw=1)
    axes[0].set_title("rank-normalized R-hat")
    axes[1].bar(idx - 0.2, d["ess_bulk"], width=0.4, label="bulk")
    axes[1].bar(idx + 0.2, d["ess_tail"], width=0.4, label="tail")
    axes[1].axhline(100 * result.num_chains, color="r", ls="--", lw=1)
    axes[1].set_title("ESS")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, os.path.join(folder, "diagnostics.png")))
    return paths


def _arviz_plots(result: Result, folder: str, k: int) -> list:
    """ArviZ's trace, rank, pair (divergences marked), energy and ESS-evolution plots of one run."""
    import warnings

    import arviz as az

    plt = _plt()
    idata, names = _short_idata(result, k)
    paths = []
    has_div = "diverging" in idata.sample_stats if hasattr(idata, "sample_stats") else False
    with warnings.catch_warnings():  # ArviZ warns about short chains and bandwidths: not the report's news
        warnings.simplefilter("ignore")
        axes = az.plot_trace(idata, var_names=names, compact=False, figsize=(10, 1.7 * k),
                             divergences="bottom" if has_div else None)
        fig = np.ravel(axes)[0].figure
        fig.suptitle(f"{result.method} on {result.target}: traces", fontsize=10)
        fig.tight_layout()
        paths.append(_save(fig, os.path.join(folder, "trace.png")))

        axes = az.plot_rank(idata, var_names=names, figsize=(2.6 * k, 2.4))
        fig = np.ravel(axes)[0].figure
        fig.suptitle("rank plots (uniform when the chains agree)", fontsize=9)
        fig.tight_layout()
        paths.append(_save(fig, os.path.join(folder, "rank.png")))

        if k >= 2:
            kp = min(k, 4)
            axes = az.plot_pair(idata, var_names=names[:kp], divergences=has_div, figsize=(2.4 * kp, 2.4 * kp),
                                scatter_kwargs={"alpha": 0.3, "s": 4})
            fig = np.ravel(axes)[0].figure
            fig.suptitle("pairs (divergent transitions in red)" if has_div else "pairs", fontsize=9)
            paths.append(_save(fig, os.path.join(folder, "pair.png")))

        if "energy" in result.stats and np.all(np.isfinite(np.asarray(result.stats["energy"]))):
            ax = az.plot_energy(idata, figsize=(5, 3))
            fig = np.ravel(ax)[0].figure
            fig.suptitle("energy: marginal vs transition (E-BFMI)", fontsize=9)
            fig.tight_layout()
            paths.append(_save(fig, os.path.join(folder, "energy.png")))

        if result.quantities.shape[1] >= 20:
            axes = az.plot_ess(idata, var_names=names, kind="evolution", figsize=(2.8 * k, 2.4))
            fig = np.ravel(axes)[0].figure
            fig.suptitle("ESS as draws accumulate", fontsize=9)
            fig.tight_layout()
            paths.append(_save(fig, os.path.join(folder, "ess_evolution.png")))
    plt.close("all")
    return paths


def _img(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(os.path.basename(path))}">'


def _sort_value(value) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(int(value))
    if isinstance(value, (int, float)):
        return "" if isinstance(value, float) and math.isnan(value) else repr(float(value))
    return str(value)


def _text(key: str, value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4f}" if key in ("ess_per_grad", "ess_per_lp_eval") else f"{value:.3g}"
    return str(value)


def status_rank(status: str) -> int:
    """Position of a row's status in :data:`STATUS_ORDER` (unknown statuses last)."""
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def table_html(rows: list) -> str:
    """The runs as a sortable HTML table, failures and warnings first, the status cell coloured."""
    head = "".join(f'<th class="{"txt" if k in ("method", "target", "status", "warnings") else ""}" '
                   f'data-key="{k}" title="{html.escape(tip)}">{html.escape(h)}</th>' for k, h, tip in TABLE_COLUMNS)
    body = []
    for r in sorted(rows, key=lambda r: status_rank(str(r.get("status", "")))):
        cells = []
        for k, _, _ in TABLE_COLUMNS:
            v = r.get(k)
            cls = []
            if k in ("method", "target", "status", "warnings"):
                cls.append("txt")
            if k == "status":
                cls.append(_STATUS_CLASS.get(str(v), "none"))
            title = f' title="{html.escape(str(r.get("error")))}"' if k == "status" and r.get("error") else ""
            cells.append(f'<td class="{" ".join(cls)}" data-sort="{html.escape(_sort_value(v))}"{title}>'
                         f'{html.escape(_text(k, v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable" id="runs"><thead><tr>{head}</tr></thead><tbody>'
            + "\n".join(body) + "</tbody></table>")


def _log_z_html(rows: list) -> str:
    z_rows = [r for r in rows if "log_Z" in r]
    if not z_rows:
        return ""
    cols = [("method", "method"), ("target", "target"), ("log_Z", "log Z"), ("log_Z_err", "error"),
            ("log_Z_se", "se"), ("log_Z_z", "|err|/se"), ("log_Z_sd_runs", "sd over runs")]
    head = "".join(f"<th>{h}</th>" for _, h in cols)
    body = "".join("<tr>" + "".join(f'<td data-sort="{html.escape(_sort_value(r.get(k)))}">'
                                    f"{html.escape(_text(k, r.get(k)))}</td>" for k, _ in cols) + "</tr>"
                   for r in z_rows)
    return f'<h2>log Z</h2><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def comparison_plots(rows: list, folder: str) -> list:
    """Across methods: ESS per cost and ESS/s by target (bars, log scale), and error against cost.

    The cost of a run is its gradient evaluations, or its log-density evaluations for a
    gradient-free method; the error is ``max |mean - truth| / truth sd`` over quantities.
    """
    plt = _plt()
    rows = [r for r in rows if r.get("status") != "error"]
    if not rows:
        return []
    methods = sorted({r["method"] for r in rows})
    targets = sorted({r["target"] for r in rows})
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    paths = []

    def per_cost(r):
        v = r.get("ess_per_grad") if r.get("grad_evals") else r.get("ess_per_lp_eval")
        return v if isinstance(v, (int, float)) and np.isfinite(v) and v > 0 else np.nan

    def per_sec(r):
        v = r.get("ess_per_sec")
        return v if isinstance(v, (int, float)) and np.isfinite(v) and v > 0 else np.nan

    width = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.3 * len(targets) * 2), 3.6))
    for ax, fn, title in ((axes[0], per_cost, "ESS per gradient (per lp-eval if gradient-free)"),
                          (axes[1], per_sec, "ESS per second")):
        for j, m in enumerate(methods):
            vals = [max([v for v in (fn(r) for r in rows if r["method"] == m and r["target"] == t)
                         if np.isfinite(v)] or [np.nan]) for t in targets]
            ax.bar(np.arange(len(targets)) + (j - (len(methods) - 1) / 2) * width, vals, width=width,
                   color=colours[m], label=m)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(targets)))
        ax.set_xticklabels(targets, rotation=35, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(_save(fig, os.path.join(folder, "compare_ess.png")))

    pts = [(r, r.get("grad_evals") or r.get("logdensity_evals"), r.get("max_err_mean_sd")) for r in rows]
    pts = [(r, c, e) for r, c, e in pts if c and isinstance(e, float) and np.isfinite(e) and e > 0]
    if pts:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for m in methods:
            sel = [(c, e, r) for r, c, e in pts if r["method"] == m]
            if sel:
                ok = [str(r.get("status", "")).startswith("passed") for _, _, r in sel]
                ax.scatter([c for c, _, _ in sel], [e for _, e, _ in sel], color=colours[m], label=m,
                           marker="o", s=[22 if o else 60 for o in ok],
                           edgecolors=["none" if o else "k" for o in ok])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("evaluations (gradients; log-densities if gradient-free)")
        ax.set_ylabel("max |mean - truth| / sd")
        ax.set_title("error vs cost (large, outlined: failed)", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        paths.append(_save(fig, os.path.join(folder, "compare_error_cost.png")))
    return paths


def _run_section(result: Result, folder: str, row: dict | None = None, plots: bool = True) -> str:
    paths = plot_run(result, folder) if plots else []
    status = str((row or {}).get("status", ""))
    badge = (f' <span class="{_STATUS_CLASS.get(status, "none")}" style="padding:0 6px">'
             f'{html.escape(status)}</span>' if status else "")
    open_ = " open" if status_rank(status) <= 2 else ""
    parts = [f"<details{open_}><summary><b>{html.escape(result.method)}</b> on "
             f"<b>{html.escape(result.target)}</b>{badge}</summary>",
             f"<pre>{html.escape(result.summary())}</pre>"]
    parts += [_img(p) for p in paths]
    parts.append("</details>")
    return "\n".join(parts)


def _page(title: str, body: list) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>" + "\n".join(body)
            + f"<script>{_SORT_JS}</script></body></html>")


def make_report(folder: str, plots: bool = True) -> str:
    """Write plots and ``report.html`` into ``folder``; return the HTML path.

    ``plots=False`` writes the page with its tables and run summaries only (no figures).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"report: run folder {folder!r} does not exist")
    res_json = os.path.join(folder, "results.json")
    if not os.path.exists(res_json):
        raise FileNotFoundError(f"report: {folder!r} has no results.json (not a samplax run folder)")
    with open(res_json) as f:
        meta = json.load(f)
    body = []
    if "rows" in meta:  # bench folder
        from samplax.bench.harness import Z_PASS, summary_line

        rows = meta["rows"]
        name = str(meta.get("suite", {}).get("name", ""))
        title = f"samplax bench: {name}"
        body.append(f"<h1>{html.escape(title)}</h1>")
        body.append(f"<p><b>{html.escape(summary_line(rows))}</b></p>")
        body.append("<p>z-scores: |estimate - truth| / sqrt(MCSE^2 + se_truth^2). Status: <b>passed</b> when "
                    f"every z-score is at most {Z_PASS:g}, else <b>failed</b>; <b>(warned)</b> when the run "
                    "raised warnings (codes in the last column), which never turn a failed check into a pass; "
                    "<b>error</b> when the run raised (the message is the cell's tooltip). "
                    "ESS/grad counts every gradient evaluation including warm-up; ESS/lp-eval every "
                    "log-density evaluation (the cost of gradient-free methods); ESS/s uses sampling time "
                    "after compilation. Click a column header to sort.</p>")
        body.append(table_html(rows))
        if any(r.get("budget") is not None for r in rows):
            from samplax.bench.learned import format_learned_table

            body.append("<h2>Equal-budget metrics</h2><pre>" + html.escape(format_learned_table(rows)) + "</pre>")
        body.append(_log_z_html(rows))
        figures = comparison_plots(rows, folder) if plots else []
        if plots and any(r.get("budget") is not None for r in rows):  # a learned suite: error vs evaluations
            from samplax.bench.learned import learned_plots

            figures += learned_plots(rows, folder)
        if figures:
            body.append("<h2>Across methods</h2>")
            body += [_img(p) for p in figures]
        body.append("<h2>Runs</h2>")
        runs_dir = os.path.join(folder, "runs")
        by_dir = {r.get("run_dir"): r for r in rows if r.get("run_dir")}
        sections = []
        for sub in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
            p = os.path.join(runs_dir, sub)
            if os.path.exists(os.path.join(p, "samples.npz")):
                result = Result.load(p)
                row = by_dir.get(sub) or next((r for r in rows if r.get("method") == result.method
                                               and r.get("target") == result.target), None)
                sections.append((status_rank(str((row or {}).get("status", ""))), sub, result, p, row))
        for _, _, result, p, row in sorted(sections, key=lambda s: (s[0], s[1])):
            body.append(_run_section(result, p, row, plots))
    else:
        result = Result.load(folder)
        title = f"samplax run: {result.method} on {result.target}"
        body.append(f"<h1>{html.escape(title)}</h1>")
        body.append(_run_section(result, folder, plots=plots))
    out = os.path.join(folder, "report.html")
    with open(out, "w") as f:
        f.write(_page(title, body))
    return out
