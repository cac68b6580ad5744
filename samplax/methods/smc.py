"""Registration of the SMC family: ``smc``, ``waste_free_smc``, ``ais``, ``population_annealing``
(and, in their own modules, ``nested_sampling`` and ``parallel_tempering``).

For these methods ``num_chains`` is the number of *independent runs* and
``num_samples`` the number of particles per run (for ``parallel_tempering``:
draws of the ``beta = 1`` replica).  ``Result.samples`` holds
each run's final particles resampled to equal weights (systematic resampling,
then shuffled); the weighted particles before that are in
``Result.extra["particles"]`` / ``["particle_log_weights"]``.

``log_Z`` combines the runs through the unbiased ``Z`` estimates:
``log Z_hat = log mean_r Z_hat_r``; ``log_Z_se`` takes the larger of the
between-run relative variance and the mean single-run Lee & Whiteley (2018)
estimate (see :func:`samplax.smc.logz.combine_log_Z`; one run: Lee & Whiteley alone).

``num_warmup``: unused by the SMC samplers and nested sampling (they tune
from the particle population at every step and have no burn-in); for
``parallel_tempering`` it is the number of tuning scans.  ``init``: refused
(``ValueError``) by the particle methods, which start from the reference;
``parallel_tempering`` starts every replica there.  ``progress=True``
reports each temperature (SMC), every 100 iterations (nested sampling) or the
end of the tuning rounds (parallel tempering) as the note of the engine's
progress line (samplax/run/progress.py: redrawn on a terminal, at most every
30 s elsewhere).

``Result.extra`` also reports the per-run ``log_Z``, the idealized CLT
variance ``sum_t (1/CESS_t - 1/N)`` of each run and the schedules.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flowjax.distributions import AbstractDistribution

from samplax.core import nonfinite
from samplax.core.options import (
    boolean, int_at_least, is_number, one_of, or_none, pos_int, pos_int_or_none, pos_number,
    pos_number_or_none, prob, prob_or_none,
)
from samplax.methods import MethodSpec, Option, PopulationOutput, PopulationPlan, register_method
from samplax.neural.flows import FlowReference, as_flow
from samplax.smc import mutation, nested, tempered
from samplax.smc import parallel_tempering as ptm
from samplax.smc.base import lee_whiteley_relative_variance
from samplax.smc.logz import combine_log_Z, mean_log_Z
from samplax.smc.paths import DEFAULT_REFERENCE_SCALE, make_reference, valid_dof
from samplax.smc.resampling import RESAMPLERS, equal_weight_draws


def _scale_ok(v):
    a = np.asarray(v, dtype=float) if not isinstance(v, str) else np.asarray(np.nan)
    return a.ndim <= 1 and a.size >= 1 and bool(np.all(np.isfinite(a))) and bool(np.all(a > 0))


def _mean_ok(v):
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        return False
    return a.ndim <= 1 and bool(np.all(np.isfinite(a)))


def _schedule_ok(v):
    if v is None or pos_int(v):
        return True
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        return False
    return (a.ndim == 1 and a.size >= 2 and a[0] == 0.0 and a[-1] == 1.0 and bool(np.all(np.diff(a) > 0)))


def common_options(kernel="hmc", num_mcmc_steps=5, num_integration_steps=10):
    """Options shared by every tempered method."""
    return {
        "kernel": Option(kernel, "MCMC mutation kernel: a registered kernel (samplax.mcmc) that leaves the target "
                         "invariant with (step_size, inverse_mass_matrix) params",
                         lambda v: mutation.kernel_problem(v) is None,
                         f"one of {list(mutation.kernel_names())}", explain=mutation.kernel_problem),
        "num_mcmc_steps": Option(num_mcmc_steps, "MCMC steps per temperature (smc: the minimum; "
                                 "correlation_threshold adds more)", pos_int, "an int >= 1"),
        "num_integration_steps": Option(num_integration_steps, "leapfrog steps per HMC step", pos_int,
                                        "an int >= 1"),
        "target_accept": Option(None, "target acceptance of the mutation (None: 0.65 HMC, 0.57 MALA, 0.3 RWM)",
                                prob_or_none, "None or a number in (0, 1)"),
        "step_size": Option(None, "initial step size (None: HMC d^-1/4, MALA d^-1/3, RWM 2.38 d^-1/2)",
                            pos_number_or_none, "None or a positive number"),
        "adapt_step_size": Option(True, "adapt the step size to target_accept from the particles' acceptance",
                                  boolean, "True/False"),
        "adapt_mass_matrix": Option(True, "inverse mass matrix = weighted particle variance at each temperature",
                                    boolean, "True/False"),
        "resampling": Option("systematic", "resampling scheme", one_of(RESAMPLERS),
                             f"one of {sorted(RESAMPLERS)}"),
        "reference_scale": Option(DEFAULT_REFERENCE_SCALE, "std of the Gaussian reference N(mean, scale^2 I) "
                                  "(scalar or [d]); it must cover the target's mass: modes a few reference sds "
                                  "out are lost (GMM-40, modes to radius 40: log Z -0.84 at scale 5, "
                                  "-0.01 at 25)", _scale_ok, "a positive number or a vector of them"),
        "reference_mean": Option(0.0, "mean of the Gaussian reference (scalar or [d])", _mean_ok,
                                 "a finite number or vector"),
    }


def _reject_init(name, init):
    if init is not None:
        raise ValueError(f"{name}: init is not supported: the particles start as draws from the Gaussian reference "
                         "N(reference_mean, reference_scale^2 I); set reference_mean/reference_scale to move it")


def _printer(ctx, fmt):
    """Progress for ``jax.debug.callback``: one formatted line per call (None when progress is off)."""
    if not ctx.show_progress:
        return None

    def show(*args):
        ctx.progress(fmt.format(*[np.asarray(a).item() for a in args]))

    return show


def tempered_plan(target, ctx, name, *, config: tempered.TemperedConfig, schedule=None, step_size=None,
                  reference_mean=0.0, reference_scale=DEFAULT_REFERENCE_SCALE, reference=None) -> PopulationPlan:
    """One tempered SMC run (``tempered.run``) and the assembly of ``ctx.num_chains`` runs' results
    (``reference``: a normalized reference such as :class:`samplax.neural.flows.FlowReference`, instead of the
    Gaussian ``N(reference_mean, reference_scale^2 I)``)."""
    d = target.dim
    num_chains, num_samples = ctx.num_chains, ctx.num_samples
    dtype = jnp.result_type(float)
    if reference is None:
        reference = make_reference(d, reference_mean, reference_scale, dtype)
    sched = None if schedule is None else jnp.asarray(schedule, dtype)
    eps0 = None if step_size is None else jnp.asarray(step_size, dtype)
    _reject_init(name, ctx.init)
    show = _printer(ctx, "run {} temperature {}: beta {:.5g}, ESS {:.0f}, acceptance {:.2f}, moves {}")

    def run(k, run_id, tgt, shared):
        lp = tgt.flat_logdensity()
        reference, sched, eps0 = shared
        out = tempered.run(k, lp, reference, config, sched, eps0, progress=show, run_id=run_id)
        draws = equal_weight_draws(jax.random.fold_in(k, 1), out.state.particles.position,
                                   out.state.log_weights, num_samples)
        lw = lee_whiteley_relative_variance(out.state)
        return out, draws, lw, jax.vmap(lp)(draws)

    def finish(res):
        out, draws, lw, lp_draws = res
        log_z_runs = np.asarray(out.state.log_Z, dtype=np.float64)
        _check_nonfinite(name, target, reference, num_chains, num_samples, np.asarray(out.num_nonfinite),
                         np.asarray(out.num_initial_nonfinite), log_z_runs)
        log_z, log_z_se, se_kind = combine_log_Z(log_z_runs, np.asarray(lw))
        n_steps = np.asarray(out.num_steps)
        betas = np.asarray(out.betas)
        warnings = []
        unfinished = np.flatnonzero(betas[np.arange(num_chains), n_steps] < 1.0)
        if unfinished.size:
            warnings.append({"code": "schedule_unfinished", "value": int(unfinished.size),
                             "message": f"{unfinished.size} run(s) stopped at max_steps before beta = 1; "
                                        "log Z and samples are not for the target (raise max_steps)"})
        if not np.all(np.isfinite(log_z_runs)):
            warnings.append({"code": "nonfinite_log_Z", "value": int(np.sum(~np.isfinite(log_z_runs))),
                             "message": "some runs gave a non-finite log Z (all weights zero?)"})
        acc = np.asarray(out.acceptance)
        with np.errstate(invalid="ignore"):  # -inf log Z of a run outside the support: nan, not a RuntimeWarning
            sd_over_runs = float(np.std(log_z_runs, ddof=1)) if num_chains > 1 else None
        extra = {
            "log_Z_runs": log_z_runs.tolist(),
            "log_Z_se_method": se_kind,
            "log_Z_mean_of_logs": float(np.mean(log_z_runs)),
            "log_Z_sd_over_runs": sd_over_runs,
            "lee_whiteley_relative_variance": np.asarray(lw).tolist(),
            "clt_log_Z_var": np.asarray(out.clt_var).tolist(),
            "num_steps": n_steps.tolist(),
            "schedules": [betas[c, : n_steps[c] + 1].tolist() for c in range(num_chains)],
            "num_moves": [np.asarray(out.num_moves)[c, : n_steps[c]].tolist() for c in range(num_chains)],
            "mean_acceptance": [float(np.nanmean(acc[c, : n_steps[c]])) if n_steps[c] else None
                                for c in range(num_chains)],
            "particles": np.asarray(out.state.particles.position),
            "particle_log_weights": np.asarray(out.state.log_weights),
        }
        nonfinite.report(name, out.num_nonfinite, extra, warnings)
        return PopulationOutput(
            samples=np.asarray(draws), stats={"lp": np.asarray(lp_draws)},
            # + the lp of the returned draws (run computes it for the stats)
            num_logdensity_evals=int(np.sum(np.asarray(out.num_logdensity_evals, dtype=np.int64)))
            + num_chains * num_samples,
            num_grad_evals=int(np.sum(np.asarray(out.num_grad_evals, dtype=np.int64))),
            log_Z=log_z, log_Z_se=log_z_se, log_weights=np.full((num_chains, num_samples), -np.log(num_samples)),
            extra=extra, warnings=warnings, config={"config": config._asdict()})

    return PopulationPlan(run, finish, shared=(reference, sched, eps0))


def _check_nonfinite(name, target, reference, num_chains, num_particles, n_bad, n_bad0, log_z_runs):
    """``ValueError`` for runs left with nothing finite: every initial particle non-finite, or every weight
    lost (``log Z = -inf``) in a run that met non-finite log-densities."""
    dead = np.flatnonzero(n_bad0 >= num_particles)
    if dead.size:
        raise nonfinite.everywhere_error(
            name, target.name, f"all {num_particles} initial particles (draws from the reference "
            f"N({np.asarray(reference.mean).tolist()}, diag({np.asarray(reference.scale).tolist()})^2))",
            dead, num_chains, hint="move the reference onto the target's support with reference_mean / "
                                   "reference_scale")
    lost = np.flatnonzero(~np.isfinite(log_z_runs) & (n_bad > 0))
    if lost.size:
        raise ValueError(f"{name}: every particle of {lost.size} of {num_chains} run(s) (runs {lost.tolist()}) lost "
                         f"its weight (log Z = {log_z_runs[lost].tolist()}) after non-finite (NaN or +inf) "
                         f"log-densities on target {target.name!r} ({n_bad[lost].tolist()} non-finite evaluations, "
                         f"of {num_particles} particles): the log-density is NaN, +inf or -inf wherever the "
                         "particles went; check the target for NaN")


def _resolve_schedule(schedule, default_num, power=4.0):
    if schedule is None:
        schedule = default_num
    if pos_int(schedule):
        return np.asarray(tempered.power_schedule(int(schedule), power))
    return np.asarray(schedule, dtype=np.float64)


def _config(num_samples, o, **kw):
    for k in ("correlation_threshold", "max_mcmc_steps", "step_size_spread"):
        if k in o and k not in kw:
            kw[k] = o[k] if o[k] is not None or k == "correlation_threshold" else 0
    return tempered.TemperedConfig(
        num_particles=num_samples, kernel=o["kernel"], num_mcmc_steps=o["num_mcmc_steps"],
        num_integration_steps=o["num_integration_steps"], target_accept=o["target_accept"],
        resampling=o["resampling"], adapt_step_size=o["adapt_step_size"],
        adapt_mass_matrix=o["adapt_mass_matrix"], **kw)


def _common_kwargs(o):
    return dict(step_size=o["step_size"], reference_mean=o["reference_mean"],
                reference_scale=o["reference_scale"])


def _smc_population(target, ctx, **o):
    adaptive = o["schedule"] is None
    cfg = _config(ctx.num_samples, o, adaptive=adaptive, target_cess=o["target_cess"],
                  ess_threshold=o["ess_threshold"], max_steps=o["max_steps"])
    sched = None if adaptive else _resolve_schedule(o["schedule"], None)
    return tempered_plan(target, ctx, "smc", config=cfg, schedule=sched, reference=_flow_reference(target, o),
                         **_common_kwargs(o))


def _reference_flow_option(what: str) -> Option:
    return Option(None, f"a trained normalizing flow as {what} instead of the Gaussian / Student-t one (the Result "
                  "of method 'flow', 'fab' or 'neutra', or a flowjax distribution on R^d; "
                  "reference_mean / reference_scale then do not apply): log Z stays the target's (the flow is "
                  "normalized); a flow close to the target needs fewer temperatures / iterations",
                  lambda v: v is None or isinstance(v, AbstractDistribution) or isinstance(getattr(v, "extra", None),
                                                                                          dict),
                  "None, a flowjax distribution or the Result of a flow-based method")


def _prepare_reference_flow(target, options):
    """The option ``reference_flow`` as a flowjax distribution on the target's dimension (a Result gives its
    ``extra["flow"]``), or a ``ValueError`` naming the option."""
    if options.get("reference_flow") is not None:
        options = {**options, "reference_flow": as_flow(options["reference_flow"], target.dim,
                                                        "option reference_flow")}
    return options


def _flow_reference(target, o):
    """:class:`~samplax.neural.flows.FlowReference` of the option ``reference_flow`` (None without one)."""
    flow = o.get("reference_flow")
    return None if flow is None else FlowReference(as_flow(flow, target.dim, "option reference_flow"))


def _waste_free_population(target, ctx, **o):
    num_samples = ctx.num_samples
    p = o["chain_length"]
    if p is None:  # the longest chain of at most 20 states that divides num_samples (at least 2)
        p = next((q for q in range(min(20, num_samples), 1, -1) if num_samples % q == 0), None)
        if p is None:
            raise ValueError(f"waste_free_smc: num_samples={num_samples} has no divisor in [2, 20]; "
                             "pass chain_length (a divisor >= 2 of num_samples)")
    if num_samples % p:
        raise ValueError(f"waste_free_smc: num_samples={num_samples} (particles per run) must be a multiple "
                         f"of chain_length={p}")
    adaptive = o["schedule"] is None
    cfg = _config(num_samples, o, adaptive=adaptive, target_cess=o["target_cess"], ess_threshold=1.0,
                  max_steps=o["max_steps"], waste_free_chain_length=p)
    sched = None if adaptive else _resolve_schedule(o["schedule"], None)
    return tempered_plan(target, ctx, "waste_free_smc", config=cfg, schedule=sched, **_common_kwargs(o))


def _fixed_schedule_population(name: str, ess_threshold: float):
    """A fixed tempering schedule: ``ess_threshold`` 0 never resamples (AIS), 1 always (PA)."""

    def population(target, ctx, **o):
        cfg = _config(ctx.num_samples, o, adaptive=False, ess_threshold=ess_threshold)
        sched = _resolve_schedule(o["schedule"], o["num_temperatures"], o["schedule_power"])
        return tempered_plan(target, ctx, name, config=cfg, schedule=sched, **_common_kwargs(o))

    return population


_ADAPTIVE = {
    "schedule": Option(None, "None: adaptive (CESS bisection); an int K: fixed power schedule (k/K)^4; "
                       "or an increasing list of betas from 0 to 1", _schedule_ok,
                       "None, an int >= 1, or an increasing sequence from 0 to 1"),
    "target_cess": Option(0.8, "fraction of the conditional ESS kept at each adaptive step", prob,
                          "a number in (0, 1)"),
    "max_steps": Option(500, "maximum number of temperatures (adaptive)", pos_int, "an int >= 1"),
}
_FIXED = {
    "schedule": Option(None, "None: power schedule (k/K)^schedule_power with K = num_temperatures; "
                       "or an increasing list of betas from 0 to 1", _schedule_ok,
                       "None, an int >= 1, or an increasing sequence from 0 to 1"),
    "num_temperatures": Option(100, "number of annealing steps K", pos_int, "an int >= 1"),
    "schedule_power": Option(4.0, "power p of the default schedule beta_k = (k/K)^p",
                             pos_number, "a positive number"),
}

register_method(MethodSpec(
    "smc", None, "Adaptive tempered SMC, geometric path from N(0, 5^2 I), CESS-adaptive schedule, "
    "tuned HMC mutations (Del Moral, Doucet & Jasra 2006; Zhou, Johansen & Aston 2016)",
    {**common_options(num_mcmc_steps=2, num_integration_steps=30), **_ADAPTIVE,
     "correlation_threshold": Option(0.1, "keep moving (after num_mcmc_steps moves) until the rank correlation "
                                     "of log p - log q between the start and the current particles is below this "
                                     "(None: exactly num_mcmc_steps moves)", prob_or_none,
                                     "None or a number in (0, 1)"),
     "max_mcmc_steps": Option(50, "cap on the adaptive number of moves per temperature", pos_int, "an int >= 1"),
     "step_size_spread": Option(2.5, "per-particle log-uniform step-size spread s: e * exp(s U(-1, 1))",
                                lambda v: is_number(v) and 0 <= v <= 5, "a number in [0, 5]"),
     "ess_threshold": Option(0.5, "resample when ESS < ess_threshold * N",
                             lambda v: is_number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
     "reference_flow": _reference_flow_option("the tempering's reference (beta = 0)")},
    family="smc", gradient_based=True, population=_smc_population, run_stream=7, prepare=_prepare_reference_flow))
register_method(MethodSpec(
    "waste_free_smc", None, "Waste-free tempered SMC: N/P resampled chains of length P, all states kept "
    "(Dau & Chopin 2022)",
    {**common_options(), **_ADAPTIVE,
     "chain_length": Option(None, "MCMC chain length P (num_samples must be a multiple; None: the largest "
                            "divisor of num_samples in [2, 20])", or_none(int_at_least(2)),
                            "None or an int >= 2")},
    family="smc", gradient_based=True, population=_waste_free_population, run_stream=7))
register_method(MethodSpec(
    "ais", None, "Annealed importance sampling, independent chains, no resampling (Neal 2001)",
    {**common_options(num_mcmc_steps=2), **_FIXED},
    family="smc", gradient_based=True, population=_fixed_schedule_population("ais", 0.0),
    run_stream=7))
register_method(MethodSpec(
    "population_annealing", None, "Population annealing: fixed schedule, resampling at every step "
    "(Hukushima & Iba 2003; Machta 2010)",
    {**common_options(), **_FIXED},
    family="smc", gradient_based=True,
    population=_fixed_schedule_population("population_annealing", 1.0), run_stream=7))


def _ns_population(target, ctx, **o):
    """Nested sampling: ``num_chains`` independent runs; ``num_live`` live points (default ``num_samples``).

    ``log_Z`` is the mean of the runs' ``log Z``;
    ``log_Z_se = sqrt(max(mean_r (C_r + V_r), between-run variance) / R)`` with ``C_r`` the run's
    compression variance ``sum_j P_j^2 / (m_j - j)^2`` over its removals (``P_j`` the posterior mass
    after removal ``j``; ``H / n_live`` for a constant number of live points, larger when the live
    points decrease; Skilling 2006, Higson et al. 2019) and ``V_r`` the variance of the
    zero-likelihood plateau's volume (see ``nested.run``); the between-run spread also sees what the
    linearization misses.  Each run's ``sqrt(C_r + V_r)`` is in ``extra["log_Z_se_runs"]``, the spread
    over runs in ``extra["log_Z_sd_over_runs"]``.  The runs go one after another (``lax.map``), so only one
    dead-point buffer is in memory at a time.
    """
    d = target.dim
    num_chains, num_samples = ctx.num_chains, ctx.num_samples
    n_live = o["num_live"] or num_samples
    k = o["num_delete"] or max(1, n_live // 10)
    if not 1 <= k < n_live:
        raise ValueError(f"nested_sampling: num_delete={k} must be in [1, num_live={n_live})")
    min_live = n_live if o["min_live"] is None and n_live <= 100 else (o["min_live"] or 100)
    if not 2 <= min_live <= n_live:
        raise ValueError(f"nested_sampling: min_live={min_live} must be in [2, num_live={n_live}]")
    repeats = o["num_repeats"] or max(10, 5 * d)
    max_it = o["max_iterations"] or 100_000
    max_dead = o["max_dead"] or 100 * n_live
    cfg = nested.NSConfig(num_live=n_live, num_delete=k, num_repeats=repeats, max_iterations=max_it,
                          dlogz=o["dlogz"], min_live=min_live if min_live < n_live else 0, max_dead=max_dead,
                          max_evals=o["max_evals"] or 0, prior_rejection=bool(o["prior_rejection"]))
    dtype = jnp.result_type(float)
    flow_prior = _flow_reference(target, o)
    prior = flow_prior if flow_prior is not None else make_reference(d, o["reference_mean"], o["reference_scale"],
                                                                     dtype, dof=o["reference_dof"])
    _reject_init("nested_sampling", ctx.init)
    show = _printer(ctx, "run {} iteration {}: log X {:.2f}, log Z so far {:.4f}")

    def run_with(kk, run_id, tgt, prior_):
        lp = tgt.flat_logdensity()
        out = nested.run(kk, lp, prior_, cfg, progress=show, run_id=run_id)
        draws = equal_weight_draws(jax.random.fold_in(kk, 1), out.positions, out.log_weights, num_samples)
        return out._replace(positions=None, log_weights=None), draws, jax.vmap(lp)(draws)

    def finish(res):
        return _ns_finish(target, res, cfg, prior, o, num_chains, num_samples)

    if flow_prior is not None:  # the flow's arrays travel as arguments (the program is cached by its structure)
        return PopulationPlan(lambda kk, run_id, tgt, shared: run_with(kk, run_id, tgt, shared), finish,
                              shared=flow_prior)
    return PopulationPlan(lambda kk, run_id, tgt: run_with(kk, run_id, tgt, prior), finish)


def _ns_finish(target, res, cfg, prior, o, num_chains, num_samples):
    out, draws, lp_draws = res
    d = target.dim
    n_live, k, repeats = cfg.num_live, cfg.num_delete, cfg.num_repeats
    max_it, max_dead = cfg.max_iterations, cfg.max_dead
    n_fin = np.asarray(out.num_initial_finite)
    prior_txt = (f"{type(prior).__name__}(mean={np.asarray(prior.mean).tolist()}, "
                 f"scale={np.asarray(prior.scale).tolist()})")
    n_bad0 = np.asarray(out.num_initial_nonfinite)
    if np.any(n_bad0 >= n_live):
        raise nonfinite.everywhere_error(
            "nested_sampling", target.name, f"all num_live={n_live} initial draws from the prior {prior_txt}",
            np.flatnonzero(n_bad0 >= n_live), num_chains)
    if np.any(n_fin == 0):
        raise ValueError(f"nested_sampling: in {int(np.sum(n_fin == 0))} of {num_chains} run(s) none of the "
                         f"num_live={n_live} initial draws from the prior {prior_txt} has a finite log-density on "
                         f"target {target.name!r} (finite draws per run: {n_fin.tolist()}; NaN or +inf: "
                         f"{n_bad0.tolist()}, the others -inf); move the prior onto the target's support with "
                         "reference_mean / reference_scale, or raise num_live")
    log_z_runs = np.asarray(out.log_Z, dtype=np.float64)
    h = np.asarray(out.information, dtype=np.float64)
    var_runs = nested.log_Z_variance(out.compression_var, out.plateau_var)
    log_z, log_z_se, _ = mean_log_Z(log_z_runs, var_runs)
    warnings = []
    conv = np.asarray(out.converged)
    if not conv.all():
        warnings.append({"code": "not_converged", "value": int((~conv).sum()),
                         "message": f"{int((~conv).sum())} nested-sampling run(s) hit max_iterations={max_it}"
                                    + (f", max_evals={cfg.max_evals}" if cfg.max_evals else "")
                                    + f" or filled the dead-point buffer (max_dead={max_dead}) before the live "
                                    "points' remaining evidence fell below dlogz"})
    if np.min(n_fin) < max(10, 2 * d):
        warnings.append({"code": "plateau", "value": int(np.min(n_fin)),
                         "message": f"only {int(np.min(n_fin))} of the num_live={n_live} initial draws from the "
                                    f"prior {prior_txt} have a finite log-density (the target is -inf elsewhere); "
                                    "the support's prior volume, hence log Z, is estimated from that few "
                                    "(its variance is in log_Z_se); a prior closer to the support "
                                    "(reference_mean / reference_scale) or more live points reduce it"})
    extra = {"log_Z_runs": log_z_runs.tolist(), "information": h.tolist(),
             "log_Z_se_runs": np.sqrt(var_runs).tolist(),
             "log_Z_se_method": "sqrt(max(mean run variance, between-run variance) / runs); a run's variance: "
                                "sum over removals of (posterior mass after it)^2 / (live points - j)^2, plus the "
                                "plateau's (Skilling 2006; Higson et al. 2019; Fowlie et al. 2021)",
             "log_Z_sd_over_runs": float(np.std(log_z_runs, ddof=1)) if num_chains > 1 else None,
             "num_iterations": np.asarray(out.num_iterations).tolist(),
             "num_dead": np.asarray(out.num_dead).tolist(), "num_live": n_live,
             "stages": nested.stages(cfg), "num_delete": k, "num_repeats": repeats,
             "initial_finite_fraction": (n_fin / n_live).tolist()}
    nonfinite.report("nested_sampling", out.num_nonfinite, extra, warnings)
    return PopulationOutput(
        samples=np.asarray(draws), stats={"lp": np.asarray(lp_draws)},
        # + the lp of the returned draws (run computes it for the stats)
        num_logdensity_evals=(int(np.sum(np.asarray(out.num_logdensity_evals, dtype=np.int64)))
                              + num_chains * num_samples),
        num_grad_evals=0,
        log_Z=log_z, log_Z_se=log_z_se, log_weights=np.full((num_chains, num_samples), -np.log(num_samples)),
        extra=extra, warnings=warnings, config={"config": cfg._asdict()})


register_method(MethodSpec(
    "nested_sampling", None, "Nested sampling, prior t_1(0, 5^2 I): k = n/10 deletions per iteration, live "
    "points decreasing with the remaining evidence, constrained hit-and-run slice sampling (Skilling 2006; "
    "Higson et al. 2019; Handley et al. 2015)",
    {"num_live": Option(None, "live points (None: num_samples)", pos_int_or_none, "None or an int >= 1"),
     "num_delete": Option(None, "points replaced per iteration in the first stage (None: num_live // 10; "
                          "removing the j-th worst of m live points shrinks log X by 1/(m - j))", pos_int_or_none,
                          "None or an int >= 1"),
     "min_live": Option(None, "decreasing live points: stages num_live / 4^s down to min_live, each stage "
                        "until the live points hold less than the next stage's share of Z (Higson et al. 2019); "
                        "None: 100 (constant num_live when num_live <= 100)", pos_int_or_none,
                        "None or an int >= 2"),
     "num_repeats": Option(None, "slice-sampling steps per new point (None: max(10, 5 d), PolyChord's "
                           "evidence setting)", pos_int_or_none,
                           "None or an int >= 1"),
     "max_iterations": Option(None, "iteration cap (None: 100000)", pos_int_or_none,
                              "None or an int >= 1"),
     "max_dead": Option(None, "dead-point buffer size (None: 100 num_live); the run stops when it is full",
                        pos_int_or_none, "None or an int >= 1"),
     "max_evals": Option(None, "log-density evaluations per run at most (None: no cap): the run stops iterating "
                         "(not converged, a warning) before an iteration would pass it, judged by the previous "
                         "iteration's count (the initial draws count; the returned draws' log-densities come on top)",
                         pos_int_or_none, "None or an int >= 1"),
     "prior_rejection": Option(True, "while the prior volume left is above 1 / (4 num_repeats), new points are prior "
                               "draws kept when L > L* (exact and independent; 1 / X evaluations each) instead of "
                               "slice moves", boolean, "True/False"),
     "dlogz": Option(1e-3, "stop when the live points can add at most this to log Z",
                     pos_number, "a positive number"),
     "reference_scale": dataclasses.replace(
         common_options()["reference_scale"], doc="scale of the prior t_nu(mean, scale^2 I) (or the std of "
         "N(mean, scale^2 I) with reference_dof=None): positive scalar or [d]"),
     "reference_mean": common_options()["reference_mean"],
     "reference_dof": Option(1.0, "degrees of freedom nu of the multivariate Student-t prior (None: the Gaussian "
                             "N(mean, scale^2 I)); a prior with lighter tails than the target makes L = p / prior "
                             "unbounded (see samplax.smc.nested)", valid_dof, "None or a positive finite number"),
     "reference_flow": _reference_flow_option("the prior (the likelihood is then pi~ / q)")},
    family="smc", gradient_based=False, population=_ns_population, run_stream=11, prepare=_prepare_reference_flow))



# ------------------------------------------------------------------ parallel tempering
def _pt_population(target, ctx, **o):
    """Non-reversible parallel tempering: ``num_chains`` independent PT runs of ``num_temperatures`` replicas.

    ``num_warmup`` is the number of tuning scans (schedule, step sizes, mass
    matrices; rounds of doubling length, :func:`samplax.smc.parallel_tempering.round_lengths`),
    ``num_samples`` the number of sampling scans, each giving one draw of the
    ``beta = 1`` replica.  ``init`` (``[*event]`` or ``[num_chains, *event]``)
    starts every replica of a run there; default: exact reference draws.
    One run is :func:`samplax.smc.parallel_tempering.run_one` (the tuning rounds run inside the
    compiled program, ``lax.scan`` over rounds); this function builds its options and assembles the results.

    ``log_Z`` is the mean over runs of the stepping-stone estimates; ``log_Z_se``
    is ``sqrt(v / R)`` with ``v`` the larger of the between-run variance and the
    mean single-run batch-means variance (the first is noisy for few runs, the
    second misses autocorrelation longer than a batch).
    """
    d = target.dim
    num_chains, num_warmup, num_samples = ctx.num_chains, ctx.num_warmup, ctx.num_samples
    dtype = jnp.result_type(float)
    k = o["num_temperatures"]
    cfg = ptm.PTConfig(num_temperatures=k, kernel=o["kernel"], num_mcmc_steps=o["num_mcmc_steps"],
                       num_integration_steps=o["num_integration_steps"], target_accept=o["target_accept"],
                       adapt_schedule=o["adapt_schedule"], num_batches=o["num_batches"])
    if num_samples < 2 * cfg.num_batches:
        raise ValueError(f"parallel_tempering: num_samples={num_samples} must be at least 2 * num_batches="
                         f"{2 * cfg.num_batches} (batch-means standard error of log Z)")
    reference = make_reference(d, o["reference_mean"], o["reference_scale"], dtype)
    inputs = ()
    if ctx.init is not None:
        a = np.asarray(ctx.init, dtype=np.float64)
        shape = tuple(target.event_shape)
        if a.shape == shape:
            a = np.broadcast_to(a, (num_chains,) + shape)
        if a.shape != (num_chains,) + shape:
            raise ValueError(f"parallel_tempering: init must have shape {shape} or {(num_chains,) + shape}, "
                             f"got {np.asarray(ctx.init).shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("parallel_tempering: init must be finite")
        inputs = (jnp.asarray(np.broadcast_to(a.reshape(num_chains, 1, d), (num_chains, k, d)), dtype),)
    lengths = ptm.round_lengths(num_warmup)
    show = _printer(ctx, "run {} tuned in {} rounds: barrier Lambda {:.2f}, round trips {}")

    def run(kk, run_id, tgt, *x_init):
        return ptm.run_one(kk, tgt.flat_logdensity(), reference, cfg, num_warmup=num_warmup,
                           num_samples=num_samples, schedule_power=o["schedule_power"], step_size=o["step_size"],
                           x_init=x_init[0] if x_init else None, progress=show, run_id=run_id)

    def finish(out):
        log_z_r = np.asarray(out.log_Z, np.float64)
        se_r = np.asarray(out.log_Z_se, np.float64)
        n_bad, n_bad0 = np.asarray(out.num_nonfinite), np.asarray(out.num_initial_nonfinite)
        start = "init" if inputs else (f"draws from the reference N({np.asarray(reference.mean).tolist()}, "
                                       f"diag({np.asarray(reference.scale).tolist()})^2)")
        if np.any(n_bad0 >= k):
            raise nonfinite.everywhere_error("parallel_tempering", target.name,
                                             f"all num_temperatures={k} initial replicas ({start})",
                                             np.flatnonzero(n_bad0 >= k), num_chains)
        lost = np.flatnonzero(~np.isfinite(log_z_r) & (n_bad > 0))
        if lost.size:
            raise ValueError(f"parallel_tempering: in {lost.size} of {num_chains} run(s) (runs {lost.tolist()}) a "
                             f"replica had a non-finite log-density at every sampling scan, so log Z = "
                             f"{log_z_r[lost].tolist()}: {n_bad[lost].tolist()} evaluations on target "
                             f"{target.name!r} were non-finite (NaN or +inf); check the target for NaN")
        with np.errstate(invalid="ignore"):  # a -inf log Z (outside the support): nan, not a RuntimeWarning
            log_z, log_z_se, v_between = mean_log_Z(log_z_r, se_r**2)
        rej = np.asarray(out.swap_rejection)
        params = out.params
        betas = np.asarray(params.betas)
        trips = np.asarray(out.round_trips)
        lam_final = rej.mean(axis=1).sum(axis=1)
        warnings = []
        if np.any(lam_final > 0.5 * k):
            warnings.append({"code": "too_few_temperatures", "value": float(np.max(lam_final)),
                             "message": f"estimated communication barrier Lambda = {np.max(lam_final):.1f} exceeds "
                                        f"num_temperatures/2 = {k / 2}; raise num_temperatures to about 2 Lambda"})
        if np.any(trips == 0):
            warnings.append({"code": "no_round_trips", "value": int(np.sum(trips == 0)),
                             "message": f"{int(np.sum(trips == 0))} run(s) made no round trip between beta = 0 "
                                        "and 1 while sampling: the replicas did not mix across temperatures"})
        acc = np.asarray(out.acceptance)
        stats = {"lp": np.asarray(out.lp), "acceptance_rate": acc[:, :, -1],
                 "step_size": np.broadcast_to(np.exp(np.asarray(params.log_step_size))[:, -1:],
                                              (num_chains, num_samples)).copy()}
        lams, trips_hist = np.asarray(out.barrier_history), np.asarray(out.round_trips_history)
        history = [{"scans": n, "Lambda": lams[:, j].tolist(), "round_trips": trips_hist[:, j].tolist()}
                   for j, n in enumerate(lengths)]
        extra = {"log_Z_runs": log_z_r.tolist(), "log_Z_se_runs": se_r.tolist(),
                 "log_Z_se_method": "sqrt(max(between-run var, mean batch-means var) / runs); stepping-stone "
                                    "estimator",
                 "log_Z_sd_over_runs": float(np.sqrt(v_between)) if num_chains > 1 else None,
                 "schedules": betas.tolist(), "barrier_Lambda": lam_final.tolist(),
                 "swap_rejection": rej.mean(axis=1).tolist(), "round_trips": trips.tolist(),
                 "step_sizes": np.exp(np.asarray(params.log_step_size)).tolist(),
                 "local_acceptance": acc.mean(axis=1).tolist(), "tuning_rounds": history}
        nonfinite.report("parallel_tempering", n_bad, extra, warnings)
        return PopulationOutput(
            samples=np.asarray(out.draws), stats=stats,
            num_logdensity_evals=int(np.sum(np.asarray(out.num_logdensity_evals, np.int64))),
            num_grad_evals=int(np.sum(np.asarray(out.num_grad_evals, np.int64))), log_Z=log_z, log_Z_se=log_z_se,
            extra=extra, warnings=warnings, config={"config": cfg._asdict()})

    return PopulationPlan(run, finish, inputs=inputs)


register_method(MethodSpec(
    "parallel_tempering", None, "Non-reversible parallel tempering (DEO swaps, schedule equalizing the "
    "communication barrier; Syed et al. 2021), tuned HMC per replica, stepping-stone log Z",
    {"num_temperatures": Option(16, "number of replicas K (beta_0 = 0 ... beta_{K-1} = 1)",
                                int_at_least(2), "an int >= 2"),
     "kernel": common_options()["kernel"],
     "num_mcmc_steps": Option(1, "MCMC moves per replica per scan", pos_int, "an int >= 1"),
     "num_integration_steps": common_options()["num_integration_steps"],
     "target_accept": common_options()["target_accept"],
     "step_size": common_options()["step_size"],
     "adapt_schedule": Option(True, "equalize the swap rejection rates in the tuning rounds", boolean, "True/False"),
     "schedule_power": Option(4.0, "initial schedule beta_k = (k/(K-1))^power",
                              pos_number, "a positive number"),
     "num_batches": Option(20, "batches for the batch-means standard error of log Z",
                           int_at_least(2), "an int >= 2"),
     "reference_scale": common_options()["reference_scale"],
     "reference_mean": common_options()["reference_mean"]},
    family="smc", gradient_based=True, population=_pt_population, run_stream=13))
