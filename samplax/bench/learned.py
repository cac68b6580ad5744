"""The learned-sampler benchmark: learned (pis, dds, cmcd) and classical (smc, nested_sampling,
parallel_tempering) methods on the same targets at the same *total* target-evaluation budgets.

A suite of kind ``"learned"`` (``samplax/bench/suites/learned.toml``) names its methods, its targets
(with per-target options for the learned and for the classical methods) and budget sets
(``[suite.budgets]``: ``scale -> [B1, B2, ...]``); :func:`expand_cells` turns it into one harness
:class:`~samplax.bench.harness.Cell` per (target, method, budget), whose options are chosen from the
budget by :func:`budget_options`.  The unit of a budget is one *target evaluation*: a log-density
evaluation, a value-and-gradient evaluation counting once, i.e. ``max(log-density evaluations,
gradient evaluations)`` of the run's cost -- training and sampling together for the learned methods.

Settings from a budget ``B`` (each run's actual count is in the row, ``total_evals``):

* trained methods (``pis``, ``dds``, ``cmcd``, every method registered with a ``trainer``): ``num_samples``
  draws cost ``num_samples x`` the method's ``sampling_cost(options)``; the rest, ``B - that``, is the
  option ``training_evals`` (the method's own checks stop a budget that does not pay for one training step);
* smc: a fixed power schedule of ``SMC_TEMPERATURES`` temperatures, ``SMC_MOVES`` HMC moves of
  ``SMC_LEAPFROG`` leapfrog steps each, so one particle costs about
  ``SMC_TEMPERATURES x (SMC_MOVES x SMC_LEAPFROG + 1)`` evaluations: ``N = B / that`` particles;
* parallel_tempering: ``PT_TEMPERATURES`` replicas, ``PT_LEAPFROG`` leapfrog steps (and one more
  evaluation) per replica per scan: ``B / (PT_TEMPERATURES x (PT_LEAPFROG + 1))`` scans, a fifth of
  them tuning, the rest draws;
* nested_sampling: ``num_live = B / (NS_EVALS_PER_LIVE x d)``, a cost per live point calibrated on
  GMM-25 (d = 2: 340 000 evaluations for 833 live points at 60 per dimension), and ``max_evals =
  B - num_live`` (the returned draws' log-densities come on top): where the calibration is off, the run
  stops at the budget, not converged (a warning), instead of overspending.

:func:`learned_metrics` adds the columns of :data:`LEARNED_COLUMNS` to a row, each defined once in
:mod:`samplax.metrics`.
"""
from __future__ import annotations

import math

import jax
import numpy as np

#: fixed-budget settings of the classical methods (see the module)
SMC_TEMPERATURES = 32
SMC_MOVES = 2
SMC_LEAPFROG = 5
PT_TEMPERATURES = 8
PT_LEAPFROG = 5
NS_EVALS_PER_LIVE = 100
#: draws of the exact sampler / reference the distances compare against
NUM_REFERENCE = 2000
#: at most this many of a run's draws enter the two-sample metrics (evenly strided)
MAX_DRAWS = 2000

#: the learned methods of the first suite (any registered trained method runs: :func:`is_learned`)
LEARNED_METHODS = ("pis", "dds", "cmcd")

#: the columns every row of a learned suite has (NaN where a metric does not apply)
LEARNED_COLUMNS = ["method", "target", "budget", "status", "total_evals", "training_evals", "sampling_evals",
                   "log_Z", "log_Z_err", "abs_log_Z_err", "elbo", "eubo", "mode_coverage", "sliced_w2",
                   "energy_distance", "energy_w2", "distance_w2", "wall_s"]


def total_evals(cost: dict, prefix: str = "") -> int:
    """Target evaluations of a cost record: ``max(log-density, gradient)`` evaluations (a value and gradient counts
    once); ``prefix`` ``"training_"`` or ``"sampling_"`` for the learned methods' parts."""
    lp, grad = (f"{prefix}logdensity_evals", f"{prefix}grad_evals") if prefix else ("num_logdensity_evals",
                                                                                    "num_grad_evals")
    return int(max(cost.get(lp, 0) or 0, cost.get(grad, 0) or 0))


def is_learned(method: str) -> bool:
    """Whether ``method`` is a registered trained method (its budget splits into training and sampling)."""
    from samplax.methods import get_method, method_names

    return method in method_names() and get_method(method).kind == "trained"


def budget_options(method: str, budget: int, dim: int, num_samples: int, options: dict, target=None) -> tuple:
    """``(num_samples, num_warmup, options)`` of ``method`` at a total budget of ``budget`` target evaluations (see
    the module); ``options`` are the suite's per-target options, which the budget's settings extend.  With
    ``target``, a trained method's own checks (``MethodSpec.prepare``) run on the result, so that a budget too
    small for one training step stops here, with the method's message."""
    budget = int(budget)
    opts = dict(options)
    if is_learned(method):
        from samplax.methods import get_method

        spec = get_method(method)
        if spec.sampling_cost is None:
            raise ValueError(f"learned bench: the trained method {method!r} does not say what a draw costs "
                             "(MethodSpec.sampling_cost); it cannot be run at a total budget")
        checked = {k: v.default for k, v in spec.options.items()}
        checked.update(opts)
        sampling = num_samples * int(spec.sampling_cost(checked))
        train = budget - sampling
        if train < 1:
            raise ValueError(f"learned bench: budget {budget} for {method}: the {num_samples} draws cost {sampling} "
                             "evaluations, which leaves nothing for training")
        opts["training_evals"] = int(train)
        if target is not None and spec.prepare is not None:
            spec.prepare(target, {**checked, **opts})
        return num_samples, 0, opts
    if method == "smc":
        per_particle = SMC_TEMPERATURES * (SMC_MOVES * SMC_LEAPFROG + 1)
        n = max(16, budget // per_particle)
        opts.update(schedule=SMC_TEMPERATURES, num_mcmc_steps=SMC_MOVES, num_integration_steps=SMC_LEAPFROG,
                    correlation_threshold=None)
        return int(n), 0, opts
    if method == "parallel_tempering":
        scans = max(50, budget // (PT_TEMPERATURES * (PT_LEAPFROG + 1)))
        opts.update(num_temperatures=PT_TEMPERATURES, num_integration_steps=PT_LEAPFROG)
        return int(scans - scans // 5), int(scans // 5), opts
    if method == "nested_sampling":
        live = max(20, budget // (NS_EVALS_PER_LIVE * max(dim, 2)))
        # the cap keeps it within the budget: the returned draws' log-densities (num_samples = live) come on top
        opts.update(num_live=int(live), max_evals=int(max(budget - live, live + 1)))
        return int(live), 0, opts
    raise ValueError(f"learned bench: no budget rule for method {method!r}; known: any trained method and "
                     "smc, parallel_tempering, nested_sampling")


def expand_cells(spec: dict, only=None, overrides=None, budget_scale: str | None = None) -> list:
    """The cells of a ``kind = "learned"`` suite: every (target, method, budget) of ``budget_scale``'s budgets."""
    import samplax
    from samplax.bench.harness import Cell

    meta = dict(spec.get("suite", {}))
    budgets = dict(meta.get("budgets", {}))
    scale = budget_scale or meta.get("default_budget_scale") or next(iter(budgets), None)
    if scale not in budgets:
        raise ValueError(f"learned bench: budget scale {scale!r} is not one of the suite's {sorted(budgets)}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    methods = list(meta.get("methods", []))
    cells = []
    for t in spec.get("target", []):
        name = t["name"]
        params = dict(t.get("target_params", {}))
        tgt = samplax.targets.get(name, **params)
        dim = tgt.dim
        for m in methods:
            if only and name not in only and m not in only:
                continue
            learned = is_learned(m)
            base = dict(t.get("learned" if learned else "classical", {}))
            if learned:  # the shared block's options that this method takes; its own block is passed whole
                from samplax.methods import get_method

                accepted = get_method(m).options
                base = {k: v for k, v in base.items() if k in accepted}
            base.update(t.get(m, {}))
            for b in budgets[scale]:
                n_draws = int(t.get("num_samples", meta.get("num_samples", 1000)))
                try:
                    n, warm, opts = budget_options(m, int(float(b)), dim, n_draws, base,
                                                   target=tgt if learned else None)
                except ValueError as e:  # the budget cannot pay for the method's settings (or they do not fit the
                    if not learned:      # target): an error row, not a stop of the whole suite (a method without a
                        raise            # budget rule still stops it)
                    cells.append(Cell(len(cells), m, name, params, {}, dict(base), budget=int(float(b)),
                                      metrics="learned", error=f"cannot run at budget {int(float(b))}: {e}"))
                    continue
                if learned and t.get("eubo", False) and "eubo" in get_method(m).options:
                    opts["eubo"] = True
                kw = {"num_chains": int(meta.get("num_chains", 1)), "num_warmup": warm, "num_samples": n,
                      "seed": int(meta.get("seed", 0))}
                kw.update({k: v for k, v in overrides.items() if k == "seed"})
                cells.append(Cell(len(cells), m, name, params, kw, opts, budget=int(float(b)), metrics="learned"))
    return cells


def _subset(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] <= size:
        return x
    return x[np.linspace(0, x.shape[0] - 1, size).round().astype(int)]


def reference_draws(target, key) -> np.ndarray | None:
    """``NUM_REFERENCE`` exact draws (targets with an exact sampler), the stored reference draws of DW-4 / LJ-13
    (``samplax/data/particle_reference_draws.npz``), or None."""
    if target.has_exact_sampler:
        return np.asarray(target.sample(key, NUM_REFERENCE), np.float64).reshape(NUM_REFERENCE, -1)
    if target.name in ("dw4", "lj13") and target.ground_truth() is not None:
        from samplax.targets._data import data_path

        with np.load(data_path("particle_reference_draws.npz")) as f:
            return np.asarray(f[target.name], np.float64)
    return None


def learned_metrics(result, target, seed: int = 0) -> dict:
    """The learned-suite columns of one run (see :data:`LEARNED_COLUMNS`; NaN where one does not apply)."""
    from samplax import metrics as M

    nan = float("nan")
    cost = dict(result.cost)
    row = {"total_evals": total_evals(cost), "training_evals": total_evals(cost, "training_"),
           "sampling_evals": total_evals(cost, "sampling_") if "sampling_logdensity_evals" in cost else nan,
           "elbo": nan, "eubo": nan, "mode_coverage": nan, "sliced_w2": nan, "energy_distance": nan,
           "energy_w2": nan, "distance_w2": nan, "abs_log_Z_err": nan}
    if "training_logdensity_evals" not in cost:  # a classical method: all of it is sampling
        row["sampling_evals"] = row["total_evals"]
    extra = result.extra or {}
    for k in ("elbo", "eubo"):
        if extra.get(k) is not None:
            row[k] = float(extra[k])
    gt = target.ground_truth()
    if result.log_Z is not None and gt is not None and gt.log_Z is not None:
        row["abs_log_Z_err"] = abs(float(result.log_Z) - float(gt.log_Z))
    x = np.asarray(result.samples, np.float64).reshape(-1, target.dim)
    x = _subset(x[np.all(np.isfinite(x), axis=1)], MAX_DRAWS)
    if x.shape[0] < 2:
        return row
    key = jax.random.key(seed)
    ref = reference_draws(target, jax.random.fold_in(key, 1))
    means = getattr(target, "means", None)
    if means is not None and getattr(target, "log_weights", None) is not None:
        row["mode_coverage"] = M.mode_coverage(x, np.asarray(means))["mode_coverage"]
    if ref is not None and target.name in ("dw4", "lj13"):
        r = M.particle_w2(x, ref, target.n_particles, target.spatial_dim, lambda v: -target.logdensity(v))
        row["energy_w2"], row["distance_w2"] = r["energy_w2"], r["distance_w2"]
    elif ref is not None:
        row["sliced_w2"] = float(M.sliced_wasserstein(jax.random.fold_in(key, 2), x, ref)["sliced_wasserstein"])
        row["energy_distance"] = float(M.energy_distance(x, ref)["energy_distance"])
    return row


def format_learned_table(rows: list) -> str:
    """A fixed-width text table of :data:`LEARNED_COLUMNS` (``-`` where absent or NaN)."""
    def cell(v):
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.4g}"
        return "-" if v in (None, "") else str(v)

    cols = list(LEARNED_COLUMNS)
    body = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


#: the error metrics plotted against the evaluations (one figure per target, a row of panels)
PLOTTED = (("abs_log_Z_err", "|log Z error|"), ("sliced_w2", "sliced W2 to exact draws"),
           ("mode_coverage", "entropic mode coverage"), ("energy_w2", "energy W2"),
           ("distance_w2", "interatomic distance W2"))


def learned_plots(rows: list, folder: str) -> list:
    """One PNG per target, ``learned_<target>.png``: each metric of :data:`PLOTTED` that the target has against
    the total target evaluations (log-log; mode coverage on a linear axis), one curve per method.  Returns
    the paths."""
    import os

    from samplax.bench.report import _plt

    plt = _plt()
    paths = []
    good = [r for r in rows if r.get("status") != "error" and r.get("budget") is not None]
    methods = sorted({r["method"] for r in good})
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for t in sorted({r["target"] for r in good}):
        rs = [r for r in good if r["target"] == t]
        keys = [(k, lab) for k, lab in PLOTTED
                if any(isinstance(r.get(k), (int, float)) and np.isfinite(r.get(k)) for r in rs)]
        if not keys:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
        for ax, (k, lab) in zip(axes[0], keys):
            for m in methods:
                pts = sorted((r["total_evals"], r[k]) for r in rs if r["method"] == m
                             and isinstance(r.get(k), (int, float)) and np.isfinite(r[k]) and r["total_evals"] > 0)
                if pts:
                    ax.plot([p[0] for p in pts], [max(p[1], 1e-6) if k != "mode_coverage" else p[1] for p in pts],
                            "o-", color=colours[m], label=m, ms=4)
            ax.set_xscale("log")
            if k != "mode_coverage":
                ax.set_yscale("log")
            ax.set_xlabel("target evaluations (training + sampling)")
            ax.set_title(lab, fontsize=9)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"{t}: error vs evaluations", fontsize=10)
        fig.tight_layout()
        path = os.path.join(folder, f"learned_{t}.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
