"""Proximal Langevin samplers for composite targets ``p ∝ exp(-f - g)`` (smooth ``f``, nonsmooth convex ``g``).

**MYULA** (Durmus, Moulines & Pereyra 2018, "Efficient Bayesian computation by
proximal MCMC: when Langevin meets Moreau", SIAM J. Imaging Sci. 11):
replace ``g`` by its Moreau envelope ``g^lam(x) = min_u g(u) + |u - x|^2 / (2 lam)``,
whose gradient is ``(x - prox_{lam g}(x)) / lam``, and run ULA on
``p_lam ∝ exp(-f - g^lam)``:

``x' = x - gamma grad f(x) - (gamma / lam)(x - prox_{lam g}(x)) + sqrt(2 gamma) xi``.

Two biases, both documented and tested: ``p_lam`` differs from ``p`` (it
converges to ``p`` as ``lam -> 0``; for a ``K``-Lipschitz ``g``,
``0 <= g - g^lam <= lam K^2 / 2``, so ``p_lam / p`` is within a factor
``exp(lam K^2 / 2)`` of a constant — DMP 2018, Prop. 3.1), and ULA's step-size
bias (``O(gamma)``).  Unadjusted: **biased at finite** ``gamma`` and ``lam``.

**Bregman MYULA** (mirror-Langevin with a Bregman–Moreau envelope, after Lau &
Liu 2022, "Bregman proximal Langevin Monte Carlo via Bregman–Moreau envelopes",
ICML; their BMUMLA): with a separable Legendre function ``phi`` (mirror map),
the left Bregman–Moreau envelope ``env(x) = min_u g(u) + D_phi(u, x) / lam`` has
gradient ``phi''(x) (x - P(x)) / lam``, ``P`` = left Bregman prox; one Euler step
of the mirror-Langevin diffusion in the dual variable ``y = phi'(x)``:

``y' = phi'(x) - gamma [grad f(x) + phi''(x) (x - P(x)) / lam] + sqrt(2 gamma phi''(x)) xi``,
``x' = (phi')^{-1}(y')``.

With ``phi = |x|^2 / 2`` this is MYULA.  A mirror map whose domain is a
constraint set (a barrier) keeps every iterate inside the set, so an
indicator ``g`` needs no smoothing at all (``P = identity`` there).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.composite import euclidean_mirror
from samplax.core.types import Kernel
from samplax.mcmc.registry import KernelSpec, register_kernel


class MYULAParams(NamedTuple):
    """Time step ``gamma`` and Moreau smoothing ``lam``."""

    step_size: jax.Array
    smoothing: jax.Array


class ProximalState(NamedTuple):
    """``logdensity``: the smoothed log-density ``-f(x) - g^lam(x)`` (Euclidean envelope) at ``position``."""

    position: jax.Array
    logdensity: jax.Array
    smooth_grad: jax.Array  # grad of -f


class BregmanState(NamedTuple):
    """Position, its dual ``phi'(x)`` (kept so that points near the boundary stay accurate), ``-f`` and its gradient."""

    position: jax.Array
    dual: jax.Array
    logdensity: jax.Array
    smooth_grad: jax.Array


class ProximalInfo(NamedTuple):
    acceptance_rate: jax.Array  # always 1 (unadjusted)
    is_nonfinite: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array
    num_prox_evals: jax.Array


def _envelope_lp(smooth_lp, x, p, g_at_p, lam):
    return smooth_lp - g_at_p - jnp.sum((x - p) ** 2) / (2 * lam)


def init(key, position, smooth_logdensity_fn: Callable) -> ProximalState:
    """Evaluate ``-f`` and its gradient at ``position``; ``logdensity`` is filled in by the first step."""
    del key
    position = jnp.asarray(position)
    lp, g = jax.value_and_grad(smooth_logdensity_fn)(position)
    return ProximalState(position, lp, g)


def init_bregman(key, position, smooth_logdensity_fn: Callable, mirror) -> BregmanState:
    """Evaluate ``-f``, its gradient and the dual variable ``phi'(x)`` at ``position`` (inside the domain)."""
    del key
    position = jnp.asarray(position)
    lp, g = jax.value_and_grad(smooth_logdensity_fn)(position)
    return BregmanState(position, mirror.grad(position), lp, g)


def build_myula_kernel(smooth_logdensity_fn: Callable, prox_fn: Callable, nonsmooth_fn: Callable) -> Callable:
    """``step(key, state, params)`` for MYULA (see the module docstring).

    ``prox_fn(x, lam)`` is the proximal operator of ``lam g``; ``nonsmooth_fn(x) = g(x)``
    (used only for the reported smoothed log-density).  One gradient of ``f`` and
    two prox evaluations (drift at ``x``; envelope value at ``x'``) per step.
    """
    vg = jax.value_and_grad(smooth_logdensity_fn)

    def step(key, state: ProximalState, params: MYULAParams):
        gamma, lam = params.step_size, params.smoothing
        x = state.position
        p = prox_fn(x, lam)
        xi = jax.random.normal(key, x.shape, dtype=x.dtype)
        y = x + gamma * state.smooth_grad - (gamma / lam) * (x - p) + jnp.sqrt(2 * gamma) * xi
        lp, g = vg(y)
        py = prox_fn(y, lam)
        env_lp = _envelope_lp(lp, y, py, nonsmooth_fn(py), lam)
        finite = jnp.isfinite(lp) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(y))
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), ProximalState(y, env_lp, g), state)
        one = jnp.ones((), jnp.int32)
        return new, ProximalInfo(jnp.ones((), x.dtype), ~finite, one, one, 2 * one)

    return step


def build_bregman_myula_kernel(smooth_logdensity_fn: Callable, bregman_prox_fn: Callable, mirror) -> Callable:
    """``step(key, state, params)`` for Bregman MYULA (mirror-Langevin + Bregman–Moreau envelope).

    ``mirror``: a :class:`~samplax.targets.composite.MirrorMap` (separable ``phi``);
    ``bregman_prox_fn(x, lam)``: left Bregman proximal operator of ``lam g``.
    ``logdensity`` of the state is ``-f(x)`` here (the Bregman envelope value is not reported).
    The state keeps the dual variable ``phi'(x)``; ``phi''`` is evaluated from it
    (``hess_diag_dual``), so iterates close to the boundary do not lose accuracy.
    """
    vg = jax.value_and_grad(smooth_logdensity_fn)

    def step(key, state: BregmanState, params: MYULAParams):
        gamma, lam = params.step_size, params.smoothing
        x, yd = state.position, state.dual
        h = mirror.hess_diag_dual(yd)
        p = bregman_prox_fn(x, lam)
        xi = jax.random.normal(key, x.shape, dtype=x.dtype)
        yd_new = yd + gamma * state.smooth_grad - (gamma / lam) * h * (x - p) + jnp.sqrt(2 * gamma * h) * xi
        y = mirror.grad_conj(yd_new)
        lp, g = vg(y)
        finite = (jnp.isfinite(lp) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(y))
                  & jnp.all(jnp.isfinite(yd_new)))
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), BregmanState(y, yd_new, lp, g), state)
        one = jnp.ones((), jnp.int32)
        return new, ProximalInfo(jnp.ones((), x.dtype), ~finite, one, one, one)

    return step


def _check_composite(target, who):
    from samplax.core.composite import CompositeTarget

    if not isinstance(target, CompositeTarget):
        raise TypeError(f"{who} needs a samplax.targets.composite.CompositeTarget (smooth_logdensity, "
                        f"nonsmooth_potential, prox), got {type(target).__name__}")


def myula(target, step_size, smoothing) -> Kernel:
    """MYULA kernel on a :class:`~samplax.targets.composite.CompositeTarget` (flat event shape); biased."""
    _check_composite(target, "myula")
    step_fn = build_myula_kernel(target.smooth_logdensity, target.prox, target.nonsmooth_potential)

    def init_fn(key, position):
        return init(key, position, target.smooth_logdensity)

    def step(key, state):
        return step_fn(key, state, MYULAParams(jnp.asarray(step_size), jnp.asarray(smoothing)))

    return Kernel(init_fn, step)


def bregman_myula(target, step_size, smoothing) -> Kernel:
    """Bregman MYULA kernel on a composite target with a mirror map (Euclidean if it has none); biased."""
    _check_composite(target, "bregman_myula")
    mirror = target.mirror_map() or euclidean_mirror()
    step_fn = build_bregman_myula_kernel(target.smooth_logdensity, target.bregman_prox, mirror)

    def init_fn(key, position):
        return init_bregman(key, position, target.smooth_logdensity, mirror)

    def step(key, state):
        return step_fn(key, state, MYULAParams(jnp.asarray(step_size), jnp.asarray(smoothing)))

    return Kernel(init_fn, step)


register_kernel(KernelSpec("myula", init, build_myula_kernel, MYULAParams, myula, gradient_based=True, invariant=False,
                           composite=True))
register_kernel(KernelSpec("bregman_myula", init_bregman, build_bregman_myula_kernel, MYULAParams, bregman_myula,
                           gradient_based=True, invariant=False, composite=True))
