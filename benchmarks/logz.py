"""log Z benchmark: samplax SMC-family methods vs BlackJAX adaptive tempered SMC vs published numbers.

Targets (defined here exactly as in /work/shared/TARGETS.md unless ``samplax.targets`` has them):
  GMM-25: uniform mixture of 25 N(m, 0.3 I), m in {-10,-5,0,5,10}^2, log Z = 0.
  Funnel-10: x0 ~ N(0, 9), x_i | x0 ~ N(0, e^{x0}) (i = 1..9), normalized, log Z = 0.
  Many-Well-32: sum_{k<16} -x_{2k}^4 + 6 x_{2k}^2 + 0.5 x_{2k} - 0.5 x_{2k+1}^2, log Z = 164.695675.

Metric: for each of the R = 5 independent runs (seeds), |log Z_hat_r - log Z|; the table shows the
mean and standard deviation over runs, and the log-density/gradient evaluations per run.
Published: Sendera et al. 2024 ("Improved off-policy training of diffusion samplers"), Table 1,
log Z error for nested sampling and SMC.

Nested sampling vs dynesty (``--vs-dynesty``): GMM-25 and Funnel-10 under the same prior, samplax's default
multivariate Cauchy ``t_1(0, 5^2 I)``, given to dynesty 3 through an exact unit-cube transform of ``d + 1``
uniforms (``g = Phi^{-1}(u_{1..d})``, ``w = F^{-1}_{chi^2_1}(u_{d+1})``, ``x = 5 g / sqrt(w)``: dynesty samples
the ``d + 1``-cube and its likelihood ``L = p(x) / prior(x)`` ignores the auxiliary ``w``, so
``int L du = Z``), ``sample="rslice"``, the same ``n_live`` (default 1000) and ``R`` runs
(seeds 0..R-1). Reported: mean |error|, the spread of log Z over runs, the mean reported standard error
(samplax: ``sqrt(H / n_live)`` per run; dynesty: ``logzerr``), likelihood evaluations per run, and the
figure of merit ``spread^2 x evaluations`` (lower is better; the issue's goal is samplax <= dynesty). The table
goes into the marked block of ``benchmarks/results/logz.md``.

Run: ``JAX_PLATFORMS=cpu python benchmarks/logz.py [--particles gmm25=4000,...] [--skip ns,pt]``;
``python benchmarks/logz.py --vs-dynesty [--num-live 1000 --runs 5]``.
"""
from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.special import logsumexp  # noqa: E402

import samplax  # noqa: E402

PUBLISHED = {"gmm25": {"NS": 0.016, "SMC": 0.569}, "funnel10": {"NS": 0.033, "SMC": 0.561},
             "many_well32": {"NS": 0.292, "SMC": 14.99}}
MEANS25 = np.array([(a, b) for a in (-10.0, -5.0, 0.0, 5.0, 10.0) for b in (-10.0, -5.0, 0.0, 5.0, 10.0)])


def gmm25_lp(x, xp=jnp, lse=logsumexp):
    """GMM-25's log-density; ``xp``/``lse``: the array namespace and its logsumexp (numpy for dynesty)."""
    sq = xp.sum((x - xp.asarray(MEANS25, x.dtype)) ** 2, axis=-1)
    return lse(-0.5 * sq / 0.3 - xp.log(2 * xp.pi * 0.3)) - xp.log(25.0)


def funnel10_lp(x, xp=jnp):
    """Funnel-10's log-density; ``xp``: the array namespace (numpy for dynesty)."""
    lp0 = -0.5 * x[0] ** 2 / 9.0 - 0.5 * xp.log(2 * xp.pi * 9.0)
    return lp0 - 0.5 * xp.sum(x[1:] ** 2) * xp.exp(-x[0]) - 0.5 * 9 * (x[0] + xp.log(2 * xp.pi))


def many_well32_lp(x):
    a, b = x[0::2], x[1::2]
    return jnp.sum(-a**4 + 6 * a**2 + 0.5 * a) - 0.5 * jnp.sum(b**2)


def _registered(name, **kw):
    try:
        return samplax.targets.get(name, **kw)
    except KeyError:
        return None


def targets():
    out = {}
    out["gmm25"] = (_registered("gmm25") or samplax.from_logdensity(gmm25_lp, 2, name="gmm25"), 0.0)
    out["funnel10"] = (_registered("funnel", dim=10) or samplax.from_logdensity(funnel10_lp, 10, name="funnel10"),
                       0.0)
    out["many_well32"] = (_registered("many_well32")
                          or samplax.from_logdensity(many_well32_lp, 32, name="many_well32"), 164.695675)
    return out


def blackjax_smc(target, seed, runs, n, num_mcmc_steps, step_size, num_integration_steps, scale=5.0,
                 target_ess=0.5):
    """BlackJAX 1.7 adaptive tempered SMC, prior N(0, scale^2 I), HMC with a fixed step size and unit mass."""
    import blackjax
    from blackjax.smc import extend_params, resampling

    d = target.dim
    shape = tuple(target.event_shape)

    def lp(x):
        return target.logdensity(jnp.reshape(x, shape))

    def logprior(x):
        return jnp.sum(-0.5 * (x / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi))

    def loglik(x):
        return lp(x) - logprior(x)

    params = extend_params({"step_size": step_size, "inverse_mass_matrix": jnp.ones(d),
                            "num_integration_steps": num_integration_steps})
    algo = blackjax.adaptive_tempered_smc(logprior, loglik, blackjax.hmc.build_kernel(), blackjax.hmc.init,
                                          params, resampling.systematic, target_ess,
                                          num_mcmc_steps=num_mcmc_steps)

    def one(key):
        k0, k1 = jax.random.split(key)
        x0 = scale * jax.random.normal(k0, (n, d))
        state = algo.init(x0)

        def cond(c):
            return (c[0].tempering_param < 1) & (c[2] < 1000)

        def body(c):
            st, lz, i = c
            st, info = algo.step(jax.random.fold_in(k1, i), st)
            return st, lz + info.log_likelihood_increment, i + 1

        st, lz, i = jax.lax.while_loop(cond, body, (state, jnp.zeros(()), 0))
        return lz, i

    keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.key(seed), r))(jnp.arange(runs))
    t0 = time.perf_counter()
    lz, steps = jax.jit(jax.vmap(one))(keys)
    lz = np.asarray(lz)
    # cost: per step N * num_mcmc_steps * L gradient evaluations (+ N likelihood evaluations)
    evals = np.asarray(steps) * n * (num_mcmc_steps * num_integration_steps + 1) + n
    return lz, float(np.mean(evals)), time.perf_counter() - t0


def _blackjax_matched(target, true, runs, n, budget):
    """BlackJAX at (about) the same gradient budget: a 1-step pilot run counts its temperatures ``T``,
    then ``num_mcmc_steps = round(budget / (T N L))``."""
    _, pilot_cost, _ = blackjax_smc(target, 1, 1, n, 1, 0.1, 10)
    temps = max(1.0, (pilot_cost - n) / (n * 11))
    m = max(1, int(round(budget / (temps * n * 10))))
    lz, cost, secs = blackjax_smc(target, 0, runs, n, m, 0.1, 10)
    return np.abs(lz - true), cost, secs, m


def _np_logdensities():
    """The same log-densities in numpy (dynesty calls them one point at a time: no JAX dispatch per call)."""
    from functools import partial

    from scipy.special import logsumexp as np_logsumexp

    return {"gmm25": (partial(gmm25_lp, xp=np, lse=np_logsumexp), 2), "funnel10": (partial(funnel10_lp, xp=np), 10)}


def run_dynesty(name, n_live, runs, scale=5.0):
    """dynesty ``NestedSampler(sample="rslice")`` under samplax's default prior ``t_1(0, scale^2 I)``."""
    import dynesty
    from scipy.special import gammaln, ndtri
    from scipy.stats import chi2

    logp, d = _np_logdensities()[name]
    log_c = gammaln(0.5 * (1 + d)) - gammaln(0.5) - 0.5 * d * np.log(np.pi) - d * np.log(scale)

    def log_prior(x):
        return log_c - 0.5 * (1 + d) * np.log1p(np.sum((x / scale) ** 2))

    def transform(u):  # d + 1 uniforms -> (x, auxiliary w)
        g = ndtri(u[:d])
        w = chi2.ppf(u[d], 1)
        return np.append(scale * g / np.sqrt(w), w)

    def loglike(v):
        x = v[:d]
        v = logp(x) - log_prior(x)
        return v if np.isfinite(v) else -1e300

    out = []
    for r in range(runs):
        t0 = time.perf_counter()
        sampler = dynesty.NestedSampler(loglike, transform, d + 1, nlive=n_live, sample="rslice",
                                        rstate=np.random.default_rng(r))
        sampler.run_nested(print_progress=False)
        res = sampler.results
        out.append((float(res.logz[-1]), float(res.logzerr[-1]), int(np.sum(res.ncall)), time.perf_counter() - t0))
    return out


def run_samplax_ns(target, n_live, runs):
    t0 = time.perf_counter()
    r = samplax.sample(target, method="nested_sampling", num_live=n_live, num_samples=1000, seed=0,
                       num_chains=runs, progress=False)
    secs = (time.perf_counter() - t0) / runs
    lz = np.asarray(r.extra["log_Z_runs"])
    se = np.sqrt(np.asarray(r.extra["information"]) / n_live)
    evals = r.cost["num_logdensity_evals"] / runs
    return [(float(a), float(b), evals, secs) for a, b in zip(lz, se)]


MARK_BEGIN, MARK_END = "<!-- ns-vs-dynesty: generated by benchmarks/logz.py --vs-dynesty -->", "<!-- /ns-vs-dynesty -->"


def vs_dynesty(n_live, runs, out_path):
    import dynesty

    tg = targets()
    lines = [MARK_BEGIN, "", f"### Nested sampling vs dynesty {dynesty.__version__} (n_live = {n_live}, {runs} runs)", "",
             "Same prior t_1(0, 5^2 I) (dynesty: exact unit-cube transform, rslice). spread = sd of log Z over runs; "
             "se = mean reported standard error; FoM = spread^2 x likelihood evaluations per run (lower is better).",
             "", "| target | sampler | mean error | mean \\|error\\| | spread | reported se | evals / run | FoM | "
             "FoM samplax / dynesty | s / run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("gmm25", "funnel10"):
        target, true = tg[name]
        res = {"samplax nested_sampling": run_samplax_ns(target, n_live, runs),
               "dynesty rslice": run_dynesty(name, n_live, runs)}
        fom = {}
        for label, rows in res.items():
            lz, se, ev, secs = (np.array(v, dtype=float) for v in zip(*rows))
            err = lz - true
            spread = float(np.std(lz, ddof=1))
            fom[label] = spread**2 * ev.mean()
            ratio = fom["samplax nested_sampling"] / fom[label] if label.startswith("dynesty") else float("nan")
            lines.append(f"| {name} | {label} | {err.mean():+.3f} | {np.abs(err).mean():.3f} | {spread:.3f} | "
                         f"{se.mean():.3f} | {ev.mean():,.0f} | {fom[label]:,.0f} | "
                         f"{'' if np.isnan(ratio) else f'{ratio:.2f}'} | {secs.mean():.1f} |")
            print(lines[-1], "log Z per run:", np.round(lz, 3).tolist(), flush=True)
    lines += ["", MARK_END]
    block = "\n".join(lines)
    try:
        old = open(out_path).read()
    except FileNotFoundError:
        old = "# log Z benchmark\n"
    if MARK_BEGIN in old and MARK_END in old:
        new = old[:old.index(MARK_BEGIN)] + block + old[old.index(MARK_END) + len(MARK_END):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    with open(out_path, "w") as f:
        f.write(new)
    print(block)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--particles", default="gmm25=16000,funnel10=8000,many_well32=2000",
                    help="particles per run for each target (target=N,...) or one number for all")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--num-live", default="gmm25=20000,funnel10=20000,many_well32=2000",
                    help="nested-sampling live points per run (target=n,... or one number for all)")
    ap.add_argument("--out", default="benchmarks/results/logz.md")
    ap.add_argument("--skip", default="", help="comma-separated method keys to skip (smc, pt, ns, blackjax)")
    ap.add_argument("--targets", default="gmm25,funnel10,many_well32")
    ap.add_argument("--append", action="store_true", help="keep the rows already in --out and add (or replace) "
                    "only the rows of this run, marked as added by a partial run")
    ap.add_argument("--pt-on", default="gmm25", help="targets on which parallel tempering runs")
    ap.add_argument("--ns-on", default="gmm25,funnel10", help="targets on which nested sampling runs "
                    "(k = n_live / 10 deletions per iteration, live points decreasing with the remaining evidence, "
                    "5d slice steps per new point)")
    ap.add_argument("--vs-dynesty", action="store_true", help="only nested sampling vs dynesty (GMM-25, Funnel-10) "
                    "at --num-live (one number, default 1000) live points, into the marked block of --out")
    args = ap.parse_args()
    runs = args.runs
    if args.vs_dynesty:
        vs_dynesty(int(args.num_live) if "=" not in args.num_live else 1000, runs, args.out)
        return
    if "=" in args.particles:
        parts = {k: int(v) for k, v in (kv.split("=") for kv in args.particles.split(","))}
    else:
        parts = {t: int(args.particles) for t in ("gmm25", "funnel10", "many_well32")}
    if "=" in args.num_live:
        lives = {k: int(v) for k, v in (kv.split("=") for kv in args.num_live.split(","))}
    else:
        lives = {t: int(args.num_live) for t in ("gmm25", "funnel10", "many_well32")}
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    t_all = time.perf_counter()
    for tname, (target, true) in targets().items():
        if tname not in args.targets.split(","):
            continue
        n = parts[tname]
        methods = {
            "smc": (f"samplax smc (defaults, CESS 0.9, N={n})", dict(method="smc", target_cess=0.9, num_samples=n)),
            "pt": ("samplax parallel_tempering (K=24, 2000 tuning + 4000 scans)",
                   dict(method="parallel_tempering", num_temperatures=24, num_warmup=2000, num_samples=4000)),
            "ns": (f"samplax nested_sampling (defaults: prior t_1(0, 5^2 I), n_live={lives[tname]}, k=n/10, "
                   "live points down to 100, 5d slice steps)",
                   dict(method="nested_sampling", num_live=lives[tname], num_samples=1000)),
        }
        smc_cost = None
        for key, (label, opts) in methods.items():
            if key in skip or (key == "pt" and tname not in args.pt_on.split(",")) or \
                    (key == "ns" and tname not in args.ns_on.split(",")):
                continue
            t0 = time.perf_counter()
            r = samplax.sample(target, seed=0, num_chains=runs, progress=False, **opts)
            err = np.abs(np.asarray(r.extra["log_Z_runs"]) - true)
            cost = (r.cost["num_grad_evals"] or r.cost["num_logdensity_evals"]) / runs
            if key == "smc":
                smc_cost = r.cost["num_grad_evals"] / runs
            rows.append((tname, label, err.mean(), err.std(), cost, time.perf_counter() - t0))
            print(rows[-1], "signed errors per run:", np.round(np.asarray(r.extra["log_Z_runs"]) - true, 4).tolist(),
                  flush=True)
        if "blackjax" not in skip and smc_cost is not None:
            t0 = time.perf_counter()
            err, cost, _, m = _blackjax_matched(target, true, runs, n, smc_cost)
            rows.append((tname, f"BlackJAX adaptive_tempered_smc (HMC eps 0.1, L 10, {m} steps, N={n})",
                         err.mean(), err.std(), cost, time.perf_counter() - t0))
            print(rows[-1], flush=True)
    lines = [
        "# log Z benchmark", "",
        f"|log Z_hat - log Z| over {runs} independent runs (seed 0, runs = fold-ins; mean +- std over runs). "
        "Reference N(0, 5^2 I) for the SMC family; prior t_1(0, 5^2 I) for nested sampling (its default). "
        "Cost = gradient evaluations per run (each comes with its log-density; nested sampling: log-density "
        "evaluations); "
        "BlackJAX gets the same number of particles and about the same number of gradient evaluations as "
        "samplax smc (its num_mcmc_steps is set from a pilot run's temperature count).",
        f"Generated by `benchmarks/logz.py` on 2 shared, loaded CPU cores in {time.perf_counter() - t_all:.0f} s.",
        "", "| target | method | log Z error | grad (NS: density) evals / run | wall s |", "|---|---|---|---|---|"]
    new_rows = [f"| {t} | {m}{' (partial run)' if args.append else ''} | {e:.3f} +- {s_:.3f} | {c:,.0f} | {w:.0f} |"
                for t, m, e, s_, c, w in rows]
    if args.append:
        try:
            old_lines = open(args.out).read().split("\n## Notes")[0].splitlines()
        except FileNotFoundError:
            old_lines = []
        keys = {r.split(" | ")[0] + " | " + r.split(" | ")[1] for r in new_rows}
        kept = [ln for ln in old_lines if ln.startswith("| ") and not ln.startswith("| target")
                and "published best" not in ln and ln.split(" | ")[0] + " | " + ln.split(" | ")[1] not in keys]
        head = [ln for ln in old_lines if not ln.startswith(("| ", "|---")) and
                not ln.startswith("Rows marked (partial run)")]
        lines = head[:-1] + [f"Rows marked (partial run) were added by `benchmarks/logz.py --append` "
                             f"(that run: {time.perf_counter() - t_all:.0f} s, same machine).", "",
                             "| target | method | log Z error | grad (NS: density) evals / run | wall s |",
                             "|---|---|---|---|---|"] + kept
    lines += new_rows
    for t, p in PUBLISHED.items():
        lines.append(f"| {t} | published best NS / SMC (Sendera et al. 2024, Table 1) | {p['NS']} / {p['SMC']} | | |")
    notes = ""
    try:  # keep the hand-written analysis below the generated table
        old = open(args.out).read()
        if "\n## Notes" in old:
            notes = "\n" + old[old.index("\n## Notes") + 1:]
    except FileNotFoundError:
        pass
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n" + notes)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
