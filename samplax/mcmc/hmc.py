"""Hamiltonian Monte Carlo with a fixed number of integration steps (Duane et al. 1987; Neal 2011).

Update: draw ``p ~ N(0, C^{-1})``, integrate ``L`` steps of size ``e`` with a
symplectic integrator, accept ``(x', p')`` with probability
``min(1, exp(H(x, p) - H(x', p')))``.  An energy error above
``divergence_threshold`` (or a non-finite density/gradient) is a divergence and
a rejection.  ``L`` and the integrator are structural; ``e`` and ``C`` are array
parameters.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.nonfinite import is_broken_proposal
from samplax.core.types import Kernel, PointState, point_state
from samplax.mcmc import integrators, metrics
from samplax.core.method import Option
from samplax.core.options import pos_int
from samplax.mcmc import declare
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel


class HMCParams(NamedTuple):
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


class HMCInfo(NamedTuple):
    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    is_nonfinite: jax.Array
    energy: jax.Array
    num_integration_steps: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array


def init(key, position, logdensity_fn: Callable) -> PointState:
    del key
    return point_state(logdensity_fn, position)


def build_kernel(logdensity_fn: Callable, num_integration_steps: int = 10,
                 integrator="velocity_verlet", divergence_threshold: float = 1000.0,
                 step_size_jitter: float = 0.2) -> Callable:
    """``step(key, state, params)`` for HMC with ``num_integration_steps`` static steps.

    Each transition uses the step size ``e * u`` with ``u ~ Uniform(1 - j, 1 + j)``
    (``j = step_size_jitter``; Neal 2011, section 5.4.2.2) so that a fixed trajectory
    length cannot resonate with a periodic direction of the target.
    """
    if not 0.0 <= float(step_size_jitter) < 1.0:
        raise ValueError(f"step_size_jitter must be in [0, 1), got {step_size_jitter}")
    if int(num_integration_steps) < 1:
        raise ValueError(f"num_integration_steps must be >= 1, got {num_integration_steps}")
    num_integration_steps = int(num_integration_steps)
    integ = integrators.get_integrator(integrator)(logdensity_fn)
    grads_per_step = getattr(integ, "grads_per_step", 1)

    def step(key, state: PointState, params: HMCParams):
        imm = params.inverse_mass_matrix
        k_mom, k_acc, k_jit = jax.random.split(key, 3)
        eps = params.step_size * (1.0 + step_size_jitter * jax.random.uniform(
            k_jit, minval=-1.0, maxval=1.0, dtype=state.position.dtype))
        p0 = metrics.sample_momentum(k_mom, imm, state.position)
        s0 = integrators.IntegratorState(state.position, p0, state.logdensity, state.logdensity_grad)
        h0 = integrators.hamiltonian(s0, imm)
        def leapfrog(_, carry):  # also: did the log-density break at a finite point on the way?
            s, broken = carry
            s = integ(s, eps, imm)
            return s, broken | is_broken_proposal(s.position, s.logdensity, s.logdensity_grad)

        s1, broken = jax.lax.fori_loop(0, num_integration_steps, leapfrog, (s0, jnp.zeros((), bool)))
        h1 = integrators.hamiltonian(s1, imm)
        finite = jnp.isfinite(s1.logdensity) & jnp.all(jnp.isfinite(s1.logdensity_grad)) & jnp.isfinite(h1)
        delta = jnp.where(finite, h0 - h1, -jnp.inf)
        divergent = -delta > divergence_threshold
        accept_prob = jnp.minimum(1.0, jnp.exp(delta))
        accepted = jnp.log(jax.random.uniform(k_acc, dtype=p0.dtype)) < delta
        proposal = PointState(s1.position, s1.logdensity, s1.logdensity_grad)
        new_state = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), proposal, state)
        energy = jnp.where(accepted, h1, h0)
        n = jnp.asarray(num_integration_steps * grads_per_step, jnp.int32)
        return new_state, HMCInfo(accept_prob, accepted, divergent, broken, energy,
                                  jnp.asarray(num_integration_steps, jnp.int32), n, n)

    return step


def hmc(logdensity_fn: Callable, step_size, inverse_mass_matrix=None, num_integration_steps: int = 10,
        integrator="velocity_verlet") -> Kernel:
    """HMC kernel with fixed parameters."""
    step_fn = build_kernel(logdensity_fn, num_integration_steps, integrator)

    def init_fn(key, position):
        return init(key, position, logdensity_fn)

    def step(key, state):
        imm = inverse_mass_matrix if inverse_mass_matrix is not None else jnp.ones_like(state.position)
        return step_fn(key, state, HMCParams(jnp.asarray(step_size), jnp.asarray(imm)))

    return Kernel(init_fn, step)


register_kernel(KernelSpec("hmc", init, build_kernel, HMCParams, hmc, gradient_based=True, invariant=True,
                           tunable=True, target_accept=0.8, population_target_accept=0.65,
                           initial_step_size=lambda d: d ** -0.25,
                           method=ChainMethod("Hamiltonian Monte Carlo, static trajectory (Neal 2011)", declare.hmc_stats,
                                              options={"num_integration_steps": Option(
                                                           16, "leapfrog steps per transition", pos_int, "an int >= 1"),
                                                       "integrator": declare.integrator_option()})))
