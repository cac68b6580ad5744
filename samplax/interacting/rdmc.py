"""Reverse diffusion Monte Carlo (Huang, Dong, Lu, Zhang, Zhang & Wang 2023,
"Reverse Diffusion Monte Carlo", arXiv:2307.02037, ICLR 2024).

Forward process: Ornstein-Uhlenbeck ``dX = -X dt + sqrt(2) dB`` started at the
target, so ``x_t = a x_0 + sqrt(v) eps`` with ``a = e^{-t}``, ``v = 1 - e^{-2t}``.
Its score is a posterior expectation (Tweedie):

    grad log p_t(x) = (a E[x_0 | x_t = x] - x) / v,
    q_t(x_0 | x) ∝ p(x_0) exp(-||x - a x_0||^2 / (2 v)),

which RDMC estimates by Monte Carlo on the posterior ``q_t`` instead of a
network.  Inner estimators here:

* ``"is"`` (default): self-normalised importance sampling with the Gaussian
  likelihood factor as proposal, ``x_0^k = (x + sqrt(v) eps_k) / a``,
  ``w_k ∝ p(x_0^k)`` (``num_inner`` target evaluations, no gradients);
* ``"ula"``: ``num_inner`` ULA chains on ``q_t`` (Huang et al.'s choice),
  started from ``num_inner`` SNIS draws resampled by weight, ``inner_steps``
  steps of size ``h = 0.1 v / (a^2 + v)``; the posterior mean is their average
  (``num_inner (1 + inner_steps)`` log-density and ``num_inner inner_steps`` gradient evaluations).

Outer loop (RDMC with a moderate horizon): start from ``N(0, I)`` draws, move
them towards ``p_T`` by ``init_steps`` ULA steps of size ``0.025 v(T)`` on ``p_T``
with the estimated score (``p_T`` has variance at least ``v(T)``, so the ULA
bias is about 1%), then integrate the reverse SDE
``dY = (Y + 2 grad log p_{T-s}(Y)) ds + sqrt(2) dB`` with the exponential
integrator (score frozen over a step of length ``δ``):

    Y' = e^{δ} Y + 2 (e^{δ} - 1) s + sqrt(e^{2δ} - 1) xi,

on ``num_warmup`` steps of a geometric time grid from ``T`` (default 1) down to
``t_min = 1e-3``; the returned draw is ``Y`` at ``t_min`` (its law ``p_{t_min}``
differs from ``p`` by ``O(t_min)``).  Each particle is an independent trajectory.

Why a moderate ``T`` (measured on a 2-D Gaussian with sds 0.5 and 2): with
``T = 5`` and a ``N(0, I)`` start, the importance proposal ``N(x/a, v/a^2)`` is
hundreds of target widths wide at large ``t``, the SNIS posterior mean is pulled
towards the proposal for particles in the tails, and the output sd came out
10-40% too large even with 1024 inner draws; with ``T = 1``, a Langevin start and
256 inner draws it is within Monte Carlo error.  The Langevin start needs
``init_steps * 0.025 v(T)`` to exceed the relaxation time of ``p_T``
(``≈ e^{-2T} Var_p + v(T)``): raise ``init_steps`` for targets much wider than 1.

Finite-``num_inner`` bias (inherent to the estimator, not a bug).  Every formula
above was checked against the paper (OU posterior ``q_t``, Tweedie score,
exponential integrator); with the exact posterior mean in place of the estimate,
the same grid, start and ``T`` reproduce the 5-D correlated Gaussian of the tests
within Monte Carlo error (1000 draws: sd errors -2.1 ... +0.4 SE).  The error
comes from self-normalised importance sampling, whose bias is ``O(1 / num_inner)``
and pulls ``E[x_0 | x_t]`` towards the proposal centre ``x / a``, i.e. makes the
score too weak and the output too wide.  In 5-D the importance weights
degenerate at ``t ≈ 1`` (median effective sample size 2 of 256 draws; the
shrinkage of the posterior-mean estimate towards ``x / a`` is 12% with 256 draws
and 1% with 4096), so with the defaults the sds come out 10-33% too large
(6-15 i.i.d. standard errors with 1000 draws), while with ``num_inner = 2048`` they
are within Monte Carlo error (-1% ... +6%, SE 3.5%).  A smaller ``T`` eases the
degeneracy but slows the Langevin start (``T = 0.3``: sds right, means of the
widest coordinates not yet converged).  Runs carry a ``biased`` warning; raise
``num_inner`` (cost grows linearly) to reduce the error.  The ``"ula"`` inner
estimator is biased too (finite, unadjusted inner chains); it was not
characterised in 5-D.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from samplax.core.nonfinite import count_nonfinite, is_nonfinite

T_MIN = 1e-3


BIAS_MESSAGE = (
    "the score comes from self-normalised importance sampling with num_inner draws, whose O(1/num_inner) "
    "bias weakens the score where the weights degenerate (moderate t, growing dimension), so the draws are "
    "too spread out: on a 5-D Gaussian the sds are 10-33% too large with num_inner=256 and within Monte Carlo "
    "error with 2048. Raise num_inner to reduce it")
ULA_BIAS_MESSAGE = (
    "the score comes from num_inner unadjusted Langevin chains of inner_steps steps started from "
    "importance-resampled draws, a biased estimate of E[x0 | x_t] (finite steps, no Metropolis correction, "
    "a degenerate start in growing dimension); raise inner_steps and num_inner to reduce it")


def time_grid(T: float, t_min: float, num_steps: int) -> jax.Array:
    """Geometric grid ``T = t_0 > t_1 > ... > t_n = t_min`` (``n = num_steps``)."""
    k = jnp.arange(num_steps + 1, dtype=jnp.result_type(float)) / num_steps
    return T * (t_min / T) ** k


def reverse_step(key, x, score, delta):
    """Exponential-integrator step of the reverse OU SDE over a time ``delta`` with a frozen score."""
    e = jnp.exp(delta)
    return e * x + 2.0 * (e - 1.0) * score + jnp.sqrt(jnp.expm1(2.0 * delta)) * jax.random.normal(key, x.shape, x.dtype)


def is_posterior_mean(key, lp_fn, x, t, num_inner):
    """SNIS estimate of ``E[x_0 | x_t = x]`` with proposal ``N(x / a, v / a^2 I)``; also returns draws, log-weights
    and the number of them that were non-finite (NaN or ``+inf``: zero weight)."""
    a, v = jnp.exp(-t), -jnp.expm1(-2.0 * t)
    x0 = (x + jnp.sqrt(v) * jax.random.normal(key, (num_inner,) + x.shape, x.dtype)) / a
    lw = jax.vmap(lp_fn)(x0)
    n_bad = count_nonfinite(lw)
    lw = jnp.where(is_nonfinite(lw), -jnp.inf, lw)
    return jax.nn.softmax(lw) @ x0, x0, lw, n_bad


def ula_posterior_mean(key, lp_fn, x, t, num_inner, inner_steps):
    """Average of ``num_inner`` ULA chains on ``q_t(x_0 | x)`` started from SIR draws (module doc); also returns
    the number of non-finite evaluations (log-weights, and gradients of the chains, which count as zero)."""
    a, v = jnp.exp(-t), -jnp.expm1(-2.0 * t)
    k1, k2, k3 = jax.random.split(key, 3)
    _, x0, lw, n_bad = is_posterior_mean(k1, lp_fn, x, t, num_inner)
    idx = jax.random.categorical(k2, lw, shape=(num_inner,))
    z = x0[idx]
    h = 0.1 * v / (a * a + v)

    def grad_q(z):
        return jax.grad(lp_fn)(z) + a * (x - a * z) / v

    def step(z, k):
        g = jax.vmap(grad_q)(z)
        bad = jnp.sum(~jnp.all(jnp.isfinite(g), axis=-1), dtype=jnp.int32)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        return z + h * g + jnp.sqrt(2 * h) * jax.random.normal(k, z.shape, z.dtype), bad

    z, bad = jax.lax.scan(step, z, jax.random.split(k3, inner_steps))
    return jnp.mean(z, axis=0), n_bad + jnp.sum(bad, dtype=jnp.int32)


def make_run_chain(logdensity_of_target, *, T, num_steps, inner, num_inner, inner_steps, init_steps=0,
                   init_step_size=None):
    """``run_chain(key, x [N, d], target) -> (draws [N, d], stats)``; ``x`` should be ``N(0, I)`` draws.

    ``stats["nonfinite_evals"] [N]``: each trajectory's evaluations with a NaN or ``+inf`` log-density (or a
    non-finite gradient, ``inner="ula"``), which the estimators treat as zero density.
    With ``init_steps > 0`` the start is first moved towards ``p_T`` by that many
    ULA steps of size ``init_step_size`` (None: ``0.025 v(T)``) on ``p_T`` with the
    estimated score (RDMC's initialisation for a moderate ``T``).
    """
    import math

    h_init = 0.025 * (-math.expm1(-2.0 * T)) if init_step_size is None else float(init_step_size)

    def run_chain(key, xT, target):
        lp_fn = logdensity_of_target(target)
        ts = time_grid(T, T_MIN, num_steps)

        def post_mean(k, x, t):
            if inner == "is":
                m, _, _, n_bad = is_posterior_mean(k, lp_fn, x, t, num_inner)
                return m, n_bad
            return ula_posterior_mean(k, lp_fn, x, t, num_inner, inner_steps)

        def score_at(k, x, t):
            a, v = jnp.exp(-t), -jnp.expm1(-2.0 * t)
            ks = jax.random.split(k, x.shape[0])
            m, n_bad = jax.vmap(lambda kk, xx: post_mean(kk, xx, t))(ks, x)
            return (a * m - x) / v, n_bad

        def init_step(carry, i):
            x, bad = carry
            k1, k2 = jax.random.split(jax.random.fold_in(key, 1_000_000 + i))
            g, nb = score_at(k1, x, ts[0])
            return (x + h_init * g + jnp.sqrt(2 * h_init) * jax.random.normal(k2, x.shape, x.dtype), bad + nb), None

        bad0 = jnp.zeros((xT.shape[0],), jnp.int32)
        if init_steps:
            (xT, bad0), _ = jax.lax.scan(init_step, (xT, bad0), jnp.arange(init_steps))

        def step(carry, i):
            x, bad = carry
            t_hi, t_lo = ts[i], ts[i + 1]
            k = jax.random.fold_in(key, i)
            ks = jax.random.split(k, x.shape[0] + 1)
            a, v = jnp.exp(-t_hi), -jnp.expm1(-2.0 * t_hi)
            m, nb = jax.vmap(lambda kk, xx: post_mean(kk, xx, t_hi))(ks[1:], x)
            score = (a * m - x) / v
            x = reverse_step(ks[0], x, score, t_hi - t_lo)
            return (x, bad + nb), None

        (x, bad), _ = jax.lax.scan(step, (xT, bad0), jnp.arange(num_steps))
        return x, {"nonfinite_evals": bad}

    return run_chain


def cost_per_chain(num_particles, *, num_steps, inner, num_inner, inner_steps, init_steps=0) -> dict:
    """Target evaluations of one chain (no initial check: the start is ``N(0, I)``)."""
    per = num_inner if inner == "is" else num_inner * (1 + inner_steps)
    grads = 0 if inner == "is" else num_inner * inner_steps
    n = num_steps + init_steps
    return {"num_logdensity_evals": num_particles * n * per, "num_grad_evals": num_particles * n * grads}
