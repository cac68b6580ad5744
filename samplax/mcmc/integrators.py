"""Symplectic integrators for Hamiltonian dynamics with ``H(x, p) = -log p(x) + p^T C p / 2``.

An integrator is a structural choice (closed over at build time); the step
size and inverse mass matrix are array arguments.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.mcmc import metrics


class IntegratorState(NamedTuple):
    position: jax.Array
    momentum: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


def velocity_verlet(logdensity_fn: Callable) -> Callable:
    """Leapfrog / velocity Verlet (Duane et al. 1987; Neal 2011), one gradient per step.

    ``p_{1/2} = p + (e/2) g(x)``, ``x' = x + e C p_{1/2}``, ``p' = p_{1/2} + (e/2) g(x')``.
    """
    vg = jax.value_and_grad(logdensity_fn)

    def step(state: IntegratorState, step_size, inverse_mass_matrix) -> IntegratorState:
        p_half = state.momentum + 0.5 * step_size * state.logdensity_grad
        x_new = state.position + step_size * metrics.velocity(inverse_mass_matrix, p_half)
        logdensity, grad = vg(x_new)
        p_new = p_half + 0.5 * step_size * grad
        return IntegratorState(x_new, p_new, logdensity, grad)

    step.grads_per_step = 1
    return step


def mclachlan(logdensity_fn: Callable) -> Callable:
    """Two-stage minimal-norm integrator (McLachlan 1995; Blanes, Casas & Sanz-Serna 2014).

    Position-velocity-position form with ``b = 0.1932``: two gradients per step,
    roughly 3x smaller energy error than leapfrog at equal cost for Gaussians.
    """
    vg = jax.value_and_grad(logdensity_fn)
    b1 = 0.1931833275037836

    def step(state: IntegratorState, step_size, inverse_mass_matrix) -> IntegratorState:
        p = state.momentum + b1 * step_size * state.logdensity_grad
        x = state.position + 0.5 * step_size * metrics.velocity(inverse_mass_matrix, p)
        _, g = vg(x)
        p = p + (1 - 2 * b1) * step_size * g
        x = x + 0.5 * step_size * metrics.velocity(inverse_mass_matrix, p)
        logdensity, grad = vg(x)
        p = p + b1 * step_size * grad
        return IntegratorState(x, p, logdensity, grad)

    step.grads_per_step = 2
    return step


INTEGRATORS = {"velocity_verlet": velocity_verlet, "leapfrog": velocity_verlet, "mclachlan": mclachlan}


def get_integrator(name_or_fn) -> Callable:
    if callable(name_or_fn):
        return name_or_fn
    try:
        return INTEGRATORS[name_or_fn]
    except KeyError:
        raise ValueError(
            f"integrator must be one of {sorted(INTEGRATORS)} or a callable, got {name_or_fn!r}"
        ) from None


def hamiltonian(state: IntegratorState, inverse_mass_matrix):
    """``-log p(x) + K(p)``; +inf where the log-density is not finite."""
    h = -state.logdensity + metrics.kinetic_energy(inverse_mass_matrix, state.momentum)
    return jnp.where(jnp.isfinite(h), h, jnp.inf)
