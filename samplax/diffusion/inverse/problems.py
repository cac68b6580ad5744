"""Measurement models of inverse problems: ``y = A x0 + sigma_y n`` and ``y = f(x0) + sigma_y n``, ``n ~ N(0, I)``.

Both are equinox Modules (the measurement ``y``, the noise level and the operator's arrays are data: a new
``y`` never recompiles a sampler) with

* ``shape``: the event shape of the unknown ``x0`` (one point of the diffusion model),
* ``forward(x) -> [m]`` the noiseless measurement of one point,
* ``log_likelihood(x, extra_var=0) = log N(y; forward(x), (sigma_y^2 + extra_var) I)`` (``extra_var`` is the
  variance inflation some samplers use for a denoised estimate),
* ``lipschitz()``: a bound on the Hessian norm of ``-log p(y | x)`` (host float), for Langevin step sizes.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.inverse.operators import Dense, LinearOperator


def _concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _check_y(y, who):
    y = jnp.asarray(y, dtype=jnp.result_type(float))
    if y.ndim != 1:
        raise ValueError(f"{who}: y must be a flat measurement vector [m], got shape {y.shape}")
    if y.shape[0] < 1:
        raise ValueError(f"{who}: y must have at least one entry")
    if _concrete(y) and not bool(jnp.all(jnp.isfinite(y))):
        bad = np.flatnonzero(~np.isfinite(np.asarray(y)))
        raise ValueError(f"{who}: y has non-finite values at {bad.size} of its {y.shape[0]} entries "
                         f"(first: index {int(bad[0])})")
    return y


def _check_sigma(sigma_y, m, who):
    s = jnp.asarray(sigma_y, dtype=jnp.result_type(float))
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != m):
        raise ValueError(f"{who}: sigma_y must be a scalar or a vector [{m}] (one per measurement), got shape {s.shape}")
    if _concrete(s) and not bool(jnp.all(jnp.isfinite(s) & (s > 0))):
        raise ValueError(f"{who}: sigma_y must be positive and finite, got {np.asarray(s)}")
    return s


def _gaussian_loglik(y, mean, var):
    var = jnp.broadcast_to(var, y.shape)
    return -0.5 * jnp.sum((y - mean) ** 2 / var + jnp.log(2.0 * math.pi * var))


class LinearGaussian(eqx.Module):
    """``y = A x0 + sigma_y n``: a linear measurement with Gaussian noise.

    Args:
      A: a :class:`~samplax.diffusion.inverse.operators.LinearOperator` (:class:`Mask`, :class:`Blur`,
        :class:`SubsampledFourier`, :class:`Dense`) or a matrix ``[m, d]`` (wrapped in :class:`Dense`).
      y: the measurement ``[m]`` (finite).
      sigma_y: noise standard deviation, a positive scalar or one per measurement ``[m]``.
      shape: the unknown's event shape, for a matrix ``A`` (default ``(d,)``); an operator carries its own.

    Raises ValueError naming the argument: ``y`` not of shape ``[m]`` (``m`` the rows of ``A``) or not
    finite, ``sigma_y`` not positive and finite, ``A`` not a matrix or operator.
    """

    operator: LinearOperator
    y: jax.Array
    sigma_y: jax.Array

    def __init__(self, A, y, sigma_y, shape=None):
        if isinstance(A, LinearOperator):
            if shape is not None and tuple(shape) != A.in_shape:
                raise ValueError(f"LinearGaussian: shape {tuple(shape)} differs from the operator's {A.in_shape}")
            op = A
        else:
            try:
                op = Dense(A, shape)
            except (TypeError, ValueError) as e:
                raise ValueError(f"LinearGaussian: A must be a matrix [m, d] or a LinearOperator ({e})") from None
        self.operator = op
        y = _check_y(y, "LinearGaussian")
        if y.shape[0] != op.out_dim:
            raise ValueError(f"LinearGaussian: y has {y.shape[0]} entries but A gives {op.out_dim} measurements "
                             f"(A maps a point of shape {op.in_shape} to [{op.out_dim}])")
        self.y = y
        self.sigma_y = _check_sigma(sigma_y, op.out_dim, "LinearGaussian")

    @property
    def shape(self) -> tuple:
        """The unknown's event shape (the operator's input shape)."""
        return self.operator.in_shape

    @property
    def dim(self) -> int:
        """Entries of the unknown."""
        return self.operator.in_dim

    @property
    def num_measurements(self) -> int:
        """``m``."""
        return self.operator.out_dim

    @property
    def linear(self) -> bool:
        """True: the samplers may use ``A``, ``A^T`` and ``A^+``."""
        return True

    def noise_var(self):
        """``sigma_y^2`` broadcast to ``[m]``."""
        return jnp.broadcast_to(self.sigma_y**2, self.y.shape)

    def forward(self, x):
        """``A x`` ``[m]`` for one point."""
        return self.operator.matvec(x)

    def log_likelihood(self, x, extra_var=0.0):
        """``log N(y; A x, (sigma_y^2 + extra_var) I)`` for one point ``x``."""
        return _gaussian_loglik(self.y, self.forward(x), self.sigma_y**2 + extra_var)

    def grad_log_likelihood(self, x):
        """``A^T (y - A x) / sigma_y^2`` in the shape of ``x`` (no autodiff)."""
        r = (self.y - self.forward(x)) / self.sigma_y**2
        return jnp.reshape(self.operator.rmatvec(r), jnp.shape(x))

    def lipschitz(self) -> float:
        """``||A||_2^2 / min sigma_y^2``: the largest eigenvalue of the Hessian of ``-log p(y | x)``."""
        return float(self.operator.norm_sq() / float(jnp.min(self.sigma_y**2)))

    def sample_measurement(self, key, x0):
        """A measurement of the point ``x0``: ``A x0 + sigma_y n`` (for simulation studies)."""
        n = jax.random.normal(key, self.y.shape, self.y.dtype)
        return self.forward(x0) + self.sigma_y * n


class Nonlinear(eqx.Module):
    """``y = f(x0) + sigma_y n`` with a differentiable forward model ``f`` (one point -> ``[m]``).

    Args:
      forward_fn: ``f(x) -> [m]`` for one point of ``shape`` (JAX-differentiable; part of the compiled
        program's structure).
      y: the measurement ``[m]`` (finite).
      sigma_y: positive noise standard deviation, scalar or ``[m]``.
      shape: the unknown's event shape (required by the samplers; checked against ``forward_fn`` there).
      lipschitz: optional bound on the Hessian norm of ``-log p(y | x)`` (Langevin step sizes); by default
        estimated at ``x = 0`` as ``||J_f(0)||^2 / min sigma_y^2`` (Gauss–Newton).
    """

    forward_fn: Callable = eqx.field(static=True)
    y: jax.Array
    sigma_y: jax.Array
    shape: Optional[tuple] = eqx.field(static=True)
    lipschitz_bound: Optional[float] = eqx.field(static=True)

    def __init__(self, forward_fn, y, sigma_y, shape=None, lipschitz=None):
        if not callable(forward_fn):
            raise ValueError(f"Nonlinear: forward_fn must be callable f(x) -> [m], got {type(forward_fn).__name__}")
        self.forward_fn = forward_fn
        self.y = _check_y(y, "Nonlinear")
        self.sigma_y = _check_sigma(sigma_y, self.y.shape[0], "Nonlinear")
        if shape is not None:
            shape = tuple(int(s) for s in shape)
            if len(shape) < 1 or any(s < 1 for s in shape):
                raise ValueError(f"Nonlinear: shape must be a non-empty tuple of positive ints, got {shape}")
        self.shape = shape
        if lipschitz is not None and not (np.isfinite(lipschitz) and lipschitz > 0):
            raise ValueError(f"Nonlinear: lipschitz must be positive and finite, got {lipschitz}")
        self.lipschitz_bound = None if lipschitz is None else float(lipschitz)

    @property
    def dim(self) -> Optional[int]:
        """Entries of the unknown (None until ``shape`` is given)."""
        return None if self.shape is None else int(math.prod(self.shape))

    @property
    def num_measurements(self) -> int:
        """``m``."""
        return int(self.y.shape[0])

    @property
    def linear(self) -> bool:
        """False: only ``forward`` and its derivatives are available."""
        return False

    def noise_var(self):
        """``sigma_y^2`` broadcast to ``[m]``."""
        return jnp.broadcast_to(self.sigma_y**2, self.y.shape)

    def forward(self, x):
        """``f(x)`` flattened to ``[m]`` for one point."""
        return jnp.reshape(self.forward_fn(x), (-1,))

    def log_likelihood(self, x, extra_var=0.0):
        """``log N(y; f(x), (sigma_y^2 + extra_var) I)`` for one point ``x``."""
        return _gaussian_loglik(self.y, self.forward(x), self.sigma_y**2 + extra_var)

    def grad_log_likelihood(self, x):
        """``J_f(x)^T (y - f(x)) / sigma_y^2`` (one vector-Jacobian product of ``f``)."""
        return jax.grad(self.log_likelihood)(x)

    def check(self, dtype) -> None:
        """ValueError unless ``shape`` is set and ``forward_fn`` maps one point of it to ``[m]``."""
        if self.shape is None:
            raise ValueError("Nonlinear: shape (the unknown's event shape) is required to sample; "
                             "pass Nonlinear(forward_fn, y, sigma_y, shape=...)")
        try:
            out = jax.eval_shape(self.forward_fn, jax.ShapeDtypeStruct(self.shape, dtype))
        except Exception as e:  # noqa: BLE001 - re-raised naming the argument
            raise ValueError(f"Nonlinear: forward_fn fails on one point of shape {self.shape}: "
                             f"{type(e).__name__}: {e}") from None
        size = int(math.prod(getattr(out, "shape", (-1,))))
        if size != self.y.shape[0]:
            raise ValueError(f"Nonlinear: forward_fn returns shape {getattr(out, 'shape', None)} for one point but y "
                             f"has {self.y.shape[0]} entries")

    def lipschitz(self) -> float:
        """The given bound, else ``||J_f(0)||_2^2 / min sigma_y^2`` (power iteration on ``J^T J`` at 0)."""
        if self.lipschitz_bound is not None:
            return self.lipschitz_bound
        return float(_jacobian_norm_sq(self) / float(jnp.min(self.sigma_y**2)))


@eqx.filter_jit
def _jacobian_norm_sq(problem):
    x0 = jnp.zeros(problem.shape, problem.y.dtype)
    _, jvp = jax.linearize(problem.forward, x0)
    vjp = jax.linear_transpose(jvp, x0)
    v = jnp.cos(jnp.arange(x0.size, dtype=x0.dtype) * 1.2345).reshape(x0.shape) + 0.5
    v = v / jnp.linalg.norm(v)

    def body(_, v):
        (w,) = vjp(jvp(v))
        return w / jnp.maximum(jnp.linalg.norm(w), 1e-300)

    v = jax.lax.fori_loop(0, 200, body, v)
    return jnp.sum(jvp(v) ** 2)
