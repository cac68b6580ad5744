"""Nested sampling (Skilling 2006) with constrained hit-and-run slice sampling.

The target ``p`` is split as prior ``pi`` (the Gaussian reference,
default ``N(0, 5^2 I)``) times likelihood ``L = p / pi``, so that
``Z = int pi L = int p``.  ``n`` live points are drawn from ``pi``; each
iteration removes the ``k`` lowest-likelihood live points and replaces them
by draws from ``pi`` restricted to ``{L > L*}``, ``L*`` the largest removed
likelihood.  Removing the ``k`` worst points one at a time from ``n, n-1, ...,
n-k+1`` live points shrinks the prior volume by ``E[log t] = -1/(n-j)`` each
(the "dynamic live points" view of batch deletion), so with deterministic
expected volumes

``log X_i = -sum_{j <= i} 1 / n_j``,  ``Z = sum_i L_i (X_{i-1} - X_i) + X_end mean(L_live)``.

The information ``H = sum_i p_i log(L_i / Z)`` (``p_i`` the posterior weights
of the dead points) gives Skilling's standard error ``sd(log Z) ~ sqrt(H / n)``.

New points come from hit-and-run slice sampling (Neal 2003, "Slice sampling";
the PolyChord move of Handley, Hobson & Lasenby 2015) on
``pi(x) 1[L(x) > L*]``: a direction ``C^{1/2} u`` (``u`` uniform on the sphere,
``C`` the live-point covariance), a slice level ``log pi(x) - Exp(1)``,
stepping out and shrinkage; ``num_repeats`` such steps from a random
surviving live point.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from samplax.smc.paths import GaussianReference

MAX_STEP_OUT = 20
MAX_SHRINK = 60


class NSConfig(NamedTuple):
    """Structural configuration of a nested-sampling run."""

    num_live: int
    num_delete: int
    num_repeats: int
    max_iterations: int
    dlogz: float = 1e-3  # stop when the live points can add at most this much to log Z


class NSOutput(NamedTuple):
    """Result of one run: ``log_Z``, information ``H``, the weighted dead+live points and counts."""

    log_Z: jax.Array
    information: jax.Array
    positions: jax.Array      # [max_dead + n, d]
    log_weights: jax.Array    # [max_dead + n] normalized posterior log-weights (-inf for unused slots)
    num_iterations: jax.Array
    converged: jax.Array
    num_logdensity_evals: jax.Array


def _slice_step(key, x, lp_x, log_l_star, direction, logdensity_fn, prior: GaussianReference):
    """One hit-and-run slice step on ``pi * 1[L > L*]`` along ``direction``; returns ``(x, lp_target(x), evals)``."""
    k_y, k_r, k_loop = jax.random.split(key, 3)
    log_y = prior.logdensity(x) - jax.random.exponential(k_y, dtype=x.dtype)

    def in_slice(t):
        z = x + t * direction
        lp_t = logdensity_fn(z)
        lpi = prior.logdensity(z)
        ok = (lpi > log_y) & (lp_t - lpi > log_l_star) & jnp.isfinite(lp_t)
        return ok, lp_t

    r = jax.random.uniform(k_r, dtype=x.dtype)
    left, right = -r, 1.0 - r

    def out_cond(c):
        t, n, ok = c
        return ok & (n < MAX_STEP_OUT)

    def out_left(c):
        t, n, _ = c
        ok, _ = in_slice(t - 1.0)
        return t - 1.0, n + 1, ok

    def out_right(c):
        t, n, _ = c
        ok, _ = in_slice(t + 1.0)
        return t + 1.0, n + 1, ok

    ok_l, _ = in_slice(left)
    ok_r, _ = in_slice(right)
    left, n_l, _ = jax.lax.while_loop(out_cond, out_left, (left, jnp.int32(0), ok_l))
    right, n_r, _ = jax.lax.while_loop(out_cond, out_right, (right, jnp.int32(0), ok_r))

    def sh_cond(c):
        _, _, _, _, done, n = c
        return (~done) & (n < MAX_SHRINK)

    def sh_body(c):
        lo, hi, t_acc, lp_acc, _, n = c
        t = jax.random.uniform(jax.random.fold_in(k_loop, n), minval=lo, maxval=hi, dtype=x.dtype)
        ok, lp_t = in_slice(t)
        lo = jnp.where(ok | (t >= 0), lo, t)
        hi = jnp.where(ok | (t < 0), hi, t)
        return lo, hi, jnp.where(ok, t, t_acc), jnp.where(ok, lp_t, lp_acc), ok, n + 1

    _, _, t, lp_new, done, n_s = jax.lax.while_loop(
        sh_cond, sh_body, (left, right, jnp.zeros_like(r), lp_x, jnp.asarray(False), jnp.int32(0)))
    x_new = jnp.where(done, x + t * direction, x)
    lp_new = jnp.where(done, lp_new, lp_x)
    return x_new, lp_new, 2 + n_l + n_r + n_s


def run(key, logdensity_fn: Callable, prior: GaussianReference, config: NSConfig,
        progress: Callable | None = None, run_id=0, progress_every: int = 1000) -> NSOutput:
    """One nested-sampling run (see the module docstring).

    ``progress(run_id, iteration, log_X, log_Z)`` (a host function, through
    ``jax.debug.callback``) is called every ``progress_every`` iterations.
    """
    n, k = config.num_live, config.num_delete
    d = prior.mean.shape[0]
    dtype = prior.mean.dtype
    if not 1 <= k < n:
        raise ValueError(f"nested sampling: num_delete must be in [1, num_live), got {k} with num_live={n}")
    max_dead = config.max_iterations * k
    k_init, k_loop = jax.random.split(key)
    x0 = prior.sample(k_init, n)
    lp0 = jax.vmap(logdensity_fn)(x0)
    logl0 = lp0 - jax.vmap(prior.logdensity)(x0)
    logl0 = jnp.where(jnp.isnan(logl0), -jnp.inf, logl0)
    # log-volume decrements for removing k of n points one at a time
    shrink = jnp.cumsum(1.0 / (n - jnp.arange(k, dtype=dtype)))

    carry0 = dict(
        x=x0, lp=lp0, logl=logl0, log_x=jnp.zeros((), dtype), log_z=jnp.asarray(-jnp.inf, dtype),
        dead_x=jnp.zeros((max_dead, d), dtype), dead_logl=jnp.full((max_dead,), -jnp.inf, dtype),
        dead_logdx=jnp.full((max_dead,), -jnp.inf, dtype), it=jnp.zeros((), jnp.int32),
        evals=jnp.asarray(n, jnp.int32))

    def remaining(c):
        return c["log_x"] + jnp.max(c["logl"])

    def cond(c):
        lz = c["log_z"]
        more = jnp.logaddexp(lz, remaining(c)) - lz
        return (c["it"] < config.max_iterations) & ~(more < config.dlogz)

    def body(c):
        key = jax.random.fold_in(k_loop, c["it"])
        k_start, k_dir, k_move = jax.random.split(key, 3)
        neg, idx = jax.lax.top_k(-c["logl"], k)  # k worst, ascending likelihood
        dead_logl = -neg
        log_l_star = dead_logl[-1]
        log_x_new = c["log_x"] - shrink  # [k]
        log_x_prev = jnp.concatenate([c["log_x"][None], log_x_new[:-1]])
        log_dx = log_x_prev + jnp.log1p(-jnp.exp(log_x_new - log_x_prev))
        log_z = jnp.logaddexp(c["log_z"], logsumexp(dead_logl + log_dx))
        sl = c["it"] * k
        dead_x_buf = jax.lax.dynamic_update_slice(c["dead_x"], c["x"][idx], (sl, jnp.zeros_like(sl)))
        dead_l_buf = jax.lax.dynamic_update_slice(c["dead_logl"], dead_logl, (sl,))
        dead_dx_buf = jax.lax.dynamic_update_slice(c["dead_logdx"], log_dx, (sl,))
        # survivors: likelihood above L* (ties with L* are removed too)
        alive = jnp.ones((n,), bool).at[idx].set(False)
        logits = jnp.where(alive, 0.0, -jnp.inf)
        starts = jax.random.categorical(k_start, logits, shape=(k,))
        # live-point covariance for the slice directions
        w = alive.astype(dtype) / jnp.sum(alive)
        mu = jnp.sum(w[:, None] * c["x"], 0)
        xc = c["x"] - mu
        cov = (w[:, None] * xc).T @ xc + 1e-12 * jnp.eye(d, dtype=dtype)
        chol = jnp.linalg.cholesky(cov)
        chol = jnp.where(jnp.all(jnp.isfinite(chol)), chol, jnp.diag(jnp.sqrt(jnp.diag(cov))))

        def new_point(kk, x, lp):
            def one(carry, kr):
                x, lp, ev = carry
                k1, k2 = jax.random.split(kr)
                u = jax.random.normal(k1, (d,), dtype)
                u = u / jnp.linalg.norm(u)
                direction = chol @ u
                x, lp, e = _slice_step(k2, x, lp, log_l_star, direction, logdensity_fn, prior)
                return (x, lp, ev + e), None

            (x, lp, ev), _ = jax.lax.scan(one, (x, lp, jnp.int32(0)), jax.random.split(kk, config.num_repeats))
            return x, lp, ev

        xs, lps, evs = jax.vmap(new_point)(jax.random.split(k_move, k), c["x"][starts], c["lp"][starts])
        logls = lps - jax.vmap(prior.logdensity)(xs)
        x = c["x"].at[idx].set(xs)
        lp = c["lp"].at[idx].set(lps)
        logl = c["logl"].at[idx].set(logls)
        if progress is not None:
            jax.lax.cond((c["it"] + 1) % progress_every == 0,
                         lambda: jax.debug.callback(progress, run_id, c["it"] + 1, log_x_new[-1], log_z),
                         lambda: None)
        return dict(x=x, lp=lp, logl=logl, log_x=log_x_new[-1], log_z=log_z, dead_x=dead_x_buf,
                    dead_logl=dead_l_buf, dead_logdx=dead_dx_buf, it=c["it"] + 1,
                    evals=c["evals"] + jnp.sum(evs).astype(jnp.int32))

    c = jax.lax.while_loop(cond, body, carry0)
    converged = ~cond(c) & (c["it"] < config.max_iterations) | (jnp.logaddexp(c["log_z"], remaining(c))
                                                                  - c["log_z"] < config.dlogz)
    # the live points fill the remaining volume equally
    live_logdx = jnp.full((n,), c["log_x"] - jnp.log(n), dtype)
    all_x = jnp.concatenate([c["dead_x"], c["x"]])
    all_logl = jnp.concatenate([c["dead_logl"], c["logl"]])
    all_logdx = jnp.concatenate([c["dead_logdx"], live_logdx])
    log_w = jnp.where(jnp.isfinite(all_logdx), all_logl + all_logdx, -jnp.inf)
    log_z = logsumexp(log_w)
    log_p = log_w - log_z
    p = jnp.exp(log_p)
    info = jnp.sum(jnp.where(p > 0, p * (all_logl - log_z), 0.0))
    return NSOutput(log_z, info, all_x, log_p, c["it"], converged, c["evals"])
