"""Overdamped Langevin samplers without Metropolis correction: ULA and randomized-midpoint LMC.

Both discretize ``dX = C grad log p(X) dt + sqrt(2) C^{1/2} dW`` (preconditioner
``C`` = inverse mass matrix) with time step ``h = e^2 / 2`` — the same
parameterization as MALA in samplax, so a step size ``e`` means the same move.
**Both are biased at any finite step size**: their stationary law is not ``p``;
the bias vanishes as ``e -> 0`` (``O(h)`` for ULA; for randomized midpoint the
bias is smaller for smooth targets).

Exact stationary law on a Gaussian ``N(m, S)`` (used by the tests): with
``A = C^{1/2} S^{-1} C^{1/2}`` and an eigenvalue ``a`` of ``A``, the stationary
law is Gaussian with mean ``m`` and, along that eigenvector (in
``C^{-1/2}``-coordinates), variance

* ULA: ``2 h / (1 - (1 - h a)^2) = (1/a) / (1 - h a / 2)``;
* randomized midpoint: ``h [(1 - h a)^2 + 1] / (1 - E[(1 - h a + u h^2 a^2)^2])``
  with ``u ~ U(0, 1)``, i.e. ``1 - (b^2 + b c + c^2 / 3)`` in the denominator,
  ``b = 1 - h a``, ``c = h^2 a^2``.

The ``acceptance_rate`` these kernels report is the MALA acceptance
probability ``min(1, p(y) q(x|y) / (p(x) q(y|x)))`` the move would have had
(computed from the values the next step needs anyway, no extra evaluation):
a measure of the local discretization error used to adapt the step size.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.types import Kernel, PointState, point_state
from samplax.mcmc import metrics
from samplax.mcmc import declare
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel


class LangevinParams(NamedTuple):
    """Step size ``e`` (time step ``h = e^2 / 2``), inverse mass matrix ``C`` ([d] or [d, d]).

    ``metropolize``: when true the move is accepted with the MALA probability
    (used only during warm-up, to keep the chain stable while the step size is
    explored; sampling runs with ``metropolize = False``, the plain unadjusted method).
    """

    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    metropolize: jax.Array = False


class LangevinInfo(NamedTuple):
    """``acceptance_rate``: MALA acceptance probability of the move (diagnostic only; the move is always taken)."""

    acceptance_rate: jax.Array
    is_nonfinite: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array


def init(key, position, logdensity_fn: Callable) -> PointState:
    """Evaluate log-density and gradient at ``position``."""
    del key
    return point_state(logdensity_fn, position)


from samplax.mcmc.mala import log_proposal_density as _mala_log_q  # noqa: E402


def _mala_accept(state: PointState, new: PointState, eps, imm):
    log_a = (new.logdensity - state.logdensity + _mala_log_q(state.position, new.position, new.logdensity_grad, eps, imm)
             - _mala_log_q(new.position, state.position, state.logdensity_grad, eps, imm))
    return jnp.where(jnp.isfinite(log_a), jnp.minimum(1.0, jnp.exp(jnp.minimum(log_a, 0.0))), 0.0)


def _finish(key, state, new, params, n_grad):
    eps, imm = params.step_size, params.inverse_mass_matrix
    finite = jnp.isfinite(new.logdensity) & jnp.all(jnp.isfinite(new.logdensity_grad))
    acc = jnp.where(finite, _mala_accept(state, new, eps, imm), 0.0)
    take = finite & (~jnp.asarray(params.metropolize, bool)
                     | (jax.random.uniform(key, dtype=acc.dtype) < acc))
    # A non-finite point would poison the chain forever: stay put and report it.
    new = jax.tree.map(lambda a, b: jnp.where(take, a, b), new, state)
    n = jnp.asarray(n_grad, jnp.int32)
    return new, LangevinInfo(acc, ~finite, n, n)


def build_ula_kernel(logdensity_fn: Callable) -> Callable:
    """``step(key, state, params)`` for the unadjusted Langevin algorithm (Roberts & Tweedie 1996;
    Durmus & Moulines 2017, "Nonasymptotic convergence analysis for the unadjusted Langevin algorithm").

    ``x' = x + h C grad log p(x) + sqrt(2 h) C^{1/2} xi``, ``h = e^2 / 2``, ``xi ~ N(0, I)``.
    BIASED at finite step size (see the module docstring for the exact Gaussian case).
    One gradient evaluation per step.  A non-finite log-density or gradient at
    the new point leaves the chain where it was and is flagged in ``is_nonfinite``.
    """
    vg = jax.value_and_grad(logdensity_fn)

    def step(key, state: PointState, params: LangevinParams):
        eps, imm = params.step_size, params.inverse_mass_matrix
        h = 0.5 * eps**2
        x = state.position
        key, k_acc = jax.random.split(key)
        xi = jax.random.normal(key, x.shape, dtype=x.dtype)
        y = x + h * metrics.velocity(imm, state.logdensity_grad) + jnp.sqrt(2 * h) * metrics.scale_noise(imm, xi)
        lp, g = vg(y)
        return _finish(k_acc, state, PointState(y, lp, g), params, 1)

    return step


def build_randomized_midpoint_kernel(logdensity_fn: Callable) -> Callable:
    """``step(key, state, params)`` for randomized-midpoint Langevin Monte Carlo (overdamped).

    The randomized midpoint method of Shen & Lee (2019, NeurIPS, "The randomized
    midpoint method for log-concave sampling") applied to the overdamped
    Langevin diffusion, as analysed by He, Balasubramanian & Erdogdu (2020) and
    Yu & Dalalyan (2024, "Parallelized midpoint randomization for Langevin Monte
    Carlo"), with ``u ~ U(0, 1)`` and independent ``xi1, xi2 ~ N(0, I)``:

    ``x_u = x + u h C g(x) + sqrt(2 u h) C^{1/2} xi1``,
    ``x'  = x + h C g(x_u) + sqrt(2 u h) C^{1/2} xi1 + sqrt(2 (1 - u) h) C^{1/2} xi2``

    (the same Brownian path drives the midpoint and the full step).  Two
    gradient evaluations per step (at ``x_u`` and at ``x'``).  BIASED at finite
    step size.  (Shen & Lee's main algorithm is for the underdamped diffusion,
    :mod:`samplax.mcmc.randomized_midpoint`; this is its overdamped form,
    registered as ``randomized_midpoint_overdamped``.)
    """
    vg = jax.value_and_grad(logdensity_fn)
    grad = jax.grad(logdensity_fn)

    def step(key, state: PointState, params: LangevinParams):
        eps, imm = params.step_size, params.inverse_mass_matrix
        h = 0.5 * eps**2
        x = state.position
        k_u, k1, k2, k_acc = jax.random.split(key, 4)
        u = jax.random.uniform(k_u, dtype=x.dtype)
        b1 = jnp.sqrt(2 * u * h) * metrics.scale_noise(imm, jax.random.normal(k1, x.shape, dtype=x.dtype))
        b2 = jnp.sqrt(2 * (1 - u) * h) * metrics.scale_noise(imm, jax.random.normal(k2, x.shape, dtype=x.dtype))
        x_mid = x + u * h * metrics.velocity(imm, state.logdensity_grad) + b1
        g_mid = grad(x_mid)
        y = x + h * metrics.velocity(imm, g_mid) + b1 + b2
        lp, g = vg(y)
        new, info = _finish(k_acc, state, PointState(y, lp, g), params, 2)
        bad_mid = ~jnp.all(jnp.isfinite(g_mid))
        return new, info._replace(is_nonfinite=info.is_nonfinite | bad_mid)

    return step


def _kernel(build, logdensity_fn, step_size, inverse_mass_matrix):
    step_fn = build(logdensity_fn)

    def init_fn(key, position):
        return init(key, position, logdensity_fn)

    def step(key, state):
        imm = inverse_mass_matrix if inverse_mass_matrix is not None else jnp.ones_like(state.position)
        return step_fn(key, state, LangevinParams(jnp.asarray(step_size), jnp.asarray(imm)))

    return Kernel(init_fn, step)


def ula(logdensity_fn: Callable, step_size, inverse_mass_matrix=None) -> Kernel:
    """Unadjusted Langevin kernel (biased at finite step size; see :func:`build_ula_kernel`)."""
    return _kernel(build_ula_kernel, logdensity_fn, step_size, inverse_mass_matrix)


def randomized_midpoint_overdamped(logdensity_fn: Callable, step_size, inverse_mass_matrix=None) -> Kernel:
    """Overdamped randomized-midpoint Langevin kernel (biased at finite step size; see
    :func:`build_randomized_midpoint_kernel`).  The underdamped (kinetic) scheme of
    Shen & Lee 2019 is :func:`samplax.mcmc.randomized_midpoint`."""
    return _kernel(build_randomized_midpoint_kernel, logdensity_fn, step_size, inverse_mass_matrix)


def _langevin_params(p, in_warmup, dim, options):
    """Params from the window adapter's ``(step_size, inverse_mass_matrix)`` and the warm-up flag."""
    return LangevinParams(p.step_size, p.inverse_mass_matrix, in_warmup)


def _langevin_method(description):
    return ChainMethod(description, declare.basic_stats, adapter="windowed_flag", make_params=_langevin_params,
                       options={"target_accept": declare.surrogate_target_accept(0.9, declare.SURROGATE)},
                       bias=declare.LANGEVIN_BIAS)


register_kernel(KernelSpec("ula", init, build_ula_kernel, LangevinParams, ula, gradient_based=True, invariant=False,
                           tunable=True, target_accept=0.9,
                           method=_langevin_method("Unadjusted Langevin algorithm, preconditioned; BIASED at finite "
                                                   "step size (Roberts & Tweedie 1996)")))
register_kernel(KernelSpec("randomized_midpoint_overdamped", init, build_randomized_midpoint_kernel, LangevinParams,
                           randomized_midpoint_overdamped, gradient_based=True, invariant=False, tunable=True,
                           target_accept=0.9,
                           method=_langevin_method("Randomized-midpoint overdamped Langevin Monte Carlo (Shen & Lee "
                                                   "2019; He, Balasubramanian & Erdogdu 2020; Yu & Dalalyan 2024); "
                                                   "BIASED at finite step size")))
