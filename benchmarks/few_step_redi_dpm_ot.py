"""ReDi (trajectory retrieval) and DPM-OT (semi-discrete OT start) against dpmpp_2m at the same NFE.

On the exact mixtures ring8 and grid25 (sigma_max = 80): for 4096 held-out noises,

* endpoint error: mean L2 distance to the exact PF-ODE endpoint of the same noise
  (:func:`samplax.diffusion.solve_pf_ode`, rtol = atol = 1e-10) -- meaningful for ReDi and dpmpp_2m (both
  approximate the PF-ODE map); DPM-OT's map is not the PF-ODE's, so only its distribution error is reported;
* distribution error: energy distance and sliced W2 (:mod:`samplax.metrics`) to 4096 exact mixture draws, and the
  same for the exact PF-ODE endpoints (the metrics' floor at this sample size).

ReDi: key phase 1 DDIM call to sigma_key = 10, values at sigma_value = 0.2, affine combination of 4 neighbours,
dpmpp_2m finishing with nfe - 1 calls; knowledge bases of 4096 and 65536 trajectories (build: 257 calls each).
DPM-OT: 2048 targets = exact data draws noised to sigma_mid (no model calls),
dpmpp_2m from sigma_mid with nfe calls; sigma_mid = 0.5 and 2 (OT: the defaults, 1000 Adam steps x 4096 noises).

Baselines (part ``baselines``): ddim from sigma_max, and DPM-OT's start without the OT map (the same kind of targets
drawn uniformly at random, which is the distribution the OT cells give) with the same solver.

Usage: ``python benchmarks/few_step_redi_dpm_ot.py [redi] [dpm_ot] [baselines]`` (each part a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from samplax import diffusion as sd  # noqa: E402
from samplax.diffusion import dpm_ot, redi  # noqa: E402
from samplax.metrics import energy_distance, sliced_wasserstein  # noqa: E402

SIGMA_MAX = 80.0
NFES = (3, 5, 10)
N_TEST = 4096
N_TARGETS = 2048  # DPM-OT's targets


def dist_err(x, truth):
    ed = float(energy_distance(x, truth)["energy_distance"])
    sw = float(sliced_wasserstein(jax.random.key(3), x, truth)["sliced_wasserstein"])
    return ed, sw


def row(r):
    print(f"{r[0]:22s} {r[1]:3d} {r[2]:12.4g} {r[3]:10.2e} {r[4]:8.4f}", flush=True)


def main(parts):
    for name in ("ring8", "grid25"):
        m = sd.get_model(name)
        z = jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(jax.random.key(1234), b), (2,)))(
            jnp.arange(N_TEST))
        x_t = SIGMA_MAX * z
        ref = sd.solve_pf_ode(m, x_t, SIGMA_MAX, 0.0)
        truth = m.sample(jax.random.key(99), N_TEST)
        ed0, sw0 = dist_err(ref, truth)
        print(f"\n== {name}: exact PF-ODE endpoints vs exact draws: energy {ed0:.2e}  SW2 {sw0:.4f}")
        print(f"{'method':22s} {'nfe':>3s} {'endpoint L2':>12s} {'energy':>10s} {'SW2':>8s}", flush=True)
        for n in NFES:
            x, _ = sd.sample(m, key=jax.random.key(0), x_init=x_t, sigma_max=SIGMA_MAX, nfe=n, solver="dpmpp_2m")
            row(("dpmpp_2m", n, float(jnp.mean(jnp.linalg.norm(x - ref, axis=1))), *dist_err(x, truth)))
        for n in NFES if "baselines" in parts else ():
            x, _ = sd.sample(m, key=jax.random.key(0), x_init=x_t, sigma_max=SIGMA_MAX, nfe=n, solver="ddim")
            row(("ddim", n, float(jnp.mean(jnp.linalg.norm(x - ref, axis=1))), *dist_err(x, truth)))
        for s_mid in (0.5, 2.0) if "baselines" in parts else ():
            # DPM-OT's cells carry 1/N each, so in distribution its start is a uniform draw of the targets: the same
            # targets resampled at random (no OT) and the same solver
            data = m.sample(jax.random.key(7), N_TARGETS)
            y = data + s_mid * jax.random.normal(jax.random.key(9), data.shape)
            pick = jax.random.randint(jax.random.key(10), (N_TEST,), 0, N_TARGETS)
            for n in NFES:
                x, _ = sd.sample(m, key=jax.random.key(0), x_init=y[pick], sigma_max=s_mid, nfe=n)
                row((f"resample s_mid={s_mid}", n, float("nan"), *dist_err(x, truth)))
        for size in (4096, 65536) if "redi" in parts else ():
            t0 = time.perf_counter()
            kb = redi.redi_build(m, key=jax.random.key(1), num_trajectories=size, event_shape=(2,),
                                 sigma_max=SIGMA_MAX, sigma_key=10.0, sigma_value=0.2)
            print(f"ReDi kb N={size}: build {kb.num_model_evals} model calls, {time.perf_counter() - t0:.1f} s")
            for n in NFES:
                x, info = redi.sample_redi(m, kb, x_init=x_t, nfe=n)
                assert info.num_model_evals == n
                row((f"redi N={size}", n, float(jnp.mean(jnp.linalg.norm(x - ref, axis=1))), *dist_err(x, truth)))
        for s_mid in (0.5, 2.0) if "dpm_ot" in parts else ():
            t0 = time.perf_counter()
            data = m.sample(jax.random.key(7), N_TARGETS)
            plan = dpm_ot.dpm_ot_build(m, key=jax.random.key(8), sigma_mid=s_mid, data=data)
            seconds = time.perf_counter() - t0
            mass = plan.ot.cell_masses(jax.random.key(11), 1 << 20)
            print(f"DPM-OT sigma_mid={s_mid}: build {plan.num_model_evals} model calls, {seconds:.1f} s; cell masses "
                  f"x {N_TARGETS} on 2^20 noises: min {float(mass.min()) * N_TARGETS:.2f} max "
                  f"{float(mass.max()) * N_TARGETS:.2f} (Monte Carlo sd alone {(N_TARGETS / 2**20) ** 0.5:.3f})",
                  flush=True)
            for n in NFES:
                x, info = dpm_ot.sample_dpm_ot(m, plan, key=jax.random.key(5), num_samples=N_TEST, nfe=n)
                row((f"dpm_ot s_mid={s_mid}", n, float("nan"), *dist_err(x, truth)))


if __name__ == "__main__":
    main(sys.argv[1:] or ("redi", "dpm_ot", "baselines"))
