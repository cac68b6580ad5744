"""Nested sampling (Skilling 2006): batch deletion, decreasing live points, constrained slice sampling.

The target ``p`` is split as prior ``pi`` times likelihood ``L = p / pi``, so
that ``Z = int pi L = int p``.  The default prior is the multivariate Cauchy
``t_1(0, 5^2 I)`` (:class:`samplax.smc.paths.StudentTReference`), not a
Gaussian.  Nested sampling integrates ``Z = int_0^1 L(X) dX`` by compressing
the prior volume ``X``; if ``pi`` has lighter tails than ``p``, ``L`` is
unbounded where ``p`` is heavy and the integrand has a long tail in ``log X``.
On Neal's funnel-10 under ``N(0, 5^2 I)`` about 2 % of ``Z`` lies beyond
``log L = 60`` and it reaches ``log L ~ 1500`` (the funnel's mouth, ``x_0 > 6``),
i.e. ``log X`` down to about ``-1500``; that region holds only ~4 % of the
constrained volume when it splits off from the neck, so its few live points
die out and most runs miss it (``log Z`` about 0.035 low, measured; the
runs' posterior put 0.05 % instead of 2.3 % of the mass at ``x_0 > 6``).
Polynomial tails keep ``L`` bounded for any target whose tails decay faster
than ``|x|^{-(1 + d)}``; the exact information ``H`` is then also smaller
(funnel: 8.9 against 26.5).  ``reference_dof=None`` restores the Gaussian.
``n`` live points are drawn from ``pi``; each iteration removes the ``k``
lowest-likelihood live points and replaces them by draws from ``pi``
restricted to ``{L > L*}``, ``L*`` the largest removed likelihood.

Volumes.  Removing the ``k`` worst points one at a time from ``m, m-1, ...,
m-k+1`` live points shrinks the prior volume by ``E[log t] = -1/(m-j)`` each
(the live points are i.i.d. uniform in the constrained prior, so the ``j``-th
worst of them sits at the ``j``-th order statistic; this is the "varying
number of live points" view of Higson et al. 2019, "Dynamic nested sampling",
Statistics and Computing 29).  With deterministic expected volumes

``log X_i = -sum_{j <= i} 1 / m_j``,  ``Z = sum_i L_i (X_{i-1} - X_i) + X_end mean(L_live)``.

Decreasing live points (``min_live < num_live``).  The variance of ``log Z``
is ``Var ~ int R(u)^2 / m(u) du`` over ``u = -log X`` (``R(u)`` the fraction of
``Z`` beyond ``u``, ``m(u)`` the live points there) and the cost is
``int m(u) du``, so the evidence-optimal allocation is ``m(u) ~ R(u)`` (Higson
et al. 2019, sec. 3).  The run therefore goes through stages
``n, n/r, n/r^2, ..., min_live`` (``r = live_ratio``): stage ``s`` runs until the
estimated remaining fraction ``R_hat = X mean(L_live) / (Z_dead + X mean(L_live))``
falls below ``n_{s+1} / n``, then its ``n_s - n_{s+1}`` worst live points are
removed *without replacement* (exact volume shrinkage ``1/(n_s - j)`` each), and
the next stage continues with the survivors.  This matters for likelihoods with a
heavy upper tail (a funnel under a Gaussian prior: ``L = p / pi`` grows without
bound in the funnel's mouth, 1-2 % of ``Z`` lies beyond ``log X = -100``), which
need a deep compression that would cost ``n`` dead points per unit of ``log X``
at a constant ``n``.  The later stages delete half their live points per
iteration (``tail_delete_fraction``), so the deep compression takes few
sequential iterations.

Zero-likelihood plateau.  Initial prior draws where the target is ``-inf`` (outside
its support) tie for last place; they are removed together without replacement
(``log X -= sum_{j<q} 1 / (n - j)``, the exact order-statistic shrinkage with
ties broken at random; Fowlie, Handley & Su 2021, "Nested sampling with
plateaus", MNRAS 503), and the live set is refilled by constrained slice moves
from the finite points.  The plateau adds ``sum_{j<q} 1 / (n - j)^2`` to the
variance of ``log Z``.

Stopping: the last stage stops when the live points can add at most ``dlogz`` to
``log Z`` at their *mean* likelihood, ``log(Z_dead + X mean(L_live)) - log Z_dead
< dlogz`` (PolyChord's precision criterion; the maximum likelihood would never stop
on an unbounded ``L``).

The information ``H = sum_i p_i log(L_i / Z)`` (``p_i`` the posterior weights of
the dead points) gives Skilling's standard error ``sd(log Z) ~ sqrt(H / n)`` for a
constant ``n``.  With live points that change in number (the stages above, batch
deletion) each removal's ``log t_j`` has its own variance ``1 / (m - j)^2`` (the
``j``-th worst of ``m``; independent exponential spacings) and moves ``log Z`` by
the posterior mass after it, ``P_j = sum_{i > j} p_i``; the run's variance is the
linearization ``Var(log Z) ~ sum_j P_j^2 / (m_j - j)^2`` (Higson et al. 2019, sec. 3;
:attr:`NSOutput.compression_var`), which is ``H / n`` for a constant ``n`` and larger
when the posterior bulk is crossed with fewer live points.

New points, first phase: while the prior volume left is above ``1 / (4 num_repeats)``
(:func:`rejection_volume`), they are prior draws kept when ``L > L*`` (:func:`constrained_rejection`):
exact independent draws of the constrained prior at ``1 / X`` evaluations each, cheaper there than a
slice move (Skilling 2006 starts this way; dynesty's first update is the same idea).  On GMM-25 with
1000 live points this halves the evaluations per run (335k to 151k), on Funnel-10 7.2 M to 3.9 M, with the
spread over runs no larger (``prior_rejection=False`` turns it off).

New points, afterwards: hit-and-run slice sampling (Neal 2003, "Slice sampling", Ann.
Statist. 31; the PolyChord move of Handley, Hobson & Lasenby 2015) on
``pi(x) 1[L(x) > L*]`` from a random surviving live point, ``num_repeats``
steps.  Each step: a direction ``C^{1/2} u`` (``u`` uniform on the sphere, ``C``
the survivors' covariance) or, with probability 1/2, a random coordinate axis
scaled by the survivors' standard deviation along it (coordinate-wise slice
sampling, Neal 2003 sec. 4.2), a slice level ``log pi(x) - Exp(1)``, Neal's
stepping out with unit width and at most ``m = MAX_STEP_OUT`` extensions split
at random between the two sides (``J = floor(m V)``, ``K = m - 1 - J``; this keeps
the move reversible), then shrinkage.  All new points of an iteration advance
together through one loop in which every point makes exactly one evaluation per
pass (its own stepping-out / shrinkage state machine), so a vectorized pass is
never wasted on points that already finished their current step.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from samplax.core.nonfinite import count_nonfinite, is_nonfinite
from samplax.smc.paths import GaussianReference, StudentTReference

Prior = GaussianReference | StudentTReference

MAX_STEP_OUT = 32
MAX_SHRINK = 60


class NSConfig(NamedTuple):
    """Structural configuration of a nested-sampling run.

    ``num_delete`` points are replaced per iteration in the first stage;
    ``min_live < num_live`` turns on the decreasing live points (stages
    ``num_live / live_ratio^s`` down to ``min_live``; 0: constant ``num_live``);
    later stages delete ``tail_delete_fraction`` of their live points per
    iteration.  ``max_dead``: size of the dead-point buffer (0:
    ``max_iterations * num_delete``); the run stops (not converged) when it is full.  ``max_evals``
    (0: no cap): the run stops iterating (not converged) before an iteration would take its
    log-density evaluations past ``max_evals``, judged by the previous iteration's count; the later
    stages then only remove their points (exact), so the estimate covers the volume reached.
    ``prior_rejection``: while the prior volume left is above ``rejection_volume(num_repeats)``, new points
    are prior draws kept when ``L > L*`` (see :func:`constrained_rejection`) instead of slice moves.
    """

    num_live: int
    num_delete: int
    num_repeats: int
    max_iterations: int
    dlogz: float = 1e-3
    min_live: int = 0
    live_ratio: int = 4
    tail_delete_fraction: float = 0.5
    max_dead: int = 0
    max_evals: int = 0
    prior_rejection: bool = True


class NSOutput(NamedTuple):
    """Result of one run: ``log_Z``, information ``H``, the weighted dead+live points and counts."""

    log_Z: jax.Array
    information: jax.Array
    positions: jax.Array      # [max_dead + n, d]
    log_weights: jax.Array    # [max_dead + n] normalized posterior log-weights (-inf for unused slots)
    num_iterations: jax.Array
    converged: jax.Array
    num_logdensity_evals: jax.Array
    num_dead: jax.Array
    num_initial_finite: jax.Array  # initial prior draws with a finite log-likelihood (0: the run could not start)
    plateau_var: jax.Array  # Var(log X) of the zero-likelihood plateau's removal, sum_{j<q} 1 / (n - j)^2
    plateau_log_x: jax.Array  # log X after the plateau's removal, -sum_{j<q} 1 / (n - j)
    num_nonfinite: jax.Array  # evaluations with a NaN or +inf log-density (counted as L = 0)
    num_initial_nonfinite: jax.Array  # of them, among the n initial prior draws
    compression_var: jax.Array  # sum_j P_j^2 Var(log t_j): Var(log Z) from the dead points' volumes (P_j: mass after j)


def stages(config: NSConfig) -> list[tuple[int, int]]:
    """The ``(live points, deletions per iteration)`` of each stage (see the module docstring)."""
    n, k = config.num_live, config.num_delete
    out = [(n, k)]
    m = n
    if config.min_live and config.min_live < n:
        while m > config.min_live:
            m = max(config.min_live, m // config.live_ratio)
            out.append((m, min(m - 1, max(1, int(m * config.tail_delete_fraction)))))
    return out


def constrained_slice(key, x, lp, log_l_star, chol, logdensity_fn: Callable, prior: Prior,
                      num_repeats: int, width=1.0):
    """``num_repeats`` hit-and-run slice steps on ``pi * 1[L > L*]`` for each row of ``x [K, d]``.

    ``lp`` holds the target log-densities at ``x``.  Each step's direction is, with
    probability 1/2 each (independent of the state, so the mixture stays reversible),
    ``chol @ u`` with ``u`` uniform on the unit sphere, or a random coordinate axis
    scaled by that coordinate's standard deviation (a Gibbs-like slice step; it
    moves a coordinate whose conditional scale differs from the global one, such
    as ``x_0`` in a funnel's neck, where the covariance directions are dominated by
    the mouth).  Returns ``(x, lp, evals [K], nonfinite [K], expansions, shrinks)``: every point
    advances through Neal's (2003) stepping out (``width`` in units of the
    direction, at most ``MAX_STEP_OUT`` extensions split at random between the
    sides) and shrinkage, one target evaluation per pass of the loop; ``expansions``
    and ``shrinks`` are the totals over all rows and steps (for :func:`adapt_width`).  A step whose
    shrinkage fails ``MAX_SHRINK`` times keeps its point.  The passes go on until every
    row has made its ``num_repeats`` steps, and each pass evaluates all ``K`` rows (the
    finished ones too, their results discarded), so ``evals`` counts the passes for every row.
    ``nonfinite`` counts the evaluations of active rows whose log-density was NaN or ``+inf``
    (outside the slice).
    """
    kk, d = x.shape
    dtype = x.dtype
    vlp = jax.vmap(logdensity_fn)
    vpi = jax.vmap(prior.logdensity)
    m = MAX_STEP_OUT
    sd = jnp.sqrt(jnp.sum(chol**2, axis=1))  # marginal standard deviations
    w = jnp.asarray(width, dtype)

    def setup(key, x):
        k1, k2, k3, k4, k5, k6 = jax.random.split(key, 6)
        u = jax.random.normal(k1, (kk, d), dtype)
        u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
        axis = jax.nn.one_hot(jax.random.randint(k5, (kk,), 0, d), d, dtype=dtype) * sd
        use_axis = jax.random.bernoulli(k6, 0.5, (kk,))
        direction = jnp.where(use_axis[:, None], axis, u @ chol.T)
        log_y = vpi(x) - jax.random.exponential(k2, (kk,), dtype)
        r = jax.random.uniform(k3, (kk,), dtype)
        j = jnp.floor(m * jax.random.uniform(k4, (kk,), dtype)).astype(jnp.int32)
        return dict(direction=direction, log_y=log_y, lo=-r * w, hi=(1.0 - r) * w, j=j, kr=m - 1 - j,
                    phase=jnp.zeros((kk,), jnp.int32), n_shrink=jnp.zeros((kk,), jnp.int32))

    k0, k_loop = jax.random.split(key)
    c0 = dict(x=x, lp=lp, rep=jnp.zeros((kk,), jnp.int32), evals=jnp.zeros((kk,), jnp.int32),
              nonfinite=jnp.zeros((kk,), jnp.int32), trip=jnp.zeros((), jnp.int32),
              n_exp=jnp.zeros((), jnp.int32), n_shr=jnp.zeros((), jnp.int32), **setup(k0, x))
    max_trips = num_repeats * (2 * m + MAX_SHRINK + 2)

    def cond(c):
        return jnp.any(c["rep"] < num_repeats) & (c["trip"] < max_trips)

    def body(c):
        ka, kb = jax.random.split(jax.random.fold_in(k_loop, c["trip"]))
        active = c["rep"] < num_repeats
        phase, lo, hi = c["phase"], c["lo"], c["hi"]
        t_shrink = lo + jax.random.uniform(ka, (kk,), dtype) * (hi - lo)
        t = jnp.where(phase == 0, lo, jnp.where(phase == 1, hi, t_shrink))
        z = c["x"] + t[:, None] * c["direction"]
        lpz = vlp(z)
        lpiz = vpi(z)
        ok = (lpiz > c["log_y"]) & (lpz - lpiz > log_l_star) & jnp.isfinite(lpz)
        p0, p1, p2 = active & (phase == 0), active & (phase == 1), active & (phase == 2)
        ext_l = p0 & ok & (c["j"] > 0)
        ext_r = p1 & ok & (c["kr"] > 0)
        acc = p2 & ok
        give_up = p2 & ~ok & (c["n_shrink"] + 1 >= MAX_SHRINK)
        shr = p2 & ~ok & ~give_up
        new = dict(c)
        new["lo"] = jnp.where(ext_l, lo - w, jnp.where(shr & (t < 0), t, lo))
        new["hi"] = jnp.where(ext_r, hi + w, jnp.where(shr & (t >= 0), t, hi))
        new["n_exp"] = c["n_exp"] + jnp.sum(ext_l | ext_r, dtype=jnp.int32)
        new["n_shr"] = c["n_shr"] + jnp.sum(shr, dtype=jnp.int32)
        new["j"] = c["j"] - ext_l.astype(jnp.int32)
        new["kr"] = c["kr"] - ext_r.astype(jnp.int32)
        new["phase"] = jnp.where(p0 & ~ext_l, 1, jnp.where(p1 & ~ext_r, 2, phase))
        new["n_shrink"] = c["n_shrink"] + shr.astype(jnp.int32)
        new["x"] = jnp.where(acc[:, None], z, c["x"])
        new["lp"] = jnp.where(acc, lpz, c["lp"])
        done = acc | give_up
        new["rep"] = c["rep"] + done.astype(jnp.int32)
        fresh = setup(kb, new["x"])
        for name, v in fresh.items():
            mask = done[:, None] if v.ndim == 2 else done
            new[name] = jnp.where(mask, v, new[name])
        new["evals"] = c["evals"] + 1  # every row is evaluated on every pass, finished rows too
        new["nonfinite"] = c["nonfinite"] + (active & is_nonfinite(lpz)).astype(jnp.int32)
        new["trip"] = c["trip"] + 1
        return new

    c = jax.lax.while_loop(cond, body, c0)
    return c["x"], c["lp"], c["evals"], c["nonfinite"], c["n_exp"], c["n_shr"]


def rejection_volume(num_repeats: int) -> float:
    """The prior volume below which slice moves replace rejection from the prior: ``1 / (4 num_repeats)``.

    Rejection costs ``1 / X`` evaluations per new point at prior volume ``X``; a slice move costs
    ``num_repeats`` steps of about 4-8 evaluations each (stepping out plus shrinkage), so rejection is
    the cheaper until ``X`` is about ``1 / (4 num_repeats)`` -- and its points are exact independent draws.
    """
    return 1.0 / (4.0 * num_repeats)


def constrained_rejection(key, kk: int, log_l_star, logdensity_fn: Callable, prior: Prior, max_rounds: int):
    """Up to ``kk`` independent draws of ``pi`` restricted to ``{L > L*}`` by rejection from the prior.

    Each round draws ``kk`` prior points, evaluates them all and puts the accepted ones into the next
    empty slots in order (so no accepted draw is wasted; the slots hold i.i.d. draws of the constrained
    prior, the ideal of nested sampling; Skilling 2006 sec. 5 starts this way).  The rounds go on until
    every slot is filled or ``max_rounds`` have run.  Returns ``(x [kk, d], lp [kk], filled [kk] bool,
    evals, nonfinite)`` with ``evals = rounds * kk`` and ``nonfinite`` the NaN / ``+inf`` evaluations
    (rejected as ``L = 0``).
    """
    d = prior.mean.shape[0]
    dtype = prior.mean.dtype
    vlp = jax.vmap(logdensity_fn)
    vpi = jax.vmap(prior.logdensity)
    c0 = dict(x=jnp.zeros((kk, d), dtype), lp=jnp.full((kk,), -jnp.inf, dtype), filled=jnp.zeros((), jnp.int32),
              rounds=jnp.zeros((), jnp.int32), nonfinite=jnp.zeros((), jnp.int32))

    def cond(c):
        return (c["filled"] < kk) & (c["rounds"] < max_rounds)

    def body(c):
        z = prior.sample(jax.random.fold_in(key, c["rounds"]), kk).astype(dtype)
        lpz = vlp(z)
        ok = jnp.isfinite(lpz) & (lpz - vpi(z) > log_l_star)
        slot = c["filled"] + jnp.cumsum(ok.astype(jnp.int32)) - 1
        slot = jnp.where(ok & (slot < kk), slot, kk)  # kk: out of range, dropped
        out = dict(c)
        out["x"] = c["x"].at[slot].set(z, mode="drop")
        out["lp"] = c["lp"].at[slot].set(lpz, mode="drop")
        out["filled"] = jnp.minimum(kk, c["filled"] + jnp.sum(ok, dtype=jnp.int32))
        out["rounds"] = c["rounds"] + 1
        out["nonfinite"] = c["nonfinite"] + jnp.sum(is_nonfinite(lpz), dtype=jnp.int32)
        return out

    c = jax.lax.while_loop(cond, body, c0)
    return c["x"], c["lp"], jnp.arange(kk) < c["filled"], c["rounds"] * kk, c["nonfinite"]


def adapt_width(width, expansions, shrinks):
    """The next iteration's slice width: ``width * sqrt((expansions + 1) / (shrinks + 1))``, clipped to
    ``[1e-2, 1e2]``.  Stepping out (one evaluation per ``width``) and shrinkage (about one per halving)
    balance where the width is about the slice's length, the cheapest step (Neal 2003, sec. 4); dynesty
    adapts its slice scale the same way from its expansion and contraction counts.  The width only
    depends on earlier iterations' moves, so each iteration's kernel is still a slice sampler leaving the
    constrained prior invariant."""
    ratio = (expansions.astype(width.dtype) + 1.0) / (shrinks.astype(width.dtype) + 1.0)
    return jnp.clip(width * jnp.sqrt(ratio), 1e-2, 1e2)


def _log_likelihood(lp, lpi):
    """``log L = log p - log pi``, with NaN and ``+inf`` (a broken target) counted as ``L = 0``."""
    logl = lp - lpi
    return jnp.where(jnp.isnan(logl) | (logl == jnp.inf), -jnp.inf, logl)


def _chol(x, w):
    """Cholesky factor of the covariance of the rows of ``x`` with weights ``w`` (diagonal fallback)."""
    d = x.shape[1]
    w = w / jnp.sum(w)
    xc = x - jnp.sum(w[:, None] * x, 0)
    cov = (w[:, None] * xc).T @ xc + 1e-12 * jnp.eye(d, dtype=x.dtype)
    chol = jnp.linalg.cholesky(cov)
    return jnp.where(jnp.all(jnp.isfinite(chol)), chol, jnp.diag(jnp.sqrt(jnp.diag(cov))))


def run(key, logdensity_fn: Callable, prior: Prior, config: NSConfig,
        progress: Callable | None = None, run_id=0, progress_every: int = 100) -> NSOutput:
    """One nested-sampling run (see the module docstring).

    ``progress(run_id, iteration, log_X, log_Z)`` (a host function, through
    ``jax.debug.callback``) is called every ``progress_every`` iterations.
    """
    n, k = config.num_live, config.num_delete
    d = prior.mean.shape[0]
    dtype = prior.mean.dtype
    if not 1 <= k < n:
        raise ValueError(f"nested sampling: num_delete must be in [1, num_live), got {k} with num_live={n}")
    if config.min_live and not 2 <= config.min_live <= n:
        raise ValueError(f"nested sampling: min_live must be in [2, num_live={n}] (or 0), got {config.min_live}")
    plan = stages(config)
    x_rejection = rejection_volume(config.num_repeats)
    log_x_rejection = float(np.log(x_rejection))
    max_rounds = int(np.ceil(8.0 / x_rejection))  # expected rounds at the switch: about 1 / x_rejection
    cap = config.max_dead or config.max_iterations * k
    buf = cap + n  # the stage transitions remove at most n points in all
    vpi = jax.vmap(prior.logdensity)
    k_init, k_loop = jax.random.split(key)
    x0 = prior.sample(k_init, n)
    lp0 = jax.vmap(logdensity_fn)(x0)
    logl0 = _log_likelihood(lp0, vpi(x0))
    evals0 = jnp.asarray(n, jnp.int32)
    bad0 = count_nonfinite(lp0)

    # Zero-likelihood plateau (a target that is -inf outside its support, e.g. a box): the q initial points
    # with L = 0 tie for last place.  With ties broken at random they are the q lowest order statistics, so
    # removing them without replacement shrinks log X by sum_{j<q} 1 / (n - j) exactly (Fowlie, Handley &
    # Su 2021, "Nested sampling with plateaus"); replacing them one at a time instead, as if L were
    # continuous, would credit the support with about e^-1 of the prior whatever its true share.  They carry
    # no evidence, so they are not stored; the live set is then refilled with constrained-prior draws
    # {L > 0} started from the finite points.
    finite0 = jnp.isfinite(logl0)
    num_finite0 = jnp.sum(finite0).astype(jnp.int32)
    q = n - num_finite0
    inv = 1.0 / (n - jnp.arange(n, dtype=dtype))
    log_x0 = -jnp.sum(jnp.where(jnp.arange(n) < q, inv, 0.0))
    plateau_var = jnp.sum(jnp.where(jnp.arange(n) < q, inv**2, 0.0))

    def refill(args):
        x, lp, logl, evals, bad = args
        k_start, k_move = jax.random.split(jax.random.fold_in(k_init, 1))
        starts = jax.random.choice(k_start, n, (n,), p=finite0 / jnp.maximum(num_finite0, 1))
        # few finite points (<= 2d) give a degenerate covariance: start from the prior's scales instead
        # (stepping out and shrinkage adapt an oversized width at the cost of a few evaluations)
        chol = jax.lax.cond(num_finite0 > 2 * d, lambda: _chol(x, finite0.astype(dtype)),
                            lambda: jnp.diag(prior.scale).astype(dtype))
        xs, lps, evs, nfs, _, _ = constrained_slice(k_move, x[starts], lp[starts], jnp.asarray(-jnp.inf, dtype),
                                                    chol, logdensity_fn, prior, config.num_repeats)
        x = jnp.where(finite0[:, None], x, xs)
        lp = jnp.where(finite0, lp, lps)
        logl = jnp.where(finite0, logl, _log_likelihood(lps, vpi(xs)))
        # all n rows ran their slice steps
        return x, lp, logl, evals + jnp.sum(evs).astype(jnp.int32), bad + jnp.sum(nfs, dtype=jnp.int32)

    x0, lp0, logl0, evals0, nonfinite0 = jax.lax.cond((q > 0) & (num_finite0 > 0), refill, lambda a: a,
                                                      (x0, lp0, logl0, evals0, bad0))

    c = dict(x=x0, lp=lp0, logl=logl0, log_x=log_x0, log_z=jnp.asarray(-jnp.inf, dtype),
             dead_x=jnp.zeros((buf, d), dtype), dead_logl=jnp.full((buf,), -jnp.inf, dtype),
             dead_logdx=jnp.full((buf,), -jnp.inf, dtype), dead_var=jnp.zeros((buf,), dtype),
             ptr=jnp.zeros((), jnp.int32), last_evals=jnp.zeros((), jnp.int32), width=jnp.ones((), dtype),
             it=jnp.zeros((), jnp.int32), evals=evals0, nonfinite=nonfinite0, stopped=num_finite0 == 0)

    def within(c):  # the next iteration, costing about as much as the last, stays within max_evals
        if not config.max_evals:
            return jnp.asarray(True)
        return c["evals"] + c["last_evals"] <= config.max_evals

    def log_z_live(c, m):
        return c["log_x"] + logsumexp(c["logl"]) - jnp.log(m)

    def remove(c, idx, m, j):
        """Remove the live points ``idx`` (ascending likelihood) from ``m`` live points: dead-point bookkeeping."""
        dead_logl = c["logl"][idx]
        inv = 1.0 / (m - jnp.arange(j, dtype=dtype))
        shrink = jnp.cumsum(inv)
        log_x_new = c["log_x"] - shrink
        log_x_prev = jnp.concatenate([c["log_x"][None], log_x_new[:-1]])
        log_dx = log_x_prev + jnp.log1p(-jnp.exp(log_x_new - log_x_prev))
        p = c["ptr"]
        out = dict(c)
        out["log_z"] = jnp.logaddexp(c["log_z"], logsumexp(dead_logl + log_dx))
        out["dead_x"] = jax.lax.dynamic_update_slice(c["dead_x"], c["x"][idx], (p, jnp.zeros_like(p)))
        out["dead_logl"] = jax.lax.dynamic_update_slice(c["dead_logl"], dead_logl, (p,))
        out["dead_logdx"] = jax.lax.dynamic_update_slice(c["dead_logdx"], log_dx, (p,))
        out["dead_var"] = jax.lax.dynamic_update_slice(c["dead_var"], inv * inv, (p,))  # Var(log t) of each removal
        out["ptr"] = p + j
        out["log_x"] = log_x_new[-1]
        return out, dead_logl[-1]

    for s, (m, ks) in enumerate(plan):
        last = s == len(plan) - 1
        next_frac = None if last else plan[s + 1][0] / n

        def cond(c, m=m, ks=ks, last=last, next_frac=next_frac):
            lzl = log_z_live(c, m)
            if last:
                more = ~(jnp.logaddexp(c["log_z"], lzl) - c["log_z"] < config.dlogz)
            else:
                more = lzl - jnp.logaddexp(c["log_z"], lzl) >= jnp.log(next_frac)
            return (c["it"] < config.max_iterations) & (c["ptr"] + ks <= cap) & more & ~c["stopped"] & within(c)

        def body(c, m=m, ks=ks):
            key = jax.random.fold_in(k_loop, c["it"])
            k_start, k_move = jax.random.split(key)
            order = jnp.argsort(c["logl"])
            idx = order[:ks]  # ks worst, ascending likelihood
            c, log_l_star = remove(c, idx, m, ks)
            alive = jnp.ones((m,), bool).at[idx].set(False)
            starts = order[ks:][jax.random.randint(k_start, (ks,), 0, m - ks)]  # uniform over the survivors
            chol = _chol(c["x"], alive.astype(dtype))

            def by_slice(k_move):
                xs, lps, evs, nfs, n_exp, n_shr = constrained_slice(
                    k_move, c["x"][starts], c["lp"][starts], log_l_star, chol, logdensity_fn, prior,
                    config.num_repeats, c["width"])
                width = adapt_width(c["width"], n_exp, n_shr)
                return xs, lps, jnp.sum(evs).astype(jnp.int32), jnp.sum(nfs, dtype=jnp.int32), width

            def by_rejection(k_move):
                k_rej, k_sl = jax.random.split(k_move)
                xr, lpr, filled, evr, nfr = constrained_rejection(k_rej, ks, log_l_star, logdensity_fn, prior,
                                                                  max_rounds)
                # the rare slots rejection left empty within max_rounds: slice moves from random survivors
                xs, lps, evs, nfs, width = jax.lax.cond(
                    jnp.all(filled), lambda k: (xr, lpr, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
                                                c["width"]), by_slice, k_sl)
                xs = jnp.where(filled[:, None], xr, xs)
                lps = jnp.where(filled, lpr, lps)
                return xs, lps, evr + evs, nfr + nfs, width

            if config.prior_rejection:
                xs, lps, n_ev, n_nf, c["width"] = jax.lax.cond(c["log_x"] > log_x_rejection, by_rejection,
                                                               by_slice, k_move)
            else:
                xs, lps, n_ev, n_nf, c["width"] = by_slice(k_move)
            c["x"] = c["x"].at[idx].set(xs)
            c["lp"] = c["lp"].at[idx].set(lps)
            c["logl"] = c["logl"].at[idx].set(_log_likelihood(lps, vpi(xs)))
            if progress is not None:
                jax.debug.callback(_every(progress, progress_every), run_id, c["it"] + 1, c["log_x"], c["log_z"])
            c["it"] = c["it"] + 1
            c["last_evals"] = n_ev
            c["evals"] = c["evals"] + c["last_evals"]
            c["nonfinite"] = c["nonfinite"] + n_nf
            return c

        c = jax.lax.while_loop(cond, body, c)
        if not last:
            # full buffer or iteration cap: later stages only remove points (still exact), never iterate
            c["stopped"] = c["stopped"] | (c["it"] >= config.max_iterations) | (c["ptr"] + ks > cap) | ~within(c)
            m_next = plan[s + 1][0]
            order = jnp.argsort(c["logl"])
            c, _ = remove(c, order[: m - m_next], m, m - m_next)
            keep = order[m - m_next:]
            c["x"], c["lp"], c["logl"] = c["x"][keep], c["lp"][keep], c["logl"][keep]

    m_last = plan[-1][0]
    lzl = log_z_live(c, m_last)
    converged = ~c["stopped"] & (jnp.logaddexp(c["log_z"], lzl) - c["log_z"] < config.dlogz)
    # the live points fill the remaining volume equally
    live_logdx = jnp.full((m_last,), c["log_x"] - jnp.log(m_last), dtype)
    all_x = jnp.concatenate([c["dead_x"], c["x"]])
    all_logl = jnp.concatenate([c["dead_logl"], c["logl"]])
    all_logdx = jnp.concatenate([c["dead_logdx"], live_logdx])
    log_w = jnp.where(jnp.isfinite(all_logdx) & jnp.isfinite(all_logl), all_logl + all_logdx, -jnp.inf)
    log_z = logsumexp(log_w)
    log_p = log_w - log_z
    p = jnp.exp(log_p)
    info = jnp.sum(jnp.where(p > 0, p * (all_logl - log_z), 0.0))
    # linearized Var(log Z): a removal's log t_j scales every later point's weight (the mass after it, P_j)
    after = jnp.maximum(jnp.sum(p) - jnp.cumsum(p), 0.0)
    all_var = jnp.concatenate([c["dead_var"], jnp.zeros((m_last,), dtype)])
    compression_var = jnp.sum(all_var * after * after)
    return NSOutput(log_z, info, all_x, log_p, c["it"], converged, c["evals"], c["ptr"], num_finite0, plateau_var,
                    log_x0, c["nonfinite"], bad0, compression_var)


def log_Z_variance(compression_var, plateau_var) -> np.ndarray:
    """Each run's variance of ``log Z`` (host-side, float64): the dead points' compression variance
    (:attr:`NSOutput.compression_var`, the linearization over every removal, right for live points that
    change in number; Skilling's ``H / n`` for a constant ``n``; Higson et al. 2019) plus the variance of the
    zero-likelihood plateau's removal, ``plateau_var`` (the exact order-statistic one; Fowlie, Handley & Su
    2021).  Arguments are per run (``[R]``) or scalars.
    """
    return np.asarray(compression_var, dtype=np.float64) + np.asarray(plateau_var, dtype=np.float64)


def _every(progress, every):
    """Host-side filter: call ``progress`` only on iterations that are multiples of ``every``."""
    def show(run_id, it, log_x, log_z):
        import numpy as np
        if int(np.asarray(it)) % every == 0:
            progress(run_id, it, log_x, log_z)
    return show
