"""Ensemble score-based sampler: reverse OU diffusion with drifts estimated from the particle ensemble.

After Riel & Bischoff 2024 ("Enhancing Score-Based Sampling Methods with
Ensembles" / "Gradient-Free Score-Based Sampling Methods with Ensembles",
arXiv:2401.17539), which builds gradient-free approximate reverse-diffusion
(Föllmer-type) drifts from the collective ensemble.  What is implemented here
is *our* estimator in that spirit (we could not check the paper's code; the
facts used are the OU score identity and its Monte Carlo form):

Forward OU ``x_t = a x_0 + sqrt(v) eps`` (``a = e^{-t}``, ``v = 1 - e^{-2t}``),
``grad log p_t(x) = (a E[x_0 | x_t = x] - x) / v``.  At each reverse step,
every ensemble member ``x_j`` proposes ``L`` points ``x_0^{jl} = (x_j + sqrt(v) eps) / a``
and the target is evaluated once at each (``N L`` evaluations per step for the
whole ensemble).  All members then share all ``N L`` evaluations through a
multiple-importance-sampling (balance heuristic) estimate of their posterior means:

    E[x_0 | x_i] ≈ sum_{jl} w_{i,jl} x_0^{jl},
    w_{i,jl} ∝ p(x_0^{jl}) N(x_0^{jl}; x_i / a, v/a^2 I) / ((1/N) sum_k N(x_0^{jl}; x_k / a, v/a^2 I)),

so member ``i`` borrows the evaluations made near its ensemble neighbours
(far more effective draws than ``L`` per member when the ensemble is dense).
The members move with the same exponential-integrator step as
:mod:`samplax.interacting.rdmc` on a geometric grid from ``T = 5`` to ``1e-3``
(``num_warmup`` steps), starting from ``N(0, I)``; the returned draws are the
ensemble at ``t_min``.  Gradient-free.

Finite-``L`` bias (inherent to the self-normalised estimator, not a bug; the
formulas above were re-derived and the integrator reproduces the target with the
exact score, see :mod:`samplax.interacting.rdmc`).  The weights of member ``i``
degenerate at moderate ``t`` in growing dimension, and the self-normalised
estimate is then pulled towards the member's own proposal centre, which weakens
the score and widens the output.  Measured on the 5-D correlated Gaussian of the
tests (sds 0.5 ... 2), relative sd error of the narrowest coordinate:

    L = 4:  N = 250 (8 ensembles): +7.1% (4.5 i.i.d. SE),  N = 500: +6.6% (4.2 SE),
            N = 1000: +4.3% (2.7 SE),  N = 500 with 800 steps: +8% (3.6 SE)
            (neither N nor the time grid removes it)
    L = 16: N = 250 (8 ensembles): +1.8% (1.1 SE), all five sds within 1.1 SE;
            N = 500: all five sds within 0.8 SE; means within 2 SE.

So the accuracy knob is ``L`` (cost ``N L`` evaluations and ``O(N^2 L d)``
arithmetic per step), and the default is ``L = 16``.  In 2-D ``L = 4`` is
already within z = 4.5 MCSE (tests).  Runs carry a ``biased`` warning since the
bias grows with the dimension at fixed ``L``.  The interaction makes members
weakly dependent (O(1/N) effects); independent chains are independent ensembles.

Cost: QUADRATIC in the ensemble size.  Every step compares each of the ``N`` members with
all ``N L`` shared draws (distances, weights, weighted means), so one run costs about
``N^2 L`` pair terms per step, each ``O(d)`` arithmetic plus an exponential:
:func:`predicted_work` ``= N^2 L steps ensembles (d + 50)`` (the 50 is the per-pair work that
does not grow with ``d``, fitted to timings; on a shared 2-core CPU one unit took about
``5e-10`` s: the defaults, 1000 members, ``L = 16``, 1000 steps and 4 ensembles, take about
half an hour in 10-D there, and 2000 members for 3000 steps twelve times that).  Doubling the
members quadruples the time; more ensembles (chains) of fewer members are cheaper for the
same number of draws.  A run whose predicted work exceeds :data:`WORK_WARN_THRESHOLD`
(set so that the default settings do not warn up to 100 dimensions) warns before it starts.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from samplax.core.nonfinite import is_nonfinite
from samplax.interacting._common import pairwise_sq_dists
from samplax.interacting.rdmc import T_MIN, reverse_step, time_grid


#: Predicted work (:func:`predicted_work`) above which a run warns before it starts: the default settings
#: (1000 members, draws_per_member 16, 1000 steps, 4 ensembles) stay below it up to d = 100.
WORK_WARN_THRESHOLD = 1e13
#: Seconds per unit of predicted work measured on a shared 2-core CPU (float64), for the rough time in the warning.
SECONDS_PER_WORK_UNIT = 5e-10


def predicted_work(num_members: int, num_steps: int, num_ensembles: int, dim: int, draws_per_member: int) -> float:
    """``N^2 L steps ensembles (d + 50)``: the pairwise work of a run (module docstring, "Cost")."""
    return float(num_members) ** 2 * draws_per_member * num_steps * num_ensembles * (dim + 50)


def cost_warning(name: str, num_members: int, num_steps: int, num_ensembles: int, dim: int,
                 draws_per_member: int):
    """The ``expensive`` run warning when :func:`predicted_work` exceeds :data:`WORK_WARN_THRESHOLD`, else None."""
    work = predicted_work(num_members, num_steps, num_ensembles, dim, draws_per_member)
    if work <= WORK_WARN_THRESHOLD:
        return None
    minutes = work * SECONDS_PER_WORK_UNIT / 60.0
    return {"code": "expensive", "value": work,
            "message": f"{name}: predicted work {work:.3g} (members^2 x draws_per_member x steps x ensembles x "
                       f"(dim + 50) = {num_members}^2 x {draws_per_member} x {num_steps} x {num_ensembles} x "
                       f"({dim} + 50)) is above {WORK_WARN_THRESHOLD:.0e}: about {minutes:.0f} minutes on a 2-core "
                       "CPU. The cost grows with the square of the ensemble size (num_samples): use fewer members "
                       "per ensemble and more ensembles (num_chains), fewer steps (num_warmup) or a smaller "
                       "draws_per_member"}


BIAS_MESSAGE = (
    "the drift comes from self-normalised importance sampling with draws_per_member draws per member shared "
    "over the ensemble; its bias (towards each member's own proposal centre) widens the output where the "
    "weights degenerate, which worsens with the dimension: on a 5-D Gaussian the narrowest sd is 4-8% too "
    "large with draws_per_member=4 and within Monte Carlo error with 16. Raise draws_per_member to reduce it")


def ensemble_posterior_means(key, lp_fn, x, t, draws_per_member):
    """Balance-heuristic MIS estimates of ``E[x_0 | x_t = x_i]`` for all members ``x`` [N, d] (module doc).

    Also returns ``[N]``: how many of the ``draws_per_member`` draws each member proposed had a NaN or ``+inf``
    log-density (a zero weight for every member)."""
    n, d = x.shape
    a, v = jnp.exp(-t), -jnp.expm1(-2.0 * t)
    centres = x / a
    var = v / (a * a)
    eps = jax.random.normal(key, (n, draws_per_member, d), x.dtype)
    x0 = (centres[:, None, :] + jnp.sqrt(var) * eps).reshape(n * draws_per_member, d)
    lp = jax.vmap(lp_fn)(x0)
    bad = is_nonfinite(lp)
    lp = jnp.where(bad, -jnp.inf, lp)
    logk = -pairwise_sq_dists(centres, x0) / (2.0 * var)  # [N members, N L draws], common constants dropped
    log_mix = jax.scipy.special.logsumexp(logk, axis=0)  # proposal mixture density at each draw (up to consts)
    logw = lp[None, :] + logk - log_mix[None, :]
    w = jax.nn.softmax(logw, axis=1)
    return w @ x0, jnp.sum(bad.reshape(n, draws_per_member), axis=1, dtype=jnp.int32)


def make_run_chain(logdensity_of_target, *, T, num_steps, draws_per_member):
    """``run_chain(key, x_T [N, d], target) -> (ensemble at t_min [N, d], stats)``; ``stats["nonfinite_evals"]``
    counts, per member, the non-finite evaluations at the draws it proposed (:func:`ensemble_posterior_means`)."""

    def run_chain(key, xT, target):
        lp_fn = logdensity_of_target(target)
        ts = time_grid(T, T_MIN, num_steps)

        def step(carry, i):
            x, bad = carry
            t_hi, t_lo = ts[i], ts[i + 1]
            k1, k2 = jax.random.split(jax.random.fold_in(key, i))
            a, v = jnp.exp(-t_hi), -jnp.expm1(-2.0 * t_hi)
            m, nb = ensemble_posterior_means(k1, lp_fn, x, t_hi, draws_per_member)
            return (reverse_step(k2, x, (a * m - x) / v, t_hi - t_lo), bad + nb), None

        (x, bad), _ = jax.lax.scan(step, (xT, jnp.zeros((xT.shape[0],), jnp.int32)), jnp.arange(num_steps))
        return x, {"nonfinite_evals": bad}

    return run_chain


def cost_per_chain(num_particles, *, num_steps, draws_per_member) -> dict:
    """``N L`` log-density evaluations per step, no gradients."""
    return {"num_logdensity_evals": num_particles * draws_per_member * num_steps, "num_grad_evals": 0}
