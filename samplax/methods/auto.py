"""``method="auto"`` and the draws+gradients adaptation variants.

Registered here:

- ``nuts_fisher``: NUTS with Stan's windowed warm-up whose mass matrix is the
  Fisher-divergence diagonal ``sqrt(Var x / Var grad)`` (Tran & Kleppe 2024;
  nutpie) instead of the Welford variance.
- ``nuts_lowrank``: the same with nutpie's low-rank + diagonal metric.
- ``chees_hmc``: jittered HMC whose trajectory length is tuned by ChEES over all
  chains together (Hoffman, Radul & Sountsov 2021); see
  :mod:`samplax.adaptation.chees`.
- ``auto``: the default choice for a differentiable target, described in
  :func:`auto_runner`.

The rule ``auto`` uses to stop warm-up (documented here and in the option docs):
warm-up runs in chunks of ``check_every`` steps (one compiled chunk program
that is reused for warm-up and for sampling); during the first 100 steps the
chunks are shorter (``check_every // 2`` rounded down to a multiple of 10, at
least 10: 20 steps by default).  After each chunk, once at least
``min_warmup`` adaptation steps are done, the host compares the chunk with the
previous one and stops adapting when all three hold:

1. mass matrix settled: for every chain, the root-mean-square over coordinates
   of ``log(C_now / C_prev)`` is below ``mass_tol`` (diagonal ``C``);
2. step size settled: the root-mean-square over chains of ``log(e_now / e_prev)``
   is below ``step_tol``,
   ``e`` being the dual-averaging average ``exp(log e_bar)`` of the chunk (the
   windows switch, and dual averaging restarts, at chunk ends);
3. chains agree (:func:`samplax.adaptation.auto_rules.rhat_check`): the
   rank-normalized split R-hat of the log-density, and the median over
   coordinates of the coordinates' R-hats, over the chunk's draws (all chains)
   are below ``rhat_tol`` (the median, not the max, because the
   max over many coordinates of R-hats from 50-draw chunks exceeds 1.1 by
   chance; the full run's R-hat warning still checks every coordinate).

Low-rank metric (from the first chunk on): after every chunk that does not
stop warm-up, the low-rank + diagonal Fisher metric of the last two chunks'
draws and gradients (nutpie's low-rank mass matrix;
:func:`samplax.adaptation.auto_rules.pooled_low_rank`) is estimated, each
chain's draws and gradients centred on that chain's own means and then pooled
(the Fisher estimate reads the covariance off the relation between draws and
gradients, which holds within each chain, exactly for a Gaussian, before the
chains agree on where the mass is).  It replaces the per-chain diagonal as soon
as some direction's scale differs from the diagonal's by more than
``low_rank_cutoff`` (a second compiled chunk program, of structural rank the
estimate's own rounded up to a power of two, but at least ``min(d, max_rank,
8)``) and is re-estimated after every later chunk with that rank fixed
(directions that no longer pass get ``l = 1``; at most ``rank`` directions, the
furthest from 1, are kept).  After the checks pass,
and when the chains roughly agree (R-hat below 1.5), the metric is estimated
once more from the latest draws.  (Before: the diagonal was kept for the first
``min_warmup`` steps and replaced once, at a failed check; on correlated
regressions those diagonal steps cost 140-230 leapfrog steps each.)

Step size: per chain, dual averaging on the acceptance statistic, restarted
at the running adaptation's window switches during the first 100 steps only;
from step 100 to the end of warm-up one dual averaging runs on (no restart at
later switches nor for the terminal window), so its gain keeps falling and
its iterates spread less.  Once the pooled low-rank metric is in use past step
100, all chains share one step size (the median chain's dual averaging from
then on), adapted on the chains' mean acceptance statistic, which has a
quarter of one chain's variance with 4 chains.  Sampling uses the dual
averaging average ``exp(log e_bar)``.  (Before: dual averaging restarted every
``check_every`` steps and for the terminal window, and its average after
those short runs sat well below the target's step size: acceptance 0.89-0.91
against the 0.8 target.)

A chain whose log-density is more than ``max(1000, 100 d)`` below the better
half's or whose step size collapsed (``< 1e-8`` of theirs) is restarted from a
healthy chain's state during warm-up
(:func:`samplax.adaptation.auto_rules.stuck_chains`; e.g. a Stan-style initial
point with a finite log-density of -1e111).

Then one final window of ``terminal_steps`` adapts the step size only (dual
averaging goes on, see above) and sampling starts.

Divergences.  Some posteriors diverge only in a region the chains reach after
warm-up (gp_pois_regr: 0-1 divergent transitions per 200 in late warm-up, then
5 % of the sampling transitions, concentrated where the GP's length scale is
small).  While sampling, once at least ``DIVERGENCE_MIN`` transitions and at least
``DIVERGENCE_RATE`` of those so far have diverged, the draws so far become warm-up
(their gradients stay counted), ``target_accept`` moves a quarter of the way left
to 1 (0.8 -> 0.95 -> 0.9875), dual averaging restarts at the current step size
for a ``terminal_steps`` window with the new target, and sampling starts over;
at most ``MAX_TARGET_ACCEPT_RAISES`` times.  This is the remedy a user applies by
hand in Stan or PyMC, taken automatically; it is a warm-up decision (the kept
draws all come from one fixed kernel), so it changes no stationary
distribution.  ``Result.extra["target_accept_raised"]`` lists each raise.

Fallback.  Some geometries defeat NUTS at any one step size: in Neal's funnel the
scale of ``x_1..9`` changes by ``e^9`` along ``v``, and every NUTS (this one,
Stan's, BlackJAX's, nutpie's) reports sd(v) of 2.1-2.4 against 3.  After
sampling, :func:`samplax.adaptation.auto_rules.geometry_fallback_reason` reads
the draws' E-BFMI and divergences; when they show such a geometry (and ``d <=
FALLBACK_MAX_DIM``), NUTS's draws are replaced by coordinate-wise slice
sampling (Neal 2003, sec. 4.1; :mod:`samplax.mcmc.coordinate_slice`), which
adapts to the local scale in every univariate update: from the chains' last
states, whitened by the mean and sd of NUTS's draws, ``FALLBACK_BURN_IN`` draws
dropped, ``fallback_thinning`` sweeps per kept draw.  Its log-density
evaluations are counted (``num_logdensity_evals`` exceeds ``num_grad_evals`` by
them), ``Result.extra["fallback"]`` says why and at what cost, and an
``auto_fallback`` warning says that it happened.  When NUTS's divergences cluster
in one region (:func:`samplax.postprocess.divergence_concentration`, computed on
NUTS's draws before they are replaced), a ``divergence_concentration`` warning
names it, since a reparameterization there would let NUTS in at a fraction of
the fallback's cost.  With ``keep_warmup=True`` NUTS's
kept draws are appended to the warm-up draws (``extra["warmup_steps"]`` still counts
NUTS's warm-up steps only).  ``fallback=False`` turns it off (then an
``auto_geometry`` warning names the reason).  ``num_warmup`` is the most warm-up steps ``auto`` may take;
when the criteria never hold, it takes them all and warns.
"""
from __future__ import annotations

import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.adaptation.auto_rules import geometry_fallback_reason, pooled_low_rank, rhat_check, stuck_chains
from samplax.adaptation.fisher import (
    RunningFisherState, fisher_window_adapter, running_init, running_prepare, running_update,
)
from samplax.adaptation.step_size import da_init, find_reasonable_step_size
from samplax.mcmc import integrators
import importlib  # noqa: E402
nuts_m = importlib.import_module("samplax.mcmc.nuts")
cs_m = importlib.import_module("samplax.mcmc.coordinate_slice")  # trapezoidal U-turn criterion lives in metrics.is_turning
from samplax.methods import Algorithm, MethodSpec, Option, register_method
from samplax.core.cost import make_cost
from samplax.core.options import boolean, one_of, pos_int, pos_number, pos_number_or_none, prob
from samplax.postprocess import (
    EBFMI_MIN, ESS_PER_CHAIN_MIN, concentration_warning, divergence_concentration, finish_result, is_noncentred,
    nonfinite_warmup_warning, quantities_of, quantity_names,
)
from samplax.run import (
    PROGRAMS, Progress, check_user_init, find_initial_points, program_key, search_evaluations, target_id,
)


def _nuts_options():
    return {
        "max_tree_depth": Option(10, "maximum tree depth (2^depth leapfrog steps)",
                                 lambda v: pos_int(v) and v <= 30, "an int in [1, 30]"),
        "divergence_threshold": Option(1000.0, "energy error that counts as a divergence", pos_number,
                                       "a positive number"),
        "integrator": Option("velocity_verlet", "symplectic integrator", one_of(integrators.INTEGRATORS),
                             f"one of {sorted(integrators.INTEGRATORS)}"),
    }


def _nuts_stats(state, info, params):
    return {"acceptance_rate": info.acceptance_rate, "step_size": params.step_size, "lp": state.logdensity,
            "nonfinite": info.is_nonfinite, "diverging": info.is_divergent, "energy": info.energy,
            "n_steps": info.num_integration_steps, "tree_depth": info.tree_depth}


# --------------------------------------------------------------------------- nuts_fisher / nuts_lowrank


def _build_nuts_metric(metric):
    def build(logdensity_fn, dim, num_warmup, num_chains, **o):
        def init(key, position):
            return nuts_m.init(key, position, logdensity_fn)

        step = nuts_m.build_kernel(logdensity_fn, o["max_tree_depth"], o["divergence_threshold"], o["integrator"])
        adapter = fisher_window_adapter(
            logdensity_fn, nuts_m.NUTSParams, dim, num_warmup, target_accept=o["target_accept"], metric=metric,
            rank=o.get("rank", 1), pooled=o["pooled_adaptation"], initial_step_size=o["step_size"],
            num_chains=num_chains)
        return Algorithm(init, step, adapter, _nuts_stats)

    return build


def _fisher_options(target_accept=0.8):
    return {
        "target_accept": Option(target_accept, "target acceptance statistic for dual averaging", prob,
                                "a number in (0, 1)"),
        "step_size": Option(None, "initial step size (None: Stan's heuristic)",
                            pos_number_or_none, "a positive number or None"),
        "pooled_adaptation": Option(False, "share step size and mass matrix across chains",
                                    boolean, "True/False"),
        **_nuts_options(),
    }


register_method(MethodSpec(
    "nuts_fisher", _build_nuts_metric("diag"),
    "NUTS, Stan windows, Fisher-divergence diagonal mass matrix sqrt(Var x / Var grad) "
    "(Tran & Kleppe 2024; nutpie)", _fisher_options()))
register_method(MethodSpec(
    "nuts_lowrank", _build_nuts_metric("low_rank"),
    "NUTS, Stan windows, nutpie's low-rank + diagonal mass matrix from draws and gradients",
    {**_fisher_options(),
     "rank": Option(10, "most eigen-directions of the low-rank correction", pos_int, "an int >= 1")}))


# --------------------------------------------------------------------------- chees_hmc


def _build_chees(logdensity_fn, dim, num_warmup, num_chains, **o):
    from samplax.adaptation import chees

    if num_chains < 2:
        raise ValueError("method 'chees_hmc' adapts over all chains together: num_chains must be >= 2")

    def init(key, position):
        return chees.init(key, position, logdensity_fn)

    step = chees.build_kernel(logdensity_fn, o["integrator"], o["divergence_threshold"], o["max_num_steps"])
    adapter = chees.chees_adapter(
        logdensity_fn, dim, num_warmup, num_chains, target_accept=o["target_accept"],
        learning_rate=o["learning_rate"], adapt_mass_matrix=o["adapt_mass_matrix"],
        initial_step_size=o["step_size"], initial_trajectory_length=o["trajectory_length"],
        max_num_steps=o["max_num_steps"])

    def stats(state, info, params):
        return {"acceptance_rate": info.acceptance_rate, "step_size": params.step_size, "lp": state.logdensity,
                "nonfinite": info.is_nonfinite, "diverging": info.is_divergent, "energy": info.energy,
                "n_steps": info.num_integration_steps, "trajectory_length": params.trajectory_length}

    return Algorithm(init, step, adapter, stats)


register_method(MethodSpec(
    "chees_hmc", _build_chees,
    "Jittered HMC, trajectory length by ChEES (Adam on log T) over all chains, step size by dual averaging "
    "on the harmonic-mean acceptance (Hoffman, Radul & Sountsov 2021)",
    {"target_accept": Option(0.651, "target harmonic-mean acceptance probability", prob, "a number in (0, 1)"),
     "learning_rate": Option(0.025, "Adam learning rate on log trajectory length", pos_number, "a positive number"),
     "adapt_mass_matrix": Option(True, "pooled Fisher-diagonal mass matrix in Stan's slow windows",
                                 boolean, "True/False"),
     "step_size": Option(None, "initial step size (None: Stan's heuristic, median over chains)",
                         pos_number_or_none, "a positive number or None"),
     "trajectory_length": Option(None, "initial trajectory length (None: one step)",
                                 pos_number_or_none, "a positive number or None"),
     "max_num_steps": Option(1000, "most leapfrog steps per transition", pos_int, "an int >= 1"),
     "divergence_threshold": Option(1000.0, "energy error that counts as a divergence", pos_number,
                                    "a positive number"),
     "integrator": Option("velocity_verlet", "symplectic integrator", one_of(integrators.INTEGRATORS),
                          f"one of {sorted(integrators.INTEGRATORS)}")},
    family="mcmc"))


# --------------------------------------------------------------------------- auto


def _auto_options():
    return {
        "target_accept": Option(0.8, "target acceptance statistic for dual averaging", prob, "a number in (0, 1)"),
        "check_every": Option(50, "warm-up steps per chunk (and late window-switch period); convergence is "
                              "checked after each chunk", lambda v: pos_int(v) and v >= 10 and 100 % v == 0,
                              "an int >= 10 that divides 100"),
        "min_warmup": Option(150, "adaptation steps before the first convergence check", pos_int, "an int >= 1"),
        "terminal_steps": Option(50, "final step-size-only warm-up window", pos_int, "an int >= 1"),
        "mass_tol": Option(0.3, "stop when RMS log change of the diagonal metric over a chunk is below this",
                           pos_number, "a positive number"),
        "step_tol": Option(0.15, "stop when the RMS over chains of the log change of the step size over a chunk "
                           "is below this", pos_number,
                           "a positive number"),
        "low_rank": Option(True, "from the first warm-up chunk on, switch to nutpie's low-rank + diagonal "
                           "Fisher metric estimated from the last warm-up draws and gradients of all chains (each "
                           "centred on its own means) when some direction's scale differs from the diagonal's by "
                           "more than low_rank_cutoff, re-estimated after every chunk",
                           boolean, "True/False"),
        "max_rank": Option(32, "most eigen-directions of the low-rank correction", pos_int, "an int >= 1"),
        "low_rank_cutoff": Option(2.0, "keep eigen-directions with max(l, 1/l) above this", 
                                  lambda v: pos_number(v) and v > 1.0, "a number > 1"),
        "fallback": Option(True, "when NUTS's draws show a geometry it cannot handle (low E-BFMI, or divergences "
                           "that raising target_accept did not remove), replace them by coordinate-wise slice "
                           "sampling (d <= 100)", boolean, "True/False"),
        "fallback_thinning": Option(5, "coordinate-wise slice sweeps per kept draw in the fallback", pos_int,
                                    "an int >= 1"),
        "rhat_tol": Option(1.1, "stop when the chunk's split R-hat (all coordinates, lp) is below this",
                           lambda v: pos_number(v) and v > 1.0, "a number > 1"),
        **_nuts_options(),
    }


#: sampling chunks queued ahead of the host copy (asynchronous dispatch)
MAX_IN_FLIGHT = 3

#: the final low-rank estimate is made only when the chains roughly agree
LOW_RANK_RHAT = 1.5

#: smallest structural rank of the low-rank metric (when d and max_rank allow): one compiled program
LOW_RANK_MIN_K = 8

#: warm-up steps run in shorter chunks (the early window-switch phase of the running adaptation)
EARLY_STEPS = 100

#: sampling that diverges this often (count and fraction of transitions so far) restarts with a higher
#: target_accept (a quarter of the way left to 1), at most this many times (0.8 -> 0.95 -> 0.9875)
DIVERGENCE_MIN = 4
DIVERGENCE_RATE = 1e-3
MAX_TARGET_ACCEPT_RAISES = 2

#: the coordinate-wise slice fallback (samplax.mcmc.coordinate_slice): most dimensions (a sweep costs d
#: log-density evaluations of O(d) each, times the shrinkage), burn-in in draws, key stream
FALLBACK_MAX_DIM = 100
FALLBACK_BURN_IN = 100
FALLBACK_STREAM = 7919


def run_coordinate_slice(target, positions, key, center, scale, num_samples, thin, burn_in, chunk, bar, done):
    """The fallback of ``auto``: coordinate-wise slice sampling (:mod:`samplax.mcmc.coordinate_slice`) from
    ``positions [C, d]``, whitening ``(center, scale)``, ``burn_in`` sweeps dropped, then ``num_samples`` draws of
    ``thin`` sweeps each.  Chain ``c``'s sweep ``i`` uses ``fold_in(fold_in(key, c), i)``.  Returns the draws
    ``[C, n, d]``, their stats, the log-density evaluations (initial ones included) and the compile cost."""
    dyn, static = eqx.partition(target, eqx.is_array)
    dtype = positions.dtype
    c_ids = jnp.arange(positions.shape[0])
    params = cs_m.CoordinateSliceParams(jnp.asarray(center, dtype), jnp.asarray(scale, dtype), jnp.asarray(2.0, dtype))

    def chunk_fn(tgt, states, start, n_active):
        lp = eqx.combine(tgt, static).flat_logdensity()
        step = cs_m.build_kernel(lp)

        def draw(states, j):
            def sweep(k, carry):
                st, ev, bad = carry
                i = (start + j) * thin + k
                keys = jax.vmap(lambda c: jax.random.fold_in(jax.random.fold_in(key, c), i))(c_ids)
                st, info = jax.vmap(lambda kk, s: step(kk, s, params))(keys, st)
                return st, ev + info.num_logdensity_evals, bad | info.is_nonfinite

            z = jnp.zeros(c_ids.shape, jnp.int32)
            st, ev, bad = jax.lax.fori_loop(0, thin, sweep, (states, z, jnp.zeros(c_ids.shape, bool)))
            return st, (st.position, st.logdensity, ev, bad)

        def one(states, j):
            shapes = jax.eval_shape(draw, states, j)[1]
            skip = lambda s, j: (s, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))  # noqa: E731
            return jax.lax.cond(j < n_active, draw, skip, states, j)

        return jax.lax.scan(one, states, jnp.arange(chunk, dtype=jnp.int32))

    def init_fn(tgt, x):
        lp = eqx.combine(tgt, static).flat_logdensity()
        return jax.vmap(lambda p: cs_m.init(None, p, lp))(x)

    t0 = time.perf_counter()
    states = jax.jit(init_fn)(dyn, positions)
    prog = jax.jit(chunk_fn).lower(dyn, states, jnp.asarray(0, jnp.int32), jnp.asarray(chunk, jnp.int32)).compile()
    compile_seconds = time.perf_counter() - t0
    n_lp = int(positions.shape[0])
    n_burn = -(-burn_in // thin)  # burn-in in whole draws of thin sweeps
    total = n_burn + num_samples
    bar.retotal(done + total, done)
    pos, lps, evs, bads = [], [], [], []
    i = 0
    while i < total:
        n = min(chunk, total - i)
        states, (p, lp_, ev, bad) = prog(dyn, states, jnp.asarray(i, jnp.int32), jnp.asarray(n, jnp.int32))
        p, lp_, ev, bad = (np.asarray(a)[:n] for a in (p, lp_, ev, bad))
        n_lp += int(ev.sum())
        keep = np.arange(i, i + n) >= n_burn
        pos.append(p[keep])
        lps.append(lp_[keep])
        evs.append(ev[keep])
        bads.append(bad[keep])
        i += n
        bar.update(done + i)
    sw = lambda parts: np.swapaxes(np.concatenate(parts), 0, 1)  # noqa: E731
    stats = {"acceptance_rate": np.ones_like(sw(lps)), "lp": sw(lps), "n_steps": sw(evs), "nonfinite": sw(bads)}
    return {"samples": sw(pos), "stats": stats, "num_logdensity_evals": n_lp, "compile_seconds": compile_seconds,
            "num_compilations": 2}


def auto_runner(target, spec, *, keys, seed_id, num_chains, num_warmup, num_samples, init, progress,
                thinning=1, devices=None, keep_warmup=False, **o):
    """``method="auto"``: NUTS with running Fisher adaptation (diagonal, then low-rank) and early-stopped warm-up.

    Sampler: multinomial NUTS (Hoffman & Gelman 2014; Betancourt 2017).
    Adaptation per chain (nutpie-style): dual averaging of the step size on the
    acceptance statistic (target ``target_accept``; one shared step size on the
    chains' mean statistic once the pooled low-rank metric is in use past step
    100); the diagonal inverse mass
    matrix is ``sqrt(Var x / Var grad)`` (Tran & Kleppe 2024) over two
    overlapping windows of draws and gradients, refreshed every step, windows
    switching every 10 steps during the first 100 and every 50 after.  Warm-up
    stops by the rule in :mod:`samplax.methods.auto`, which also switches to the
    pooled low-rank + diagonal metric (Seyboldt's nutpie; Tran & Kleppe 2024 for
    the diagonal) on targets with correlations and restarts stuck chains; every
    gradient is counted (the initial-point search, the initial step-size search, all
    warm-up and sampling steps; a chunk's steps past the run's end are skipped, not
    computed).  Sampling that diverges restarts with a higher ``target_accept`` (module docstring).
    Non-finite proposals in warm-up give a ``nonfinite_warmup`` warning.  ``Result.extra`` records the checks, the metric kind, the low-rank
    estimate's eigenvalues and any restarts.  ``keep_warmup``: the warm-up draws (every ``thinning``-th
    step of the warm-up actually run, restarted chains as they were) are returned too.
    """
    if devices not in (None, 1):
        raise ValueError("sample: method 'auto' pools its chains' draws on the host during warm-up and runs on "
                         "one device; use devices=None or 1 (or method='nuts_fisher', which shards)")
    K = int(o["check_every"])
    term = int(min(o["terminal_steps"], max(num_warmup // 4, 0)))
    max_adapt = num_warmup - term
    min_adapt = int(o["min_warmup"])
    dtype = jnp.result_type(float)
    d = target.dim

    k_init, k_run, k_adapt = keys.init, keys.run, keys.adapt
    if init is None:
        x0, attempts = find_initial_points(target, k_init, num_chains, True, dtype)
        n_start = search_evaluations(attempts)
    else:
        x0 = check_user_init(target, init, num_chains, True, dtype)
        n_start = num_chains

    dyn_target, static_target = eqx.partition(target, eqx.is_array)
    chain_ids = jnp.arange(num_chains)

    def kernel(tgt):
        lp = eqx.combine(tgt, static_target).flat_logdensity()
        return lp, nuts_m.build_kernel(lp, o["max_tree_depth"], o["divergence_threshold"], o["integrator"])

    def init_all(tgt, x0, k_adapt):
        lp, _ = kernel(tgt)

        def one(c, x):
            st = nuts_m.init(None, x, lp)
            eps, n = find_reasonable_step_size(jax.random.fold_in(k_adapt, c), lp, x, jnp.ones_like(x), 1.0)
            return st, running_init(eps, st.position, st.logdensity_grad), n

        return jax.vmap(one)(chain_ids, x0)

    def run_chunk(tgt, carry, start, phase, n_active, k_run, metric, target_accept):
        """``metric``: None (per-chain running diagonal) or a pooled LowRankMetric (structural);
        ``target_accept``: the acceptance target of dual averaging (an array: raising it compiles nothing)."""
        _, step = kernel(tgt)
        chain_keys = jax.vmap(lambda c: jax.random.fold_in(k_run, c))(chain_ids)
        # the pooled metric, one copy per chain (once per chunk, not per step)
        metric_c = None if metric is None else jax.tree.map(
            lambda a: jnp.broadcast_to(a, (num_chains,) + a.shape), metric)

        def adapt(rs_p, info, new_states, i):
            acc = info.acceptance_rate
            if metric is not None:
                # one pooled metric after the early phase: one step size, adapted on the chains' mean
                # acceptance statistic (the host gives all chains the same step size at step EARLY_STEPS)
                pooled = jnp.broadcast_to(jnp.mean(jnp.where(jnp.isfinite(acc), acc, 0.0)), acc.shape)
                acc = jnp.where(i >= EARLY_STEPS, pooled, acc)
            return jax.vmap(lambda r, a, x, g: running_update(r, a, x, g, target_accept, late_interval=K,
                                                                restart_until=EARLY_STEPS))(
                rs_p, acc, new_states.position, new_states.logdensity_grad)

        def advance(carry, j):
            states, rs = carry
            i = start + j
            rs_p = jax.vmap(lambda r: running_prepare(r, phase, restart_terminal=False))(rs)
            keys = jax.vmap(lambda kc: jax.random.fold_in(kc, i))(chain_keys)
            imm = rs_p.inverse_mass_matrix if metric is None else metric_c
            params = nuts_m.NUTSParams(rs_p.step_size, imm)
            new_states, info = jax.vmap(step)(keys, states, params)
            # sampling (phase 2) freezes the adaptation: skip its work
            rs_n = jax.lax.cond(phase == 2, lambda *a: rs_p, adapt, rs_p, info, new_states, i)
            stats = _nuts_stats(new_states, info, params)
            return (new_states, rs_n), (new_states.position, new_states.logdensity_grad, stats,
                                        jnp.broadcast_to(info.num_grad_evals, (num_chains,)))

        def one(carry, j):
            # a chunk shorter than K skips its last steps (a real branch: j is the same for every
            # chain), so nothing is computed for them
            shapes = jax.eval_shape(advance, carry, j)[1]
            skip = lambda carry, j: (carry, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))  # noqa: E731
            return jax.lax.cond(j < n_active, advance, skip, carry, j)

        carry, (pos, grads, stats, ng) = jax.lax.scan(one, carry, jnp.arange(K, dtype=jnp.int32))
        return carry, pos, grads, stats, jnp.sum(ng)

    cache_key = program_key(spec.name, id(auto_runner), o, static_target, dyn_target, num_chains, K, dtype)
    cached = PROGRAMS.get(cache_key)
    # num_warmup is the most warm-up there can be: the line's total shrinks when warm-up stops early
    bar = Progress(progress, num_warmup + num_samples * thinning, num_warmup, f"auto/{target.name}")
    if cached is None:
        bar.compiling()  # the init program compiles on its first call, the chunk program in get_compiled
    init_jit = cached[0] if cached is not None else jax.jit(init_all)
    states, rs, n_init = init_jit(dyn_target, x0, k_adapt)
    carry = (states, rs)
    i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    num_compilations = 0
    compile_seconds = 0.0

    programs = {}  # this run's chunk programs by structural rank (None: diagonal)
    target_accept = jnp.asarray(o["target_accept"], dtype)  # raised when sampling diverges (below)

    def get_compiled(metric):
        """The chunk program for the diagonal (``metric`` None) or a low-rank metric of its rank (cached)."""
        nonlocal num_compilations, compile_seconds
        k = None if metric is None else int(metric.values.shape[0])
        if k in programs:
            return programs[k]
        ck = None if cache_key is None else cache_key + (k,)
        hit = PROGRAMS.get(ck)
        if hit is not None:
            programs[k] = hit[1]
            return hit[1]
        t0 = time.perf_counter()
        bar.compiling(None if k is None else f"the low-rank metric's program (rank {k})")
        c = jax.jit(run_chunk).lower(dyn_target, carry, i32(0), i32(0), i32(K), k_run, metric,
                                     target_accept).compile()
        compile_seconds += time.perf_counter() - t0
        bar.compiled()
        num_compilations += 1
        programs[k] = c
        PROGRAMS.put(ck, (init_jit, c))
        return c

    if cached is None:
        PROGRAMS.put(cache_key, (init_jit, None))
    compiled = get_compiled(None)
    bar.compiled()  # the init program alone (cache hit of the chunk program); nothing when nothing compiled
    if cached is not None and num_compilations == 0:
        bar.reused()
    metric = None

    # the initial-point search (or the check of the user's init), each chain's init, the step-size search
    n_grad = n_start + int(num_chains) + int(np.sum(n_init))
    n_nonfinite_warmup = 0
    run_seconds = 0.0
    step_i = 0
    bar.start(0)

    def launch(phase, n):
        nonlocal carry, step_i
        out = compiled(dyn_target, carry, i32(step_i), i32(phase), i32(n), k_run, metric, target_accept)
        carry = out[0]
        step_i += n
        return out, n

    def collect(launched):
        nonlocal n_grad
        (_, pos, grads, stats, ng), n = launched
        pos = np.asarray(pos)[:n]
        grads = None if grads is None else np.asarray(grads)[:n]
        stats = {k: np.asarray(v)[:n] for k, v in stats.items()}
        n_grad += int(ng)
        return pos, grads, stats

    warm_kept = []  # (positions, stats) of the kept warm-up steps, keep_warmup only

    def go(phase, n):
        """Warm-up chunk of ``n`` steps (phase 0: adapting, 1: terminal window)."""
        nonlocal run_seconds, n_nonfinite_warmup
        first = step_i
        ts = time.perf_counter()
        out = collect(launch(phase, n))
        run_seconds += time.perf_counter() - ts
        n_nonfinite_warmup += int(np.sum(out[2]["nonfinite"]))
        if keep_warmup:
            sel = (first + np.arange(n)) % thinning == 0
            warm_kept.append((out[0][sel], {k: v[sel] for k, v in out[2].items()}))
        return out

    # ---------------------------------------------------------------- warm-up
    adapt_done = 0
    prev = None
    converged = False
    history = []
    recent = []  # (positions, gradients) of the latest chunks, for the low-rank metric
    resets = []
    use_low_rank = bool(o["low_rank"]) and d >= 2
    shared_step = False  # all chains on one step size (pooled metric, past the early phase)
    switched_at = None  # warm-up step after which the low-rank metric replaced the diagonal
    low_rank_info = {}

    def low_rank_from(chunks, rank=None):
        # each chain's draws and gradients centred on that chain's own means, then pooled: the Fisher
        # estimate reads the covariance off the relation between draws and gradients, which holds
        # within every chain (exactly for a Gaussian) even before the chains agree on where the mass is
        xs = np.concatenate([p for p, _ in chunks])  # [n, C, d]
        gs = np.concatenate([g for _, g in chunks])
        with np.errstate(all="ignore"):
            xs = (xs - np.nanmean(xs, axis=0)).reshape(-1, d)
            gs = (gs - np.nanmean(gs, axis=0)).reshape(-1, d)
        return pooled_low_rank(xs, gs, int(o["max_rank"]), float(o["low_rank_cutoff"]), rank=rank)

    def refresh_low_rank():
        """(Re-)estimate the low-rank metric from the latest chunks.

        The structural rank is chosen once, at the switch: the estimate's own (a power of two), but at
        least ``min(d, max_rank, LOW_RANK_MIN_K)``, so that directions found later fit without a new
        compiled program; afterwards it is fixed (directions that no longer pass get ``l = 1``).
        """
        nonlocal metric, compiled, low_rank_info
        k_now = None if metric is None else int(metric.values.shape[0])
        if k_now is None:
            cand, info = low_rank_from(recent)
            k_min = min(d, int(o["max_rank"]), LOW_RANK_MIN_K)
            if cand is not None and int(cand.values.shape[0]) < k_min:
                cand, info = low_rank_from(recent, k_min)
        else:
            cand, info = low_rank_from(recent, k_now)
        if cand is None:
            return None
        metric, compiled, low_rank_info = cand, get_compiled(cand), info
        return int(cand.values.shape[0]) if k_now is None else None

    def share_step_size():
        """With the pooled metric past the early phase, all chains take the median chain's step size and
        dual averaging (the chunk program then adapts it on the chains' mean acceptance statistic)."""
        nonlocal carry, shared_step
        if metric is None or shared_step:
            return
        shared_step = True
        rs_now = carry[1]
        c_mid = int(np.argsort(np.asarray(rs_now.step_size))[num_chains // 2])
        shared = jax.tree.map(lambda a: jnp.broadcast_to(a[c_mid], a.shape), (rs_now.step_size, rs_now.da))
        carry = (carry[0], rs_now._replace(step_size=shared[0], da=shared[1]))

    # early chunks are shorter (a multiple of 10 steps, the early window-switch period) so that the
    # low-rank metric replaces the diagonal one after the first few dozen steps
    early_len = max(10, (K // 2) // 10 * 10) if K >= 20 else K
    while adapt_done < max_adapt:
        n = min(K if adapt_done >= EARLY_STEPS else min(early_len, EARLY_STEPS - adapt_done), max_adapt - adapt_done)
        pos, grads, stats = go(0, n)
        adapt_done += n
        bar.update(adapt_done)
        stuck = stuck_chains(stats["lp"][-1], np.asarray(carry[1].step_size), d)
        if stuck:
            # warm-up only: restart a stuck chain from a healthy one's state (and adaptation)
            healthy = [c for c in range(num_chains) if c not in stuck]
            src = jnp.asarray([healthy[j % len(healthy)] for j in range(len(stuck))])
            dst = jnp.asarray(stuck)
            carry = jax.tree.map(lambda a: a.at[dst].set(a[src]), carry)
            resets.append({"step": adapt_done, "chains": stuck})
            recent, prev = [], None
            continue
        recent = (recent + [(pos, grads)])[-2:]
        rs_now: RunningFisherState = carry[1]
        imm = np.asarray(rs_now.inverse_mass_matrix)
        log_eps = np.asarray(rs_now.last_log_step_size_avg)
        snap = (imm, log_eps)
        if prev is not None and adapt_done >= min_adapt and n == K:
            d_mass = float(np.max(np.sqrt(np.mean(np.log(imm / prev[0]) ** 2, axis=-1))))
            d_step = float(np.sqrt(np.mean((log_eps - prev[1]) ** 2)))
            r_hat = rhat_check(pos, stats["lp"])
            history.append({"step": adapt_done, "mass_change": d_mass, "step_change": d_step, "rhat": r_hat})
            if d_mass < o["mass_tol"] and d_step < o["step_tol"] and r_hat < o["rhat_tol"]:
                converged = True
                break
        if use_low_rank:
            # not settled yet: (re-)estimate the low-rank metric from the latest draws and gradients
            switched = refresh_low_rank()
            if switched is not None:
                switched_at = adapt_done
                if history and history[-1]["step"] == adapt_done:
                    history[-1]["switched_to_low_rank"] = switched
                recent, snap = [], None
            if adapt_done >= EARLY_STEPS:
                share_step_size()
        prev = snap
    last_rhat = history[-1]["rhat"] if history else float("inf")
    if use_low_rank and recent and term > 0 and (converged or last_rhat < LOW_RANK_RHAT):
        refresh_low_rank()  # final estimate from the latest draws (structural rank kept)
        if adapt_done >= EARLY_STEPS:
            share_step_size()
    metric_kind = "fisher_diag" if metric is None else f"fisher_low_rank(k={int(metric.values.shape[0])})"
    if term > 0:
        left = term
        while left > 0:
            go(1, min(K, left))
            left -= min(K, left)
    warmup_used = adapt_done + term
    if warmup_used < num_warmup:  # warm-up stopped early: the line still ends at 100 %
        bar.retotal(warmup_used + num_samples * thinning, warmup_used)
        bar.message(f"warm-up {'converged' if converged else 'stopped'} after {warmup_used} of at most "
                    f"{num_warmup} steps")
    bar.update(warmup_used)

    # ---------------------------------------------------------------- sampling
    # Nothing is decided on the host but one thing: queue every chunk (asynchronous dispatch), then
    # copy the draws out. When the chains diverge (at least DIVERGENCE_MIN divergent transitions, and
    # at least DIVERGENCE_RATE of those so far), the draws so far become warm-up, target_accept is
    # raised a quarter of the way left to 1, the step size is re-adapted for a terminal window, and sampling starts over
    # (at most MAX_TARGET_ACCEPT_RAISES times).
    total = num_samples * thinning
    raises = []
    dropped = []  # (positions [steps, chains, d], diverging [steps, chains]) of each restarted sampling phase
    while True:
        ts = time.perf_counter()
        pending = []  # at most MAX_IN_FLIGHT chunks queued ahead of the host copy
        pos_all, stats_all = [], []
        launched_steps = done = n_div = 0
        sampling_from = step_i
        diverging = False
        while done < total:
            while launched_steps < total and len(pending) < MAX_IN_FLIGHT:
                n = min(K, total - launched_steps)
                (out, n) = launch(2, n)
                pending.append(((out[0], out[1], None, out[3], out[4]), n))  # gradients not needed: drop them
                launched_steps += n
            pos, _, stats = collect(pending.pop(0))
            pos_all.append(pos)
            stats_all.append(stats)
            done += pos.shape[0]
            n_div += int(np.sum(stats["diverging"]))
            if (len(raises) < MAX_TARGET_ACCEPT_RAISES and n_div >= DIVERGENCE_MIN
                    and n_div >= DIVERGENCE_RATE * done * num_chains):
                diverging = True
                break
            bar.update(warmup_used + done)
        while pending:  # queued chunks were computed: their gradients count, their draws are warm-up
            pos, _, stats = collect(pending.pop(0))
            pos_all.append(pos)
            stats_all.append(stats)
        run_seconds += time.perf_counter() - ts
        if not diverging:
            break
        # these draws were taken with a step size that diverges: they are warm-up now
        dropped.append((np.concatenate(pos_all), np.concatenate([st["diverging"] for st in stats_all])))
        n_dropped = launched_steps
        n_nonfinite_warmup += int(sum(np.sum(st["nonfinite"]) for st in stats_all))
        if keep_warmup:
            sel = (sampling_from + np.arange(n_dropped)) % thinning == 0
            warm_kept.append((np.concatenate(pos_all)[sel], {k: np.concatenate([st[k] for st in stats_all])[sel]
                                                             for k in stats_all[0]}))
        new_ta = 1.0 - (1.0 - float(target_accept)) / 4.0
        raises.append({"after_step": int(warmup_used + done), "divergences": int(n_div),
                       "transitions": int(done * num_chains), "target_accept": new_ta})
        target_accept = jnp.asarray(new_ta, dtype)
        rs_now = carry[1]  # back to the step-size-only window, dual averaging restarted at the current step size
        carry = (carry[0], rs_now._replace(phase=jnp.ones_like(rs_now.phase), da=jax.vmap(da_init)(rs_now.step_size)))
        bar.message(f"{n_div} divergent transitions in the first {done} sampling steps: target_accept raised to "
                    f"{new_ta:g}, step size re-adapted, sampling restarted")
        left = int(o["terminal_steps"])
        while left > 0:
            go(1, min(K, left))
            left -= min(K, left)
        warmup_used += n_dropped + int(o["terminal_steps"])
        bar.retotal(warmup_used + total, warmup_used)
        bar.update(warmup_used)
    pos = np.concatenate(pos_all)[::thinning][:num_samples]
    samples = np.swapaxes(pos, 0, 1)
    stats_out = {k: np.swapaxes(np.concatenate([s[k] for s in stats_all])[::thinning][:num_samples], 0, 1)
                 for k in stats_all[0]}
    rs_final = carry[1]

    # ------------------------------------------------- fallback for funnels and bananas
    fallback = None
    n_lp_extra = 0
    reason = geometry_fallback_reason(samples, stats_out["energy"], stats_out["diverging"], len(raises),
                                      MAX_TARGET_ACCEPT_RAISES, DIVERGENCE_MIN, DIVERGENCE_RATE, EBFMI_MIN,
                                      ESS_PER_CHAIN_MIN) if num_samples >= 2 else None
    falls_back = reason is not None and o["fallback"] and d <= FALLBACK_MAX_DIM
    # where NUTS diverged, over its kept and dropped sampling draws, when finish_result cannot say it from the
    # kept draws: they are replaced by the fallback's, or the divergences that raised target_accept were dropped
    nuts_concentration = None
    if falls_back:
        nuts_concentration = nuts_divergence_region(target, samples, stats_out["diverging"], dropped,
                                                    "NUTS could not enter that region and its draws were replaced "
                                                    "by coordinate-wise slice sampling's, at a higher cost")
    elif raises and divergence_concentration(quantities_of(target, samples), stats_out["diverging"]) == []:
        nuts_concentration = nuts_divergence_region(target, samples, stats_out["diverging"], dropped,
                                                    "NUTS's draws may miss that region even after "
                                                    "target_accept was raised")
    if falls_back:
        if keep_warmup:  # NUTS's sampling draws were the fallback's warm-up
            warm_kept.append((np.swapaxes(samples, 0, 1), {k: np.swapaxes(v, 0, 1) for k, v in stats_out.items()}))
        thin_fb = int(o["fallback_thinning"])
        flat = samples.reshape(-1, d)
        center = np.mean(flat, axis=0)
        scale = np.std(flat, axis=0)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        bar.message(f"NUTS cannot be trusted here ({reason}): coordinate-wise slice sampling, "
                    f"{thin_fb} sweeps per draw")
        ts = time.perf_counter()
        fb = run_coordinate_slice(target, carry[0].position, jax.random.fold_in(k_run, FALLBACK_STREAM),
                                  center, scale, num_samples, thin_fb, FALLBACK_BURN_IN * thin_fb, K, bar,
                                  warmup_used)
        run_seconds += time.perf_counter() - ts
        compile_seconds += fb["compile_seconds"]
        num_compilations += fb["num_compilations"]
        samples, stats_out, n_lp_extra = fb["samples"], fb["stats"], fb["num_logdensity_evals"]
        fallback = {"kernel": "coordinate_slice", "reason": reason, "sweeps_per_draw": thin_fb,
                    "burn_in_sweeps": FALLBACK_BURN_IN * thin_fb, "logdensity_evals": int(n_lp_extra)}
    bar.close()
    cost = make_cost(num_logdensity_evals=n_grad + n_lp_extra, num_grad_evals=n_grad,
                     compile_seconds=compile_seconds, sampling_seconds=run_seconds,
                     num_compilations=num_compilations, num_devices=1)
    config = {"method": spec.name, "options": dict(o), "target": target_id(target), "seed": seed_id,
              "num_chains": num_chains, "num_warmup": num_warmup, "num_samples": num_samples,
              "thinning": thinning, "dtype": str(dtype)}
    extra_warnings = []
    warm_warning = nonfinite_warmup_warning(n_nonfinite_warmup, warmup_used)
    if warm_warning:
        extra_warnings.append(warm_warning)
    if fallback is not None:
        extra_warnings.append({
            "code": "auto_fallback", "value": fallback["logdensity_evals"],
            "message": f"auto: NUTS's draws were replaced by coordinate-wise slice sampling ({fallback['reason']}); "
                       f"it cost {fallback['logdensity_evals']} more log-density evaluations"})
    elif reason is not None:
        extra_warnings.append({
            "code": "auto_geometry", "value": float("nan"),
            "message": f"auto: NUTS's draws cannot be trusted ({reason}) and the coordinate-wise fallback is "
                       f"{'off (fallback=False)' if not o['fallback'] else f'limited to d <= {FALLBACK_MAX_DIM}'}"})
    if nuts_concentration is not None:
        extra_warnings.append(nuts_concentration)
    if not converged and max_adapt > 0:
        last = history[-1] if history else {}
        extra_warnings.append({
            "code": "auto_warmup", "value": int(warmup_used),
            "message": f"auto warm-up did not meet its convergence rule within num_warmup={num_warmup} "
                       f"(last check: {last}); the adaptation may be poor (raise num_warmup)"})
    imm_final = (np.asarray(rs_final.inverse_mass_matrix) if metric is None  # per-chain diagonals
                 else {"scale": np.asarray(metric.scale).tolist(), "vectors": np.asarray(metric.vectors).tolist(),
                       "values": np.asarray(metric.values).tolist(),
                       "form": "diag(scale) (I + vectors diag(values - 1) vectors^T) diag(scale)"})
    extra = {"final_step_size": np.asarray(rs_final.step_size).tolist(),
             "inverse_mass_matrix": imm_final if isinstance(imm_final, dict) else imm_final.tolist(),
             "warmup_steps": int(warmup_used), "warmup_converged": bool(converged), "warmup_checks": history,
             "sampler": "nuts", "metric": metric_kind, "target_accept": float(target_accept),
             "target_accept_raised": raises, "fallback": fallback, "low_rank": {**low_rank_info, "switched_at": switched_at}, "warmup_resets": resets}
    warm_samples = warm_stats = None
    if keep_warmup:
        config["keep_warmup"] = True
        warm_samples = np.swapaxes(np.concatenate([p for p, _ in warm_kept]), 0, 1) if warm_kept else \
            np.zeros((num_chains, 0, d), np.dtype(str(dtype)))
        warm_stats = {k: np.swapaxes(np.concatenate([st[k] for _, st in warm_kept]), 0, 1)
                      for k in (warm_kept[0][1] if warm_kept else {})}
    return finish_result(target, spec.name, samples, stats_out, cost, config, extra=extra,
                         extra_warnings=extra_warnings, warmup_samples=warm_samples, warmup_stats=warm_stats)


def nuts_divergence_region(target, samples, diverging, dropped, consequence):
    """The ``divergence_concentration`` warning over all of NUTS's sampling draws: the kept
    ones (``samples`` ``[chains, draws, d]``, ``diverging`` ``[chains, draws]``) and those of
    each sampling phase dropped when ``target_accept`` was raised (``dropped``: pairs of
    ``[steps, chains, d]`` positions and ``[steps, chains]`` flags).  None when they do not
    cluster."""
    pos = np.concatenate([samples] + [np.swapaxes(p, 0, 1) for p, _ in dropped], axis=1)
    div = np.concatenate([np.asarray(diverging)] + [np.swapaxes(v, 0, 1) for _, v in dropped], axis=1)
    q = quantities_of(target, pos)
    return concentration_warning(q, div, quantity_names(target, q.shape[-1]), is_noncentred(target),
                                 consequence=consequence)


register_method(MethodSpec(
    "auto", None,
    "Automatic: NUTS with running Fisher (draws + gradients) adaptation, diagonal then low-rank + diagonal "
    "when the target has correlations; warm-up stops early once step size, mass matrix and chains have "
    "settled (num_warmup is the maximum)",
    _auto_options(), runner=auto_runner, checkpoints=False))

del math
