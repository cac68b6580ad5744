"""Few-step distillation on the exact 2-D mixtures: SFD, EM distillation, shortcut models, DSM + DDIM and the exact
teacher with DDIM / DPM-Solver++(2M), energy distance to exact draws at 1, 2 and 4 model calls.

    python benchmarks/distill_toy.py ring8      # or grid25; prints a markdown table and writes
                                                # benchmarks/results/distill_<name>.json

Budget: every trained model gets 1.152M student network passes (batch 256, width 64, depth 2, EMA 0.995,
float32): SFD and EMD start from a DSM network trained 2000 steps (512k passes) and spend the rest fine-tuning
(SFD N steps: 640k / (256 N) steps; EMD K Langevin steps: 640k / (256 (2K + 2)) steps); the shortcut model trains
3000 steps (384 passes per step), the DSM baseline 4500 steps. Teacher calls (the exact mixture) are counted
apart. The exact teacher is sampled with DDIM and dpmpp_2m at the same number of calls (one call: D(80 eps, 80)
for both; default logsnr grid), and the teacher and the DSM baseline also with DDIM on the SFD students' grid. Energy distance (``samplax.metrics.energy_distance``) of 4000 samples to 4000 exact draws, fixed seeds.
"""
from __future__ import annotations

import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from samplax import diffusion as sd
from samplax.diffusion import distill as di
from samplax.diffusion import train as tr
from samplax.metrics import energy_distance

N = 4000
COMMON = dict(width=64, depth=2, batch_size=256, ema_decay=0.995)


def main(name: str):
    model = sd.get_model(name)
    data = lambda k, n: model.sample(k, n)  # noqa: E731
    ref = model.sample(jax.random.key(99), N)
    key = jax.random.key(5)

    def ed(x):
        return float(energy_distance(np.asarray(x), np.asarray(ref))["energy_distance"])

    def one_call(den):
        x = 80.0 * jax.random.normal(key, (N, 2), jnp.float32)
        return jax.vmap(den, (0, None))(x, jnp.float32(80.0))

    rows, costs = {}, {}

    def record(label, cost, seconds, **ed_by_steps):
        rows[label] = ed_by_steps
        costs[label] = dict(student_passes=int(cost.get("num_model_evals", 0)),
                            teacher_calls=int(cost.get("num_teacher_evals", 0)), seconds=round(seconds, 1))

    rows["exact draws (noise floor)"] = {"1": ed(model.sample(jax.random.key(7), N))}
    for solver in ("ddim", "dpmpp_2m"):
        r = {"1": ed(one_call(model))}
        for k in (2, 4):
            r[str(k)] = ed(sd.sample(model, key=key, shape=(N, 2), sigma_max=80.0, nfe=k, solver=solver)[0])
        rows[f"teacher (exact) + {solver}"] = r
    # the exact teacher with DDIM on the grid the SFD students use (Karras, rho 7, 80 -> 0.5, then 0)
    rows["teacher (exact) + ddim, SFD grid"] = {str(k): ed(sd.sample(
        model, key=key, shape=(N, 2), sigma_max=80.0, nfe=k, solver="ddim", grid="karras", sigma_end=0.5,
        grid_options={"rho": 7.0})[0]) for k in (2, 4)}

    t = time.time()
    dsm, _, c_dsm = tr.train(jax.random.key(0), tr.TrainConfig(**COMMON), data, 2000, chunk=2000, return_cost=True)
    t_dsm = time.time() - t
    t = time.time()
    base, _, c = tr.train(jax.random.key(0), tr.TrainConfig(**COMMON), data, 4500, chunk=2250, return_cost=True)
    r = {"1": ed(one_call(base.ema))}
    for k in (2, 4):
        r[str(k)] = ed(sd.sample(base.ema, key=key, shape=(N, 2), sigma_max=80.0, nfe=k, solver="ddim")[0])
    record("DSM 4500 steps + DDIM", c, time.time() - t, **r)
    rows["DSM 4500 steps + DDIM, SFD grid"] = {str(k): ed(di.sample_sfd(base.ema, key=key, batch=N, num_steps=k)[0])
                                              for k in (2, 4)}

    for k in (1, 2, 4):
        steps = 640_000 // (256 * k)
        t = time.time()
        st, _, c = tr.train(jax.random.key(1), tr.TrainConfig(loss="sfd", sfd_steps=k, **COMMON), None, steps,
                            state=dsm, chunk=steps, return_cost=True, teacher=model)
        c = dict(c, num_model_evals=c["num_model_evals"] + c_dsm["num_model_evals"])
        record(f"SFD N={k} (DSM 2000 + {steps} steps)", c, time.time() - t + t_dsm,
               **{str(k): ed(di.sample_sfd(st.ema, key=key, batch=N, num_steps=k)[0])})

    for kk in (1, 4):
        steps = 640_000 // (256 * (2 * kk + 2))
        cfg = tr.TrainConfig(loss="emd", model="emd", emd_langevin_steps=kk, **COMMON)
        t = time.time()
        se, _, c = tr.train(jax.random.key(1), cfg, None, steps, state=di.emd_state_from_denoiser(dsm.ema, cfg),
                            chunk=steps, return_cost=True, teacher=model)
        c = dict(c, num_model_evals=c["num_model_evals"] + c_dsm["num_model_evals"])
        record(f"EMD K={kk} (DSM 2000 + {steps} steps)", c, time.time() - t + t_dsm,
               **{"1": ed(di.sample_emd(se.ema, key=key, batch=N)[0])})

    t = time.time()
    cs = tr.TrainConfig(loss="shortcut", model="shortcut", shortcut_steps=64, **COMMON)
    ss, _, c = tr.train(jax.random.key(0), cs, data, 3000, chunk=1500, return_cost=True)
    record("shortcut 3000 steps", c, time.time() - t,
           **{str(k): ed(sd.sample_shortcut(ss.ema, key=key, batch=N, num_steps=k)[0]) for k in (1, 2, 4)})

    print(f"\n### {name}: energy distance to {N} exact draws (lower is better)\n")
    print("| method | 1 call | 2 calls | 4 calls | student passes | teacher calls | seconds |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        cc = costs.get(label, {})
        cells = [f"{r[k]:.4f}" if k in r else "" for k in ("1", "2", "4")]
        print(f"| {label} | " + " | ".join(cells) + f" | {cc.get('student_passes', '')} | "
              f"{cc.get('teacher_calls', '')} | {cc.get('seconds', '')} |")
    out = pathlib.Path(__file__).parent / "results" / f"distill_{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"energy_distance": rows, "cost": costs}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ring8")
