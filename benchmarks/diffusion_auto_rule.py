"""Which solver should ``solver="auto"`` tune at each NFE? Measured on random Gaussian mixtures (no torch needed).

Not a test. For each random mixture (own seeds: not the diffusers benchmark's data, not the test suite's) and
NFE 5, 10, 20 it reports

* ``best diffusers-like``: the smallest mean L2 endpoint error over samplax's implementations of the
  configurations diffusers offers -- DPM-Solver++ 2M/3M (``dpmpp_2m``, ``dpmpp_3m``), DEIS order 2/3 (``deis``),
  UniPC bh1/bh2 order 2/3 (``unipc_bh1``, ``unipc_bh2``) -- on the Karras, uniform-time and log-SNR grids with
  last positive nodes 0.01-0.7 (diffusers' "linspace" and "trailing" spacings end in that range), each selected on
  the evaluation noises themselves (generous to the baseline);
* the error of each candidate solver with a grid tuned by :func:`samplax.diffusion.auto.tune_grid` (the
  settings of ``auto``, :data:`samplax.diffusion.auto.TUNE_DEFAULTS`, started from the fixed rule's grid), and its
  tuning seconds;
* the fixed rule :data:`samplax.diffusion.AUTO_RULE`.

Errors are against an exact PF-ODE solve (diffrax Dopri8, rtol = atol = 1e-10) of 512 evaluation noises that
differ from the tuning noises. sigma_max = 80.

Usage: python benchmarks/diffusion_auto_rule.py [--out benchmarks/results/diffusion_auto_rule.md] [--candidates ...]
"""
from __future__ import annotations

import argparse
import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from samplax import diffusion as sd  # noqa: E402
from samplax.diffusion import auto as sda  # noqa: E402
from samplax.diffusion.solvers import run_solver  # noqa: E402

SIGMA_MAX = 80.0
NFES = (5, 10, 20)
BASE_SOLVERS = (("dpmpp_2m", {}), ("dpmpp_3m", {}), ("deis", {"order": 2}), ("deis", {}), ("unipc_bh1", {}),
                ("unipc_bh2", {}), ("unipc_bh1", {"order": 3}), ("unipc_bh2", {"order": 3}))
BASE_GRIDS = ("karras", "time", "logsnr")
BASE_ENDS = (0.01, 0.03, 0.1, 0.3, 0.7)


def mixtures():
    """(name, model): 2-D mixtures of 12 and 25 modes and 16-/48-D ones, random means, weights, covariances."""
    out = []
    for seed, k in ((501, 12), (502, 25)):
        out.append((f"2-D, {k} modes (seed {seed})", sd.random_full_mixture(seed, 2, k, 1.0, (0.03, 0.2))))
    for seed, d, k in ((503, 16, 8), (504, 48, 16)):
        out.append((f"{d}-D, {k} modes (seed {seed})",
                    sd.random_full_mixture(seed, d, k, 1.0 / math.sqrt(d), (0.03, 0.2))))
    return out


def err(x, ref):
    return float(np.mean(np.linalg.norm(np.asarray(x - ref).reshape(x.shape[0], -1), axis=-1)))


def baseline(model, x0, ref, nfe):
    best = (np.inf, None)
    for (solver, opts), grid, se in itertools.product(BASE_SOLVERS, BASE_GRIDS, BASE_ENDS):
        for fs in (("denoise", "integrate") if solver == "deis" else ("denoise",)):
            x, _ = sd.sample(model, key=jax.random.key(0), x_init=x0, sigma_max=SIGMA_MAX, nfe=nfe, solver=solver,
                             solver_options=opts, grid=grid, sigma_end=se, final_step=fs)
            e = err(x, ref)
            if np.isfinite(e) and e < best[0]:
                best = (e, f"{solver}{opts.get('order', '') and ' order ' + str(opts['order'])} / {grid} / {se} / {fs}")
    return best


def tuned(model, x0, ref, nfe, solver):
    fp = sda.model_fingerprint(model, (model.dim,), x0.dtype, SIGMA_MAX)
    rule = sda.auto_choice(nfe)
    s = sd.get_solver(solver)
    n_grid = len(s.plan(nfe - 1, False)["order"])
    init = sd.make_grid(rule[1], n_grid, SIGMA_MAX, rule[2])
    t0 = time.perf_counter()
    res = sda.tune_grid(model, fingerprint=fp, solver=solver, nfe=nfe, sigma_max=SIGMA_MAX, sigma_min=0.0,
                        final_step="denoise", event_shape=(model.dim,), dtype=x0.dtype, init_nodes=init,
                        progress=False, **sda.TUNE_DEFAULTS)
    secs = time.perf_counter() - t0
    nodes = np.asarray(res["nodes"])
    # the nodes through the solver, then the final denoise (what sample() does with a tuned grid)
    plan = {k: jnp.asarray(v) for k, v in {**s.plan(nfe - 1, False), **res["weights"]}.items()}
    dz = jax.vmap(model, in_axes=(0, None))
    xs, _ = jax.jit(lambda xx, nn: run_solver(s, dz, xx, nn, plan, None, {}))(x0, jnp.asarray(nodes))
    xs = dz(xs, jnp.asarray(nodes[-1]))
    return err(xs, ref), secs, nodes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/diffusion_auto_rule.md")
    ap.add_argument("--candidates", nargs="+", default=["bespoke", "unipc_bh2", "ipndm", "dpmpp_3m"])
    ap.add_argument("--n-eval", type=int, default=512)
    ap.add_argument("--max-mixtures", type=int, default=4)
    args = ap.parse_args()
    rows = []
    for name, model in mixtures()[: args.max_mixtures]:
        z = jax.random.normal(jax.random.key(777), (args.n_eval, model.dim), jnp.float64)
        x0 = SIGMA_MAX * z
        ref = sd.solve_pf_ode(model, x0, SIGMA_MAX, 0.0, rtol=1e-10, atol=1e-10)
        for nfe in NFES:
            b_err, b_cfg = baseline(model, x0, ref, nfe)
            xr, _ = sd.sample(model, key=jax.random.key(0), x_init=x0, sigma_max=SIGMA_MAX, nfe=nfe, solver="auto",
                              tune=False)
            row = {"data": name, "nfe": nfe, "base": (b_err, b_cfg), "rule": err(xr, ref), "cands": {}}
            for c in args.candidates:
                e, secs, _ = tuned(model, x0, ref, nfe, c)
                row["cands"][c] = (e, secs)
            rows.append(row)
            print(row, flush=True)
    lines = ["# Which solver `solver=\"auto\"` tunes", "",
             f"jax {jax.__version__} (CPU, float64), sigma_max = {SIGMA_MAX}. Made by `benchmarks/diffusion_auto_rule.py` "
             "(see its docstring for the protocol). Mean L2 endpoint error on "
             f"{args.n_eval} evaluation noises against an exact PF-ODE solve; in brackets the ratio to the best "
             "diffusers-like configuration. Tuned: auto's settings (tuning noises other than the evaluation "
             "ones), from the fixed rule's grid; seconds of tuning (compile included; the first NFE of a mixture "
             "also pays the reference solve) after the slash.", "",
             "| data | NFE | best diffusers-like config | error | fixed rule | "
             + " | ".join(f"tuned {c}" for c in args.candidates) + " |",
             "|---|---|---|---|---|" + "---|" * len(args.candidates)]
    for r in rows:
        b = r["base"][0]
        cells = [f"{e:.3g} ({e / b:.2f}) / {s:.1f} s" for e, s in (r["cands"][c] for c in args.candidates)]
        lines.append(f"| {r['data']} | {r['nfe']} | {r['base'][1]} | {b:.3g} | {r['rule']:.3g} ({r['rule'] / b:.2f}) | "
                     + " | ".join(cells) + " |")
    txt = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(txt)
    print(txt)


if __name__ == "__main__":
    main()
