"""Tempered SMC samplers on the geometric path: adaptive, fixed-schedule, waste-free, AIS, population annealing.

All are configurations of :func:`samplax.smc.base.fk_step` with potential
``G_t(x) = exp((beta_t - beta_{t-1}) (log p(x) - log q(x)))`` and an MCMC
mutation invariant for ``pi_{beta_t}`` (:mod:`samplax.smc.mutation`):

- adaptive tempered SMC (Jasra et al. 2011; Zhou, Johansen & Aston 2016):
  the next ``beta`` is the largest one whose conditional ESS is at least
  ``target_cess * CESS(0+)`` (:func:`next_beta`), ESS-triggered resampling;
- fixed schedule: ``beta_t`` given;
- waste-free SMC (Dau & Chopin 2022): resample ``M = N / P`` ancestors at every
  step and keep all ``P`` states of each chain;
- AIS (Neal 2001): fixed schedule, never resample (``ess_threshold = 0``), so
  ``Z_hat = mean_i exp(sum_t log G_t(x_t^i))`` over independent chains;
- population annealing (Machta 2010): fixed schedule, resample at every step.

``log Z`` is the product of the weighted means of the potentials (an unbiased
estimate of ``Z`` for fixed schedule and fixed kernel parameters; Del Moral 2004).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from samplax.core.nonfinite import count_nonfinite
from samplax.smc import base, resampling
from samplax.smc.mutation import (build_mutation, evaluate, is_gradient_based,
                                  weighted_variance)
from samplax.smc.paths import GaussianReference, log_increment

NUM_BISECTION_STEPS = 100


def next_beta(beta, log_weights, log_target, log_reference, target_cess):
    """Next inverse temperature by bisection on the conditional ESS (Zhou, Johansen & Aston 2016).

    Solves for the largest ``delta`` in ``(0, 1 - beta]`` with
    ``CESS(delta) >= target_cess * CESS(0+)``, where the incremental log-weight
    is ``+delta * (log p - log q)`` -- the *same sign* as the reweighting in
    :func:`samplax.smc.paths.log_increment` (BlackJAX issue 914 used the
    opposite sign in the solver, which stalls the schedule for asymmetric
    log-likelihoods).  ``CESS(delta)`` is non-increasing in ``delta`` (it is
    ``N exp(2K(delta) - K(2 delta))`` with ``K`` the convex cumulant generating
    function of the increments), so bisection is valid.  ``CESS(0+)`` is the
    weighted fraction of particles with a finite target density (particles
    outside the support die at the first positive step).  The step is never
    zero: if rounding loses it, ``beta`` moves to the next float.
    """
    ell = log_target - log_reference
    finite = jnp.isfinite(ell)
    ell0 = jnp.where(finite, ell, 0.0)
    alive = jnp.where(finite, 0.0, -jnp.inf)
    target = target_cess * resampling.conditional_ess(log_weights, alive)

    def cess(delta):
        return resampling.conditional_ess(log_weights, delta * ell0 + alive)

    hi0 = 1.0 - beta
    ok_full = cess(hi0) >= target

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        good = cess(mid) >= target
        return jnp.where(good, mid, lo), jnp.where(good, hi, mid)

    lo, hi = jax.lax.fori_loop(0, NUM_BISECTION_STEPS, body, (jnp.zeros_like(beta), hi0))
    delta = jnp.where(lo > 0, lo, hi)
    new = jnp.where(ok_full, 1.0, jnp.minimum(beta + delta, 1.0))
    return jnp.where(new > beta, new, jnp.nextafter(beta, jnp.asarray(2.0, beta.dtype)))


class TemperedConfig(NamedTuple):
    """Structural configuration of a tempered SMC run (fixed at trace time)."""

    num_particles: int
    kernel: str = "hmc"
    num_mcmc_steps: int = 5
    num_integration_steps: int = 10
    target_accept: Optional[float] = None
    adaptive: bool = True
    target_cess: float = 0.8
    ess_threshold: float = 0.5
    resampling: str = "systematic"
    waste_free_chain_length: int = 0  # 0: standard SMC; P >= 2: waste-free with M = N / P chains
    max_steps: int = 500
    adapt_step_size: bool = True
    adapt_mass_matrix: bool = True
    correlation_threshold: Optional[float] = None  # None: exactly num_mcmc_steps moves per temperature
    max_mcmc_steps: int = 0  # cap on the adaptive number of moves (0: num_mcmc_steps)
    step_size_spread: float = 0.0  # per-particle log-uniform spread of the step size


class TemperedOutput(NamedTuple):
    """Outcome of one run: final particles and weights, log Z, the schedule and per-step diagnostics."""

    state: base.SMCState
    num_steps: jax.Array
    betas: jax.Array          # [max_steps + 1], beta_t (nan past the end)
    ess: jax.Array            # [max_steps] ESS after reweighting
    acceptance: jax.Array     # [max_steps] mean acceptance of the mutation
    step_size: jax.Array      # [max_steps] step size used
    resampled: jax.Array      # [max_steps]
    num_moves: jax.Array      # [max_steps] MCMC moves made at each temperature
    clt_var: jax.Array        # sum_t (1 / CESS_t - 1 / N): idealized CLT variance of log Z
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array
    num_nonfinite: jax.Array          # evaluations with a NaN/+inf log-density or non-finite gradient (all steps)
    num_initial_nonfinite: jax.Array  # of them, among the N initial particles (N: nothing finite to start from)


def run(key, logdensity_fn: Callable, reference: GaussianReference, config: TemperedConfig,
        schedule: Optional[jax.Array] = None, initial_step_size=None, progress: Optional[Callable] = None,
        run_id=0) -> TemperedOutput:
    """One tempered SMC run from ``reference`` (``beta = 0``) to the target (``beta = 1``).

    Args:
      key: PRNG key.
      logdensity_fn: unnormalized target log-density of one flat point.
      reference: normalized Gaussian reference.
      config: :class:`TemperedConfig`.
      schedule: ``[K + 1]`` increasing betas from 0 to 1 (required when
        ``config.adaptive`` is False; an array, so a new schedule never retraces).
      initial_step_size: starting step size (array); default from the kernel and dimension.
      progress: optional host function ``progress(run_id, step, beta, ess, acceptance, moves)`` called
        (through ``jax.debug.callback``) after every temperature.
      run_id: passed to ``progress`` (the run's index when runs are vmapped).

    A NaN or ``+inf`` target log-density (or a non-finite gradient) is zero density: a zero weight at the
    next reweighting, a rejected proposal in the moves; such evaluations are counted in ``num_nonfinite``
    (:mod:`samplax.core.nonfinite`).  A run whose weights all vanish (``log Z = -inf``) stops there.
    """
    n = config.num_particles
    d = reference.mean.shape[0]
    dtype = reference.mean.dtype
    gradient = is_gradient_based(config.kernel)
    waste_free = config.waste_free_chain_length >= 2
    p_len = config.waste_free_chain_length if waste_free else 1
    if waste_free and n % p_len:
        raise ValueError(f"waste-free SMC: num_particles={n} must be a multiple of the chain length {p_len}")
    m = n // p_len
    mutate_fn = build_mutation(logdensity_fn, reference, config.kernel,
                               p_len if waste_free else config.num_mcmc_steps, config.num_integration_steps,
                               config.target_accept, config.adapt_step_size, keep_path=waste_free,
                               max_mcmc_steps=config.max_mcmc_steps or None,
                               correlation_threshold=config.correlation_threshold,
                               step_size_spread=config.step_size_spread)
    resample_fn = resampling.get_resampler(config.resampling)
    if not config.adaptive:
        if schedule is None:
            raise ValueError("a fixed-schedule run needs schedule=[0, ..., 1]")
        schedule = jnp.asarray(schedule, dtype)
        max_steps = schedule.shape[0] - 1
    else:
        max_steps = config.max_steps
    if initial_step_size is None:
        from samplax.smc.mutation import initial_step_size as _init_eps
        initial_step_size = _init_eps(config.kernel, d)
    log_eps0 = jnp.log(jnp.asarray(initial_step_size, dtype))

    k_init, k_loop = jax.random.split(key)
    x0 = reference.sample(k_init, n)
    particles = evaluate(logdensity_fn, reference, x0, gradient)
    n_bad0 = count_nonfinite(particles.lp_tgt, particles.grad_tgt if gradient else None)
    state = base.init(particles)
    nan = jnp.full((max_steps,), jnp.nan, dtype)
    carry0 = dict(state=state, beta=jnp.zeros((), dtype), i=jnp.zeros((), jnp.int32), log_eps=log_eps0,
                  betas=jnp.full((max_steps + 1,), jnp.nan, dtype).at[0].set(0.0), ess=nan, acc=nan, eps=nan,
                  resampled=jnp.zeros((max_steps,), bool), moves=jnp.zeros((max_steps,), jnp.int32), clt=jnp.zeros((), dtype),
                  n_lp=jnp.asarray(n, jnp.int32), n_grad=jnp.asarray(n if gradient else 0, jnp.int32),
                  n_bad=n_bad0)

    def cond(c):
        # a population whose weights are all zero (log Z = -inf) has nothing left to move: stop
        return (c["beta"] < 1.0) & (c["i"] < max_steps) & jnp.isfinite(c["state"].log_Z)

    def body(c):
        st, beta, i = c["state"], c["beta"], c["i"]
        pt = st.particles
        if config.adaptive:
            beta_next = next_beta(beta, st.log_weights, pt.lp_tgt, pt.lp_ref, config.target_cess)
        else:
            beta_next = schedule[i + 1]
        log_g = log_increment(beta, beta_next, pt.lp_ref, pt.lp_tgt)
        cess = resampling.conditional_ess(st.log_weights, log_g)
        if config.adapt_mass_matrix:
            imm = weighted_variance(pt.position, st.log_weights + log_g)
        else:
            imm = jnp.ones((d,), dtype)
        log_eps = c["log_eps"]

        def mutate(k, parts):
            return mutate_fn(k, parts, beta_next, log_eps, imm)

        thr = 1.0 if waste_free else config.ess_threshold
        st, info = base.fk_step(jax.random.fold_in(k_loop, i), st, log_g, mutate, resample_fn, thr,
                                num_ancestors=m if waste_free else None)
        mi = info.mutation
        if progress is not None:
            jax.debug.callback(progress, run_id, i + 1, beta_next, info.ess, mi.acceptance_rate, mi.num_moves)
        return dict(state=st, beta=beta_next, i=i + 1, log_eps=mi.log_step_size,
                    betas=c["betas"].at[i + 1].set(beta_next), ess=c["ess"].at[i].set(info.ess),
                    acc=c["acc"].at[i].set(mi.acceptance_rate), eps=c["eps"].at[i].set(jnp.exp(log_eps)),
                    resampled=c["resampled"].at[i].set(info.resampled),
                    moves=c["moves"].at[i].set(mi.num_moves),
                    clt=c["clt"] + 1.0 / cess - 1.0 / n,
                    n_lp=c["n_lp"] + mi.num_logdensity_evals, n_grad=c["n_grad"] + mi.num_grad_evals,
                    n_bad=c["n_bad"] + mi.num_nonfinite)

    c = jax.lax.while_loop(cond, body, carry0)
    return TemperedOutput(c["state"], c["i"], c["betas"], c["ess"], c["acc"], c["eps"], c["resampled"],
                          c["moves"], c["clt"], c["n_lp"], c["n_grad"], c["n_bad"], n_bad0)


def power_schedule(num_temperatures: int, power: float = 4.0) -> jax.Array:
    """``beta_k = (k / K)^power``, ``k = 0..K`` (more temperatures near the reference, where ``log Z`` changes fastest)."""
    k = jnp.arange(num_temperatures + 1) / num_temperatures
    return k**power
