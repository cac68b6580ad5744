"""Searched per-step solver schedules (``solver="usf"``, :func:`samplax.diffusion.search_schedule`; S^3 of Liu et al.
2023) vs fixed solvers and ``solver="auto"`` on exact Gaussian-mixture models.

Not a test. The testbed of ``benchmarks/diffusion_vs_diffusers.py`` (without diffusers): DDPM linear betas
1e-4..0.02, 1000 steps (sigma_max = 157.4 in VE); ring8, grid25 and the 64-D mixture of 10 random modes; the
same 4096 evaluation noises (``numpy.random.default_rng(1234)``, after the 1024 tuning noises, scaled to the VE
state); reference endpoints by a Dopri8 solve of the PF-ODE at rtol = atol = 1e-10. Metric: mean L2 endpoint error.

Compared at NFE 5, 10, 20 (calls per sample, the final denoise included):
* ``usf`` searched: :func:`search_schedule` on its own 256 noises (key 0), over the grids ``GRIDS x SIGMA_ENDS``
  and every per-step choice; its cost (model calls, seconds) is reported;
* the best uniform strategy of that search on the chosen grid (``usf`` with one choice for every step);
* ``dpmpp_2m`` and ``unipc_bh2`` on the searched grid, and on samplax's default grid (logsnr, sigma_end 0.002);
* ``solver="auto"`` (tuned on its own 256 noises; fresh cache, so its tuning cost is measured).

Usage: python benchmarks/usf_schedule.py [--data ring8 grid25 mixture64] [--nfe 5 10 20] [--out FILE]
"""
from __future__ import annotations

import argparse
import math
import tempfile

import numpy as np

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from samplax import diffusion as sd  # noqa: E402

SCH = sd.ddpm_linear()
ABAR = np.asarray(SCH.alphas_cumprod)
SIGMA_MAX = float(np.sqrt((1 - ABAR[-1]) / ABAR[-1]))
GRIDS = ("logsnr", "karras", "time")
SIGMA_ENDS = (0.002, 0.02, 0.2)
DATA = {"ring8": sd.ring8, "grid25": sd.grid25, "mixture64": lambda: sd.random_mixture(0, 64, 10)}


def err(x, ref):
    return float(np.mean(np.linalg.norm(np.asarray(x) - np.asarray(ref), axis=-1)))


def run(model, x, **kw):
    out, info = sd.sample(model, key=jax.random.key(0), x_init=x, **kw)
    return np.asarray(out), int(info.num_model_evals), info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=list(DATA))
    ap.add_argument("--nfe", nargs="+", type=int, default=[5, 10, 20])
    ap.add_argument("--n-eval", type=int, default=4096)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cache_dir = tempfile.mkdtemp(prefix="samplax-bench-auto-")
    lines = ["| data | NFE | usf searched (grid) | error | best uniform usf | error | dpmpp_2m same grid | "
             "unipc_bh2 same grid | dpmpp_2m logsnr 0.002 | unipc_bh2 logsnr 0.002 | auto | search: calls, s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.data:
        model = DATA[name]()
        d = model.dim
        rng = np.random.default_rng(1234)
        rng.normal(size=(1024, d))  # the tuning noises of diffusion_vs_diffusers.py
        z = jnp.asarray(rng.normal(size=(args.n_eval, d)) * math.sqrt(1 + SIGMA_MAX**2))
        ref = np.asarray(sd.solve_pf_ode(model, z, SIGMA_MAX, 0.0, rtol=1e-10, atol=1e-10))
        for nfe in args.nfe:
            fit = sd.search_schedule(model, key=jax.random.key(0), nfe=nfe, sigma_max=SIGMA_MAX, event_shape=(d,),
                                     grid=GRIDS, sigma_end=SIGMA_ENDS)
            kw = fit.sample_kwargs
            x, ne, _ = run(model, z, **kw)
            e_s = err(x, ref)
            bf, _ = fit.diagnostics["best_fixed"]
            e_f = err(run(model, z, **{**kw, "solver_options": bf})[0], ref)
            same = {k: kw[k] for k in ("nfe", "sigma_max", "sigma_end", "grid", "grid_options")}
            e_d = err(run(model, z, solver="dpmpp_2m", **same)[0], ref)
            e_u = err(run(model, z, solver="unipc_bh2", **same)[0], ref)
            dflt = dict(nfe=nfe, sigma_max=SIGMA_MAX)
            e_d0 = err(run(model, z, solver="dpmpp_2m", **dflt)[0], ref)
            e_u0 = err(run(model, z, solver="unipc_bh2", **dflt)[0], ref)
            xa, ne_a, ainfo = run(model, z, solver="auto", nfe=nfe, sigma_max=SIGMA_MAX,
                                  tune={"cache_dir": cache_dir, "progress": False})
            e_a = err(xa, ref)
            dg = fit.diagnostics
            g0 = min(dg["grids"], key=lambda q: q["error"])
            start = f"from {g0['grid']} {g0['sigma_end']:g} ->"
            o = fit.solver_options
            sched = " ".join(f"{k}{'n' if p == 'noise' else 'd'}{'c' if c else ''}{'1' if v == 'bh1' else ''}"
                             for k, p, c, v in zip(o["order"], o["prediction"], o["corrector"], o["variant"]))
            bfs = f"{bf['order']}{'n' if bf['prediction'] == 'noise' else 'd'}{'c' if bf['corrector'] else ''}" \
                  f"{'1' if bf['variant'] == 'bh1' else ''}"
            row = (f"| {name} | {nfe} ({ne}) | `{sched}` ({start}, {kw['sigma_end']:.3g}) | **{e_s:.4g}** | {bfs} | "
                   f"{e_f:.4g} | {e_d:.4g} | {e_u:.4g} | {e_d0:.4g} | {e_u0:.4g} | {e_a:.4g} ({ne_a}) | "
                   f"{dg['num_model_evals']:.3g}, {dg['seconds']:.0f} s |")
            print(row, flush=True)
            lines.append(row)
    text = "\n".join(lines)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
