"""Registration of the ``"interacting"`` family (:mod:`samplax.interacting`): ensembles, interacting particles,
reverse diffusions.

Each entry is a population :class:`~samplax.core.method.MethodSpec`: its
``population(target, ctx, **options)`` returns the plan of one independent
population (see :func:`samplax.interacting._common.population_plan`), which the run
engine batches over chains, shards and compiles once.  For all of them ``num_samples`` is the
number of draws (particles) returned per chain, so ``Result.samples`` has shape
``[num_chains, num_samples, *event_shape]``, and ``num_warmup`` is the number of
burn-in iterations / optimisation steps / discretisation steps (documented per
method).  Every method works with its defaults and no further options.
The whole run is one compiled program (no checkpoints; the progress line counts finished runs).
"""
from __future__ import annotations

import warnings

import numpy as np

from samplax.core.options import (
    is_int, nonneg_int, one_of, or_none, pos_float, pos_int, pos_int_or_none, pos_number, pos_number_or_none,
)
from samplax.methods import MethodSpec, Option, register_method
from samplax.interacting import ensemble, mmd_flow, rdmc, score_ensemble, smoothing, stein, walk_jump
from samplax.interacting._common import flat_logdensity, population_plan


# --------------------------------------------------------------------------- ensembles
def _ensemble_runner(kind):
    def runner(target, ctx, **o):
        num_warmup, num_samples = ctx.num_warmup, ctx.num_samples
        d = target.dim
        W = ensemble.default_num_walkers(d) if o["num_walkers"] is None else o["num_walkers"]
        if W % 2 or W < 4 or W < 2 * d:
            raise ValueError(f"{ctx.method}: num_walkers must be even, >= 4 and >= 2 * dim = {2 * d}, got {W}")
        if kind == "stretch":
            move = ensemble.make_move("stretch", d, a=float(o["a"]))
        else:
            move = ensemble.make_move("de", d, gamma=o["gamma"], jump_every=o["jump_every"])
        run_chain = ensemble.make_run_chain(flat_logdensity, move, W, num_warmup, num_samples)
        return population_plan(
            target, ctx, run_chain, num_particles=W,
            gradient_based=False,
            cost_per_chain=ensemble.cost_per_chain(W, num_warmup, num_samples),
            extra={"num_walkers": W, "draw_layout": "walker-major, one snapshot every W iterations"})

    return runner


def _walkers_ok(v):
    """None or an even int >= 4 (the two halves of the ensemble move against each other, and a
    differential-evolution move draws two distinct walkers of the other half); ``>= 2 dim`` is
    checked against the target when the run is planned."""
    return v is None or (is_int(v) and v >= 4 and v % 2 == 0)


_walkers = Option(None, "walkers per ensemble (None: max(16, 2 dim + 2)); even, >= 4 and >= 2 dim",
                  _walkers_ok, "None or an even int >= 4 (and >= 2 dim)")


def _stretch_a_ok(v):
    """A finite number > 1: the stretch factor z has density proportional to z^(-1/2) on [1/a, a]
    (Goodman & Weare 2010), an empty interval for a <= 1."""
    return pos_float(v) and v > 1


register_method(MethodSpec(
    "ensemble_stretch", None,
    "Affine-invariant ensemble sampler, stretch move (Goodman & Weare 2010); gradient-free",
    {"num_walkers": _walkers,
     "a": Option(2.0, "stretch scale a > 1 (z in [1/a, a])", _stretch_a_ok, "a finite number > 1")},
    family="interacting", gradient_based=False, population=_ensemble_runner("stretch")))

register_method(MethodSpec(
    "ensemble_de", None,
    "Differential-evolution MCMC ensemble (ter Braak 2006); gradient-free",
    {"num_walkers": _walkers,
     "gamma": Option(None, "DE scale (None: 2.38 / sqrt(2 dim))", pos_number_or_none, "a positive number or None"),
     "jump_every": Option(10, "use gamma = 1 every this many iterations (0: never)", nonneg_int, "an int >= 0")},
    family="interacting", gradient_based=False, population=_ensemble_runner("de")))


# --------------------------------------------------------------------------- Stein
def _svgd_runner(target, ctx, **o):
    num_warmup, num_samples = ctx.num_warmup, ctx.num_samples
    run_chain = stein.make_svgd_chain(flat_logdensity, num_warmup, float(o["step_size"]))
    return population_plan(
        target, ctx, run_chain, num_particles=num_samples,
        gradient_based=True,
        cost_per_chain=stein.svgd_cost(num_samples, num_warmup),
        extra={"particles_per_chain": num_samples, "num_steps": num_warmup},
        extra_warnings=[_svgd_bias_warning(ctx.method, num_samples)])


def _svgd_bias_warning(name, num_particles):
    """The ``biased`` run warning of SVGD-type methods (finite-particle variance collapse)."""
    return {"code": "biased", "value": int(num_particles),
            "message": f"{name} with {num_particles} particles per chain: {stein.SVGD_BIAS_MESSAGE}"}


def _mirrored_svgd_runner(target, ctx, **o):
    num_warmup, num_samples = ctx.num_warmup, ctx.num_samples
    ev = tuple(target.event_shape)
    if len(ev) != 1 or ev[0] < 2:
        raise ValueError(f"{ctx.method}: the target must live on the simplex in R^K with event_shape (K,), K >= 2; "
                         f"got event_shape {ev}")
    run_chain = stein.make_mirrored_svgd_chain(flat_logdensity, num_warmup, float(o["step_size"]))
    def finalize(draws, stats):
        if not np.all(np.isfinite(draws)):
            raise ValueError(
                f"{ctx.method}: the particles became non-finite on target {target.name!r}; this method needs a "
                "density on the probability simplex (positive coordinates summing to 1, e.g. "
                "samplax.targets.get('dirichlet')) whose log-density is finite inside it")
        return draws, stats, []

    return population_plan(
        target, ctx, run_chain, num_particles=num_samples,
        gradient_based=True,
        cost_per_chain=stein.svgd_cost(num_samples, num_warmup),
        extra={"particles_per_chain": num_samples, "num_steps": num_warmup, "mirror_map": "entropic"},
        extra_warnings=[_svgd_bias_warning(ctx.method, num_samples)], finalize=finalize)


def _check_simplex_init(method, target, init):
    if init is None:
        return
    a = np.asarray(init, dtype=np.float64)
    if np.any(a <= 0) or np.any(np.abs(a.sum(-1) - 1.0) > 1e-6):
        raise ValueError(f"{method}: init must lie in the open simplex (positive coordinates summing to 1)")


_step = Option(0.1, "initial Adam learning rate (cosine-decayed to 1/100 of it)", pos_number, "a positive number")

register_method(MethodSpec(
    "svgd", None,
    "Stein variational gradient descent, RBF kernel with median bandwidth, Adam steps (Liu & Wang 2016); "
    "num_samples = particles per chain, num_warmup = iterations",
    {"step_size": _step}, family="interacting", gradient_based=True, population=_svgd_runner))


def _mirrored_entry(target, ctx, **o):
    _check_simplex_init(ctx.method, target, ctx.init)
    return _mirrored_svgd_runner(target, ctx, **o)


register_method(MethodSpec(
    "mirrored_svgd", None,
    "Mirrored SVGD on the probability simplex, entropic mirror map (Shi, Liu & Mackey 2022); "
    "num_samples = particles per chain, num_warmup = iterations",
    {"step_size": _step}, family="interacting", gradient_based=True, population=_mirrored_entry,
    example_target="dirichlet"))


# --------------------------------------------------------------------------- walk-jump
def _walk_jump_runner(target, ctx, **o):
    num_warmup, num_samples = ctx.num_warmup, ctx.num_samples
    parts = smoothing.gaussian_mixture_parts(target) if o["smoothed_score"] in ("auto", "exact") else None
    if o["smoothed_score"] == "exact" and parts is None:
        raise ValueError(f"{ctx.method}: smoothed_score='exact' needs a Gaussian-mixture target exposing means, "
                         f"weights and covs/scales (or a Gaussian with mean and chol); {target.name!r} does not")
    if num_warmup < 1:
        raise ValueError(f"{ctx.method}: num_warmup (total Langevin steps per trajectory) must be >= 1")
    run_chain = walk_jump.make_run_chain(
        flat_logdensity, parts, sigma=float(o["sigma"]), num_measurements=o["num_measurements"],
        num_warmup=num_warmup, step_size=float(o["step_size"] if o["step_size"] is not None
                                               else (0.5 if parts is not None else 0.1)),
        num_is=o["num_is"])
    exact = parts is not None
    s_final = float(o["sigma"]) ** 2 / o["num_measurements"]
    return population_plan(
        target, ctx, run_chain, num_particles=num_samples,
        gradient_based=False,
        cost_per_chain=walk_jump.cost_per_chain(num_samples, exact=exact, num_measurements=o["num_measurements"],
                                                num_warmup=num_warmup, num_is=o["num_is"]),
        extra={"smoothed_score": "exact mixture" if exact else f"SNIS with {o['num_is']} draws",
               "final_noise_variance": s_final,
               "steps_first_and_later": walk_jump.stage_steps(num_warmup, o["num_measurements"])},
        extra_warnings=[walk_jump.bias_warning(ctx.method, exact, s_final)],
        checked_evals=None if exact else walk_jump.snis_evals_per_chain(
            num_samples, num_measurements=o["num_measurements"], num_warmup=num_warmup, num_is=o["num_is"]))


register_method(MethodSpec(
    "walk_jump", None,
    "Walk-jump sampling with accumulating measurements (Saremi & Hyvarinen 2019; Saremi et al. 2023); "
    "independent trajectories, num_samples per chain, num_warmup = Langevin steps per trajectory",
    {"sigma": Option(2.0, "measurement noise std sigma", pos_number, "a positive number"),
     "num_measurements": Option(100, "number of accumulated measurements M (final noise sigma^2 / M)",
                                pos_int, "an int >= 1"),
     "step_size": Option(None, "Langevin step size in units of sigma^2 (None: 0.5 for the exact, "
                         "Metropolis-adjusted walk; 0.1 for the unadjusted SNIS walk)", pos_number_or_none,
                         "a positive number or None"),
     "num_is": Option(256, "importance draws per smoothed-score estimate (non-mixture targets)",
                      pos_int, "an int >= 1"),
     "smoothed_score": Option("auto", "'auto' (exact for Gaussian mixtures, else SNIS), 'exact' or 'snis'",
                              one_of(("auto", "exact", "snis")), "one of 'auto', 'exact', 'snis'")},
    family="interacting", gradient_based=False, population=_walk_jump_runner))


# --------------------------------------------------------------------------- reverse diffusions
def _gaussian_start(num_particles, dim):
    import jax
    import jax.numpy as jnp

    def init_fn(key, num_chains):
        return jax.vmap(lambda c: jax.random.normal(jax.random.fold_in(key, c), (num_particles, dim),
                                                    jnp.result_type(float)))(jnp.arange(num_chains))

    return init_fn


def _check_reverse(ctx, init, num_warmup, o):
    if init is not None:
        raise ValueError(f"{ctx.method}: init is not used (the reverse diffusion starts from N(0, I) at time T); "
                         "pass init=None")
    if num_warmup < 1:
        raise ValueError(f"{ctx.method}: num_warmup (number of reverse-diffusion steps) must be >= 1")
    if not float(o["T"]) > rdmc.T_MIN:
        raise ValueError(f"{ctx.method}: T must be > {rdmc.T_MIN}, got {o['T']!r}")


def _rdmc_runner(target, ctx, **o):
    num_warmup, num_samples, init = ctx.num_warmup, ctx.num_samples, ctx.init
    _check_reverse(ctx, init, num_warmup, o)
    init_steps = num_warmup if o["init_steps"] is None else o["init_steps"]
    run_chain = rdmc.make_run_chain(flat_logdensity, T=float(o["T"]), num_steps=num_warmup, inner=o["inner"],
                                    num_inner=o["num_inner"], inner_steps=o["inner_steps"], init_steps=init_steps)
    cost = rdmc.cost_per_chain(num_samples, num_steps=num_warmup, inner=o["inner"], num_inner=o["num_inner"],
                               inner_steps=o["inner_steps"], init_steps=init_steps)
    return population_plan(
        target, ctx, run_chain, num_particles=num_samples,
        gradient_based=False,
        init_fn=_gaussian_start(num_samples, target.dim),
        cost_per_chain=cost, checked_evals=cost["num_logdensity_evals"],
        extra={"t_min": rdmc.T_MIN, "T": float(o["T"]), "inner": o["inner"], "init_steps": init_steps},
        extra_warnings=[{"code": "biased", "value": o["num_inner"],
                         "message": f"{ctx.method} with inner={o['inner']!r}, num_inner={o['num_inner']}: "
                                    + (rdmc.BIAS_MESSAGE if o["inner"] == "is" else rdmc.ULA_BIAS_MESSAGE)}])


def _score_ensemble_runner(target, ctx, **o):
    num_warmup, num_samples, init = ctx.num_warmup, ctx.num_samples, ctx.init
    _check_reverse(ctx, init, num_warmup, o)
    if num_samples < 2:
        raise ValueError(f"{ctx.method}: num_samples (ensemble size) must be >= 2, got {num_samples}")
    run_chain = score_ensemble.make_run_chain(flat_logdensity, T=float(o["T"]), num_steps=num_warmup,
                                              draws_per_member=o["draws_per_member"])
    expensive = score_ensemble.cost_warning(ctx.method, num_samples, num_warmup, ctx.num_chains, target.dim,
                                            o["draws_per_member"])
    if expensive is not None:  # said before the run starts (one compiled program: progress only per finished run)
        warnings.warn(expensive["message"], UserWarning, stacklevel=2)
    cost = score_ensemble.cost_per_chain(num_samples, num_steps=num_warmup, draws_per_member=o["draws_per_member"])
    return population_plan(
        target, ctx, run_chain, num_particles=num_samples,
        gradient_based=False,
        init_fn=_gaussian_start(num_samples, target.dim),
        cost_per_chain=cost, checked_evals=cost["num_logdensity_evals"],
        extra={"t_min": rdmc.T_MIN, "T": float(o["T"]), "ensemble_size": num_samples},
        extra_warnings=[{"code": "biased", "value": o["draws_per_member"],
                         "message": f"{ctx.method} with draws_per_member={o['draws_per_member']}: "
                                    f"{score_ensemble.BIAS_MESSAGE}"}] + ([expensive] if expensive else []))


_T = Option(5.0, "diffusion horizon T (start from N(0, I) at time T)", pos_number, "a positive number")

register_method(MethodSpec(
    "rdmc", None,
    "Reverse diffusion Monte Carlo (Huang et al. 2023): reverse OU SDE with the noised score from inner "
    "importance sampling or ULA on p(x0 | x_t); num_samples independent trajectories per chain, "
    "num_warmup = reverse steps",
    {"T": Option(1.0, "diffusion horizon T (moderate: see samplax.interacting.rdmc)", pos_number,
                 "a positive number"),
     "init_steps": Option(None, "Langevin steps on p_T before the reverse pass (None: num_warmup)",
                          or_none(nonneg_int),
                          "an int >= 0 or None"),
     "inner": Option("is", "inner estimator of E[x0 | x_t]: 'is' (importance sampling) or 'ula'",
                     one_of(("is", "ula")), "'is' or 'ula'"),
     "num_inner": Option(256, "inner importance draws / ULA chains per particle and step", pos_int, "an int >= 1"),
     "inner_steps": Option(5, "ULA steps per inner chain (inner='ula')", pos_int, "an int >= 1")},
    family="interacting", gradient_based=False, population=_rdmc_runner))

register_method(MethodSpec(
    "score_ensemble", None,
    "Ensemble score-based sampler (after Riel & Bischoff 2024): reverse OU diffusion whose drifts come from "
    "target evaluations shared across the ensemble (gradient-free); num_samples = ensemble size per chain, "
    "num_warmup = reverse steps; cost grows with the SQUARE of the ensemble size "
    "(members^2 x draws_per_member x steps x chains x (dim + 50); warns when large)",
    {"T": _T,
     "draws_per_member": Option(16, "target evaluations per member and step (shared by the whole ensemble); "
                                "the accuracy knob, see samplax.interacting.score_ensemble",
                                pos_int, "an int >= 1")},
    family="interacting", gradient_based=False, population=_score_ensemble_runner))


# --------------------------------------------------------------------------- MMD flow
def _mmd_flow_runner(target, ctx, **o):
    num_chains, num_warmup, num_samples = ctx.num_chains, ctx.num_warmup, ctx.num_samples
    if not getattr(target, "has_exact_sampler", False):
        raise ValueError(f"{ctx.method}: this variant (sample-based MMD flow with the negative-distance kernel) needs "
                         f"draws from the target, but {target.name!r} has no exact sampler (target.sample); "
                         "use a score-based particle method such as 'svgd' instead")
    import jax.numpy as jnp

    d = target.dim

    def sample_fn(tgt, key, n):
        return jnp.reshape(tgt.sample(key, n), (n, d)).astype(jnp.result_type(float))

    batch = num_samples if o["batch_size"] is None else o["batch_size"]
    run_chain = mmd_flow.make_run_chain(sample_fn, num_steps=num_warmup, step_size=float(o["step_size"]),
                                        batch=batch)
    return population_plan(
        target, ctx, run_chain, num_particles=num_samples,
        gradient_based=False,
        cost_per_chain={"num_logdensity_evals": 0, "num_grad_evals": 0},  # draws only (the start: the engine)
        extra={"num_target_samples": num_chains * batch * (num_warmup + 1), "variant": "sample-based energy MMD flow"})


register_method(MethodSpec(
    "mmd_flow", None,
    "MMD particle flow with the negative-distance (energy) kernel towards fresh exact target draws "
    "(Hertrich et al. 2024); needs target.sample; num_samples = particles, num_warmup = steps",
    {"step_size": Option(1.0, "Euler step in units of the target's mean coordinate std (cosine-decayed to 1%)",
                         pos_number, "a positive number"),
     "batch_size": Option(None, "target draws per step (None: num_samples)", pos_int_or_none,
                          "a positive int or None")},
    family="interacting", gradient_based=False, population=_mmd_flow_runner))
