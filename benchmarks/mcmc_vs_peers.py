"""samplax NUTS vs BlackJAX NUTS (window adaptation) vs NumPyro NUTS, side by side in one process.

Same targets, same number of chains / warm-up / draws, float64, CPU.  For each
(library, target) we report: min bulk ESS over the reported quantities, ESS per
gradient evaluation (warm-up included), ESS per second (run time after
compilation, warm-up included), compile seconds, and accuracy (max |z| of the
posterior means against ground truth, z = |mean - truth| / sqrt(MCSE^2 + se^2)).
Ratios are samplax / peer.  Usage:

    python benchmarks/mcmc_vs_peers.py [--chains 4 --warmup 1000 --samples 1000 --targets a,b]
"""
from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import samplax  # noqa: E402
from samplax.diagnostics import ess_bulk, mcse_mean  # noqa: E402
from samplax.postprocess import quantities_of  # noqa: E402

DEFAULT_TARGETS = ["std_gaussian", "correlated_gaussian", "ill_conditioned_gaussian", "banana", "funnel",
                   "eight_schools", "german_credit"]


def _score(target, draws):
    """draws: [chains, n, d] unconstrained -> (min ESS, max |z|)."""
    q = quantities_of(target, np.asarray(draws))
    ess = ess_bulk(q)
    gt = target.ground_truth()
    z = float("nan")
    if gt is not None and gt.mean is not None:
        se = np.zeros_like(gt.mean) if gt.mean_se is None else np.asarray(gt.mean_se)
        z = float(np.max(np.abs(q.mean(axis=(0, 1)) - gt.mean) / np.sqrt(mcse_mean(q) ** 2 + se**2)))
    return float(np.min(ess)), z


def run_samplax(target, chains, warmup, samples, seed):
    r = samplax.sample(target, "nuts", seed=seed, num_chains=chains, num_warmup=warmup, num_samples=samples,
                       progress=False)
    ess, z = _score(target, r.samples.reshape(chains, samples, -1))
    return dict(ess=ess, z=z, grads=r.cost["num_grad_evals"], run_s=r.cost["sampling_seconds"],
                compile_s=r.cost["compile_seconds"], compilations=r.cost["num_compilations"])


def _init_points(target, chains, seed):
    keys = jax.random.split(jax.random.key(seed + 1000), chains)
    return jax.vmap(lambda k: jnp.reshape(target.initial_point(k), (-1,)))(keys)


def run_blackjax(target, chains, warmup, samples, seed):
    import blackjax

    shape = tuple(target.event_shape)

    def lp(x):
        return target.logdensity(jnp.reshape(x, shape))

    def one_chain(key, x0):
        k_warm, k_samp = jax.random.split(key)
        wa = blackjax.window_adaptation(blackjax.nuts, lp, target_acceptance_rate=0.8)
        (state, params), winfo = wa.run(k_warm, x0, num_steps=warmup)
        kernel = blackjax.nuts(lp, **params)

        def body(s, k):
            s, info = kernel.step(k, s)
            return s, (s.position, info.num_integration_steps)

        _, (xs, n) = jax.lax.scan(body, state, jax.random.split(k_samp, samples))
        return xs, jnp.sum(n) + jnp.sum(winfo.info.num_integration_steps)

    run = jax.jit(jax.vmap(one_chain))
    x0 = _init_points(target, chains, seed)
    keys = jax.random.split(jax.random.key(seed), chains)
    t0 = time.perf_counter()
    jax.block_until_ready(run(keys, x0))
    first = time.perf_counter() - t0
    keys = jax.random.split(jax.random.key(seed + 1), chains)
    t0 = time.perf_counter()
    xs, n = jax.block_until_ready(run(keys, x0))
    second = time.perf_counter() - t0
    ess, z = _score(target, xs)
    return dict(ess=ess, z=z, grads=int(np.sum(n)), run_s=second, compile_s=max(first - second, 0.0),
                compilations=1)


def run_numpyro(target, chains, warmup, samples, seed):
    from numpyro.infer import MCMC, NUTS

    shape = tuple(target.event_shape)

    def potential(x):
        return -target.logdensity(jnp.reshape(x, shape))

    x0 = _init_points(target, chains, seed)
    res = []
    for rep in range(2):
        mcmc = MCMC(NUTS(potential_fn=potential, target_accept_prob=0.8), num_warmup=warmup,
                    num_samples=samples, num_chains=chains, chain_method="vectorized", progress_bar=False)
        t0 = time.perf_counter()
        mcmc.warmup(jax.random.key(seed + rep), init_params=x0, collect_warmup=True, extra_fields=("num_steps",))
        n_warm = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
        mcmc.run(jax.random.key(seed + 10 + rep), extra_fields=("num_steps",))
        xs = mcmc.get_samples(group_by_chain=True)
        jax.block_until_ready(xs)
        res.append((time.perf_counter() - t0, xs, n_warm + int(np.sum(mcmc.get_extra_fields()["num_steps"]))))
    (first, _, _), (second, xs, n) = res
    ess, z = _score(target, xs)
    # NumPyro re-traces per MCMC object; 'first - second' under-states compile time when both compile.
    return dict(ess=ess, z=z, grads=n, run_s=second, compile_s=max(first - second, 0.0), compilations=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS))
    ap.add_argument("--peers", default="blackjax,numpyro")
    args = ap.parse_args()
    runners = {"samplax": run_samplax, "blackjax": run_blackjax, "numpyro": run_numpyro}
    libs = ["samplax"] + [p for p in args.peers.split(",") if p]
    rows = []
    for name in args.targets.split(","):
        if name not in samplax.targets.names():
            print(f"skip {name}: not registered")
            continue
        target = samplax.targets.get(name)
        for lib in libs:
            r = runners[lib](target, args.chains, args.warmup, args.samples, args.seed)
            r.update(lib=lib, target=name, ess_per_grad=r["ess"] / max(r["grads"], 1),
                     ess_per_s=r["ess"] / max(r["run_s"], 1e-9))
            rows.append(r)
            print(f"{name:<26} {lib:<9} minESS={r['ess']:8.1f} grads={r['grads']:>9} ESS/grad={r['ess_per_grad']:.4f} "
                  f"ESS/s={r['ess_per_s']:9.1f} compile={r['compile_s']:.2f}s max|z|={r['z']:.2f}", flush=True)
    print("\n| target | peer | ESS/grad ratio | ESS/s ratio | compile ratio | max|z| samplax | max|z| peer |")
    print("|---|---|---|---|---|---|---|")
    ratios = {}
    for name in dict.fromkeys(r["target"] for r in rows):
        s = next(r for r in rows if r["target"] == name and r["lib"] == "samplax")
        for p in (r for r in rows if r["target"] == name and r["lib"] != "samplax"):
            a, b = s["ess_per_grad"] / p["ess_per_grad"], s["ess_per_s"] / p["ess_per_s"]
            ratios.setdefault(p["lib"], []).append((a, b))
            print(f"| {name} | {p['lib']} | {a:.2f} | {b:.2f} | {s['compile_s'] / max(p['compile_s'], 1e-9):.2f} | "
                  f"{s['z']:.2f} | {p['z']:.2f} |")
    for lib, v in ratios.items():
        v = np.array(v)
        print(f"median over targets vs {lib}: ESS/grad x{np.median(v[:, 0]):.2f}, ESS/s x{np.median(v[:, 1]):.2f}")


if __name__ == "__main__":
    main()
