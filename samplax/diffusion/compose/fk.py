"""Feynman–Kac correctors: SMC along a composed diffusion path (:func:`sample_smc`).

The composed path (:mod:`samplax.diffusion.compose.operators`) is ``gamma_sigma(x) = prod_k q_{k, sigma}(x)^{a_k}
exp(-sum_j lambda_j(sigma) c_j(x))`` on the noise levels ``s_0 = sigma_max > s_1 > ... > s_{N-1} = sigma_end``
(``N = nfe``). With ``"fkc"`` weights the particles move by the DDPM ancestral step of the composed model (VE form),

``y = x + delta s(x) + (s_{i+1} / s_i) sqrt(delta) z``, ``delta = s_i^2 - s_{i+1}^2``, ``s = grad log gamma_{s_i}``;

with ``"exact"`` weights by the same step for the composed path read as a diffusion at noise level
``sigma / sqrt(gamma)``, ``gamma = sum_k a_k`` (``gamma_sigma`` is close to ``N(0, sigma^2 / gamma)`` at large noise,
and this step maps that Gaussian exactly onto the next level's),

``y = x + (delta / gamma) s(x) + sqrt(v) z``, ``v = (s_{i+1} / s_i)^2 (delta / gamma)`` (DDPM's variance, exact when
the data are a point) or, by default, the analytic variance of Bao et al. (2022, "Analytic-DPM"): with
``t = s_i^2 / gamma``, ``dt = delta / gamma`` and ``Var[x_0 | x] ~ t (1 - t E|s|^2 / d)`` (Tweedie, and ``E tr
grad s = -E|s|^2``), ``v = (s_{i+1} / s_i)^2 dt + (dt / t)^2 t (1 - t m)`` with ``m`` the weighted particle mean of
``|s|^2 / d`` (``proposal_variance="analytic"``) or each particle's own ``|s(x)|^2 / d`` (``"local"``). It goes from
DDPM's variance (sharp data) to ``dt`` (data wide against the noise, where DDPM's variance is too small by
``(s_{i+1} / s_i)^2`` in every dimension and the weights degenerate at small noise, the more so the higher the
dimension: measured, product of two 8-D mixtures at ``nfe = 120``, 1024 particles: log Z spread over seeds 0.15 with
DDPM's variance, 0.013 with the analytic one); ``t (1 - t m)`` is clipped to ``[0, t]``. The analytic variance
depends on the particles of the previous level, which makes the sampler an adaptive SMC: the weights are exact
given it and the estimates consistent, but the normalizer estimate below is no longer exactly unbiased (Beskos,
Jasra, Kantas & Thiery 2016); ``"local"`` and ``"ddpm"`` keep it unbiased;

and are weighted, resampled (:mod:`samplax.smc.resampling`, when the ESS falls below ``ess_threshold * N``) and
moved again by :func:`samplax.smc.base.fk_step`, the step every SMC sampler of samplax (and the twisted diffusion
sampler of :mod:`samplax.diffusion.inverse`) runs on. Two weightings (``weights=``):

* ``"fkc"`` -- the Feynman–Kac corrector weights of Skreta et al. (2025, "Feynman-Kac correctors in diffusion:
  annealing, guidance, and product of experts") for the target-score SDE. In ``tau = sigma^2`` each ``q_k`` solves
  the heat equation ``d_tau q = (1/2) Laplacian q``; the reverse SDE ``dx = s dtau' + dW`` with the composed score
  ``s = sum_k a_k s_k`` transports ``gamma`` up to the potential ``g = (|sum_k a_k s_k|^2 - sum_k a_k |s_k|^2) / 2``
  (the Laplacians cancel): ``<s_1, s_2>`` for a product, ``beta (beta - 1) |s|^2 / 2`` for ``q^beta`` and
  ``w (w - 1) |s_c - s_u|^2 / 2`` for CFG. The log-weight of a move is the trapezoid rule
  ``delta (g(x, s_i) + g(y, s_{i+1})) / 2``. Scores only: works for denoisers, with a time-discretization bias that
  vanishes as ``nfe`` grows. Compositions with costs (:func:`~samplax.diffusion.compose.tilt`, ``constrain``) need
  ``"exact"``.
* ``"exact"`` -- discrete-time importance weights with the forward noising kernel ``L(x | y) = N(x; y, (delta /
  gamma) I)`` as the backward kernel (Del Moral, Doucet & Jasra 2006):
  ``w = gamma_{i+1}(y) L(x | y) / (gamma_i(x) q(y | x))``. The weighted particles target ``gamma_{sigma_end}``
  exactly at every ``nfe`` (as particles grow); needs every model's energy (:mod:`samplax.diffusion.energy`).

The initial particles are ``N(0, s_0^2 / gamma I)``, ``gamma = sum_k a_k`` (each ``q_k`` is close to
``N(0, s_0^2 I)`` at large noise), weighted by ``gamma_0(x) / N(x; 0, s_0^2 / gamma I)`` when the models have energies.
With normalized models (exact mixtures) the product of the weighted means of the weights is an unbiased estimate
of ``Z = int gamma_{sigma_end}`` (Del Moral 2004; consistent but not exactly unbiased with the adaptive analytic
variance): ``info.log_Z`` -- for ``product(m1, m2)`` ``log int q1 q2``, for
``power(m, beta)`` ``log int q^beta`` -- with ``info.log_Z_se`` (over independent runs, or Lee & Whiteley 2018 for
one run); for ``"fkc"`` it carries that weighting's time-discretization bias. A composition with hard supports
(``constrain``) gives the particles outside the set weight 0 at the end. The output is each run's particles
resampled to equal weights and denoised, ``x + sigma_end^2 s(x)`` (no extra evaluation), projected onto the
supports.

With ``corrector=`` (``"mala"`` or ``"hmc"``, invariant kernels) the particles also take MCMC steps on
``gamma_{s_i}`` after resampling at each level before moving on (resample-move; Gilks & Berzuini 2001).

Cost per particle: ``nfe`` evaluations of the composed model (each: one evaluation of every model); the corrector's
evaluations on top (reported apart).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import Cost, make_cost
from samplax.diffusion import correctors as corr_mod
from samplax.diffusion._compiled import Clock, ExecutableCache
from samplax.diffusion.checks import check_denoiser, check_sigma_range, nonfinite_report
from samplax.diffusion.compose.operators import Composition, _compose
from samplax.diffusion.grids import grid_names, make_grid
from samplax.diffusion.solvers import mark_nonfinite, no_nonfinite
from samplax.smc import base as smc_base
from samplax.smc import resampling
from samplax.smc.logz import combine_log_Z

WEIGHTS = ("auto", "fkc", "exact")
PROPOSAL_VARIANCES = ("analytic", "local", "ddpm")
_PROGRAMS: "OrderedDict" = OrderedDict()
_MAX_PROGRAMS = 32
_EXECUTABLES = ExecutableCache(_MAX_PROGRAMS)


class SMCInfo(NamedTuple):
    """Diagnostics of :func:`sample_smc`.

    Attributes:
      log_Z: ``log int gamma_{sigma_end}`` of the composed density (normalized models and energies needed; NaN
        otherwise, with the reason in ``log_Z_note``).
      log_Z_se: its standard error (:func:`samplax.smc.logz.combine_log_Z`).
      log_Z_runs: ``[num_runs]`` the runs' estimates.
      ess: ``[num_runs, nfe]`` numpy: entry ``i`` the ESS once the particles at level ``i`` are weighted (entry 0:
        the initial importance weights; the last entry also has the support restriction).
      num_resampling: ``[num_runs]`` resampling events.
      sigmas: the noise levels (numpy).
      weights: ``"fkc"`` or ``"exact"``.
      cost: :class:`samplax.core.cost.Cost`: ``num_model_evals`` (composed-model calls per particle),
        ``num_denoiser_evals`` (model evaluations per particle), ``num_corrector_evals`` (per particle, included in
        the first two), ``total_model_evals`` (all model evaluations of the call), compile and sampling seconds.
      nonfinite_step, nonfinite_sigma: per particle slot (``[num_runs * num_particles]``), the first level where it
        was non-finite (-1 never) and that level's sigma.
      warnings: ``"nonfinite_samples"`` when some particles were non-finite.
      corrector_acceptance: ``[num_runs, nfe - 1]`` mean acceptance of the corrector at each level (NaN: none).
      log_Z_note: why ``log_Z`` is NaN, or what it estimates.
    """

    log_Z: float
    log_Z_se: float
    log_Z_runs: np.ndarray
    ess: np.ndarray
    num_resampling: np.ndarray
    sigmas: np.ndarray
    weights: str
    cost: Cost
    nonfinite_step: np.ndarray
    nonfinite_sigma: np.ndarray
    warnings: tuple
    corrector_acceptance: Optional[np.ndarray]
    log_Z_note: str


def _item_keys(key, n):
    return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(n))


def _normals(keys, i, j, shape, dtype):
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, i), j), shape, dtype))(keys)


def _weighted_mean_square_score(state, p, d):
    """The particles' weighted mean of ``|score|^2 / d`` at the current level (the weights after this step's
    potential; a resampling keeps their expectation): Analytic-DPM's estimate of the posterior variance of ``x_0``.
    NaN and +inf potentials count as -inf, as in ``fk_step``; particles with a non-finite score are left out."""
    pot = state.particles[4]
    sq = jnp.sum(state.particles[2].reshape(p, -1) ** 2, axis=1) / d
    ok = ~(jnp.isnan(pot) | (pot == jnp.inf)) & jnp.isfinite(sq)
    lw = jnp.where(ok, state.log_weights + pot, -jnp.inf)
    top = jnp.max(lw)
    w = jnp.where(ok, jnp.exp(lw - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
    total = jnp.sum(w)
    return jnp.where(total > 0, jnp.sum(w * jnp.where(ok, sq, 0.0)) / jnp.where(total > 0, total, 1.0), 0.0)


def _one_run(comp, key, sigmas, ess_threshold, shape, p, weights, corr, resample_fn, exact_init, variance):
    dtype = sigmas.dtype
    n = sigmas.shape[0]
    d = int(np.prod(shape))
    axes = tuple(range(1, len(shape) + 1))
    k_step, k_out = jax.random.split(key)
    keys = _item_keys(k_step, p)
    gamma = jnp.sum(comp.exponents).astype(dtype)

    def terms(x, s):  # batched: log gamma_s, score, fkc rate
        lp, u, r = jax.vmap(comp.terms, in_axes=(0, None))(x, s)
        return lp, u / s**2, r

    evaluate = None
    if corr is not None:
        def evaluate(x, s):
            lp, sc, _ = terms(x, s)
            return lp, sc

    # particles: (x, log gamma(x), score(x), rate(x), incr of the move that made x)
    z0 = jnp.zeros((p,) + shape, dtype)
    zp = jnp.zeros((p,), dtype)
    state = smc_base.init((z0, zp, z0, zp, zp))

    def body(i, carry):
        state, nf, ess_hist, acc_hist, ne = carry
        s_prev, s = sigmas[jnp.maximum(i - 1, 0)], sigmas[i]
        if weights == "exact" and variance == "analytic":
            m2_pop = _weighted_mean_square_score(state, p, d)

        def mutate(_, parts):
            x, lp, sc, rate, _ = parts
            ne_c = jnp.asarray(0, jnp.int32)
            acc = jnp.asarray(jnp.nan, dtype)
            if corr is not None:
                def do(args):
                    xx, llp, ssc, rr = args
                    xn, lpn, scn, k, a = corr_mod.run(corr, evaluate, xx, s_prev, keys, i, llp, ssc,
                                                      scale=1.0 / gamma)
                    k = jnp.asarray(k, jnp.int32)
                    if weights == "fkc":
                        _, _, rr = terms(xn, s_prev)
                        k = k + 1
                    return (xn, lpn, scn, rr), k, jnp.mean(a).astype(dtype)

                def skip(args):
                    return args, jnp.asarray(0, jnp.int32), jnp.asarray(jnp.nan, dtype)

                (x, lp, sc, rate), ne_c, acc = jax.lax.cond(i > 0, do, skip, (x, lp, sc, rate))
            z = _normals(keys, i, 0, shape, dtype)
            delta = s_prev**2 - s**2
            if weights == "exact":  # the composed path as a diffusion in sigma / sqrt(gamma)
                mean, std, back = x + (delta / gamma) * sc, s * jnp.sqrt(delta / gamma) / s_prev, delta / gamma
                if variance != "ddpm":
                    t2, dt = s_prev**2 / gamma, back
                    m2 = m2_pop if variance == "analytic" else jnp.sum(sc.reshape(p, -1) ** 2, axis=1) / d
                    var0 = jnp.clip(t2 * (1.0 - t2 * m2), 0.0, t2)
                    std = jnp.sqrt((s / s_prev) ** 2 * dt + (dt / t2) ** 2 * var0)
                std = jnp.broadcast_to(std, (p,)).reshape((p,) + (1,) * len(shape))
            else:  # the target-score SDE's ancestral step
                mean, std, back = x + delta * sc, s * jnp.sqrt(delta) / s_prev, delta
            y0 = (s / jnp.sqrt(gamma)) * z
            y = jnp.where(i == 0, y0, mean + jnp.where(i == 0, 1.0, std) * z)
            lpy, scy, ry = terms(y, s)
            if weights == "exact":
                dxy = x - y
                safe_delta = jnp.where(i == 0, 1.0, back)
                safe_std = jnp.where(i == 0, 1.0, std)
                log_l = -jnp.sum(dxy * dxy, axis=axes) / (2.0 * safe_delta) - 0.5 * d * jnp.log(2 * jnp.pi * safe_delta)
                log_q = -0.5 * jnp.sum(z * z, axis=axes) - 0.5 * d * jnp.log(2 * jnp.pi * safe_std.reshape(p) ** 2)
                incr = lpy - lp + log_l - log_q
            else:
                incr = 0.5 * delta * (rate + ry)
            if exact_init:
                var0 = s**2 / gamma
                log_r0 = -0.5 * jnp.sum(y0 * y0, axis=axes) / var0 - 0.5 * d * jnp.log(2 * jnp.pi * var0)
                incr0 = lpy - log_r0
            else:
                incr0 = jnp.zeros_like(lpy)
            incr = jnp.where(i == 0, incr0, incr)
            return (y, lpy, scy, ry, incr), (ne_c, acc)

        state, info = smc_base.fk_step(jax.random.fold_in(k_step, i), state, state.particles[4], mutate,
                                       resample_fn, ess_threshold)
        ne_c, acc = info.mutation
        # a particle is non-finite when its point, its score or (with energies) its log-density is
        check = state.particles[0].reshape(p, -1) + state.particles[2].reshape(p, -1)
        if exact_init:
            check = jnp.where(jnp.isfinite(state.particles[1])[:, None], check, jnp.nan)
        nf = mark_nonfinite(nf, check, i, s)
        ess_hist = jnp.where(i > 0, ess_hist.at[jnp.maximum(i - 1, 0)].set(info.ess), ess_hist)
        return state, nf, ess_hist, acc_hist.at[jnp.maximum(i - 1, 0)].set(acc), ne + p + ne_c * p

    acc0 = jnp.full((max(n - 1, 1),), jnp.nan, dtype)
    state, nf, ess_hist, acc_hist, ne = jax.lax.fori_loop(
        0, n, body, (state, no_nonfinite(z0), jnp.zeros((n,), dtype), acc0, jnp.asarray(0, jnp.int32)))
    x, lp, sc, rate, incr = state.particles
    ok = jax.vmap(comp.in_support)(x)
    log_g = jnp.where(jnp.isnan(incr) | ~ok, -jnp.inf, incr)
    unnorm = state.log_weights + log_g
    log_z_inc = jax.nn.logsumexp(unnorm)
    lw = unnorm - log_z_inc
    final = state._replace(log_weights=lw, log_Z=state.log_Z + log_z_inc)
    relvar = smc_base.lee_whiteley_relative_variance(final)
    s_end = sigmas[n - 1]
    out = x + s_end**2 * sc
    for proj in comp.supports:
        out = jax.vmap(proj)(out)
    draws = resampling.equal_weight_draws(k_out, out.reshape(p, -1), lw, p).reshape((p,) + shape)
    ess_hist = ess_hist.at[n - 1].set(jnp.exp(-jax.nn.logsumexp(2.0 * lw)))  # after the last level's weights
    return draws, final.log_Z, relvar, ess_hist, state.num_resampling, nf, ne, acc_hist


def _program(static, shape, dtype, p, runs, weights, corr, resampler, exact_init, variance):
    key = (static, shape, str(dtype), p, runs, weights, corr, resampler, exact_init, variance)
    prog = _PROGRAMS.get(key)
    if prog is not None:
        _PROGRAMS.move_to_end(key)
        return prog
    resample_fn = resampling.get_resampler(resampler)

    @jax.jit
    def run(dyn, key, sigmas, ess_threshold):
        comp = eqx.combine(dyn, static)
        keys = _item_keys(key, runs)
        return jax.vmap(lambda k: _one_run(comp, k, sigmas, ess_threshold, shape, p, weights, corr, resample_fn,
                                           exact_init, variance))(keys)

    _PROGRAMS[key] = run
    while len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return run


def _pos_int(who, name, v, least=1):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < least:
        raise ValueError(f"{who}: {name} must be an int >= {least}, got {v!r}")
    return int(v)


def sample_smc(composition, *, key, num_particles: int, nfe: int, sigma_max: float, sigma_end: float = 0.002,
               shape: Optional[tuple] = None, grid: str = "karras", weights: str = "auto", num_runs: int = 1,
               ess_threshold: float = 0.5, resampling: str = "systematic", corrector=None,
               proposal_variance: str = "analytic"):
    """Sample a composed diffusion model by Feynman–Kac corrector SMC (see the module docstring for the weights).

    Args:
      composition: a :class:`~samplax.diffusion.compose.Composition` (``product``, ``power``, ``cfg``, ``negation``,
        ``tilt``, ``constrain``), a :class:`~samplax.diffusion.compose.Mixture`, or any diffusion model (one model:
        plain SMC along its own path).
      key: a typed PRNG key; run ``r`` uses ``fold_in(key, r)``, particle ``b`` of it ``fold_in(., b)``.
      num_particles: particles per run (>= 2); also the number of draws each run returns.
      nfe: noise levels, equal to the composed-model evaluations per particle (>= 2).
      sigma_max, sigma_end: the first and last noise level (``0 < sigma_end < sigma_max``).
      shape: the event shape (default ``(dim,)`` from the models).
      grid: the noise-level grid (:func:`samplax.diffusion.grid_names`, not ``"optimized"``).
      weights: ``"fkc"``, ``"exact"`` or ``"auto"`` (``"exact"`` when every model gives an energy).
      num_runs: independent runs (their spread gives ``log_Z_se``).
      ess_threshold: resample when ``ESS < ess_threshold * num_particles`` (in ``[0, 1]``).
      resampling: one of :data:`samplax.smc.resampling.RESAMPLERS`.
      corrector: ``None``, ``"mala"``, ``"hmc"`` or a :func:`samplax.diffusion.corrector` of those kinds.
      proposal_variance: the move's variance with ``"exact"`` weights (see the module docstring): ``"analytic"``
        (Bao et al. 2022, from the particles' mean squared score), ``"local"`` (each particle's squared score) or
        ``"ddpm"``; with ``"fkc"`` weights the move is the target-score SDE's step and only ``"analytic"`` (the
        default, unused there) is accepted.

    Returns:
      ``(samples [num_runs * num_particles, *shape], SMCInfo)``.

    Raises:
      ValueError: bad arguments; models of different dimensions; ``sum_k a_k <= 0`` (no Gaussian start);
      ``weights="exact"`` (or a corrector, or a cost) without energies; every particle non-finite.
    """
    who = "sample_smc"
    if not isinstance(composition, Composition):
        if not callable(composition):
            raise ValueError(f"{who}: composition must be a diffusion model or a composition, got "
                             f"{type(composition).__name__}")
        composition = _compose(who, "geometric", [(composition, 1.0)])
    comp = composition
    p = _pos_int(who, "num_particles", num_particles, 2)
    nfe = _pos_int(who, "nfe", nfe, 2)
    runs = _pos_int(who, "num_runs", num_runs, 1)
    sigma_max, sigma_end = check_sigma_range(who, sigma_max, sigma_end)
    if key is None:
        raise ValueError(f"{who}: key is required (a typed key from jax.random.key)")
    if grid not in grid_names() or grid == "optimized":
        raise ValueError(f"{who}: grid must be one of {[g for g in grid_names() if g != 'optimized']}, got {grid!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"{who}: weights must be one of {WEIGHTS}, got {weights!r}")
    try:
        thr = float(ess_threshold)
    except (TypeError, ValueError):
        thr = float("nan")
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"{who}: ess_threshold must be a number in [0, 1], got {ess_threshold!r}")
    if proposal_variance not in PROPOSAL_VARIANCES:
        raise ValueError(f"{who}: proposal_variance must be one of {PROPOSAL_VARIANCES}, got {proposal_variance!r}")
    if resampling not in smc_resamplers():
        raise ValueError(f"{who}: resampling must be one of {sorted(smc_resamplers())}, got {resampling!r}")
    energy = comp.has_energy
    if weights == "auto":
        weights = "exact" if energy else "fkc"
    if weights == "exact" and not energy:
        missing = [i for i, m in enumerate(comp.models) if not corr_mod.has_energy(m)]
        raise ValueError(f"{who}: weights='exact' needs every model's energy; model(s) {missing} give only a "
                         "denoiser (use samplax.diffusion.energy models, or weights='fkc')")
    if weights == "fkc" and proposal_variance != "analytic":
        raise ValueError(f"{who}: proposal_variance={proposal_variance!r} needs weights='exact' (with 'fkc' weights "
                         "the move is the target-score SDE's ancestral step)")
    if weights == "fkc" and comp.costs:
        raise ValueError(f"{who}: a composition with a cost ({comp.kind}) needs weights='exact' (and energy models)")
    gamma = comp.exponent_sum
    if not gamma > 0:
        raise ValueError(f"{who}: the exponents of the composition sum to {gamma:.4g}; the composed density at large "
                         "noise is N(0, sigma^2 / sum) and needs a positive sum (e.g. a smaller negation weight)")
    corr = corr_mod.as_corrector(corrector, who)
    if corr is not None:
        if not corr.needs_energy:
            raise ValueError(f"{who}: the corrector must leave each level's density invariant ('mala' or 'hmc'), got "
                             f"{corr.kind!r}")
        if not energy:
            raise ValueError(f"{who}: corrector {corr.kind!r} needs every model's energy")
    if shape is None:
        dim = comp.dim
        if dim is None:
            raise ValueError(f"{who}: the models do not say their dimension; pass shape=")
        shape = (dim,)
    shape = tuple(int(s) for s in shape)
    dtype = jnp.dtype(jnp.result_type(float))
    check_denoiser(comp, shape, dtype, who, "shape")
    levels = make_grid(grid, nfe - 1, sigma_max, sigma_end)
    exact_init = bool(energy)
    dyn, static = eqx.partition(comp, eqx.is_array)
    try:
        hash(static)
    except TypeError:
        raise ValueError(f"{who}: the models' non-array parts must be hashable (equinox Modules or functions)") from None
    run = _program(static, shape, dtype, p, runs, weights, corr, resampling, exact_init, proposal_variance)
    clock = Clock()
    out = clock.call(run, (dyn, key, jnp.asarray(levels, dtype), jnp.asarray(thr, dtype)), _EXECUTABLES)
    draws, log_z_runs, relvar, ess_hist, num_res, nf, ne, acc = out
    draws = draws.reshape((runs * p,) + shape)
    per_particle = nfe
    corr_evals = 0
    if corr is not None:
        per_level = corr.evals_per_level() - 1 + (1 if weights == "fkc" else 0)  # the current point is known
        corr_evals = per_level * (nfe - 1)
    planned = (per_particle + corr_evals) * p * runs
    if not isinstance(ne, jax.core.Tracer) and int(np.sum(np.asarray(ne))) != planned:
        raise AssertionError(f"{who}: made {int(np.sum(np.asarray(ne)))} composed evaluations, planned {planned}")
    leaves = comp.cost_per_call["denoiser_evals"]
    timing = {}
    if clock.timed:
        timing = dict(compile_seconds=clock.compile_seconds, sampling_seconds=clock.run_seconds,
                      num_compilations=clock.num_compilations)
    cost = make_cost(num_model_evals=per_particle + corr_evals, num_devices=1,
                     num_denoiser_evals=(per_particle + corr_evals) * leaves, num_corrector_evals=corr_evals,
                     total_model_evals=planned * leaves, **timing)
    if comp.costs:
        cost["num_cost_evals"] = (per_particle + corr_evals) * len(comp.costs)
    nf_step = np.asarray(nf.step).reshape(-1)
    nf_sigma = np.asarray(nf.sigma).reshape(-1)
    warns = tuple(nonfinite_report(who, nf_step, nf_sigma, nfe, what="particle"))
    note = "log int gamma_{sigma_end} of the composed density (normalized models)"
    if not comp.normalized:
        note = "NaN: log_Z needs normalized models (e.g. exact mixtures, samplax.diffusion.energy.MixtureEnergy)"
    elif weights == "fkc":
        note += "; with weights='fkc' it has a time-discretization bias that vanishes as nfe grows"
    lz_runs = np.asarray(log_z_runs, np.float64)
    if comp.normalized:
        log_z, se, how = combine_log_Z(lz_runs, np.asarray(relvar, np.float64))
        if not np.isfinite(se):
            note += f"; standard error {how}"
    else:
        log_z, se = float("nan"), float("nan")
    info = SMCInfo(log_z, se, lz_runs, np.asarray(ess_hist), np.asarray(num_res), np.asarray(levels), weights, cost,
                   nf_step, nf_sigma, warns, np.asarray(acc) if corr is not None else None, note)
    return draws, info


def smc_resamplers():
    """The resampling schemes ``sample_smc`` accepts."""
    return resampling.RESAMPLERS
