"""Gradient-free ensemble MCMC: affine-invariant stretch moves and differential-evolution moves.

One *chain* of the Result is one independent ensemble of ``W`` walkers
(default ``W = max(16, 2 d + 2)``, always even, at least ``2 d``).  Walkers are
updated in two halves, each half against the other, frozen half (the
"parallel" scheme of Foreman-Mackey et al. 2013, emcee), which keeps each
half-update a valid Metropolis-Hastings move for the target ``p^{W/2}``.

Moves (``x_k`` the walker, ``x_j``, ``x_r1``, ``x_r2`` walkers of the other half):

* stretch (Goodman & Weare 2010, "Ensemble samplers with affine invariance",
  CAMCoS 5(1)): ``z ~ g(z) ∝ z^{-1/2}`` on ``[1/a, a]`` (``a = 2``), drawn as
  ``z = ((a - 1) u + 1)^2 / a``; proposal ``y = x_j + z (x_k - x_j)``; accept
  with probability ``min(1, z^{d-1} p(y) / p(x_k))``.
* differential evolution (ter Braak 2006, "A Markov chain Monte Carlo version
  of the genetic algorithm Differential Evolution", Stat. Comput. 16):
  ``y = x_k + gamma (x_r1 - x_r2) + e`` with ``gamma = 2.38 / sqrt(2 d)``
  (``gamma = 1`` every ``jump_every``-th iteration, for mode hopping),
  ``r1 != r2`` drawn from the other half, ``e ~ N(0, b^2 I)`` with
  ``b = 1e-4 ×`` the per-coordinate standard deviation of the other half
  (a tiny symmetric jitter that keeps the chain irreducible); accept with
  ``min(1, p(y) / p(x_k))``.

Which draws are returned (the rule): after ``num_warmup`` burn-in iterations
the ensemble runs ``ceil(num_samples / W) * W`` more iterations, and every
``W``-th iteration the whole ensemble is recorded, giving ``T = ceil(num_samples / W)``
snapshots.  The draws of a chain are laid out *walker-major*: walker 0's ``T``
snapshots, then walker 1's, ... truncated to ``num_samples``.  Consecutive
draws therefore come from the same walker ``W`` iterations apart, so the usual
single-chain autocorrelation ESS / MCSE / split R-hat along the draw axis
measure each walker's own mixing (the ~W block boundaries are a negligible
perturbation).  Each walker makes ``≈ num_samples`` moves, so the cost per chain
is ``W (1 + num_warmup + T W)`` log-density evaluations and no gradients.
Correlation *between* walkers is ignored by the diagnostics, as in emcee.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from samplax.interacting._common import safe_logdensity


def default_num_walkers(dim: int) -> int:
    """``max(16, 2 d + 2)``: even and more than ``2 d`` (Foreman-Mackey et al. 2013)."""
    return max(16, 2 * dim + 2)


def stretch_proposal(key, x_s, x_c, a):
    """Goodman-Weare stretch proposals for walkers ``x_s`` [n, d] against the complement ``x_c`` [m, d].

    Returns ``(y, log_correction)`` with ``log_correction = (d - 1) log z``.
    """
    n, d = x_s.shape
    k1, k2 = jax.random.split(key)
    u = jax.random.uniform(k1, (n,), dtype=x_s.dtype)
    z = ((a - 1.0) * u + 1.0) ** 2 / a
    j = jax.random.randint(k2, (n,), 0, x_c.shape[0])
    xj = x_c[j]
    y = xj + z[:, None] * (x_s - xj)
    return y, (d - 1) * jnp.log(z)


def de_proposal(key, x_s, x_c, gamma):
    """Differential-evolution proposals ``y = x + gamma (x_r1 - x_r2) + e`` (ter Braak 2006).

    ``r1 != r2`` are drawn uniformly from the complement ``x_c`` [m, d] (m >= 2);
    ``e ~ N(0, b^2)`` with ``b = 1e-4 * std(x_c)`` per coordinate.  Symmetric, so
    the log Hastings correction is 0.
    """
    n, d = x_s.shape
    m = x_c.shape[0]
    k1, k2, k3 = jax.random.split(key, 3)
    r1 = jax.random.randint(k1, (n,), 0, m)
    r2 = (r1 + jax.random.randint(k2, (n,), 1, m)) % m  # uniform over the other m - 1
    b = 1e-4 * jnp.std(x_c, axis=0)
    e = b * jax.random.normal(k3, (n, d), dtype=x_s.dtype)
    y = x_s + gamma * (x_c[r1] - x_c[r2]) + e
    return y, jnp.zeros((n,), x_s.dtype)


def _mh_half(key, x_s, lp_s, y, log_corr, lp_fn):
    k_acc = key
    lp_y = jax.vmap(lp_fn)(y)
    nonfinite = ~jnp.isfinite(lp_y)
    log_r = log_corr + lp_y - lp_s
    log_r = jnp.where(jnp.isnan(log_r), -jnp.inf, log_r)
    acc_prob = jnp.exp(jnp.minimum(log_r, 0.0))
    accept = jnp.log(jax.random.uniform(k_acc, lp_s.shape, dtype=x_s.dtype)) < log_r
    x_new = jnp.where(accept[:, None], y, x_s)
    lp_new = jnp.where(accept, lp_y, lp_s)
    return x_new, lp_new, acc_prob, nonfinite


def ensemble_step(key, x, lp, lp_fn, move, it):
    """One ensemble iteration: update the first half against the second, then the second against the new first.

    ``move(key, x_s, x_c, it) -> (proposals, log_correction)``.  Returns the new
    positions ``[W, d]``, log-densities ``[W]``, acceptance probabilities ``[W]``
    and non-finite-proposal flags ``[W]``.
    """
    h = x.shape[0] // 2
    k1, k2, k3, k4 = jax.random.split(key, 4)
    xa, xb, la, lb = x[:h], x[h:], lp[:h], lp[h:]
    y, c = move(k1, xa, xb, it)
    xa, la, aa, na = _mh_half(k2, xa, la, y, c, lp_fn)
    y, c = move(k3, xb, xa, it)
    xb, lb, ab, nb = _mh_half(k4, xb, lb, y, c, lp_fn)
    return (jnp.concatenate([xa, xb]), jnp.concatenate([la, lb]), jnp.concatenate([aa, ab]),
            jnp.concatenate([na, nb]))


def make_move(kind: str, dim: int, a=2.0, gamma=None, jump_every: int = 10):
    """The move function for ``kind`` in ``{"stretch", "de"}``."""
    if kind == "stretch":
        def move(key, x_s, x_c, it):
            del it
            return stretch_proposal(key, x_s, x_c, a)
    elif kind == "de":
        g0 = 2.38 / math.sqrt(2 * dim) if gamma is None else float(gamma)

        def move(key, x_s, x_c, it):
            g = jnp.where((jump_every > 0) & ((it + 1) % max(jump_every, 1) == 0), 1.0, g0)
            return de_proposal(key, x_s, x_c, g)
    else:  # pragma: no cover - guarded by the registry
        raise ValueError(f"unknown ensemble move {kind!r}")
    return move


def num_snapshots(num_samples: int, num_walkers: int) -> int:
    """``T = ceil(num_samples / W)`` recorded ensemble snapshots."""
    return -(-num_samples // num_walkers)


def make_run_chain(logdensity_of_target, move, num_walkers: int, num_warmup: int, num_samples: int):
    """``run_chain(key, x0 [W, d], target) -> (draws [num_samples, d], stats)`` for one ensemble (see module doc)."""
    W = num_walkers
    T = num_snapshots(num_samples, W)

    def run_chain(key, x0, target):
        lp_fn = safe_logdensity(logdensity_of_target(target))
        lp0 = jax.vmap(lp_fn)(x0)

        def one(carry, it):
            x, lp = carry
            x, lp, acc, nf = ensemble_step(jax.random.fold_in(key, it), x, lp, lp_fn, move, it)
            return (x, lp), (acc, nf)

        (x, lp), _ = jax.lax.scan(lambda c, i: (one(c, i)[0], None), (x0, lp0), jnp.arange(num_warmup))

        def snapshot(carry, t):
            its = num_warmup + t * W + jnp.arange(W)
            carry, (acc, nf) = jax.lax.scan(one, carry, its)
            return carry, (carry[0], carry[1], jnp.mean(acc, axis=0), jnp.sum(nf, axis=0))

        _, (xs, lps, accs, nfs) = jax.lax.scan(snapshot, (x, lp), jnp.arange(T))
        # [T, W, ...] -> walker-major [W * T, ...], truncated to num_samples
        draws = jnp.swapaxes(xs, 0, 1).reshape(W * T, -1)[:num_samples]

        def wm(a):
            return jnp.swapaxes(a, 0, 1).reshape(W * T)[:num_samples]

        stats = {"acceptance_rate": wm(accs), "lp": wm(lps), "nonfinite": wm(nfs).astype(jnp.int32)}
        return draws, stats

    return run_chain


def cost_per_chain(num_walkers: int, num_warmup: int, num_samples: int) -> dict:
    """Exact single-point log-density evaluations of one ensemble: ``W (1 + num_warmup + T W)``."""
    T = num_snapshots(num_samples, num_walkers)
    return {"num_logdensity_evals": num_walkers * (1 + num_warmup + T * num_walkers), "num_grad_evals": 0}
