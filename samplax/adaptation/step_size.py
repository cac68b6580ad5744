"""Dual-averaging step-size adaptation (Nesterov 2009; Hoffman & Gelman 2014, Alg. 5).

With acceptance statistic ``a_t`` and target ``delta``:
``h_t = (1 - 1/(t + t0)) h_{t-1} + (delta - a_t) / (t + t0)``,
``log e_t = mu - sqrt(t) h_t / gamma``,
``log e_bar_t = t^{-kappa} log e_t + (1 - t^{-kappa}) log e_bar_{t-1}``,
with ``mu = log(10 e_0)``, ``gamma = 0.05``, ``t0 = 10``, ``kappa = 0.75`` (Stan's values).
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class DualAveragingState(NamedTuple):
    log_step_size: jnp.ndarray
    log_step_size_avg: jnp.ndarray
    h_bar: jnp.ndarray
    mu: jnp.ndarray
    t: jnp.ndarray


def da_init(step_size) -> DualAveragingState:
    step_size = jnp.asarray(step_size)
    z = jnp.zeros_like(step_size)
    return DualAveragingState(jnp.log(step_size), z, z, jnp.log(10.0 * step_size), z)


def da_update(state: DualAveragingState, accept_stat, target_accept,
              gamma=0.05, t0=10.0, kappa=0.75) -> DualAveragingState:
    accept_stat = jnp.where(jnp.isfinite(accept_stat), accept_stat, 0.0)
    t = state.t + 1.0
    eta = 1.0 / (t + t0)
    h_bar = (1.0 - eta) * state.h_bar + eta * (target_accept - accept_stat)
    log_e = state.mu - jnp.sqrt(t) / gamma * h_bar
    w = t ** (-kappa)
    log_e_avg = w * log_e + (1.0 - w) * state.log_step_size_avg
    return DualAveragingState(log_e, log_e_avg, h_bar, state.mu, t)


def find_reasonable_step_size(key, logdensity_fn, position, inverse_mass_matrix, step_size=1.0,
                              target_log_accept=jnp.log(0.8), max_iter: int = 60):  # noqa: B008 (an immutable constant)
    """Stan's ``init_stepsize`` heuristic (Hoffman & Gelman 2014, Alg. 4).

    Take one leapfrog step from ``position`` with a fresh momentum; double (or
    halve) the step size until the log acceptance ratio crosses
    ``target_log_accept``.  Returns ``(step_size, num_grad_evals)``.
    """
    import jax

    from samplax.mcmc import integrators, metrics

    vg = jax.value_and_grad(logdensity_fn)
    lp0, g0 = vg(position)
    p0 = metrics.sample_momentum(key, inverse_mass_matrix, position)
    s0 = integrators.IntegratorState(position, p0, lp0, g0)
    h0 = integrators.hamiltonian(s0, inverse_mass_matrix)
    leap = integrators.velocity_verlet(logdensity_fn)

    def log_accept(eps):
        h1 = integrators.hamiltonian(leap(s0, eps, inverse_mass_matrix), inverse_mass_matrix)
        d = h0 - h1
        return jnp.where(jnp.isfinite(d), d, -jnp.inf)

    eps0 = jnp.asarray(step_size, dtype=position.dtype)
    direction = jnp.where(log_accept(eps0) > target_log_accept, 1.0, -1.0)

    def cond(c):
        eps, n, done = c
        return (~done) & (n < max_iter)

    def body(c):
        eps, n, _ = c
        new = eps * 2.0**direction
        la = log_accept(new)
        done = jnp.where(direction > 0, la < target_log_accept, la > target_log_accept)
        # keep the last step size on the good side when going up
        return jnp.where(done & (direction > 0), eps, new), n + 1, done

    eps, n, _ = jax.lax.while_loop(cond, body, (eps0, jnp.asarray(0, jnp.int32), jnp.asarray(False)))
    return eps, 2 + n
