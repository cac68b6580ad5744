"""TDS: the twisted diffusion sampler (Wu, Trippe, Naesseth, Blei & Cunningham, NeurIPS 2023), an asymptotically
exact particle method with an unbiased evidence estimate.

The diffusion model's reverse chain on ``s_0 = sigma_max > ... > s_{N-1} = sigma_end`` (``N = nfe``) is
``x_0 ~ N(0, s_0^2 I)``, DDPM ancestral transitions ``p(x_{i+1} | x_i) = N(m_i, v_i)`` with
``m_i = d_i + (s_{i+1}/s_i)^2 (x_i - d_i)``, ``v_i = s_{i+1}^2 (s_i^2 - s_{i+1}^2) / s_i^2``, ``d_i = D(x_i, s_i)``,
and the clean output ``x_clean = d_{N-1}``. Its posterior given ``y`` is targeted by Feynman–Kac SMC
(:func:`samplax.smc.base.fk_step`) with twisting functions ``p~_i(y | x_i) = N(y; A d_i, (sigma_y^2 + inflation
s_i^2) I)`` and the twisted proposal

``q(x_{i+1} | x_i) = N(m_i + (s_i^2 - s_{i+1}^2) grad_x log p~_i(y | x_i), v_i)``,

with incremental weights ``w_0 = p~_0(y | x_0)``,
``w_{i+1} = p(x_{i+1} | x_i) p~_{i+1}(y | x_{i+1}) / (q(x_{i+1} | x_i) p~_i(y | x_i))`` and the final
``p(y | x_clean) / p~_{N-1}(y | x_{N-1})`` (1 when ``inflation = 0``). With ``inflation = 0`` the twist is the DPS approximation of
``p(y | x_i)`` (the paper's); it ignores ``Var[x0 | x_i]`` and is far too sharp at high noise when ``sigma_y``
is small (proposals overshoot, weights degenerate: on a 2-d test the evidence came out ``e^-21`` too small).
The default ``inflation = 1`` adds ``s_i^2``, the small-noise limit of ``Var[a^T x0 | x_i]`` for a unit row
``a`` (``Cov[x0 | x] = s^2 dD/dx -> s^2 I``), and keeps the twist weak at high noise. The product of the weights is
``p(y | x_clean) p(x_{0:N-1}) / q(x_{0:N-1})`` whatever the twist, so the weighted particles converge to the
discretized model's posterior as the number of particles grows, and ``prod_i mean_j w_ij`` (with resampling:
the mean of the weights carried) is an unbiased estimate of its evidence ``p(y)`` (Del Moral 2004).
Resampling (``resampling``, :mod:`samplax.smc.resampling`) happens when the ESS falls below
``ess_threshold * num_particles``.

Runs: ``ceil(num_samples / draws_per_run)`` independent SMC runs of ``num_particles`` particles (run ``r``
uses ``fold_in(key, r)``); each returns ``draws_per_run`` (default ``num_particles``) equally weighted draws
(systematic resampling, shuffled). ``info["log_evidence"]`` is ``log mean_r Z_r`` with its standard error
(:func:`samplax.smc.logz.combine_log_Z`, Lee & Whiteley 2018 within runs).

Cost per particle: ``nfe`` denoiser evaluations and ``nfe - 1`` VJPs (the last level needs no proposal).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core import options as ck
from samplax.core.method import Option
from samplax.diffusion.inverse import common
from samplax.diffusion.inverse.registry import InverseMethod, MethodOutput, Plan, register
from samplax.diffusion.solvers import mark_nonfinite, no_nonfinite
from samplax.smc import base as smc_base
from samplax.smc import resampling
from samplax.smc.logz import combine_log_Z

OPTIONS = {
    "num_particles": Option(64, "particles per SMC run", ck.int_at_least(2), "an int >= 2"),
    "draws_per_run": Option(None, "equally weighted draws returned per run (None: num_particles)",
                            ck.pos_int_or_none, "None or an int >= 1"),
    "ess_threshold": Option(0.5, "resample when ESS < ess_threshold * num_particles",
                            lambda v: ck.is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "resampling": Option("systematic", "resampling scheme (samplax.smc.resampling)",
                         ck.one_of(resampling.RESAMPLERS), f"one of {sorted(resampling.RESAMPLERS)}"),
    "inflation": Option(1.0, "twist variance sigma_y^2 + inflation * s_i^2 (0: the paper's DPS twist)",
                        lambda v: ck.is_number(v) and np.isfinite(v) and v >= 0, "a finite number >= 0"),
    **common.grid_options(),
}


def _plan(problem, nfe, sigma_max, num_samples, o) -> Plan:
    if nfe < 2:
        raise ValueError(f"inverse.sample: method 'tds' needs nfe >= 2, got {nfe}")
    p = o["num_particles"]
    per_run = p if o["draws_per_run"] is None else o["draws_per_run"]
    runs = -(-num_samples // per_run)
    levels = common.positive_levels(o["grid"], nfe, sigma_max, o["sigma_end"], "inverse.sample (tds)")
    static = (("num_particles", p), ("draws_per_run", per_run), ("runs", runs), ("resampler", o["resampling"]))
    items = runs * p
    return Plan(levels, {"ess_threshold": o["ess_threshold"], "inflation": o["inflation"]}, static, items * nfe,
                items * (nfe - 1), num_steps=nfe, items=items, item="particle")


def _one_run(denoiser, problem, key, sigmas, params, shape, p, per_run, resample_fn):
    dtype = sigmas.dtype
    n = sigmas.shape[0]
    k_init, k_step, k_out = jax.random.split(key, 3)
    keys = common.item_keys(k_step, p)
    inflation = params["inflation"]

    def twist(x, s):
        return common.denoise_with_grad(denoiser, lambda d: problem.log_likelihood(d, inflation * s**2), x, s)

    x = sigmas[0] * common.normals(common.item_keys(k_init, p), 0, 0, shape, dtype)
    d, lt, g = twist(x, sigmas[0])
    # particle: (x, d = D(x), g = grad log p~(y|x), lt = log p~(y|x), log-weight increment of the move that made it)
    state = smc_base.init((x, d, g, lt, lt))
    nf = mark_nonfinite(no_nonfinite(x), d, 0, sigmas[0])
    axes = tuple(range(1, len(shape) + 1))

    def body(i, carry):
        state, nf, ess_hist = carry
        s, s_next = sigmas[i], sigmas[i + 1]

        def mutate(key_unused, parts):
            x, d, g, lt, _ = parts
            mean, std, delta = common.ancestral(x, d, s, s_next)
            shift = delta * g
            z = common.normals(keys, i, 0, shape, dtype)
            x_new = mean + shift + std * z
            d_new, lt_new, g_new = twist(x_new, s_next)
            # log p(x'|x) - log q(x'|x) with x' - mean = shift + std z and x' - (mean + shift) = std z
            log_ratio = -(jnp.sum(shift**2, axis=axes) + 2.0 * std * jnp.sum(shift * z, axis=axes)) / (2.0 * std**2)
            return (x_new, d_new, g_new, lt_new, lt_new - lt + log_ratio), None

        state, info = smc_base.fk_step(jax.random.fold_in(k_step, i), state, state.particles[4], mutate,
                                       resample_fn, params["ess_threshold"])
        nf = mark_nonfinite(nf, state.particles[1], i + 1, s_next)
        return state, nf, ess_hist.at[i].set(info.ess)

    state, nf, ess_hist = jax.lax.fori_loop(0, n - 1, body, (state, nf, jnp.zeros((n - 1,), dtype)))
    x, d, g, lt, incr = state.particles
    final = jax.vmap(problem.log_likelihood)(d) - lt  # p(y | x_clean) / p~_{N-1}(y | x_{N-1}); 0 without inflation
    log_g = jnp.where(jnp.isnan(incr + final), -jnp.inf, incr + final)
    unnorm = state.log_weights + log_g
    log_z_inc = jax.nn.logsumexp(unnorm)
    lw = unnorm - log_z_inc
    final_state = state._replace(log_weights=lw, log_Z=state.log_Z + log_z_inc)
    relvar = smc_base.lee_whiteley_relative_variance(final_state)
    flat = d.reshape(p, -1)
    draws = resampling.equal_weight_draws(k_out, flat, lw, per_run).reshape((per_run,) + shape)
    return draws, final_state.log_Z, relvar, ess_hist, jnp.exp(-jax.nn.logsumexp(2.0 * lw)), state.num_resampling, nf


def _run(denoiser, problem, key, sigmas, params, num_samples, shape, num_particles, draws_per_run, runs, resampler):
    resample_fn = resampling.get_resampler(resampler)
    run_keys = common.item_keys(key, runs)
    out = jax.vmap(lambda k: _one_run(denoiser, problem, k, sigmas, params, shape, num_particles, draws_per_run,
                                      resample_fn))(run_keys)
    draws, log_z, relvar, ess_hist, ess_final, num_res, nf = out
    samples = draws.reshape((runs * draws_per_run,) + shape)[:num_samples]
    n = sigmas.shape[0]
    items = runs * num_particles
    nf = jax.tree.map(lambda a: a.reshape(items), nf)
    ne = jnp.asarray(items * n, jnp.int32)
    nv = jnp.asarray(items * (n - 1), jnp.int32)
    extras = {"log_evidence_runs": log_z, "lee_whiteley_relvar": relvar, "ess": ess_hist, "final_ess": ess_final,
              "num_resampling": num_res}
    return MethodOutput(samples, ne, nv, nf, extras)


def _finish(extras, plan):
    log_z, se, how = combine_log_Z(extras["log_evidence_runs"], extras["lee_whiteley_relvar"])
    return {"log_evidence": log_z, "log_evidence_se": se, "log_evidence_se_method": how, **extras}


register(InverseMethod(
    "tds", "Twisted diffusion sampler: Feynman-Kac SMC over the reverse diffusion with DPS twisting functions "
           "and twisted proposals; unbiased evidence (Wu et al. 2023)",
    OPTIONS, _plan, _run, exact=True, finish=_finish))

