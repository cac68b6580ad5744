"""Random-walk Metropolis–Hastings (Metropolis et al. 1953; Hastings 1970).

Update: ``y = x + e C^{1/2} z``, ``z ~ N(0, I)``; accept with probability
``min(1, p(y)/p(x))``.  A non-finite log-density at ``y`` is a counted rejection.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.types import Kernel
from samplax.mcmc import metrics
from samplax.mcmc import declare
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel


class RWMParams(NamedTuple):
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


class RWMState(NamedTuple):
    position: jax.Array
    logdensity: jax.Array


class RWMInfo(NamedTuple):
    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_nonfinite: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array


def init(key, position, logdensity_fn: Callable) -> RWMState:
    """Evaluate the log-density at ``position``."""
    del key
    position = jnp.asarray(position)
    return RWMState(position, logdensity_fn(position))


def build_kernel(logdensity_fn: Callable) -> Callable:
    """``step(key, state, params) -> (state, info)`` for Gaussian random-walk MH."""

    def step(key, state: RWMState, params: RWMParams):
        k_prop, k_acc = jax.random.split(key)
        z = jax.random.normal(k_prop, state.position.shape, dtype=state.position.dtype)
        proposal = state.position + params.step_size * metrics.scale_noise(params.inverse_mass_matrix, z)
        lp_new = logdensity_fn(proposal)
        finite = jnp.isfinite(lp_new)
        log_alpha = jnp.where(finite, lp_new - state.logdensity, -jnp.inf)
        accept_prob = jnp.minimum(1.0, jnp.exp(log_alpha))
        accepted = jnp.log(jax.random.uniform(k_acc, dtype=state.position.dtype)) < log_alpha
        new_state = jax.tree.map(lambda a, b: jnp.where(accepted, a, b),
                                 RWMState(proposal, lp_new), state)
        one = jnp.ones((), jnp.int32)
        return new_state, RWMInfo(accept_prob, accepted, ~finite, one, 0 * one)

    return step


def rwm(logdensity_fn: Callable, step_size, inverse_mass_matrix=None) -> Kernel:
    """Random-walk MH kernel with fixed ``step_size`` and proposal covariance ``inverse_mass_matrix``."""
    step_fn = build_kernel(logdensity_fn)

    def init_fn(key, position):
        return init(key, position, logdensity_fn)

    def step(key, state):
        imm = inverse_mass_matrix if inverse_mass_matrix is not None else jnp.ones_like(state.position)
        return step_fn(key, state, RWMParams(jnp.asarray(step_size), jnp.asarray(imm)))

    return Kernel(init_fn, step)


register_kernel(KernelSpec("rwm", init, build_kernel, RWMParams, rwm, gradient_based=False, invariant=True,
                           tunable=True, target_accept=0.234, population_target_accept=0.3,
                           initial_step_size=lambda d: 2.38 * d ** -0.5,
                           state_from_point=lambda position, logdensity, grad: RWMState(position, logdensity),
                           # the method starts at 2.38 / sqrt(d) without the heuristic (differs from
                           # initial_step_size in the last bit for some d; kept so seeded draws stay)
                           method=ChainMethod("Random-walk Metropolis with adapted Gaussian proposal (Metropolis 1953)",
                                              declare.basic_stats, default_step_size=lambda dim: 2.38 / dim**0.5,
                                              settings={"find_initial_step_size": False})))
