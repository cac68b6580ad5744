"""``samplax diffusion ...`` command line (hooked into ``samplax/cli.py`` via :func:`add_subparser`).

Sub-commands:

* ``train``: train a small MLP denoiser (:mod:`samplax.diffusion.train`) on a 2-D toy set
  (``moons``, ``rings``, ``checkerboard``, generated in JAX) or on scikit-learn's 8x8 digits (``digits``, 64-d,
  :mod:`samplax.diffusion.digits`) and save a checkpoint folder
  (``state.eqx`` + ``config.json``) after every chunk of steps; ``--resume`` continues a
  checkpoint to ``--steps`` total steps exactly as an uninterrupted run would.
* ``sample``: draw samples from an exact GMM diffusion model (``--model ring8|grid25|mixture64``)
  or a trained checkpoint (``--checkpoint DIR``, EMA weights) with any registered
  solver/grid and save them (``.npz``); the default ``--solver auto`` tunes the grid once per model and
  caches it on disk (:mod:`samplax.diffusion.auto`; ``--no-tune``: the fixed rule). For an exact model it prints the mean NLL of the
  samples under the true mixture next to that of exact draws; for a checkpoint, the
  energy distance of the samples to fresh draws of its training data.
* ``inverse``: posterior sampling for an inverse problem (inpainting, deblurring, a random linear
  measurement) with an exact GMM prior, a checkpoint or the digits preset, into a run folder with metrics,
  costs and pictures, optionally with simulation-based calibration (:mod:`samplax.diffusion.inverse_cli`).

``train`` and ``sample`` print a JSON summary whose ``"cost"`` is the shared cost record
(:class:`samplax.core.cost.Cost`): of the sampling call (``info.cost``), or of the training
steps run by this invocation (``train.train(..., return_cost=True)``; the summary's top-level
``num_model_evals`` counts all steps of the checkpoint, resumed ones included). ``--out``
files of ``sample`` keep the record's fields as ``cost_<field>`` entries.
"""
from __future__ import annotations

import argparse
import json

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion import digits, gmm, toy2d
from samplax.diffusion import inverse_cli
from samplax.diffusion import train as train_mod
from samplax.diffusion.grids import grid_names
from samplax.diffusion.sampling import sample
from samplax.diffusion.solvers import solver_names


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Add the ``diffusion`` command (with sub-command ``sample``) to an argparse ``subparsers``."""
    p = subparsers.add_parser("diffusion", help="diffusion models: train small denoisers, sample")
    p.set_defaults(func=command)
    sub = p.add_subparsers(dest="diffusion_command", required=True)
    s = sub.add_parser("sample", help="sample an exact GMM diffusion model or a trained checkpoint")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", choices=sorted(gmm.MODELS), help="exact GMM model")
    src.add_argument("--checkpoint", help="checkpoint folder written by 'samplax diffusion train'")
    s.add_argument("--raw-weights", action="store_true", help="use the raw (not EMA) weights of a checkpoint")
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument("--nfe", type=int, default=10, help="denoiser calls per sample")
    s.add_argument("--solver", default="auto", choices=solver_names(),
                   help="default 'auto': the solver for --nfe with a grid tuned once per model and cached on disk "
                        "(samplax.diffusion.auto)")
    s.add_argument("--no-tune", action="store_true",
                   help="with --solver auto: use the fixed rule AUTO_RULE instead of tuning the grid")
    s.add_argument("--grid", default="logsnr", choices=grid_names())
    s.add_argument("--sigma-max", type=float, default=80.0)
    s.add_argument("--sigma-end", type=float, default=None)
    s.add_argument("--final-step", default="denoise", choices=["denoise", "integrate"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="write samples to this .npz file")

    t = sub.add_parser("train", help="train a small MLP denoiser on 2-D toy data and save a checkpoint")
    t.add_argument("--data", required=True, choices=sorted(toy2d.DATASETS) + ["digits"],
                   help="a 2-D toy set, or scikit-learn's 8x8 digits (64-d; width and depth default to the digits preset)")
    t.add_argument("--steps", type=int, required=True, help="total number of optimiser steps")
    t.add_argument("--out", required=True, help="checkpoint folder")
    t.add_argument("--loss", default="dsm", choices=[name for name in train_mod.LOSSES  # shortcut, sfd, emd: Python API
                                                     if name not in ("shortcut",) + train_mod.DISTILL_LOSSES])
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--width", type=int, default=None, help="MLP width (default 128; digits: the preset's)")
    t.add_argument("--depth", type=int, default=None, help="hidden layers (default 3; digits: the preset's)")
    t.add_argument("--ema-decay", type=float, default=0.999)
    t.add_argument("--chunk", type=int, default=500, help="steps between progress lines and checkpoint saves")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out up to --steps")
    inverse_cli.add_parser(sub)
    return p


def command(args) -> int:
    """The ``samplax diffusion`` entry point: :func:`run`, with a user's mistake (an invalid value,
    a missing checkpoint, a ``--resume`` that does not apply) printed as one line
    ``samplax diffusion CMD: message`` on stderr and exit code 2 instead of a traceback."""
    try:
        return run(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        print(f"samplax diffusion {args.diffusion_command}: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    """Execute a parsed ``diffusion`` command; returns the process exit code (raises ``ValueError``,
    ``TypeError`` or ``FileNotFoundError`` for invalid arguments; :func:`command` reports them)."""
    if args.diffusion_command == "train":
        return _train(args)
    if args.diffusion_command == "inverse":
        return inverse_cli.run(args)
    if args.diffusion_command != "sample":  # pragma: no cover - argparse restricts choices
        raise ValueError(f"unknown diffusion command {args.diffusion_command!r}")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.checkpoint is not None:
        return _sample_checkpoint(args)
    model = gmm.get_model(args.model)
    key = jax.random.key(args.seed)
    x, info = sample(model, key=key, shape=(args.n, model.dim), sigma_max=args.sigma_max, nfe=args.nfe,
                     solver=args.solver, grid=args.grid, sigma_end=args.sigma_end, final_step=args.final_step,
                     **_tune_arg(args))
    nll = float(-np.mean(np.asarray(jax.vmap(model.log_prob)(x))))
    exact = model.sample(jax.random.fold_in(key, 1), args.n)
    nll_exact = float(-np.mean(np.asarray(jax.vmap(model.log_prob)(exact))))
    summary = {"model": args.model, "n": args.n, "solver": info.solver, "grid": info.grid,
               "num_model_evals": int(info.num_model_evals), "nll": nll, "nll_exact_draws": nll_exact,
               "cost": dict(info.cost)}
    if info.auto is not None:
        summary["auto"] = info.auto
    if args.out:
        _save(args.out, x, info, summary)
    print(json.dumps(summary))
    return 0


def _train(args) -> int:
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    has_ckpt = os.path.isfile(os.path.join(args.out, train_mod.CONFIG_FILE))
    if args.resume and not has_ckpt:
        raise FileNotFoundError(f"--resume: {args.out!r} holds no checkpoint to continue "
                                f"({train_mod.CONFIG_FILE} is missing); run without --resume to start training")
    if args.resume:
        state, config, meta = train_mod.load_checkpoint(args.out)
        if meta.get("data") != args.data:
            raise ValueError(f"--data {args.data!r} differs from the checkpoint's data {meta.get('data')!r}")
        seed = int(meta["seed"])
    else:
        if has_ckpt and not args.resume:
            raise ValueError(f"--out {args.out!r} already holds a checkpoint; pass --resume to continue it")
        seed = args.seed
        dtype = "float64" if jax.config.jax_enable_x64 else "float32"
        common = dict(loss=args.loss, learning_rate=args.lr, batch_size=args.batch_size, ema_decay=args.ema_decay)
        if args.data == "digits":  # the preset (sigma_data: the training images' standard deviation)
            sizes = {k: v for k, v in (("width", args.width), ("depth", args.depth)) if v is not None}
            config = digits.preset_config(dtype, **common, **sizes)
        else:  # sigma_data: the data's overall standard deviation (EDM preconditioning), from 10^4 draws
            sd = float(jnp.std(toy2d.get_dataset(args.data)(jax.random.key(seed + 1), 10_000)))
            config = train_mod.TrainConfig(dim=2, width=128 if args.width is None else args.width,
                                           depth=3 if args.depth is None else args.depth, sigma_data=sd,
                                           dtype=dtype, **common)
        state = None
    data_fn = (digits.data_fn(jnp.dtype(config.dtype)) if args.data == "digits"
               else toy2d.get_dataset(args.data))
    key = jax.random.key(seed)
    meta = {"data": args.data, "seed": seed}
    start = 0 if state is None else int(state.step)
    remaining = args.steps - start
    if remaining < 0:
        raise ValueError(f"--steps {args.steps} is below the checkpoint's step {start}")

    def progress(st, losses):
        train_mod.save_checkpoint(args.out, st, config, meta)
        print(f"step {int(st.step)}/{args.steps}  loss {float(np.mean(losses)):.4f}", file=sys.stderr, flush=True)

    state, losses, cost = train_mod.train(key, config, data_fn, remaining, state=state, chunk=args.chunk,
                                          callback=progress, return_cost=True)
    if state is None:  # pragma: no cover - train always returns a state
        raise AssertionError
    train_mod.save_checkpoint(args.out, state, config, meta)
    summary = {"data": args.data, "steps": int(state.step), "num_model_evals": int(state.step) * train_mod.evals_per_step(config),
               "final_loss": float(np.mean(losses[-100:])) if len(losses) else None, "out": args.out,
               "cost": dict(cost)}
    print(json.dumps(summary))
    return 0


def _sample_checkpoint(args) -> int:
    state, config, meta = train_mod.load_checkpoint(args.checkpoint)
    model = state.model if args.raw_weights else state.ema
    key = jax.random.key(args.seed)
    grid_options = None
    if args.grid == "optimized":  # tuned once per (checkpoint step, weights, solver, nfe, ...), kept in the folder
        grid_options = {"cache_file": os.path.join(args.checkpoint, "optimized_grids.json"),
                        "cache_tag": f"step={int(state.step)} weights={'raw' if args.raw_weights else 'ema'}"}
    x, info = sample(model, key=key, shape=(args.n, config.dim), sigma_max=args.sigma_max, nfe=args.nfe,
                     solver=args.solver, grid=args.grid, sigma_end=args.sigma_end, final_step=args.final_step,
                     grid_options=grid_options, **_tune_arg(args))
    summary = {"checkpoint": args.checkpoint, "step": int(state.step), "n": args.n, "solver": info.solver,
               "grid": info.grid, "num_model_evals": int(info.num_model_evals), "cost": dict(info.cost)}
    if info.auto is not None:
        summary["auto"] = info.auto
    if meta.get("data") in toy2d.DATASETS:
        from samplax.metrics import energy_distance
        ref = toy2d.get_dataset(meta["data"])(jax.random.fold_in(key, 1), min(args.n, 4000))
        summary["energy_distance_to_data"] = float(energy_distance(x[:4000], ref.astype(x.dtype))["energy_distance"])
    if args.out:
        _save(args.out, x, info, summary)
    print(json.dumps(summary))
    return 0


def _tune_arg(args) -> dict:
    """``tune=False`` for ``--solver auto --no-tune`` (a ValueError when ``--no-tune`` comes with another solver)."""
    if not args.no_tune:
        return {}
    if args.solver != "auto":
        raise ValueError(f"--no-tune applies to --solver auto only, got --solver {args.solver}")
    return {"tune": False}


def _save(path, x, info, summary) -> None:
    """Samples, visited sigmas and the summary in a ``.npz`` (the cost record flattened to ``cost_<field>``)."""
    flat = {k: v for k, v in summary.items() if k not in ("cost", "auto")}
    if "auto" in summary:
        flat["auto"] = json.dumps(summary["auto"])
    flat.update({f"cost_{k}": v for k, v in summary["cost"].items()})
    np.savez(path, samples=np.asarray(x), sigmas=info.sigmas, **flat)
