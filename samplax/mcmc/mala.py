"""Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996), preconditioned.

Update: ``y = x + (e^2/2) C g(x) + e C^{1/2} z``; accept with
``min(1, p(y) q(x|y) / (p(x) q(y|x)))``, ``q(y|x) = N(y; x + (e^2/2) C g(x), e^2 C)``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.nonfinite import is_broken_proposal
from samplax.core.types import Kernel, PointState, point_state
from samplax.mcmc import metrics
from samplax.mcmc import declare
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel


class MALAParams(NamedTuple):
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


class MALAInfo(NamedTuple):
    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_nonfinite: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array


def init(key, position, logdensity_fn: Callable) -> PointState:
    """Evaluate log-density and gradient at ``position``."""
    del key
    return point_state(logdensity_fn, position)


def log_proposal_density(y, x, grad_x, eps, imm):
    """``log q(y | x)`` up to a constant: ``N(y; x + (e^2/2) C g(x), e^2 C)``."""
    mean = x + 0.5 * eps**2 * metrics.velocity(imm, grad_x)
    w = metrics.whiten(imm, y - mean)
    return -0.5 * jnp.sum(w**2) / eps**2


def build_kernel(logdensity_fn: Callable) -> Callable:
    """``step(key, state, params) -> (state, info)`` for preconditioned MALA."""
    vg = jax.value_and_grad(logdensity_fn)
    log_q = log_proposal_density

    def step(key, state: PointState, params: MALAParams):
        eps, imm = params.step_size, params.inverse_mass_matrix
        k_prop, k_acc = jax.random.split(key)
        x = state.position
        z = jax.random.normal(k_prop, x.shape, dtype=x.dtype)
        y = x + 0.5 * eps**2 * metrics.velocity(imm, state.logdensity_grad) + eps * metrics.scale_noise(imm, z)
        lp_y, g_y = vg(y)
        finite = jnp.isfinite(lp_y) & jnp.all(jnp.isfinite(g_y))
        log_alpha = (lp_y - state.logdensity + log_q(x, y, g_y, eps, imm)
                     - log_q(y, x, state.logdensity_grad, eps, imm))
        log_alpha = jnp.where(finite & jnp.isfinite(log_alpha), log_alpha, -jnp.inf)
        accepted = jnp.log(jax.random.uniform(k_acc, dtype=x.dtype)) < log_alpha
        new_state = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), PointState(y, lp_y, g_y), state)
        one = jnp.ones((), jnp.int32)
        return new_state, MALAInfo(jnp.minimum(1.0, jnp.exp(log_alpha)), accepted,
                                   is_broken_proposal(y, lp_y, g_y), one, one)

    return step


def mala(logdensity_fn: Callable, step_size, inverse_mass_matrix=None) -> Kernel:
    """MALA kernel with fixed ``step_size`` and preconditioner ``inverse_mass_matrix``."""
    step_fn = build_kernel(logdensity_fn)

    def init_fn(key, position):
        return init(key, position, logdensity_fn)

    def step(key, state):
        imm = inverse_mass_matrix if inverse_mass_matrix is not None else jnp.ones_like(state.position)
        return step_fn(key, state, MALAParams(jnp.asarray(step_size), jnp.asarray(imm)))

    return Kernel(init_fn, step)


register_kernel(KernelSpec("mala", init, build_kernel, MALAParams, mala, gradient_based=True, invariant=True,
                           tunable=True, target_accept=0.574, population_target_accept=0.57,
                           initial_step_size=lambda d: d ** (-1 / 3),
                           method=ChainMethod("Metropolis-adjusted Langevin, preconditioned (Roberts & Tweedie 1996)",
                                              declare.basic_stats)))
