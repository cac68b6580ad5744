"""Underdamped (kinetic) Langevin dynamics with the BAOAB splitting (Leimkuhler & Matthews 2013).

Dynamics: ``dx = C p dt``, ``dp = grad log p(x) dt - gamma p dt + sqrt(2 gamma) C^{-1/2} dW``
(mass matrix ``M = C^{-1}``, friction ``gamma``).  One BAOAB step of size ``e``:

* B: ``p += (e/2) grad log p(x)``;  A: ``x += (e/2) C p``;
* O: ``p = eta p + sqrt(1 - eta^2) M^{1/2} xi``, ``eta = exp(-gamma e)`` (exact OU step);
* A: ``x += (e/2) C p``;  B: ``p += (e/2) grad log p(x)``.

One gradient evaluation per step (the last B's gradient is reused).  No
Metropolis correction: **biased at finite step size**; BAOAB's configurational
bias is ``O(e^2)`` and vanishes in the high-friction limit faster (Leimkuhler &
Matthews 2013, "Rational construction of stochastic numerical methods for
molecular sampling", AMRX).  For a Gaussian target ``N(m, S)`` BAOAB samples the
position *exactly* for every friction and every stable step size
(``e^2 a < 4`` for each eigenvalue ``a`` of ``C^{1/2} S^{-1} C^{1/2}``); only the
momentum is off, with variance ``(1 - e^2 a / 4)`` times the exact one along that
eigenvector (Leimkuhler & Matthews 2013, sec. 4; checked in the tests by solving
the stationary Lyapunov equation of the linear update).

``acceptance_rate`` is ``min(1, exp(-W))`` with the shadow work ``W`` (energy
change of the two deterministic B-A half steps; Sivak, Chodera & Crooks 2013):
the acceptance probability of the Metropolized (GHMC-style) version, a measure
of discretization error used to adapt ``e``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.nonfinite import is_broken_proposal
from samplax.core.types import Kernel
from samplax.mcmc import metrics
from samplax.mcmc import declare
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel


class KineticLangevinParams(NamedTuple):
    """Step size ``e``, inverse mass matrix ``C`` ([d] or [d, d]) and friction ``gamma``.

    ``metropolize``: when true, a step is rejected with probability ``1 - exp(-W)``
    (then the position stays and the momentum is redrawn); used only during
    warm-up to keep the chain stable while the step size is explored.
    """

    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    friction: jax.Array
    metropolize: jax.Array = False


class KineticLangevinState(NamedTuple):
    """Position, momentum ``p`` and the cached log-density and gradient at the position."""

    position: jax.Array
    momentum: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class KineticLangevinInfo(NamedTuple):
    """``acceptance_rate = min(1, exp(-shadow work))`` (diagnostic); ``energy``: Hamiltonian after the step."""

    acceptance_rate: jax.Array
    is_nonfinite: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array
    energy: jax.Array


def init(key, position, logdensity_fn: Callable, inverse_mass_matrix=None) -> KineticLangevinState:
    """Evaluate log-density and gradient; draw a momentum ``p ~ N(0, C^{-1})`` (``C = I`` by default)."""
    position = jnp.asarray(position)
    lp, g = jax.value_and_grad(logdensity_fn)(position)
    imm = jnp.ones_like(position) if inverse_mass_matrix is None else inverse_mass_matrix
    p = metrics.sample_momentum(key, imm, position)
    return KineticLangevinState(position, p, lp, g)


def build_kernel(logdensity_fn: Callable) -> Callable:
    """``step(key, state, params) -> (state, info)``: one BAOAB step (see the module docstring)."""
    vg = jax.value_and_grad(logdensity_fn)

    def step(key, state: KineticLangevinState, params: KineticLangevinParams):
        eps, imm, gamma = params.step_size, params.inverse_mass_matrix, params.friction
        key, k_acc, k_fb = jax.random.split(key, 3)
        x, p, lp, g = state
        h0 = -lp + metrics.kinetic_energy(imm, p)
        p = p + 0.5 * eps * g
        x = x + 0.5 * eps * metrics.velocity(imm, p)
        # energy after the first B-A half step, with the not-yet-evaluated potential handled below
        k_before_o = metrics.kinetic_energy(imm, p)
        eta = jnp.exp(-gamma * eps)
        p = eta * p + jnp.sqrt(1 - eta**2) * metrics.sample_momentum(key, imm, x)
        k_after_o = metrics.kinetic_energy(imm, p)
        x = x + 0.5 * eps * metrics.velocity(imm, p)
        lp_new, g_new = vg(x)
        p = p + 0.5 * eps * g_new
        h1 = -lp_new + metrics.kinetic_energy(imm, p)
        # shadow work = total energy change minus the heat exchanged in the O step
        work = (h1 - h0) - (k_after_o - k_before_o)
        finite = jnp.isfinite(lp_new) & jnp.all(jnp.isfinite(g_new)) & jnp.isfinite(work)
        acc = jnp.where(finite, jnp.exp(jnp.minimum(0.0, -work)), 0.0)
        new = KineticLangevinState(x, p, lp_new, g_new)
        take = finite & (~jnp.asarray(params.metropolize, bool) | (jax.random.uniform(k_acc, dtype=acc.dtype) < acc))
        # a non-finite point would poison the chain: stay put (with a fresh momentum) and report it
        fallback = state._replace(momentum=metrics.sample_momentum(k_fb, imm, state.position))
        new = jax.tree.map(lambda a, b: jnp.where(take, a, b), new, fallback)
        one = jnp.ones((), jnp.int32)
        return new, KineticLangevinInfo(acc, is_broken_proposal(x, lp_new, g_new), one, one, jnp.where(take, h1, h0))

    return step


def kinetic_langevin(logdensity_fn: Callable, step_size, friction=1.0, inverse_mass_matrix=None) -> Kernel:
    """BAOAB kinetic Langevin kernel (Leimkuhler & Matthews 2013); biased at finite step size."""
    return fixed_kinetic_kernel(build_kernel, init, logdensity_fn, step_size, friction, inverse_mass_matrix)


def fixed_kinetic_kernel(build_kernel_fn: Callable, init_fn_: Callable, logdensity_fn: Callable, step_size,
                         friction, inverse_mass_matrix) -> Kernel:
    """A :class:`Kernel` with fixed ``(step_size, friction, inverse_mass_matrix)`` for a kinetic Langevin
    kernel module's ``build_kernel`` and ``init`` (params :class:`KineticLangevinParams`)."""
    step_fn = build_kernel_fn(logdensity_fn)

    def init_fn(key, position):
        return init_fn_(key, position, logdensity_fn, inverse_mass_matrix)

    def step(key, state):
        imm = inverse_mass_matrix if inverse_mass_matrix is not None else jnp.ones_like(state.position)
        return step_fn(key, state, KineticLangevinParams(jnp.asarray(step_size), jnp.asarray(imm),
                                                         jnp.asarray(friction)))

    return Kernel(init_fn, step)


def kinetic_params(p, in_warmup, dim, options):
    """Params from the window adapter's ``(step_size, inverse_mass_matrix)``, the ``friction`` option and the
    warm-up flag."""
    return KineticLangevinParams(p.step_size, p.inverse_mass_matrix, jnp.full_like(p.step_size, options["friction"]),
                                 in_warmup)


register_kernel(KernelSpec("kinetic_langevin", init, build_kernel, KineticLangevinParams, kinetic_langevin,
                           gradient_based=True, invariant=False, target_accept=0.9,
                           method=ChainMethod("Underdamped Langevin, BAOAB splitting (Leimkuhler & Matthews 2013); "
                                              "BIASED at finite step size", declare.energy_stats,
                                              adapter="windowed_flag", make_params=kinetic_params,
                                              options={"target_accept": declare.surrogate_target_accept(
                                                           0.9, declare.SURROGATE),
                                                       "friction": declare.FRICTION},
                                              bias=declare.LANGEVIN_BIAS)))
