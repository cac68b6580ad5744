"""The composite-target protocol ``log p(x) = -f(x) - g(x)``: smooth ``f`` plus a nonsmooth ``g`` with a
proximal operator (what proximal samplers need; shipped targets live in :mod:`samplax.targets.composite`).

* ``smooth_logdensity(x) = -f(x)`` (differentiable; ``grad f`` is ``lipschitz``-Lipschitz),
* ``nonsmooth_potential(x) = g(x)`` (convex, possibly ``+inf`` outside a set),
* ``prox(x, lam) = argmin_u g(u) + |u - x|^2 / (2 lam)`` (Euclidean proximal operator),
* optionally ``mirror_map()`` (a separable Legendre function ``phi``, see :class:`MirrorMap`)
  and ``bregman_prox(x, lam) = argmin_u g(u) + D_phi(u, x) / lam`` (left Bregman proximal
  operator, Bauschke, Dao & Lindstrom 2018); without a mirror map ``phi = |x|^2 / 2``
  and ``bregman_prox = prox``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

from samplax.core.target import Target


class MirrorMap(NamedTuple):
    """A separable Legendre function ``phi(x) = sum_i phi_i(x_i)`` on its domain.

    ``grad(x) = phi'(x)`` (maps the domain onto R^d), ``grad_conj(y) = (phi')^{-1}(y)``,
    ``hess_diag(x) = phi''(x) > 0`` and ``hess_diag_dual(y) = phi''((phi')^{-1}(y))``
    (the same in the dual variable, written to stay accurate near the boundary of the domain).
    """

    grad: Callable
    grad_conj: Callable
    hess_diag: Callable
    hess_diag_dual: Callable


class CompositeTarget(Target):
    """Abstract composite target ``p(x) ∝ exp(-f(x) - g(x))`` (see the module docstring)."""

    def smooth_logdensity(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def nonsmooth_potential(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def prox(self, x, lam):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def lipschitz(self) -> float:  # pragma: no cover - abstract
        """Lipschitz constant of ``grad f``."""
        raise NotImplementedError

    def mirror_map(self):
        """A :class:`MirrorMap` adapted to the support, or None (Euclidean)."""
        return None

    def bregman_prox(self, x, lam):
        """Left Bregman proximal operator of ``lam * g``; the Euclidean prox when there is no mirror map."""
        if self.mirror_map() is None:
            return self.prox(x, lam)
        raise NotImplementedError(f"{self.name}: bregman_prox is not defined for its mirror map")

    def logdensity(self, x):
        return self.smooth_logdensity(x) - self.nonsmooth_potential(x)


def euclidean_mirror() -> MirrorMap:
    """The mirror map of ``phi(x) = |x|^2 / 2`` (Bregman operations become Euclidean ones)."""
    return MirrorMap(grad=lambda x: x, grad_conj=lambda y: y, hess_diag=lambda x: jnp.ones_like(x),
                     hess_diag_dual=lambda y: jnp.ones_like(y))
