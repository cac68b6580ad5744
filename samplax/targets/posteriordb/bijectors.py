"""Stan's unconstraining transforms, as small bijectors with log-Jacobians.

A Stan program declares constrained parameters; Stan samples an unconstrained
vector ``z`` in R^d and maps it to the parameters block by block, in
declaration order (arrays and vectors column-major), adding the log absolute
Jacobian determinant of each map to the log-density.  This module writes each
of those maps once (Stan Reference Manual, chapter "Constraint Transforms";
Stan Development Team, https://mc-stan.org/docs/reference-manual/):

==================  ==========================================  =========================================
declaration         forward ``x = f(z)``                          log-Jacobian
==================  ==========================================  =========================================
``real``            ``x = z``                                     0
``lower=a``         ``x = a + exp(z)``                            ``z``
``lower=a,upper=b`` ``x = a + (b - a) sigmoid(z)``                ``log(b-a) + log s(z) + log s(-z)``
``ordered[K]``      ``x_1 = z_1, x_k = x_{k-1} + exp(z_k)``       ``sum_{k>=2} z_k``
``positive_ordered``  ``x_k = sum_{j<=k} exp(z_j)``               ``sum_k z_k``
``simplex[K]``      stick-breaking (below)                        ``sum_k log(s_k (1 - s_k) L_k)``
==================  ==========================================  =========================================

Simplex (stick-breaking, Stan <= 2.35, which is what posteriordb's reference
runs and the oracle files use): with ``K - 1`` unconstrained ``y_k``
(0-based ``k``), ``s_k = sigmoid(y_k - log(K - 1 - k))``, remaining stick
``L_0 = 1``, ``x_k = L_k s_k``, ``L_{k+1} = L_k - x_k`` and ``x_{K-1} = L_{K-1}``.
The offsets ``log(K - 1 - k)`` make ``y = 0`` the uniform simplex.

Bounds may be numbers, arrays, or callables of the parameters unpacked so far
(Stan allows ``real<lower=0, upper=(1 - alpha1)> beta1``), which
:func:`unpack` resolves in declaration order.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

Bound = Union[float, Callable[[Dict[str, jax.Array]], Any]]


def _resolve(bound, params):
    return bound(params) if callable(bound) else bound


class Bijector:
    """A map from unconstrained ``z`` (flat) to a constrained block ``x`` (flat).

    Subclasses define :meth:`unconstrained_size`, :meth:`forward` (returns
    ``(x, log|det J|)``) and :meth:`inverse`.
    """

    def unconstrained_size(self, size: int) -> int:
        """Number of unconstrained coordinates for a block of ``size`` constrained ones."""
        return size

    def forward(self, z, params):  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, x, params):  # pragma: no cover - abstract
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Real(Bijector):
    """Unconstrained ``real``/``vector``: the identity, log-Jacobian 0."""

    def forward(self, z, params):
        del params
        return z, jnp.zeros((), z.dtype)

    def inverse(self, x, params):
        del params
        return x


@dataclasses.dataclass(frozen=True)
class Lower(Bijector):
    """``<lower=a>``: ``x = a + exp(z)``, log-Jacobian ``sum z``."""

    lower: Bound = 0.0

    def forward(self, z, params):
        a = _resolve(self.lower, params)
        return a + jnp.exp(z), jnp.sum(z)

    def inverse(self, x, params):
        a = _resolve(self.lower, params)
        return jnp.log(x - a)


@dataclasses.dataclass(frozen=True)
class Interval(Bijector):
    """``<lower=a, upper=b>``: ``x = a + (b - a) sigmoid(z)``.

    log-Jacobian ``sum [log(b - a) + log sigmoid(z) + log sigmoid(-z)]``.
    """

    lower: Bound = 0.0
    upper: Bound = 1.0

    def forward(self, z, params):
        a = _resolve(self.lower, params)
        b = _resolve(self.upper, params)
        width = b - a
        x = a + width * jax.nn.sigmoid(z)
        logj = jnp.sum(jnp.log(width) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z))
        return x, logj

    def inverse(self, x, params):
        a = _resolve(self.lower, params)
        b = _resolve(self.upper, params)
        u = (x - a) / (b - a)
        return jnp.log(u) - jnp.log1p(-u)


@dataclasses.dataclass(frozen=True)
class Ordered(Bijector):
    """``ordered[K]``: ``x_1 = z_1``, ``x_k = x_{k-1} + exp(z_k)``; log-Jacobian ``sum_{k>=2} z_k``."""

    def forward(self, z, params):
        del params
        incr = jnp.concatenate([z[:1], jnp.exp(z[1:])])
        return jnp.cumsum(incr), jnp.sum(z[1:])

    def inverse(self, x, params):
        del params
        return jnp.concatenate([x[:1], jnp.log(jnp.diff(x))])


@dataclasses.dataclass(frozen=True)
class PositiveOrdered(Bijector):
    """``positive_ordered[K]``: ``x_k = sum_{j<=k} exp(z_j)``; log-Jacobian ``sum z``."""

    def forward(self, z, params):
        del params
        return jnp.cumsum(jnp.exp(z)), jnp.sum(z)

    def inverse(self, x, params):
        del params
        return jnp.log(jnp.diff(x, prepend=jnp.zeros_like(x[:1])))


@dataclasses.dataclass(frozen=True)
class Simplex(Bijector):
    """``simplex[K]`` by Stan's stick-breaking (K - 1 unconstrained coordinates).

    ``s_k = sigmoid(y_k - log(K-1-k))``, ``x_k = L_k s_k``, ``L_{k+1} = L_k (1 - s_k)``,
    ``x_{K-1} = L_{K-1}``; log-Jacobian ``sum_k [log L_k + log s_k + log(1 - s_k)]``.
    Computed in log space: ``log L_k = sum_{j<k} log sigmoid(-adj_j)``.
    """

    def unconstrained_size(self, size: int) -> int:
        if size < 2:
            raise ValueError(f"Simplex: a simplex needs at least 2 components, got {size}")
        return size - 1

    def forward(self, z, params):
        del params
        km1 = z.shape[0]
        adj = z - jnp.log(jnp.arange(km1, 0, -1, dtype=z.dtype))
        log_s = jax.nn.log_sigmoid(adj)
        log_1ms = jax.nn.log_sigmoid(-adj)
        log_stick = jnp.concatenate([jnp.zeros((1,), z.dtype), jnp.cumsum(log_1ms)])
        x = jnp.exp(jnp.concatenate([log_stick[:-1] + log_s, log_stick[-1:]]))
        logj = jnp.sum(log_stick[:-1] + log_s + log_1ms)
        return x, logj

    def inverse(self, x, params):
        del params
        km1 = x.shape[0] - 1
        stick = 1.0 - jnp.concatenate([jnp.zeros((1,), x.dtype), jnp.cumsum(x[:-2])])
        s = x[:-1] / stick
        return jnp.log(s) - jnp.log1p(-s) + jnp.log(jnp.arange(km1, 0, -1, dtype=x.dtype))


@dataclasses.dataclass(frozen=True)
class Param:
    """One declared parameter block: name, number of constrained scalars, bijector."""

    name: str
    size: int
    bijector: Bijector = Real()

    @property
    def unconstrained_size(self) -> int:
        return self.bijector.unconstrained_size(self.size)


def unconstrained_dim(layout: Sequence[Param]) -> int:
    """Total length of the unconstrained vector for ``layout``."""
    return sum(p.unconstrained_size for p in layout)


def unpack(layout: Sequence[Param], z: jax.Array) -> Tuple[Dict[str, jax.Array], jax.Array]:
    """Split ``z`` by ``layout`` (declaration order), constrain each block.

    Returns ``(params, log_jacobian)`` where ``params[name]`` is the flat
    constrained block and ``log_jacobian`` the sum of the blocks' log-Jacobians.
    """
    params: Dict[str, jax.Array] = {}
    logj = jnp.zeros((), z.dtype)
    start = 0
    for p in layout:
        n = p.unconstrained_size
        x, lj = p.bijector.forward(z[start:start + n], params)
        params[p.name] = x
        logj = logj + lj
        start += n
    return params, logj


def pack(layout: Sequence[Param], params: Dict[str, jax.Array]) -> jax.Array:
    """Inverse of :func:`unpack`: constrained blocks -> one unconstrained vector."""
    zs = [p.bijector.inverse(jnp.reshape(params[p.name], (-1,)), params) for p in layout]
    return jnp.concatenate(zs)
