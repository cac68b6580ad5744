"""Non-reversible parallel tempering (replica exchange) with an adaptive schedule and a stepping-stone log Z.

``K`` replicas sit at inverse temperatures ``0 = beta_0 < ... < beta_{K-1} = 1`` of
the geometric path ``log pi_beta = log q + beta ell``, ``ell = log p - log q``,
from the normalized Gaussian reference ``q`` (:mod:`samplax.smc.paths`).  One
*scan* is

1. **local exploration**: ``num_mcmc_steps`` moves of a registered
   :mod:`samplax.mcmc` kernel that leaves the target invariant and takes
   ``(step_size, inverse_mass_matrix)`` params (HMC, MALA, NUTS, RWM:
   :func:`samplax.smc.mutation.kernel_names`) on every replica ``k >= 1``, each with its own
   step size ``e_k`` and diagonal inverse mass matrix ``C_k``; replica 0 is
   replaced by an exact draw from ``q`` (Syed et al. 2021, sec. 2);
2. **communication** (deterministic even/odd, "DEO"): at even scans the pairs
   ``(0,1), (2,3), ...``, at odd scans ``(1,2), (3,4), ...`` propose to swap
   states, accepted with probability
   ``alpha_k = min(1, exp((beta_{k+1} - beta_k)(ell(x_k) - ell(x_{k+1}))))``.

DEO swaps make the temperature index of a replica move ballistically instead of
diffusively (Okabe et al. 2001; Syed, Bouchard-Côté, Deligiannidis & Doucet
2021, "Non-reversible parallel tempering: a scalable highly parallel MCMC
scheme", JRSS B 84(2)), so the round-trip rate stays bounded as ``K`` grows.

**Schedule adaptation** (Syed et al. 2021, Algorithm 4): tuning runs in rounds
of doubling length; in each, the rejection rates ``r_k = mean(1 - alpha_k)``
are collected for *all* pairs at every scan; the local communication barrier
``Lambda(beta)`` is estimated by the piecewise-linear interpolation of
``Lambda(beta_k) = sum_{j<k} r_j`` and the next schedule equalizes it,
``beta'_k = Lambda^{-1}(k Lambda / (K - 1))``, so that every pair has the same
rejection rate ``Lambda / (K - 1)``.  ``Lambda = Lambda(1)`` is the global
barrier; the optimal number of replicas is about ``2 Lambda``, and the
round-trip rate of DEO is ``1 / (2 + 2 Lambda)`` (Syed et al. 2021, Thm. 3).
In the same rounds each replica's step size follows the Robbins–Monro rule
``log e_k <- log e_k + (t + 1)^{-0.6} (a_k - a*)`` (``t`` the scan within the
round) and its inverse mass matrix is the regularized per-coordinate variance
of the replica's states in the previous round (Stan's shrinkage
``n/(n+5) var + 1e-3 * 5/(n+5)``).  All parameters are frozen during sampling.

**log Z** by the stepping-stone estimator (Xie, Lewis, Fan, Kuo & Chen 2011;
the same identity as Bennett's/Neal's annealed ratios): from the frozen-schedule
sampling scans,

``log Z_hat = sum_{k=0}^{K-2} log mean_t exp((beta_{k+1} - beta_k) ell(x_k^t))``.

Its standard error is the delta method with batch means (``B`` batches of
consecutive scans, which keeps the autocorrelation and the correlation between
neighbouring replicas): with ``w_{k,b}`` the batch means of the ratio terms,
``s_b = sum_k w_{k,b} / w_k`` and ``se^2 = var_b(s_b) / B``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.nonfinite import count_nonfinite
from samplax.smc import mutation
from samplax.smc.paths import GaussianReference, geometric_logdensity

RM_EXPONENT = 0.6


class PTConfig(NamedTuple):
    """Structural configuration of a parallel-tempering run."""

    num_temperatures: int = 16
    kernel: str = "hmc"
    num_mcmc_steps: int = 1
    num_integration_steps: int = 10
    target_accept: float | None = None
    adapt_schedule: bool = True
    num_batches: int = 20


class PTState(NamedTuple):
    """The ``K`` replicas (slot ``k`` at ``beta_k``) with cached densities and round-trip bookkeeping."""

    position: jax.Array      # [K, d]
    lp_ref: jax.Array        # [K]
    lp_tgt: jax.Array        # [K]
    grad_ref: jax.Array      # [K, d]
    grad_tgt: jax.Array      # [K, d]
    label: jax.Array         # [K] replica id in each slot
    last_end: jax.Array      # [K] per replica id: 0 last seen at beta_0, 1 at beta_{K-1}, -1 neither
    round_trips: jax.Array   # number of completed 0 -> K-1 -> 0 tours


class PTParams(NamedTuple):
    """Tuned parameters: schedule ``[K]``, per-replica log step sizes ``[K]`` and inverse mass matrices ``[K, d]``."""

    betas: jax.Array
    log_step_size: jax.Array
    inverse_mass_matrix: jax.Array


class RoundStats(NamedTuple):
    """Accumulated over a round: rejection sums ``[K-1]``, scans, per-slot sums/squares for the mass matrix, acceptance."""

    rejection: jax.Array
    count: jax.Array
    sum_x: jax.Array
    sum_x2: jax.Array
    acceptance: jax.Array


def _ell(lp_tgt, lp_ref):
    """``log p - log q``; a NaN or ``+inf`` target log-density is zero density: ``-inf``."""
    ell = lp_tgt - lp_ref
    return jnp.where(jnp.isnan(ell) | (ell == jnp.inf), -jnp.inf, ell)


def swap_log_acceptance(betas: jax.Array, ell: jax.Array) -> jax.Array:
    """``log alpha_k = min(0, (beta_{k+1} - beta_k)(ell_k - ell_{k+1}))`` for the ``K - 1`` neighbouring pairs (nan -> -inf)."""
    la = (betas[1:] - betas[:-1]) * (ell[:-1] - ell[1:])
    la = jnp.where(jnp.isnan(la), -jnp.inf, la)
    return jnp.minimum(la, 0.0)


def deo_permutation(accept: jax.Array, parity: jax.Array) -> jax.Array:
    """Slot permutation of one DEO communication step.

    ``accept [K-1]`` says whether pair ``(k, k+1)`` would swap; only pairs with
    ``k % 2 == parity`` are proposed.  Returns ``perm [K]`` with new slot ``k``
    taking the state of old slot ``perm[k]``.
    """
    k1 = accept.shape[0]
    swap = accept & (jnp.arange(k1) % 2 == parity)
    up = jnp.concatenate([swap, jnp.zeros((1,), bool)])     # slot k takes k+1
    down = jnp.concatenate([jnp.zeros((1,), bool), swap])   # slot k+1 takes k
    return jnp.arange(k1 + 1) + up.astype(jnp.int32) - down.astype(jnp.int32)


def equalize_schedule(betas: jax.Array, rejection: jax.Array) -> tuple[jax.Array, jax.Array]:
    """New schedule with equal estimated rejection per pair (Syed et al. 2021, Alg. 4); also returns ``Lambda``.

    ``Lambda(beta_k) = sum_{j<k} r_j`` is interpolated linearly and inverted at
    ``k Lambda / (K - 1)``.  A tiny floor on ``r`` keeps ``Lambda`` strictly
    increasing; the ends stay at 0 and 1.
    """
    r = jnp.clip(rejection, 1e-6, 1.0)
    cum = jnp.concatenate([jnp.zeros((1,), r.dtype), jnp.cumsum(r)])
    lam = cum[-1]
    k = betas.shape[0]
    grid = jnp.arange(k, dtype=r.dtype) * lam / (k - 1)
    new = jnp.interp(grid, cum, betas)
    new = new.at[0].set(0.0).at[-1].set(1.0)
    return new, jnp.sum(rejection)


def initial_schedule(num_temperatures: int, power: float = 4.0, dtype=None) -> jax.Array:
    """``beta_k = (k / (K - 1))^power`` (dense near the reference, where the broad-reference path changes fastest)."""
    k = jnp.arange(num_temperatures, dtype=dtype or jnp.result_type(float))
    return (k / (num_temperatures - 1)) ** power


def build(logdensity_fn: Callable, reference: GaussianReference, config: PTConfig):
    """Return ``(init, scan_round, sample)`` for one PT run (vmap outside for independent runs).

    - ``init(key, positions [K, d] or None) -> (PTState, evals)``: replicas from
      ``positions`` (default: exact reference draws);
    - ``scan_round(key, state, params, num_scans, adapt) -> (state, params, RoundStats, n_lp, n_grad, n_bad)``:
      ``num_scans`` scans (a traced count: one compilation for every round),
      adapting the step sizes when ``adapt``;
    - ``sample(key, state, params, num_samples) -> (state, draws [T, d], lp [T], ell [T, K], acc [T],
      swap [T, K-1], n_lp, n_grad, n_bad)``.

    ``n_bad`` counts the non-finite evaluations (:mod:`samplax.core.nonfinite`): local-move proposals the
    kernel flagged ``is_nonfinite`` (rejected) and NaN/+inf log-densities (or non-finite gradients) at the
    re-evaluation of every scan (their ``ell`` is ``-inf``: zero density, a swap that never moves them up).
    """
    spec = mutation.mutation_kernel(config.kernel)
    if config.num_temperatures < 2:
        raise ValueError(f"num_temperatures must be >= 2, got {config.num_temperatures}")
    gradient = spec.gradient_based
    params_cls = spec.params_cls
    structural = mutation.structural_options(spec, num_integration_steps=config.num_integration_steps)
    a_star = mutation.default_target_accept(config.kernel) if config.target_accept is None \
        else float(config.target_accept)
    kk = config.num_temperatures

    def evaluate(x):
        if gradient:
            lt, gt = jax.vmap(jax.value_and_grad(logdensity_fn))(x)
            lr, gr = jax.vmap(jax.value_and_grad(reference.logdensity))(x)
        else:
            lt = jax.vmap(logdensity_fn)(x)
            lr = jax.vmap(reference.logdensity)(x)
            gt = gr = jnp.zeros_like(x)
        return lr, lt, gr, gt

    def init(key, positions=None):
        if positions is None:
            positions = reference.sample(key, kk)
        lr, lt, gr, gt = evaluate(positions)
        lab = jnp.arange(kk, dtype=jnp.int32)
        last = jnp.full((kk,), -1, jnp.int32).at[0].set(0)
        return PTState(positions, lr, lt, gr, gt, lab, last, jnp.zeros((), jnp.int32))

    def local(key, x, lr, lt, gr, gt, beta, log_eps, imm):
        """``num_mcmc_steps`` moves at ``beta`` for one replica; returns position and mean acceptance."""
        def lp_beta(z):
            return geometric_logdensity(beta, reference.logdensity(z), logdensity_fn(z))

        step = spec.build_kernel(lp_beta, **structural)
        lp0 = geometric_logdensity(beta, lr, lt)
        if gradient:
            g0 = jnp.where(beta < 1, 1 - beta, 0.0) * gr + jnp.where(beta > 0, beta, 0.0) * gt
        else:
            g0 = gt  # zeros: gradient-free kernels never read it
        st = mutation.known_state(spec, x, lp0, g0)
        p = params_cls(jnp.exp(log_eps), imm)

        def one(carry, k):
            s, a, nl, ng, nb = carry
            s, info = step(k, s, p)
            acc = jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0)
            return (s, a + acc, nl + info.num_logdensity_evals, ng + info.num_grad_evals,
                    nb + info.is_nonfinite.astype(jnp.int32)), None

        z = jnp.zeros((), jnp.int32)
        (st, acc, nl, ng, nb), _ = jax.lax.scan(one, (st, jnp.zeros((), x.dtype), z, z, z),
                                                jax.random.split(key, config.num_mcmc_steps))
        return st.position, acc / config.num_mcmc_steps, nl, ng, nb

    def scan_once(key, state: PTState, params: PTParams, parity):
        """One scan: local moves, exact reference draw in slot 0, re-evaluation, DEO swap."""
        k_loc, k_ref, k_swap = jax.random.split(key, 3)
        x, acc, nl, ng, nb = jax.vmap(local)(jax.random.split(k_loc, kk), state.position, state.lp_ref, state.lp_tgt,
                                 state.grad_ref, state.grad_tgt, params.betas, params.log_step_size,
                                 params.inverse_mass_matrix)
        x = x.at[0].set(reference.sample(k_ref, 1)[0])
        acc = acc.at[0].set(1.0)
        lr, lt, gr, gt = evaluate(x)
        ell = _ell(lt, lr)
        log_alpha = swap_log_acceptance(params.betas, ell)
        u = jax.random.uniform(k_swap, (kk - 1,), x.dtype)
        perm = deo_permutation(jnp.log(u) < log_alpha, parity)
        label = state.label[perm]
        # round trips: a replica that reaches slot 0 after having been at slot K-1
        bottom, top = label[0], label[-1]
        trips = state.round_trips + (state.last_end[bottom] == 1).astype(jnp.int32)
        last = state.last_end.at[bottom].set(0)
        last = last.at[top].set(jnp.where(last[top] == 0, 1, last[top]))
        new = PTState(x[perm], lr[perm], lt[perm], gr[perm], gt[perm], label, last, trips)
        # every evaluation made counts (slot 0's moves are computed, then replaced by the exact draw)
        n_lp = (jnp.sum(nl) + kk).astype(jnp.int32)
        n_grad = (jnp.sum(ng) + (kk if gradient else 0)).astype(jnp.int32)
        n_bad = jnp.sum(nb, dtype=jnp.int32) + count_nonfinite(lt, gt if gradient else None)
        return new, x, ell, acc, 1.0 - jnp.exp(log_alpha), n_lp, n_grad, n_bad

    def scan_round(key, state: PTState, params: PTParams, num_scans, adapt):
        d = state.position.shape[1]
        dt = state.position.dtype
        stats0 = RoundStats(jnp.zeros((kk - 1,), dt), jnp.zeros((), dt), jnp.zeros((kk, d), dt),
                            jnp.zeros((kk, d), dt), jnp.zeros((kk,), dt))

        def body(t, c):
            st, prm, stats, n_lp, n_grad, n_bad = c
            st, x, _, acc, rej, dl, dg, db = scan_once(jax.random.fold_in(key, t), st, prm, t % 2)
            gain = (t + 1.0) ** -RM_EXPONENT
            # slot 0 is an exact draw; its step size is never used
            log_eps = jnp.where(adapt & (jnp.arange(kk) > 0), prm.log_step_size + gain * (acc - a_star),
                                prm.log_step_size)
            prm = prm._replace(log_step_size=log_eps)
            stats = RoundStats(stats.rejection + rej, stats.count + 1, stats.sum_x + x, stats.sum_x2 + x**2,
                               stats.acceptance + acc)
            return st, prm, stats, n_lp + dl, n_grad + dg, n_bad + db

        z = jnp.zeros((), jnp.int32)
        return jax.lax.fori_loop(0, num_scans, body, (state, params, stats0, z, z, z))

    def sample(key, state: PTState, params: PTParams, num_samples: int):
        def body(c, t):
            st, n_lp, n_grad, n_bad = c
            st, _, ell, acc, rej, dl, dg, db = scan_once(jax.random.fold_in(key, t), st, params, t % 2)
            return (st, n_lp + dl, n_grad + dg, n_bad + db), (st.position[-1], st.lp_tgt[-1], ell, acc, rej)

        z = jnp.zeros((), jnp.int32)
        (state, n_lp, n_grad, n_bad), (draws, lp, ell, acc, rej) = jax.lax.scan(
            body, (state, z, z, z), jnp.arange(num_samples))
        return state, draws, lp, ell, acc, rej, n_lp, n_grad, n_bad

    return init, scan_round, sample


def update_params(params: PTParams, stats: RoundStats, adapt_schedule: bool = True, update_metric=True):
    """After a tuning round: equalized schedule (if ``adapt_schedule``) and regularized per-replica variances.

    ``update_metric=False`` keeps the mass matrices (after the last round, whose
    step sizes were adapted to them).

    Returns ``(params, Lambda_hat, rejection_rates)``.
    """
    n = stats.count
    rej = stats.rejection / jnp.maximum(n, 1.0)
    if adapt_schedule:
        betas, lam = equalize_schedule(params.betas, rej)
    else:
        betas, lam = params.betas, jnp.sum(rej)
    mean = stats.sum_x / jnp.maximum(n, 1.0)
    var = jnp.maximum(stats.sum_x2 / jnp.maximum(n, 1.0) - mean**2, 0.0) * n / jnp.maximum(n - 1.0, 1.0)
    var = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
    var = jnp.where(jnp.isfinite(var) & (n >= 10) & update_metric, var, params.inverse_mass_matrix)
    return PTParams(betas, params.log_step_size, var), lam, rej


def stepping_stone(betas: jax.Array, ell: jax.Array, num_batches: int):
    """Stepping-stone ``log Z`` and its batch-means delta-method standard error from ``ell [T, K]`` (see module doc).

    Returns ``(log_Z, se)``; ``T`` is truncated to a multiple of ``num_batches``.
    """
    t = ell.shape[0]
    b = int(num_batches)
    tb = (t // b) * b
    lw = (betas[1:] - betas[:-1])[None, :] * ell[:tb, :-1]           # [T, K-1]
    lw = jnp.where(jnp.isnan(lw), -jnp.inf, lw)
    m = jnp.max(lw, axis=0)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    w = jnp.exp(lw - m)                                                 # [T, K-1]
    wbar = jnp.mean(w, axis=0)
    log_z = jnp.sum(jnp.log(wbar) + m)
    wb = jnp.mean(w.reshape(b, tb // b, -1), axis=1)                   # [B, K-1]
    s = jnp.sum(wb / wbar, axis=1)
    se = jnp.sqrt(jnp.var(s, ddof=1) / b)
    return log_z, se


def round_lengths(num_warmup: int, first: int = 16) -> list[int]:
    """Tuning-round lengths ``first, 2 first, 4 first, ...`` summing to ``num_warmup`` (last round takes the rest)."""
    out, left, n = [], int(num_warmup), int(first)
    while left > 0:
        take = n if left - n >= n else left  # a remainder shorter than the next round joins this one
        out.append(take)
        left -= take
        n *= 2
    return out


class PTRunOutput(NamedTuple):
    """One parallel-tempering run (:func:`run_one`): the ``beta = 1`` draws, the tuned parameters and ``log Z``."""

    draws: jax.Array                 # [T, d] states of the beta = 1 replica, one per sampling scan
    lp: jax.Array                    # [T] their target log-densities
    acceptance: jax.Array            # [T, K] local-move acceptance per slot
    swap_rejection: jax.Array        # [T, K-1] swap rejection probabilities 1 - alpha_k
    params: PTParams                 # the frozen tuned parameters
    log_Z: jax.Array                 # stepping-stone estimate
    log_Z_se: jax.Array              # its batch-means standard error
    round_trips: jax.Array           # round trips completed while sampling
    num_logdensity_evals: jax.Array  # every evaluation, tuning and sampling
    num_grad_evals: jax.Array
    barrier_history: jax.Array       # [num_rounds] estimated barrier Lambda after each tuning round
    round_trips_history: jax.Array   # [num_rounds] round trips counted at the end of each tuning round
    num_nonfinite: jax.Array         # non-finite evaluations, tuning and sampling (see :func:`build`)
    num_initial_nonfinite: jax.Array  # of them, among the K initial replicas (K: nothing finite to start from)


def run_one(key, logdensity_fn: Callable, reference: GaussianReference, config: PTConfig, *, num_warmup: int,
            num_samples: int, schedule_power: float = 4.0, step_size: float | None = None, x_init=None,
            progress: Callable | None = None, run_id=0) -> PTRunOutput:
    """One complete parallel-tempering run: initialization, tuning rounds, sampling scans, stepping-stone ``log Z``.

    - **init**: every replica at ``x_init [K, d]`` if given, else exact draws from
      ``reference`` (key ``fold_in(key, 0)``);
    - **tuning**: the rounds :func:`round_lengths` ``(num_warmup)`` of doubling
      length run inside the program (``lax.scan`` over rounds, each round a
      traced number of scans: one compilation), starting from the schedule
      :func:`initial_schedule` ``(K, schedule_power)``, the step size
      ``step_size`` (None: :func:`samplax.smc.mutation.initial_step_size`) for
      every replica and the inverse mass matrices ``min(reference.scale^2, 1)``;
      after each round :func:`update_params` (the last round keeps the mass
      matrices its step sizes were tuned to); round ``j`` uses key
      ``fold_in(key, 100 + j)``;
    - **sampling**: ``num_samples`` scans with the parameters frozen (key
      ``fold_in(key, 1)``), one draw of the ``beta = 1`` replica per scan;
    - **log Z**: :func:`stepping_stone` with ``config.num_batches`` batches.

    ``progress(run_id, num_rounds, Lambda, round trips)`` (a host function, through
    ``jax.debug.callback``) is called once the tuning rounds are over (not after each
    round: a callback inside the rounds' loop changed the draws).  Vectorize over
    independent runs outside.
    """
    k = config.num_temperatures
    d = reference.mean.shape[0]
    dtype = jnp.result_type(float)
    eps0 = step_size or mutation.initial_step_size(config.kernel, d)
    lengths = round_lengths(num_warmup)
    num_rounds = len(lengths)
    rounds = (jnp.arange(num_rounds, dtype=jnp.int32), jnp.asarray(lengths, jnp.int32),
              jnp.arange(num_rounds) < num_rounds - 1)
    n_init_grad = k if mutation.is_gradient_based(config.kernel) else 0

    init_fn, round_fn, sample_fn = build(logdensity_fn, reference, config)
    state = init_fn(jax.random.fold_in(key, 0)) if x_init is None else init_fn(key, x_init)
    n_bad0 = count_nonfinite(state.lp_tgt, state.grad_tgt if n_init_grad else None)
    params = PTParams(initial_schedule(k, schedule_power, dtype), jnp.full((k,), np.log(eps0), dtype),
                      jnp.ones((k, d), dtype) * jnp.minimum(reference.scale**2, 1.0))

    def one_round(carry, xs):
        state, params, n_lp, n_grad, n_bad = carry
        j, n_scans, not_last = xs
        state, params, stats, dl, dg, db = round_fn(jax.random.fold_in(key, 100 + j), state, params, n_scans,
                                                jnp.asarray(True))
        # the last round's step sizes were tuned to the current mass matrices: keep them
        params, lam, rej = update_params(params, stats, config.adapt_schedule, not_last)
        return (state, params, n_lp + dl, n_grad + dg, n_bad + db), (lam, state.round_trips)

    z = jnp.zeros((), jnp.int32)
    (state, params, n_lp, n_grad, n_bad), (lams, trips_hist) = jax.lax.scan(
        one_round, (state, params, z + k, z + n_init_grad, n_bad0), rounds)
    if progress is not None:  # after the tuning rounds, not inside them: a host callback inside the rounds'
        # loop changes how XLA compiles it, and the draws then depend on whether progress is shown
        jax.debug.callback(progress, run_id, num_rounds, lams[-1], trips_hist[-1])
    trips_before = state.round_trips
    state, draws, lp_draws, ell, acc, rej, dl, dg, db = sample_fn(jax.random.fold_in(key, 1), state, params,
                                                                  num_samples)
    log_z, se = stepping_stone(params.betas, ell, config.num_batches)
    return PTRunOutput(draws, lp_draws, acc, rej, params, log_z, se, state.round_trips - trips_before, n_lp + dl,
                       n_grad + dg, lams, trips_hist, n_bad + db, n_bad0)
