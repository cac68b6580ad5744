"""Underdamped (kinetic) Langevin with the randomized midpoint discretization (Shen & Lee 2019).

Dynamics (the same as :mod:`samplax.mcmc.kinetic_langevin`): mass matrix
``M = C^{-1}``, velocity ``v = C p``, friction ``gamma``, ``g = grad log p``:

    dx = v dt,    dv = (C g(x) - gamma v) dt + sqrt(2 gamma) C^{1/2} dB.

Its stationary law is ``p(x) N(p; 0, M)``.  Variation of constants on
``[0, h]`` gives, with ``phi(s) = (1 - e^{-gamma s}) / gamma``,

    v(h) = e^{-gamma h} v0 + int_0^h e^{-gamma (h - s)} C g(x(s)) ds + W_v,
    x(h) = x0 + phi(h) v0 + int_0^h phi(h - s) C g(x(s)) ds + W_x,

    W_v = sqrt(2 gamma) int_0^h e^{-gamma (h - s)} C^{1/2} dB_s,
    W_x = sqrt(2 gamma) int_0^h phi(h - s) C^{1/2} dB_s.

**Randomized midpoint step** (Shen & Lee 2019, "The randomized midpoint method
for log-concave sampling", NeurIPS, Alg. 2; analysed by Yu, Karagulyan &
Dalalyan 2023, "Langevin Monte Carlo for strongly log-concave distributions:
randomized midpoint revisited", and Yu & Dalalyan 2024, "Parallelized midpoint
randomization for Langevin Monte Carlo", where it is called RKLMC).  Both
integrals ``int_0^h f(s) ds`` are replaced by the one-point Monte Carlo estimate
``h f(t)`` at a uniform time ``t = alpha h``, ``alpha ~ U(0, 1)``; the point
``x(t)`` itself is the exact solution with the gradient frozen at ``x0``:

    x_mid = x0 + phi(t) v0 + psi(t) C g(x0) + W_mid,      psi(t) = (t - phi(t)) / gamma,
    x1    = x0 + phi(h) v0 + h phi(h - t) C g(x_mid) + W_x,
    v1    = e^{-gamma h} v0 + h e^{-gamma (h - t)} C g(x_mid) + W_v,
    W_mid = sqrt(2 gamma) int_0^t phi(t - s) C^{1/2} dB_s

(momentum ``p1 = M v1``: the force enters as ``h e^{-gamma (h - t)} g(x_mid)``).
The three noises are driven by the *same* Brownian path, so they are jointly
Gaussian; given ``alpha`` each is ``C^{1/2}`` times a whitened scalar integral
per coordinate, with a 3 x 3 covariance.

**Derivation of the noise covariance.**  For one whitened coordinate let
``X(tau) = sqrt(2 gamma) int_0^tau phi(tau - s) dB_s`` and
``V(tau) = sqrt(2 gamma) int_0^tau e^{-gamma (tau - s)} dB_s`` (the noise of an OU
step of length ``tau``).  By Ito's isometry, with ``y = gamma tau``::

    Var X  = 2 gamma int_0^tau phi(r)^2 dr = 2 f3(y) / gamma^2,
             f3(y) = y - 2 (1 - e^{-y}) + (1 - e^{-2 y}) / 2   (~ y^3 / 3),
    Var V  = 1 - e^{-2 y},
    Cov    = 2 gamma int_0^tau phi(r) e^{-gamma r} dr = (1 - e^{-y})^2 / gamma.

Split ``[0, h]`` at ``t``: let ``(X1, V1)`` be the pair over ``[0, t]`` and
``(X2, V2)`` the independent pair over ``[t, h]`` (length ``h - t``).  For
``s <= t``, ``phi(h - s) = phi(t - s) + e^{-gamma (t - s)} phi(h - t)`` and
``e^{-gamma (h - s)} = e^{-gamma (h - t)} e^{-gamma (t - s)}``, hence exactly::

    W_mid = X1,   W_x = X1 + phi(h - t) V1 + X2,   W_v = e^{-gamma (h - t)} V1 + V2

(the OU semigroup property).  This gives the joint 3 x 3 covariance without
forming it, e.g. ``Cov(W_mid, W_x) = Var X1 + phi(h - t) Cov(X1, V1)``; it is
checked against direct quadrature of the Ito integrals in the tests.  Each pair
is drawn as ``V = sqrt(Var V) z1``, ``X = (Cov / Var V) V + sqrt(Var X - Cov^2 / Var V) z2``
(conditional variance ``~ y^3 / (6 gamma^2)``: no cancellation); ``f3`` and
``psi`` use their Taylor series for ``y < 0.1`` (no cancellation in float32).

**Cost**: two gradient evaluations per step, honestly counted: one at ``x_mid``
and one at ``x1`` (the latter is cached and serves as ``g(x0)`` of the next
step's midpoint).  **Biased** at finite step size (no Metropolis correction):
the stationary law of the chain is not ``p``.  For a Gaussian target the chain
is a linear recursion ``z' = A(alpha) z + noise(alpha)``; its exact stationary
covariance solves ``S = E_alpha[A S A^T + Q]`` (the tests do this).  Measured
that way on ``N(0, 1)`` with ``gamma = 1``: the stationary variance error is
``O(h^3)`` in position and momentum (4.2e-5 / 7.9e-5 at ``h = 0.1``, 2.8e-3 /
4.6e-3 at ``h = 0.4``), against BAOAB's exact position and ``-h^2/4`` momentum
error.  The random recursion is mean-square stable only for
``h sqrt(a) < ~2.56`` (``gamma / sqrt(a) = 1``), ``~1.82`` (0.5), ``~1.13`` (0.1)
for a precision eigenvalue ``a`` in the metric; near that limit the variance
inflates quickly (keep the friction at least of the order of ``sqrt(a)``).

``acceptance_rate`` is a *surrogate* (no exact Metropolis test exists for this
randomized scheme): ``min(1, exp(-W))`` with the discretization work
``W = log p(x0) - log p(x1) + g(x_mid) . (x1 - x0)`` — the potential change
minus the work the frozen midpoint force did along the displacement, which is
zero for the exact dynamics (``d(-log p) = -g . dx``) and for a linear
potential.  No extra evaluations; used to adapt the step size and, in warm-up
only, to reject wild moves (Metropolized warm-up, as for the other unadjusted
Langevin kernels).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from samplax.core.types import Kernel
from samplax.mcmc import metrics
from samplax.mcmc.kinetic_langevin import KineticLangevinInfo, KineticLangevinParams, KineticLangevinState
from samplax.mcmc.kinetic_langevin import fixed_kinetic_kernel, kinetic_params
from samplax.mcmc.kinetic_langevin import init as _kl_init
from samplax.mcmc import declare
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel

RandomizedMidpointParams = KineticLangevinParams
RandomizedMidpointState = KineticLangevinState
RandomizedMidpointInfo = KineticLangevinInfo

__all__ = ["RandomizedMidpointParams", "RandomizedMidpointState", "RandomizedMidpointInfo", "init",
           "build_kernel", "randomized_midpoint", "ou_noise_cov"]

_SMALL = 0.1
# Taylor coefficients (k = 2..12) of f2(y) = y - 1 + e^{-y} and f3(y) = y - 2(1 - e^{-y}) + (1 - e^{-2y})/2
_F2 = [(k, (-1) ** k / math.factorial(k)) for k in range(2, 13)]
_F3 = [(k, (-1) ** k * (2.0 - 2.0 ** (k - 1)) / math.factorial(k)) for k in range(3, 14)]


def _series(y, coeffs):
    return sum(c * y**k for k, c in coeffs)


def _f2(y):
    """``y - 1 + e^{-y}`` (Taylor series for small ``y``)."""
    small = y < _SMALL
    ys = jnp.where(small, y, 0.0)
    return jnp.where(small, _series(ys, _F2), y + jnp.expm1(-y))


def _f3(y):
    """``y - 2 (1 - e^{-y}) + (1 - e^{-2y}) / 2`` (Taylor series for small ``y``)."""
    small = y < _SMALL
    ys = jnp.where(small, y, 0.0)
    return jnp.where(small, _series(ys, _F3), y + 2.0 * jnp.expm1(-y) - 0.5 * jnp.expm1(-2.0 * y))


def _phi(gamma, s):
    """``(1 - e^{-gamma s}) / gamma``."""
    return -jnp.expm1(-gamma * s) / gamma


def ou_noise_cov(gamma, tau):
    """``(Var X, Var V, Cov(X, V))`` of the whitened OU-step noise over a time ``tau`` (see the module docstring).

    ``X = sqrt(2 gamma) int_0^tau phi(tau - s) dB_s``, ``V = sqrt(2 gamma) int_0^tau e^{-gamma (tau - s)} dB_s``.
    """
    y = gamma * tau
    return 2.0 * _f3(y) / gamma**2, -jnp.expm1(-2.0 * y), jnp.expm1(-y) ** 2 / gamma


def _ou_pair(key, gamma, tau, shape, dtype):
    """Draw ``(X, V)`` (each of ``shape``, whitened coordinates) with :func:`ou_noise_cov`'s covariance."""
    vxx, vvv, cxv = ou_noise_cov(gamma, tau)
    k1, k2 = jax.random.split(key)
    z1 = jax.random.normal(k1, shape, dtype)
    z2 = jax.random.normal(k2, shape, dtype)
    pos = vvv > 0
    safe = jnp.where(pos, vvv, 1.0)
    beta = jnp.where(pos, cxv / safe, 0.0)
    cond = jnp.maximum(vxx - jnp.where(pos, cxv**2 / safe, 0.0), 0.0)
    v = jnp.sqrt(vvv) * z1
    return beta * v + jnp.sqrt(cond) * z2, v


def _momentum_noise(inverse_mass_matrix, w):
    """``C^{-1} (C^{1/2} w)``: the momentum image of a velocity noise ``C^{1/2} w`` (``L^{-T} w`` for ``C = L L^T``)."""
    if metrics.is_dense(inverse_mass_matrix):
        chol = jnp.linalg.cholesky(inverse_mass_matrix)
        return jax.scipy.linalg.solve_triangular(chol, w, lower=True, trans="T")
    return w / jnp.sqrt(inverse_mass_matrix)


def init(key, position, logdensity_fn: Callable, inverse_mass_matrix=None) -> KineticLangevinState:
    """Evaluate log-density and gradient at ``position``; draw a momentum ``p ~ N(0, C^{-1})``."""
    return _kl_init(key, position, logdensity_fn, inverse_mass_matrix)


def build_kernel(logdensity_fn: Callable) -> Callable:
    """``step(key, state, params) -> (state, info)``: one randomized-midpoint kinetic Langevin step.

    Update rule (Shen & Lee 2019, Alg. 2; see the module docstring for the
    noise covariance): ``t = alpha h``, ``alpha ~ U(0, 1)``, ``v = C p``,

    ``x_mid = x + phi(t) v + psi(t) C g(x) + W_mid``;
    ``x' = x + phi(h) v + h phi(h - t) C g(x_mid) + W_x``;
    ``p' = e^{-gamma h} p + h e^{-gamma (h - t)} g(x_mid) + M W_v``.

    ``params``: :class:`RandomizedMidpointParams` (step size ``h``, inverse mass
    matrix ``C`` [d] or [d, d], friction ``gamma``, warm-up ``metropolize`` flag).
    Two gradient evaluations per step.  A non-finite log-density or gradient (at
    the midpoint or the new point) leaves the chain where it was, with a fresh
    momentum, and is flagged in ``is_nonfinite``.
    """
    vg = jax.value_and_grad(logdensity_fn)
    grad = jax.grad(logdensity_fn)

    def step(key, state: KineticLangevinState, params: KineticLangevinParams):
        h, imm, gamma = params.step_size, params.inverse_mass_matrix, params.friction
        x, p, lp, g = state
        k_a, k_1, k_2, k_acc, k_fb = jax.random.split(key, 5)
        dtype = x.dtype
        alpha = jax.random.uniform(k_a, dtype=dtype)
        t = alpha * h
        x1w, v1w = _ou_pair(k_1, gamma, t, x.shape, dtype)       # over [0, t]
        x2w, v2w = _ou_pair(k_2, gamma, h - t, x.shape, dtype)   # over [t, h], independent
        decay_rest = jnp.exp(-gamma * (h - t))
        phi_rest = _phi(gamma, h - t)
        w_x = x1w + phi_rest * v1w + x2w
        w_v = decay_rest * v1w + v2w

        v = metrics.velocity(imm, p)
        psi_t = _f2(gamma * t) / gamma**2
        x_mid = x + _phi(gamma, t) * v + psi_t * metrics.velocity(imm, g) + metrics.scale_noise(imm, x1w)
        g_mid = grad(x_mid)
        x_new = (x + _phi(gamma, h) * v + h * phi_rest * metrics.velocity(imm, g_mid)
                 + metrics.scale_noise(imm, w_x))
        p_new = jnp.exp(-gamma * h) * p + h * decay_rest * g_mid + _momentum_noise(imm, w_v)
        lp_new, g_new = vg(x_new)

        work = (lp - lp_new) + jnp.dot(g_mid, x_new - x)
        finite = (jnp.isfinite(lp_new) & jnp.all(jnp.isfinite(g_new)) & jnp.all(jnp.isfinite(g_mid))
                  & jnp.isfinite(work) & jnp.all(jnp.isfinite(p_new)))
        acc = jnp.where(finite, jnp.exp(jnp.minimum(0.0, -jnp.where(finite, work, 0.0))), 0.0)
        take = finite & (~jnp.asarray(params.metropolize, bool) | (jax.random.uniform(k_acc, dtype=dtype) < acc))
        new = KineticLangevinState(x_new, p_new, lp_new, g_new)
        fallback = state._replace(momentum=metrics.sample_momentum(k_fb, imm, x))
        # the energy of the state returned, computed for both candidates and then selected (as the other
        # kinetic kernels do): a kinetic energy of the *selected* momentum lets XLA fuse the fallback's
        # momentum draw into the reduction in some programs and not in others (a lax.map over blocks of
        # chains or not), and the reduction then rounds differently (FMA contraction): 1-ulp differences
        # between runs with different numbers of chains
        energy = jnp.where(take, -lp_new + metrics.kinetic_energy(imm, p_new),
                           -lp + metrics.kinetic_energy(imm, fallback.momentum))
        new = jax.tree.map(lambda a, b: jnp.where(take, a, b), new, fallback)
        two = jnp.asarray(2, jnp.int32)
        return new, KineticLangevinInfo(acc, ~finite, two, two, energy)

    return step


def randomized_midpoint(logdensity_fn: Callable, step_size, friction=1.0, inverse_mass_matrix=None) -> Kernel:
    """Randomized-midpoint kinetic Langevin kernel (Shen & Lee 2019; biased at finite step size).

    See :func:`build_kernel` for the update rule.  ``step_size`` is the time step ``h``.
    """
    return fixed_kinetic_kernel(build_kernel, init, logdensity_fn, step_size, friction, inverse_mass_matrix)


_RM_SURROGATE = ("target acceptance statistic for dual averaging (a surrogate: min(1, exp(-W)) with the "
                 "discretization work W = log p(x) - log p(x') + g(x_mid).(x' - x); the move is always taken)")

register_kernel(KernelSpec("randomized_midpoint", init, build_kernel, RandomizedMidpointParams, randomized_midpoint,
                           gradient_based=True, invariant=False, target_accept=0.9,
                           method=ChainMethod("Underdamped (kinetic) Langevin, randomized midpoint discretization "
                                              "(Shen & Lee 2019; Yu & Dalalyan 2024); 2 gradients per step; BIASED at "
                                              "finite step size", declare.energy_stats, adapter="windowed_flag",
                                              make_params=kinetic_params,
                                              options={"target_accept": declare.surrogate_target_accept(
                                                           0.9, _RM_SURROGATE),
                                                       "friction": declare.FRICTION},
                                              bias=declare.LANGEVIN_BIAS)))
