"""Shared state and kernel types.

Every kernel in samplax is a pair of pure functions ``init(key, position)`` and
``step(key, state) -> (state, info)`` (DESIGN.md section 2).  Gradient-based
kernels share :class:`PointState` so that they compose without recomputing the
log-density or its gradient.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class PointState(NamedTuple):
    """A point with its log-density and gradient, cached.

    Attributes:
      position: the current point, shape ``[d]`` (kernels work on flat vectors).
      logdensity: unnormalized log-density at ``position`` (scalar).
      logdensity_grad: gradient of the log-density at ``position`` (``[d]``).
    """

    position: Array
    logdensity: Array
    logdensity_grad: Array


class Kernel(NamedTuple):
    """A Markov kernel: ``init(key, position) -> state``, ``step(key, state) -> (state, info)``."""

    init: Callable[..., Any]
    step: Callable[..., Any]


def point_state(logdensity_fn: Callable, position: Array) -> PointState:
    """Evaluate ``logdensity_fn`` and its gradient at ``position`` (one value_and_grad call)."""
    position = jnp.asarray(position)
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return PointState(position, logdensity, grad)


def is_finite_point(logdensity: Array, grad: Array | None = None) -> Array:
    """True where the log-density (and gradient, if given) are finite."""
    ok = jnp.isfinite(logdensity)
    if grad is not None:
        ok = ok & jnp.all(jnp.isfinite(grad))
    return ok
