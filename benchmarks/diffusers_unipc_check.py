"""Did excluding diffusers' UniPC change "best diffusers"? A check for benchmarks/diffusion_vs_diffusers.py.

Not a test. Until the float64 cast of UniPC's sigmas in ``run_diffusers``, every UniPC configuration raised in
that benchmark's float64 run (torch.linalg.solve with a float64 matrix and a float32 right-hand side) and left the
sweep. This runs every UniPC configuration of ``diffusers_configs()`` on the SAME evaluation noises (seed 1234,
after the 1024 tuning noises) and reference, and prints the best UniPC error per (data, NFE) next to the best
diffusers configuration's error of the stored table.

Usage: python benchmarks/diffusers_unipc_check.py [--table benchmarks/results/diffusion_vs_diffusers.md]
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import jax.numpy as jnp

import diffusion_vs_diffusers as base  # noqa: E402
from diffusion_new_solvers import diffusers_best  # noqa: E402
from samplax import diffusion as sd  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default="benchmarks/results/diffusion_vs_diffusers.md")
    args = ap.parse_args()
    best_d = diffusers_best(args.table)
    print("| data | NFE | stored best diffusers (error) | best UniPC config | its error | UniPC / stored best |")
    print("|---|---|---|---|---|---|")
    for name, model in (("ring8", sd.ring8()), ("grid25", sd.grid25()), ("mixture64", sd.random_mixture(0, 64, 10))):
        rng = np.random.default_rng(1234)
        rng.normal(size=(1024, model.dim))  # the tuning noises come first
        z = rng.normal(size=(4096, model.dim))
        ref = np.asarray(sd.solve_pf_ode(model, jnp.asarray(z * math.sqrt(1 + base.SIGMA_MAX**2)), base.SIGMA_MAX,
                                         0.0, rtol=1e-10, atol=1e-10))
        eps = base.TorchGMMEps(model)
        for nfe in base.NFES:
            errs = []
            for label, fac in base.diffusers_configs():
                if not label.startswith("UniPC"):
                    continue
                x, _ = base.run_diffusers(fac, eps, torch.tensor(z), nfe)
                if x is not None:
                    e = base.err(x.numpy(), ref)
                    errs.append((e if np.isfinite(e) else np.inf, label))
            e, label = min(errs)
            d_cfg, d_err = best_d[(name, nfe)]
            print(f"| {name} | {nfe} | {d_cfg} ({d_err:.4g}) | {label} | {e:.4g} | {e / d_err:.2f} |", flush=True)


if __name__ == "__main__":
    main()
