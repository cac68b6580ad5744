"""SFD with a network teacher trained on toy data: a DSM denoiser trained on two moons (``toy2d``) is the teacher,
and SFD students fine-tuned from it take 1, 2 and 4 calls. Energy distance of 4000 samples to 4000 data draws.

Not a test. Usage: python benchmarks/distill_network_teacher.py (prints the numbers quoted in
benchmarks/results/diffusion_vs_diffusers.md, section "Distilled few-step students").
"""
import time, numpy as np, jax
from samplax import diffusion as sd
from samplax.diffusion import distill as di, train as tr, toy2d
from samplax.metrics import energy_distance
COMMON = dict(width=64, depth=2, batch_size=256, ema_decay=0.995)
data = toy2d.get_dataset("moons")
N = 4000
ref = np.asarray(data(jax.random.key(99), N))
ed = lambda x: float(energy_distance(np.asarray(x), ref)["energy_distance"])
key = jax.random.key(5)
t = time.time()
teacher, _, _ = tr.train(jax.random.key(0), tr.TrainConfig(**COMMON), data, 4000, chunk=2000, return_cost=True)
T = teacher.ema
print("teacher trained", round(time.time() - t), "s")
print("teacher dpmpp_2m 50 calls:", round(ed(sd.sample(T, key=key, shape=(N, 2), sigma_max=80.0, nfe=50)[0]), 4))
import jax.numpy as jnp
x1 = 80.0 * jax.random.normal(key, (N, 2), jnp.float32)
print("teacher 1 call D(80 eps, 80):", round(ed(jax.vmap(T, (0, None))(x1, jnp.float32(80.0))), 4))
for k in (2, 4):
    print(f"teacher dpmpp_2m {k} calls:", round(ed(sd.sample(T, key=key, shape=(N, 2), sigma_max=80.0, nfe=k)[0]), 4),
          " ddim:", round(ed(sd.sample(T, key=key, shape=(N, 2), sigma_max=80.0, nfe=k, solver="ddim")[0]), 4))
for k in (1, 2, 4):
    steps = 640_000 // (256 * k)
    t = time.time()
    st, _, c = tr.train(jax.random.key(1), tr.TrainConfig(loss="sfd", sfd_steps=k, sfd_teacher_steps=8, **COMMON), None, steps,
                        state=teacher, chunk=steps, return_cost=True, teacher=T)
    print(f"SFD {k} steps (student from the teacher, {steps} fine-tuning steps, {round(time.time()-t)} s, teacher calls {c.get('num_teacher_evals')}):",
          round(ed(di.sample_sfd(st.ema, key=key, batch=N, num_steps=k)[0]), 4))
