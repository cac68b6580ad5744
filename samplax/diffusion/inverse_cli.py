"""``samplax diffusion inverse``: one inverse problem with a diffusion prior, solved into a run folder.

    samplax diffusion inverse (--model NAME | --checkpoint DIR) --problem inpaint|deblur|linear
        [--method tds] [--set KEY=VALUE ...] [--n 256] [--nfe 100] [--sigma-y 0.05] [--sbc R] [--out DIR]

The prior is an exact Gaussian-mixture model by name (``ring8``, ``grid25``, ``mixture64``: the exact
posterior is known, so the samples are compared with exact draws), a denoiser checkpoint written by
``samplax diffusion train``, or the named preset ``digits``: an MLP denoiser trained on scikit-learn's 8x8
digits (:mod:`samplax.diffusion.digits`; trained into ``--train-dir``, default ``OUT/denoiser``, or
reused from there). A true point (a draw of the model, or a held-out data point) is measured,
``y = A x* + sigma_y n``, with

* ``inpaint``: a mask (``--mask random`` observes ``--keep`` of the entries at random; ``half`` the first
  half in row-major order, an image's top rows; ``box`` hides the centred block of half the side),
* ``deblur``: a circular Gaussian blur of standard deviation ``--blur-width`` entries (2-D for images),
* ``linear``: a random Gaussian ``A`` with ``--measurements`` rows (default ``d // 4``), entries ``N(0, 1/d)``,

and ``--n`` posterior draws come from :func:`samplax.diffusion.inverse.sample` with ``--method`` and its
options (``--set``). ``--sbc R`` adds simulation-based calibration
(:func:`samplax.diffusion.inverse.calibration.sbc`: ``R`` truths from the model's own prior, ``--sbc-draws``
posterior draws each, rank-uniformity tests).

The run folder holds ``config.json`` (the settings), ``metrics.json`` and ``metrics.txt`` (accuracy
metrics, the cost record with denoiser evaluations and VJPs apart, the calibration verdict),
``samples.npz`` (draws, truth, measurement, exact draws, SBC ranks), ``posterior.png`` (images: truth,
measurement, posterior mean and standard deviation, draws; low-dimensional points: scatter and marginals
against exact posterior draws), ``sbc_ranks.png`` and ``report.html`` (all of it on one page). A mistake on
the command line is one line on stderr and exit code 2 (``samplax diffusion inverse: ...``) and leaves no
run folder behind.
"""
from __future__ import annotations

import base64
import datetime
import html
import json
import math
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.options import parse_assignments
from samplax.diffusion import digits, gmm, toy2d
from samplax.diffusion import inverse
from samplax.diffusion import train as train_mod
from samplax.diffusion.denoisers import reshaped
from samplax.diffusion.inverse.calibration import prior_draws, sbc

PROBLEMS = ("inpaint", "deblur", "linear")
MASKS = ("random", "half", "box")
PRESETS = ("digits",)
DIGITS_TRAIN_STEPS = 4000


def cli_methods() -> list:
    """The samplers the command offers: those that take a plain denoiser ``D(x, sigma)`` (no ``adapt_denoiser``)."""
    return [m for m in inverse.method_names() if inverse.get_method(m).adapt_denoiser is None]


def add_parser(sub) -> None:
    """Add the ``inverse`` sub-command to the ``samplax diffusion`` sub-parsers ``sub``."""
    q = sub.add_parser("inverse", help="posterior sampling for an inverse problem with a diffusion prior, into a "
                                       "run folder (metrics, costs, pictures)")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", choices=sorted(gmm.MODELS) + list(PRESETS),
                     help="an exact GMM model (exact posterior known) or the preset 'digits' (a denoiser trained on "
                          "scikit-learn's 8x8 digits)")
    src.add_argument("--checkpoint", help="checkpoint folder written by 'samplax diffusion train'")
    q.add_argument("--problem", required=True, choices=PROBLEMS)
    q.add_argument("--method", default="tds", choices=cli_methods(),
                   help="posterior sampler (ambient_dps is left out: it needs an ambient model h(x, sigma, mask), "
                        "which none of these priors is)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="option of the method (repeatable)")
    q.add_argument("--n", type=int, default=256, help="posterior draws")
    q.add_argument("--nfe", type=int, default=100, help="denoiser evaluations per draw (per particle for tds)")
    q.add_argument("--sigma-max", type=float, default=10.0)
    q.add_argument("--sigma-y", type=float, default=0.05, help="measurement noise standard deviation")
    q.add_argument("--mask", default="random", choices=MASKS, help="inpaint: which entries are observed")
    q.add_argument("--keep", type=float, default=0.5, help="inpaint --mask random: fraction of entries observed")
    q.add_argument("--blur-width", type=float, default=1.0, help="deblur: kernel standard deviation in entries")
    q.add_argument("--measurements", type=int, default=None, help="linear: rows of A (default max(1, d // 4))")
    q.add_argument("--truth", choices=("model", "data"), default=None,
                   help="the measured point: a draw of the model, or a held-out data point (default: data when "
                        "the model has data, else model)")
    q.add_argument("--sbc", type=int, default=0, metavar="R", help="simulation-based calibration with R replicates")
    q.add_argument("--sbc-draws", type=int, default=15, metavar="L", help="posterior draws per SBC replicate")
    q.add_argument("--train-steps", type=int, default=None,
                   help=f"--model digits: training steps of the denoiser (default {DIGITS_TRAIN_STEPS})")
    q.add_argument("--train-dir", default=None, help="--model digits: checkpoint folder (default OUT/denoiser); "
                                                     "reused when it holds enough steps")
    q.add_argument("--raw-weights", action="store_true", help="a checkpoint's raw (not EMA) weights")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", default=None, help="run folder (default samplax_runs/inverse-...)")


# ---------------------------------------------------------------- checks
def _check_args(args) -> dict:
    """Every value checked before anything is written; returns the method's options (parsed ``--set``)."""
    for flag, v, lo in (("--n", args.n, 1), ("--nfe", args.nfe, 1), ("--sbc-draws", args.sbc_draws, 1)):
        if v < lo:
            raise ValueError(f"{flag} must be >= {lo}, got {v}")
    if args.sbc != 0 and args.sbc < 2:
        raise ValueError(f"--sbc must be 0 (off) or >= 2 replicates, got {args.sbc}")
    for flag, v in (("--sigma-y", args.sigma_y), ("--sigma-max", args.sigma_max), ("--blur-width", args.blur_width)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{flag} must be positive and finite, got {v}")
    if not (0 < args.keep < 1):
        raise ValueError(f"--keep must be in (0, 1) (the fraction of entries observed), got {args.keep}")
    if args.measurements is not None and args.measurements < 1:
        raise ValueError(f"--measurements must be >= 1, got {args.measurements}")
    if args.model not in PRESETS and (args.train_steps is not None or args.train_dir is not None):
        raise ValueError("--train-steps and --train-dir apply to --model digits only")
    if args.train_steps is not None and args.train_steps < 1:
        raise ValueError(f"--train-steps must be >= 1, got {args.train_steps}")
    if args.raw_weights and args.model in gmm.MODELS:
        raise ValueError("--raw-weights applies to trained denoisers (--checkpoint, --model digits), not to an exact "
                         "GMM model")
    options = parse_assignments(args.set, "--set")
    inverse.get_method(args.method).resolve_options(options)  # unknown or invalid --set named here
    return options


# ---------------------------------------------------------------- models
class _Model:
    """What the command knows about the prior: the denoiser for points of ``shape``, the exact mixture (or
    None), data points for ``--truth data`` (or None), whether points are images, and training costs."""

    def __init__(self, name, denoiser, shape, exact=None, data=None, image=False, training=None, source=None):
        self.name, self.denoiser, self.shape, self.exact, self.data = name, denoiser, tuple(shape), exact, data
        self.image, self.training, self.source = image, training, source


def _from_checkpoint(path, raw_weights, name=None, training=None) -> _Model:
    state, config, meta = train_mod.load_checkpoint(path)
    den = state.model if raw_weights else state.ema
    data_name = meta.get("data")
    src = {"checkpoint": path, "step": int(state.step), "data": data_name}
    if data_name == "digits":
        return _Model(name or "checkpoint", reshaped(den, digits.SHAPE, (config.dim,)), digits.SHAPE,
                      data=digits.held_out(), image=True, training=training, source=src)
    data = None
    if data_name in toy2d.DATASETS:
        data = np.asarray(toy2d.get_dataset(data_name)(jax.random.key(12345), 1000), np.float64)
    return _Model(name or "checkpoint", den, (config.dim,), data=data, training=training, source=src)


def _digits_model(args, out, dtype) -> _Model:
    """The digits preset: the denoiser in ``--train-dir`` (trained there, or continued, up to ``--train-steps``)."""
    steps = args.train_steps or DIGITS_TRAIN_STEPS
    folder = args.train_dir or os.path.join(out, "denoiser")
    has = os.path.isfile(os.path.join(folder, train_mod.CONFIG_FILE))
    state, config = None, None
    if has:
        state, config, meta = train_mod.load_checkpoint(folder)
        if meta.get("data") != "digits":
            raise ValueError(f"--train-dir {folder!r} holds a checkpoint trained on {meta.get('data')!r}, not digits")
    training = None
    done = 0 if state is None else int(state.step)
    if done < steps:
        seed = 0 if state is None else int(meta.get("seed", 0))  # a resumed run keeps its key (train.train)
        if config is None:
            config = digits.preset_config(dtype)
        meta = {"data": "digits", "seed": seed}

        def progress(st, losses):
            train_mod.save_checkpoint(folder, st, config, meta)
            print(f"digits denoiser: step {int(st.step)}/{steps}  loss {float(np.mean(losses)):.4f}", file=sys.stderr,
                  flush=True)

        state, losses, cost = train_mod.train(jax.random.key(seed), config, digits.data_fn(jnp.dtype(config.dtype)),
                                              steps - done, state=state, chunk=min(1000, steps - done),
                                              callback=progress, return_cost=True)
        train_mod.save_checkpoint(folder, state, config, meta)
        training = {"steps_run": steps - done, "final_loss": float(np.mean(losses[-100:])), **dict(cost)}
    return _from_checkpoint(folder, args.raw_weights, name="digits", training=training)


def _load_model(args, out, dtype) -> _Model:
    if args.checkpoint is not None:
        return _from_checkpoint(args.checkpoint, args.raw_weights)
    if args.model == "digits":
        return _digits_model(args, out, dtype)
    model = gmm.get_model(args.model)
    return _Model(args.model, model, (model.dim,), exact=model, source={"model": args.model})


# ---------------------------------------------------------------- problems
def _mask(args, shape, rng) -> np.ndarray:
    d = math.prod(shape)
    if d < 2:
        raise ValueError("--problem inpaint needs points with at least 2 entries")
    m = np.zeros(d, bool)
    if args.mask == "random":
        k = min(d - 1, max(1, int(round(args.keep * d))))
        m[rng.permutation(d)[:k]] = True
        return m.reshape(shape)
    if args.mask == "half":
        m[: (d + 1) // 2] = True
        return m.reshape(shape)
    m = np.ones(shape, bool)  # box: hide the centred block of half the side on every axis
    sl = tuple(slice((s - max(1, s // 2)) // 2, (s - max(1, s // 2)) // 2 + max(1, s // 2)) for s in shape)
    m[sl] = False
    return m


def _blur_kernel(shape, width) -> np.ndarray:
    axes = []
    for s in shape:
        size = min(2 * math.ceil(2.0 * width) + 1, s)
        t = np.arange(size) - (size - 1) // 2
        axes.append(np.exp(-0.5 * (t / width) ** 2))
    k = axes[0] if len(axes) == 1 else np.outer(axes[0], axes[1])
    return k / k.sum()


def _operator(args, shape, rng):
    d = math.prod(shape)
    if args.problem == "inpaint":
        return inverse.Mask(_mask(args, shape, rng))
    if args.problem == "deblur":
        if len(shape) > 2:
            raise ValueError(f"--problem deblur needs 1-D or 2-D points, the model's are {shape}")
        blur = inverse.Blur(_blur_kernel(shape, args.blur_width), shape)
        # applied as its dense matrix: the same linear map, one small matmul per point instead of a shifted copy
        # per kernel entry (several times faster for the small batches of the samplers on CPU)
        return inverse.Dense(np.asarray(blur.dense(), np.float64), shape)
    m = args.measurements or max(1, d // 4)
    return inverse.Dense(rng.normal(size=(m, d)) / math.sqrt(d), shape)


def _truth(args, model: _Model, key):
    kind = args.truth or ("data" if model.data is not None else "model")
    if kind == "data":
        if model.data is None:
            raise ValueError(f"--truth data: the model {model.name!r} has no data points (use --truth model)")
        i = args.seed % model.data.shape[0]
        return np.asarray(model.data[i], np.float64).reshape(model.shape), f"data point {i}"
    if model.exact is not None:
        return np.asarray(model.exact.sample(key, 1)[0], np.float64).reshape(model.shape), "exact model draw"
    x = prior_draws(model.denoiser, model.shape, key=key, num_samples=1, nfe=args.nfe, sigma_max=args.sigma_max)
    return np.asarray(x[0], np.float64), f"model draw ({args.nfe} ancestral levels)"


# ---------------------------------------------------------------- metrics
def _metrics(problem, samples, truth, model: _Model, info, key) -> dict:
    s = np.asarray(samples, np.float64).reshape(samples.shape[0], -1)
    ok = np.all(np.isfinite(s), axis=1)
    out = {"num_samples": int(s.shape[0]), "num_nonfinite_samples": int((~ok).sum())}
    s = s[ok]
    if s.shape[0] == 0:
        return out
    a = np.asarray(problem.operator.dense(), np.float64)
    y = np.asarray(problem.y, np.float64)
    sy = np.broadcast_to(np.asarray(problem.sigma_y, np.float64), y.shape)
    z = (s @ a.T - y) / sy
    t = truth.reshape(-1)
    mean, sd = s.mean(0), s.std(0)
    lo, hi = np.quantile(s, [0.05, 0.95], axis=0)
    pinv = np.asarray(problem.operator.pinv(problem.y), np.float64)
    out.update({
        "residual_rms_over_sigma_y": float(np.sqrt(np.mean(z**2))),
        "residual_max_over_sigma_y": float(np.max(np.abs(z))),
        "truth_residual_rms_over_sigma_y": float(np.sqrt(np.mean(((a @ t - y) / sy) ** 2))),
        "rmse_posterior_mean_to_truth": float(np.sqrt(np.mean((mean - t) ** 2))),
        "rmse_pinv_to_truth": float(np.sqrt(np.mean((pinv - t) ** 2))),
        "posterior_sd_mean": float(np.mean(sd)),
        "coverage_90": float(np.mean((t >= lo) & (t <= hi))),
    })
    if "log_evidence" in info:
        out["log_evidence"] = float(info["log_evidence"])
        out["log_evidence_se"] = float(info["log_evidence_se"])
    if model.exact is not None:
        from samplax.metrics import sliced_wasserstein

        post = inverse.posterior(model.exact, problem)
        k1, k2, k3 = jax.random.split(key, 3)
        n = s.shape[0]
        ex = np.asarray(post.sample(k1, n), np.float64)
        ex2 = np.asarray(post.sample(k2, n), np.float64)
        w = np.asarray(jax.jit(jax.vmap(post.responsibilities))(jnp.asarray(s, post.means.dtype)), np.float64).mean(0)
        pm, _ = post.mean_and_cov()
        out.update({
            "sliced_w2_to_exact": float(sliced_wasserstein(k3, s, ex, 64)["sliced_wasserstein"]),
            "sliced_w2_floor": float(sliced_wasserstein(k3, ex2, ex, 64)["sliced_wasserstein"]),
            "tv_component_weights": 0.5 * float(np.abs(w - np.asarray(post.weights, np.float64)).sum()),
            "mean_error_to_exact": float(np.linalg.norm(mean - np.asarray(pm, np.float64))),
            "log_evidence_exact": inverse.log_evidence(model.exact, problem),
        })
        out["_exact_draws"] = ex
    return out


def _cost(info) -> dict:
    c = info["cost"]
    return {"denoiser_evals_per_sample": c["num_model_evals"], "denoiser_vjps_per_sample": c["num_model_vjps"],
            "total_denoiser_evals": int(c["total_model_evals"]), "total_denoiser_vjps": int(c["total_model_vjps"]),
            "likelihood_grads": int(c.get("num_likelihood_grads", 0)),
            "compile_seconds": float(c.get("compile_seconds", 0.0)),
            "sampling_seconds": float(c.get("sampling_seconds", 0.0))}


# ---------------------------------------------------------------- pictures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _measurement_image(problem, args, shape):
    y = np.asarray(problem.y, np.float64)
    if args.problem == "inpaint":
        img = np.full(math.prod(shape), np.nan)
        img[np.asarray(problem.operator.index)] = y
        return img.reshape(shape), "measurement", "unobserved pixels blank"
    if args.problem == "deblur":
        return y.reshape(shape), "measurement", "blurred and noisy"
    return np.asarray(problem.operator.pinv(problem.y), np.float64).reshape(shape), "A^+ y", "the pseudo-inverse of y"


def _image_figure(path, truth, meas, meas_label, samples, shape, value_range, title):
    plt = _plt()
    s = np.asarray(samples, np.float64).reshape((-1,) + shape)
    draws = s[:16]
    cols = 8
    rows = 1 + -(-draws.shape[0] // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.55 * rows), squeeze=False)
    cmap = plt.get_cmap("gray_r").with_extremes(bad="#f4d6a0")
    lo, hi = value_range
    panels = [(truth, "truth"), (np.ma.masked_invalid(meas), meas_label), (s.mean(0), "posterior mean")]
    for ax, (img, name) in zip(axes[0], panels):
        ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=7)
    im = axes[0, 3].imshow(s.std(0), cmap="magma")
    axes[0, 3].set_title("posterior sd", fontsize=7)
    fig.colorbar(im, ax=axes[0, 3], fraction=0.046)
    for j, img in enumerate(draws):
        ax = axes[1 + j // cols, j % cols]
        ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(f"draw {j}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _points_figure(path, samples, truth, exact, prior, title):
    plt = _plt()
    s = np.asarray(samples, np.float64).reshape(samples.shape[0], -1)
    d = s.shape[1]
    k = min(d, 4)
    fig, axes = plt.subplots(1, 1 + k, figsize=(3.2 * (1 + k), 3.2), squeeze=False)
    ax = axes[0, 0]
    j2 = 1 if d > 1 else 0
    if prior is not None:
        ax.scatter(prior[:, 0], prior[:, j2], s=3, c="0.8", label="prior draws")
    if exact is not None:
        ax.scatter(exact[:, 0], exact[:, j2], s=4, c="tab:blue", alpha=0.5, label="exact posterior")
    ax.scatter(s[:, 0], s[:, j2], s=4, c="tab:orange", alpha=0.5, label="samples")
    ax.scatter([truth[0]], [truth[j2]], marker="*", s=120, c="k", label="truth")
    ax.set_xlabel("x[0]")
    ax.set_ylabel(f"x[{j2}]")
    ax.legend(fontsize=6, loc="best")
    for i in range(k):
        ax = axes[0, 1 + i]
        both = s[:, i] if exact is None else np.concatenate([s[:, i], exact[:, i]])
        bins = np.linspace(both.min(), both.max(), 40)
        if exact is not None:
            ax.hist(exact[:, i], bins=bins, density=True, histtype="step", color="tab:blue", label="exact")
        ax.hist(s[:, i], bins=bins, density=True, alpha=0.5, color="tab:orange", label="samples")
        ax.axvline(truth[i], color="k", lw=1)
        ax.set_title(f"x[{i}]", fontsize=8)
        if i == 0:
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sbc_figure(path, res):
    plt = _plt()
    ranks, names = res["ranks"], res["names"]
    levels = res["num_draws"] + 1
    rep = ranks.shape[0]
    coords = [j for j, n in enumerate(names) if n.startswith("x[")]
    panels = []
    if coords:
        panels.append(("every entry, pooled (descriptive)", ranks[:, coords].reshape(-1)))
    for n in dict.fromkeys(["log_likelihood", res["worst"]]):
        if n in names:
            panels.append((f"{n} (worst)" if n == res["worst"] else n, ranks[:, names.index(n)]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    bins = res["bins"]
    for ax, (title, r) in zip(axes[0], panels):
        which = (np.arange(levels) * bins) // levels
        counts = np.bincount(which[r.astype(int)], minlength=bins)
        p = np.bincount(which, minlength=bins) / levels
        e = r.size * p
        band = 2.0 * np.sqrt(e * (1 - p))
        x = np.arange(bins)
        ax.bar(x, 2.0 * band, bottom=e - band, width=0.9, color="0.85", zorder=0)
        ax.bar(x, counts, width=0.6, color="tab:blue", alpha=0.8, zorder=1)
        ax.hlines(e, x - 0.45, x + 0.45, colors="k", lw=1, zorder=2)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(f"rank bin ({levels} ranks in {bins} bins)", fontsize=7)
    verdict = "uniform" if res["uniform"] else "NOT uniform"
    fig.suptitle(f"SBC ranks, {rep} replicates x {res['num_draws']} draws: {verdict} (min p {res['min_p']:.3g}, "
                 f"threshold {res['threshold']:.2g}); grey: expected count +- 2 sd", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report_html(out, title, text, pictures):
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
             f"<h2>{html.escape(title)}</h2>"]
    for name in pictures:
        with open(os.path.join(out, name), "rb") as f:
            data = base64.b64encode(f.read()).decode()
        parts.append(f"<h3>{html.escape(name)}</h3><img src='data:image/png;base64,{data}' style='max-width:100%'>")
    parts.append(f"<pre>{html.escape(text)}</pre></body></html>")
    path = os.path.join(out, "report.html")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def _text(config, metrics, cost, sbc_summary, training) -> str:
    lines = [f"samplax diffusion inverse: {config['model']} / {config['problem']} / {config['method']}", ""]
    lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in config.items() if k not in ("model", "problem")))
    lines += ["", "metrics:"] + [f"  {k:<34} {v:.6g}" if isinstance(v, float) else f"  {k:<34} {v}"
                                 for k, v in metrics.items()]
    lines += ["", "cost (denoiser evaluations and VJPs through it, apart):"]
    lines += [f"  {k:<34} {v:.6g}" if isinstance(v, float) else f"  {k:<34} {v}" for k, v in cost.items()]
    if training:
        lines += ["", "training of the denoiser (this run):"]
        lines += [f"  {k:<34} {v}" for k, v in training.items()]
    if sbc_summary:
        lines += ["", "simulation-based calibration:"]
        lines += [f"  {k:<34} {v}" for k, v in sbc_summary.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the command
def run(args) -> int:
    """``samplax diffusion inverse``: see the module docstring. Raises ValueError, TypeError, FileNotFoundError or
    ImportError for a mistake in the arguments (before the run folder is made, or removing what it made)."""
    options = _check_args(args)
    if args.checkpoint is not None and not os.path.isfile(os.path.join(args.checkpoint, train_mod.CONFIG_FILE)):
        raise FileNotFoundError(f"--checkpoint {args.checkpoint!r} holds no checkpoint ({train_mod.CONFIG_FILE} is "
                                "missing); write one with 'samplax diffusion train'")
    if args.model == "digits":
        digits.load()  # ImportError naming scikit-learn before anything is written
    name = args.model or "checkpoint"
    out = args.out or os.path.join("samplax_runs", f"inverse-{name}-{args.problem}-"
                                                   f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if os.path.exists(os.path.join(out, "metrics.json")):
        raise ValueError(f"--out {out!r} already holds a run (metrics.json); choose another folder")
    created = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
        return _run(args, options, out)
    except (ValueError, TypeError, FileNotFoundError, ImportError):
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(args, options, out) -> int:
    dtype = "float64" if jax.config.jax_enable_x64 else "float32"
    model = _load_model(args, out, dtype)
    key = jax.random.key(args.seed)
    rng = np.random.default_rng(args.seed)
    truth, truth_kind = _truth(args, model, jax.random.fold_in(key, 0))
    op = _operator(args, model.shape, rng)
    y0 = np.asarray(op.matvec(jnp.asarray(truth)), np.float64)
    y = y0 + args.sigma_y * rng.normal(size=y0.shape)
    problem = inverse.LinearGaussian(op, y, args.sigma_y)
    samples, info = inverse.sample(model.denoiser, problem, key=jax.random.fold_in(key, 1), num_samples=args.n,
                                   nfe=args.nfe, sigma_max=args.sigma_max, method=args.method, **options)
    samples = np.asarray(samples, np.float64)
    metrics = _metrics(problem, samples, truth, model, info, jax.random.fold_in(key, 2))
    exact = metrics.pop("_exact_draws", None)
    cost = _cost(info)
    config = {"model": name_of(args), "problem": args.problem, "method": args.method, "options": info["options"],
              "n": args.n, "nfe": args.nfe, "sigma_max": args.sigma_max, "sigma_y": args.sigma_y,
              "num_measurements": int(problem.num_measurements), "shape": list(model.shape), "truth": truth_kind,
              "seed": args.seed, "dtype": dtype, "source": model.source}
    if args.problem == "inpaint":
        config.update(mask=args.mask, keep=args.keep if args.mask == "random" else None)
    elif args.problem == "deblur":
        config["blur_width"] = args.blur_width
    pictures = ["posterior.png"]
    if model.image:
        meas, label, what = _measurement_image(problem, args, model.shape)
        _image_figure(os.path.join(out, "posterior.png"), truth, meas, label, samples, model.shape, (-1.0, 1.0),
                      f"{name_of(args)} {args.problem}, {args.method}, sigma_y {args.sigma_y}; {label}: {what}")
    else:
        prior = (np.asarray(model.exact.sample(jax.random.fold_in(key, 3), 2000), np.float64)
                 if model.exact is not None else model.data)
        _points_figure(os.path.join(out, "posterior.png"), samples, truth.reshape(-1), exact, prior,
                       f"{name_of(args)} {args.problem}, {args.method}, sigma_y {args.sigma_y}")
    sbc_summary, sbc_res = None, None
    if args.sbc:
        sbc_res = sbc(model.denoiser, problem, key=jax.random.fold_in(key, 4), num_replicates=args.sbc,
                      num_draws=args.sbc_draws, nfe=args.nfe, sigma_max=args.sigma_max, method=args.method, **options)
        j = sbc_res["names"].index("log_likelihood")
        sbc_summary = {"uniform": sbc_res["uniform"], "min_p": sbc_res["min_p"], "threshold": sbc_res["threshold"],
                       "worst_statistic": sbc_res["worst"], "log_likelihood_chi2_p": sbc_res["chi2_p"][j],
                       "log_likelihood_ks_p": sbc_res["ks_p"][j], "num_replicates": args.sbc,
                       "num_draws": args.sbc_draws, "bins": sbc_res["bins"], "method": args.method,
                       "options": sbc_res["options"], "num_nonfinite_draws": sbc_res["num_nonfinite_draws"],
                       "cost": sbc_res["cost"]}
        _sbc_figure(os.path.join(out, "sbc_ranks.png"), sbc_res)
        pictures.append("sbc_ranks.png")
    arrays = {"samples": samples, "truth": truth, "y": y}
    if exact is not None:
        arrays["exact_posterior_draws"] = exact
    if sbc_res is not None:
        arrays.update(sbc_ranks=sbc_res["ranks"], sbc_truths=sbc_res["truths"])
    np.savez(os.path.join(out, "samples.npz"), **arrays)
    doc = {"config": config, "metrics": metrics, "cost": cost, "training": model.training, "sbc": sbc_summary,
           "warnings": [w["message"] for w in info["warnings"]], "files": ["samples.npz", *pictures, "report.html"]}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1, default=str)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    text = _text(config, metrics, cost, sbc_summary, model.training)
    with open(os.path.join(out, "metrics.txt"), "w") as f:
        f.write(text)
    _report_html(out, f"inverse problem: {name_of(args)} / {args.problem} / {args.method}", text, pictures)
    print(text, end="")
    print(f"run folder: {out}")
    return 0


def name_of(args) -> str:
    """The model's name in reports: the ``--model`` name, or ``checkpoint:DIR``."""
    return args.model or f"checkpoint:{args.checkpoint}"
