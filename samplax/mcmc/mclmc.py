"""Microcanonical Langevin Monte Carlo (MCLMC; Robnik, De Luca, Silverstein & Seljak 2023, JMLR 24)
and its Metropolis-adjusted variant (MAMS; Robnik, Cohn-Gordon & Seljak 2024,
"Metropolis adjusted microcanonical Hamiltonian Monte Carlo").

State: position ``x`` and a *unit* velocity ``u`` (``|u| = 1``).  In whitened
coordinates ``y = x / s`` (``s``: diagonal preconditioner, ``x = s y``) the
isokinetic dynamics are ``dy/dt = u``, ``du/dt = (I - u u^T) g / (d - 1)`` with
``g = s * grad log p(x)``.  For a constant ``g`` the velocity update over time
``e`` is exact (ESH update; Steeg & Galstyan 2021; Robnik et al. 2023, eq. 7):
with ``e_g = g / |g|``, ``delta = e |g| / (d - 1)``, ``zeta = exp(-delta)``, ``c = e_g . u``:

``u' = [2 zeta u + e_g (1 - zeta)(1 + zeta + c (1 - zeta))] / [1 + zeta^2 + c (1 - zeta^2)]``,
kinetic-energy change ``dK = (d - 1) [delta - log 2 + log(1 + c + (1 - c) zeta^2)]``.

One integration step is leapfrog (velocity half step, ``x += e s u``, gradient,
velocity half step; one gradient).  The energy error of a step is
``dE = dK - (log p(x') - log p(x))``.

* ``mclmc`` (unadjusted): after every step a partial velocity refresh
  ``u <- normalize(c1 u + c2 z / sqrt(d))``, ``c1 = exp(-e / L)``,
  ``c2 = sqrt(1 - c1^2)``, ``z ~ N(0, I)`` (``L``: momentum decoherence length).
  **Biased at finite step size** (no Metropolis test); the bias is controlled
  by the energy-error variance per dimension, which the tuning targets.
* ``adjusted_mclmc``: full refresh ``u ~ Uniform(S^{d-1})``, ``n`` deterministic
  steps with ``n`` uniform on ``{1, ..., 2 round(L / e) - 1}`` (jittered
  trajectory length, mean ``L / e``), accept with ``min(1, exp(-sum dE))``.
  Exact.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.types import Kernel
from samplax.core.method import Option
from samplax.core.options import pos_int, pos_number_or_none
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel


class MCLMCParams(NamedTuple):
    """Step size ``e``, decoherence length ``L`` (whitened units), diagonal preconditioner ``s`` [d]."""

    step_size: jax.Array
    L: jax.Array
    scale: jax.Array


class MCLMCState(NamedTuple):
    """Position, unit velocity ``u`` (whitened coordinates), cached log-density and gradient."""

    position: jax.Array
    momentum: jax.Array  # unit velocity u in whitened coordinates
    logdensity: jax.Array
    logdensity_grad: jax.Array


class MCLMCInfo(NamedTuple):
    """``energy_change``: ``dE`` of the step(s); ``acceptance_rate``: ``min(1, exp(-dE))``
    (a diagnostic for ``mclmc``, the Metropolis probability for ``adjusted_mclmc``)."""

    acceptance_rate: jax.Array
    is_nonfinite: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array
    energy_change: jax.Array
    num_integration_steps: jax.Array


def _unit(key, d, dtype):
    z = jax.random.normal(key, (d,), dtype=dtype)
    return z / jnp.linalg.norm(z)


def init(key, position, logdensity_fn: Callable) -> MCLMCState:
    """Evaluate log-density and gradient; draw ``u`` uniform on the sphere."""
    position = jnp.asarray(position)
    lp, g = jax.value_and_grad(logdensity_fn)(position)
    return MCLMCState(position, _unit(key, position.shape[0], position.dtype), lp, g)


def esh_velocity_update(u, g, time):
    """Exact isokinetic velocity update over ``time`` for a constant force ``g``; returns ``(u', dK)``."""
    d = u.shape[0]
    g_norm = jnp.linalg.norm(g)
    e = g / jnp.where(g_norm > 0, g_norm, 1.0)
    c = jnp.dot(e, u)
    delta = time * g_norm / (d - 1)
    zeta = jnp.exp(-delta)
    num = 2 * zeta * u + e * (1 - zeta) * (1 + zeta + c * (1 - zeta))
    den = 1 + zeta**2 + c * (1 - zeta**2)
    u_new = num / den
    u_new = u_new / jnp.linalg.norm(u_new)
    dk = (d - 1) * (delta - jnp.log(2.0) + jnp.log(1 + c + (1 - c) * zeta**2))
    return u_new, dk


def _leapfrog(vg):
    def step(state: MCLMCState, eps, s):
        x, u, lp, g = state
        u, dk1 = esh_velocity_update(u, s * g, 0.5 * eps)
        x = x + eps * s * u
        lp_new, g_new = vg(x)
        u, dk2 = esh_velocity_update(u, s * g_new, 0.5 * eps)
        de = dk1 + dk2 - (lp_new - lp)
        return MCLMCState(x, u, lp_new, g_new), de

    return step


def build_kernel(logdensity_fn: Callable) -> Callable:
    """``step(key, state, params)`` for unadjusted MCLMC: one leapfrog step, then partial refresh."""
    leap = _leapfrog(jax.value_and_grad(logdensity_fn))

    def step(key, state: MCLMCState, params: MCLMCParams):
        eps, L, s = params.step_size, params.L, params.scale
        new, de = leap(state, eps, s)
        d = state.position.shape[0]
        c1 = jnp.exp(-eps / L)
        c2 = jnp.sqrt(1 - c1**2)
        z = jax.random.normal(key, (d,), dtype=state.position.dtype)
        u = c1 * new.momentum + c2 * z / jnp.sqrt(d)
        new = new._replace(momentum=u / jnp.linalg.norm(u))
        finite = jnp.isfinite(new.logdensity) & jnp.all(jnp.isfinite(new.logdensity_grad)) & jnp.isfinite(de)
        # a non-finite point would poison the chain: stay (with a fresh direction) and report it
        fallback = state._replace(momentum=_unit(key, d, state.position.dtype))
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, fallback)
        one = jnp.ones((), jnp.int32)
        acc = jnp.where(finite, jnp.exp(jnp.minimum(0.0, -de)), 0.0)
        return new, MCLMCInfo(acc, ~finite, one, one, jnp.where(finite, de, jnp.inf), one)

    return step


def build_adjusted_kernel(logdensity_fn: Callable, max_steps: int = 1024) -> Callable:
    """``step(key, state, params)`` for Metropolis-adjusted MCLMC (MAMS): see the module docstring.

    ``max_steps`` caps the number of integration steps of one trajectory (structural).
    """
    leap = _leapfrog(jax.value_and_grad(logdensity_fn))

    def step(key, state: MCLMCState, params: MCLMCParams):
        eps, L, s = params.step_size, params.L, params.scale
        d = state.position.shape[0]
        k_u, k_n, k_acc = jax.random.split(key, 3)
        mean_n = jnp.clip(jnp.round(L / eps), 1, (max_steps + 1) // 2).astype(jnp.int32)
        n = jax.random.randint(k_n, (), 1, 2 * mean_n, dtype=jnp.int32)  # uniform on {1, ..., 2 mean_n - 1}
        start = state._replace(momentum=_unit(k_u, d, state.position.dtype))

        def body(_, c):
            st, de = c
            st, de_i = leap(st, eps, s)
            return st, de + de_i

        end, de = jax.lax.fori_loop(0, n, body, (start, jnp.zeros((), state.position.dtype)))
        finite = jnp.isfinite(end.logdensity) & jnp.all(jnp.isfinite(end.logdensity_grad)) & jnp.isfinite(de)
        log_a = jnp.where(finite, -de, -jnp.inf)
        accepted = jnp.log(jax.random.uniform(k_acc, dtype=state.position.dtype)) < log_a
        new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), end, start)
        acc = jnp.where(finite, jnp.exp(jnp.minimum(0.0, log_a)), 0.0)
        return new, MCLMCInfo(acc, ~finite, n, n, jnp.where(finite, de, jnp.inf), n)

    return step


def _factory(build, logdensity_fn, step_size, L, scale):
    step_fn = build(logdensity_fn)

    def init_fn(key, position):
        position = jnp.asarray(position)
        if position.ndim != 1 or position.shape[0] < 2:
            raise ValueError(f"mclmc: position must be a flat vector with d >= 2, got shape {position.shape}")
        return init(key, position, logdensity_fn)

    def step(key, state):
        d = state.position.shape[0]
        ll = jnp.sqrt(d) if L is None else L
        ss = jnp.ones((d,), state.position.dtype) if scale is None else jnp.asarray(scale)
        return step_fn(key, state, MCLMCParams(jnp.asarray(step_size), jnp.asarray(ll, state.position.dtype), ss))

    return Kernel(init_fn, step)


def mclmc(logdensity_fn: Callable, step_size, L=None, scale=None) -> Kernel:
    """Unadjusted MCLMC kernel (Robnik et al. 2023); biased at finite step size. ``L`` defaults to ``sqrt(d)``."""
    return _factory(build_kernel, logdensity_fn, step_size, L, scale)


def adjusted_mclmc(logdensity_fn: Callable, step_size, L=None, scale=None) -> Kernel:
    """Metropolis-adjusted MCLMC kernel (Robnik, Cohn-Gordon & Seljak 2024); exact."""
    return _factory(build_adjusted_kernel, logdensity_fn, step_size, L, scale)


def _mclmc_stats(state, info, params):
    return {"acceptance_rate": info.acceptance_rate, "step_size": params.step_size, "lp": state.logdensity,
            "nonfinite": info.is_nonfinite, "n_steps": info.num_integration_steps}


def _adjusted_params(p, in_warmup, dim, options):
    """Params of adjusted MCLMC from the window adapter: its step size, ``L = sqrt(d)`` and the adapted diagonal
    metric's scales ``sqrt(C)`` (no warm-up flag: the kernel is always adjusted)."""
    del in_warmup, options
    return MCLMCParams(p.step_size, jnp.full_like(p.step_size, float(math.sqrt(dim))), jnp.sqrt(p.inverse_mass_matrix))


register_kernel(KernelSpec("mclmc", init, build_kernel, MCLMCParams, mclmc, gradient_based=True, invariant=False,
                           initial_step_size=lambda d: 0.25 * math.sqrt(d),
                           method=ChainMethod(
                               "Microcanonical Langevin Monte Carlo, unadjusted, tuned by the energy-error variance "
                               "(Robnik et al. 2023); BIASED at finite step size", _mclmc_stats, adapter="mclmc",
                               min_dim=2,
                               bias="its stationary distribution is not the target at any finite step size; the bias "
                                    "is controlled by desired_energy_var (lower it to reduce the bias)")))
register_kernel(KernelSpec("adjusted_mclmc", init, build_adjusted_kernel, MCLMCParams, adjusted_mclmc,
                           gradient_based=True, invariant=True, target_accept=0.9,
                           initial_step_size=lambda d: 0.25 * math.sqrt(d),
                           method=ChainMethod(
                               "Metropolis-adjusted microcanonical HMC (MAMS; Robnik, Cohn-Gordon & Seljak 2024), "
                               "L = sqrt(d) in the adapted diagonal metric, step size by dual averaging to an "
                               "acceptance target", _mclmc_stats, adapter="windowed_flag", make_params=_adjusted_params,
                               min_dim=2, default_step_size=lambda d: 0.25 * math.sqrt(d),
                               options={"dense_mass": None,
                                        "step_size": Option(None, "initial step size (None: 0.25 sqrt(d), Robnik et al.)",
                                                            pos_number_or_none, "a positive number or None"),
                                        "max_num_steps": Option(1024, "cap on integration steps per trajectory", pos_int,
                                                                "an int >= 1")},
                               settings={"fixed_options": {"dense_mass": False}, "find_initial_step_size": False,
                                         "option_names": {"max_steps": "max_num_steps"}})))
