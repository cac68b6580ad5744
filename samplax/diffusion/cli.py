"""``samplax diffusion ...`` command line (hooked into ``samplax/cli.py`` by the main engineer).

Sub-commands:

* ``sample``: draw samples from an exact GMM diffusion model (``ring8``, ``grid25``,
  ``mixture64``) with any registered solver/grid and save them (``.npz``), printing
  the number of model calls and, since the model is exact, the mean NLL of the
  samples under the true mixture next to that of exact draws.

Training of small denoisers (``train``) is not implemented yet.
"""
from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from samplax.diffusion import gmm
from samplax.diffusion.grids import grid_names
from samplax.diffusion.sampling import sample
from samplax.diffusion.solvers import solver_names


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Add the ``diffusion`` command (with sub-command ``sample``) to an argparse ``subparsers``."""
    p = subparsers.add_parser("diffusion", help="diffusion-model sampling")
    sub = p.add_subparsers(dest="diffusion_command", required=True)
    s = sub.add_parser("sample", help="sample an exact GMM diffusion model")
    s.add_argument("--model", required=True, choices=sorted(gmm.MODELS), help="exact GMM model")
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument("--nfe", type=int, default=10, help="denoiser calls per sample")
    s.add_argument("--solver", default="auto", choices=solver_names())
    s.add_argument("--grid", default="logsnr", choices=grid_names())
    s.add_argument("--sigma-max", type=float, default=80.0)
    s.add_argument("--sigma-end", type=float, default=None)
    s.add_argument("--final-step", default="denoise", choices=["denoise", "integrate"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="write samples to this .npz file")
    return p


def run(args) -> int:
    """Execute a parsed ``diffusion`` command; returns the process exit code."""
    if args.diffusion_command != "sample":  # pragma: no cover - argparse restricts choices
        raise ValueError(f"unknown diffusion command {args.diffusion_command!r}")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    model = gmm.get_model(args.model)
    key = jax.random.key(args.seed)
    x, info = sample(model, key=key, shape=(args.n, model.dim), sigma_max=args.sigma_max, nfe=args.nfe,
                     solver=args.solver, grid=args.grid, sigma_end=args.sigma_end, final_step=args.final_step)
    nll = float(-np.mean(np.asarray(jax.vmap(model.log_prob)(x))))
    exact = model.sample(jax.random.fold_in(key, 1), args.n)
    nll_exact = float(-np.mean(np.asarray(jax.vmap(model.log_prob)(exact))))
    summary = {"model": args.model, "n": args.n, "solver": info.solver, "grid": info.grid,
               "num_model_evals": int(info.num_model_evals), "nll": nll, "nll_exact_draws": nll_exact}
    if args.out:
        np.savez(args.out, samples=np.asarray(x), sigmas=info.sigmas, **{k: v for k, v in summary.items()})
    print(json.dumps(summary))
    return 0
