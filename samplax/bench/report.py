"""Plots and a self-contained HTML report for a run folder.

A run folder holds ``results.json`` and ``samples.npz`` (``samplax run``), or a
bench folder holds ``results.json`` with a table and ``runs/*/`` sub-folders
(``samplax bench``).  ``make_report(folder)`` writes PNGs (trace, marginals
against ground truth, R-hat/ESS bars) and ``report.html`` with the images
embedded, so the file can be mailed or archived on its own.
"""
from __future__ import annotations

import base64
import html
import json
import os

import numpy as np

from samplax.core.result import Result

MAX_PLOTTED = 6


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


def plot_run(result: Result, folder: str) -> list:
    """Write trace.png, marginals.png and diagnostics.png for one Result; return the paths."""
    plt = _plt()
    q = result.quantities
    names = list(result.quantity_names)
    k = min(q.shape[-1], MAX_PLOTTED)
    paths = []
    gt = _truth(result)
    if q.shape[1] == 0:
        return paths
    fig, axes = plt.subplots(k, 1, figsize=(8, 1.6 * k), squeeze=False, sharex=True)
    for i in range(k):
        ax = axes[i, 0]
        for c in range(q.shape[0]):
            ax.plot(q[c, :, i], lw=0.5, alpha=0.8)
        ax.set_ylabel(names[i], fontsize=8)
    axes[-1, 0].set_xlabel("draw")
    fig.suptitle(f"{result.method} on {result.target}: traces")
    fig.tight_layout()
    paths.append(os.path.join(folder, "trace.png"))
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)

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
    paths.append(os.path.join(folder, "marginals.png"))
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)

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
    paths.append(os.path.join(folder, "diagnostics.png"))
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    return paths


def _img(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _run_section(result: Result, folder: str) -> str:
    paths = plot_run(result, folder)
    parts = [f"<h2>{html.escape(result.method)} on {html.escape(result.target)}</h2>",
             f"<pre>{html.escape(result.summary())}</pre>"]
    parts += [_img(p) for p in paths]
    return "\n".join(parts)


def make_report(folder: str) -> str:
    """Write plots and ``report.html`` into ``folder``; return the HTML path."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"report: run folder {folder!r} does not exist")
    res_json = os.path.join(folder, "results.json")
    if not os.path.exists(res_json):
        raise FileNotFoundError(f"report: {folder!r} has no results.json (not a samplax run folder)")
    with open(res_json) as f:
        meta = json.load(f)
    body = []
    if "rows" in meta:  # bench folder
        from samplax.bench.harness import Z_PASS, format_table, summary_line

        body.append(f"<h1>samplax bench: {html.escape(str(meta.get('suite', {}).get('name', '')))}</h1>")
        body.append("<p>z-scores: |estimate - truth| / sqrt(MCSE^2 + se_truth^2). Status: <b>passed</b> when "
                    f"every z-score is at most {Z_PASS:g}, else <b>failed</b>; <b>(warned)</b> when the run "
                    "raised warnings (codes in the last column), which never turn a failed check into a pass. "
                    "ESS/grad counts every gradient evaluation including warm-up; ESS/lp-eval every "
                    "log-density evaluation (the cost of gradient-free methods); ESS/s uses sampling time "
                    "after compilation.</p>")
        body.append(f"<pre>{html.escape(format_table(meta['rows']))}\n\n"
                    f"{html.escape(summary_line(meta['rows']))}</pre>")
        runs_dir = os.path.join(folder, "runs")
        for sub in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
            p = os.path.join(runs_dir, sub)
            if os.path.exists(os.path.join(p, "samples.npz")):
                body.append(_run_section(Result.load(p), p))
    else:
        result = Result.load(folder)
        body.append(f"<h1>samplax run: {html.escape(result.method)} on {html.escape(result.target)}</h1>")
        body.append(_run_section(result, folder))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>samplax report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}pre{background:#f4f4f4;"
            "padding:8px;overflow-x:auto;font-size:12px}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    out = os.path.join(folder, "report.html")
    with open(out, "w") as f:
        f.write(page)
    return out
