"""Shared pieces of the guidance wrappers: argument checks, shape-checked calls, per-point keys, costs.

* :func:`check_scale`, :func:`check_interval`, :func:`check_positive_int`, :func:`check_nonneg`: construction-time
  checks (a ``ValueError`` that names the argument).
* :func:`checked_call`: ``jax.eval_shape`` of a user function on the shapes of its arguments before it is called
  (at trace time, so it costs nothing at run time): a function that fails, or returns the wrong shape, is a
  ``ValueError`` naming the argument and the shape it should have returned. Inside
  :func:`samplax.diffusion.sample` this surfaces through its own denoiser check, with the message kept.
* :func:`point_key`: the random key of one denoiser call, ``fold_in(fold_in(key, h(x)), h(sigma))`` with ``h`` a
  mixing hash of the bits of the point and of the noise level. A wrapper that needs randomness (Monte-Carlo
  smoothing in :func:`~samplax.diffusion.guidance.tfg`, the re-noising of
  :func:`~samplax.diffusion.guidance.minority`) stays a deterministic function ``D(x, sigma)`` -- what every solver
  assumes -- and still draws fresh, independent-looking noise at every point and step; the draws depend on the
  wrapper's ``key`` and on nothing about the batch (batch-size invariant).
* :class:`Guided`: the base class; ``cost_per_call`` gives the base-model work of one call (see :func:`compose_cost`),
  and :func:`samplax.diffusion.sample` multiplies it by its number of calls into ``info.cost``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class Guided(eqx.Module):
    """Base class of the guidance wrappers: a denoiser ``D(x, sigma)`` for one point (VE convention).

    ``cost_per_call`` (a dict of ints) is the work of ONE call in units of the base model:
    ``denoiser_evals`` (forward evaluations of the innermost denoiser(s)), ``denoiser_vjps`` (vector-Jacobian
    products through them) and, where the wrapper calls a user function, ``guide_evals`` / ``guide_grads``
    (evaluations and gradients of the classifier, loss or value function).
    """

    #: ``(forward calls, VJPs through them, own counts)`` of one call, for a wrapper of ``self.denoiser`` whose work
    #: is fixed (:func:`compose_cost`); a wrapper whose work depends on its settings defines ``cost_per_call`` itself
    fixed_cost = None

    @property
    def cost_per_call(self) -> dict:
        """The work of one call: :func:`compose_cost` of ``self.denoiser`` and :attr:`fixed_cost`."""
        if self.fixed_cost is None:  # pragma: no cover - every wrapper sets one or the other
            raise NotImplementedError(f"{type(self).__name__} defines neither fixed_cost nor cost_per_call")
        forward, vjp, own = self.fixed_cost
        return compose_cost(inner_cost(self.denoiser), forward, vjp, **own)


def inner_cost(denoiser) -> dict:
    """``cost_per_call`` of a denoiser: a wrapper's own, or one evaluation of a plain model."""
    c = getattr(denoiser, "cost_per_call", None)
    if isinstance(c, dict):
        return dict(c)
    return {"denoiser_evals": 1, "denoiser_vjps": 0}


def compose_cost(inner: dict, forward: int, vjp: int, **own) -> dict:
    """Cost of a wrapper that makes ``forward`` calls of an inner denoiser of cost ``inner``, ``vjp`` of them
    differentiated (a VJP through a call costs one VJP per inner evaluation, and one more per inner VJP: a
    second-order product is counted as a VJP), plus its ``own`` counts (``guide_evals=...``)."""
    e, v = int(inner.get("denoiser_evals", 1)), int(inner.get("denoiser_vjps", 0))
    out = {"denoiser_evals": forward * e, "denoiser_vjps": forward * v + vjp * (e + v)}
    for k, val in inner.items():
        if k not in out:
            out[k] = forward * int(val)
    for k, val in own.items():
        out[k] = out.get(k, 0) + int(val)
    return out


def check_scale(scale, who: str, name: str = "scale") -> jax.Array:
    """A finite real scalar as a 0-d array (a traced value is passed through unchecked)."""
    if isinstance(scale, jax.core.Tracer):
        return scale
    try:
        a = np.asarray(scale, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} must be a finite real number, got {scale!r}") from None
    if a.ndim != 0 or not np.isfinite(a):
        raise ValueError(f"{who}: {name} must be a finite real number, got {scale!r}")
    return jnp.asarray(a, dtype=jnp.result_type(float))


def check_nonneg(value, who: str, name: str) -> jax.Array:
    """A finite real scalar >= 0."""
    a = check_scale(value, who, name)
    if not isinstance(a, jax.core.Tracer) and float(a) < 0:
        raise ValueError(f"{who}: {name} must be >= 0, got {value!r}")
    return a


def check_positive_int(value, who: str, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return int(value)


def check_interval(interval, who: str, name: str = "interval") -> Optional[jax.Array]:
    """``(sigma_lo, sigma_hi)`` with ``0 <= sigma_lo < sigma_hi`` (``sigma_hi`` may be ``inf``), or None."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} must be a pair (sigma_lo, sigma_hi) of numbers, got {interval!r}") from None
    if math.isnan(lo) or math.isnan(hi) or not (0.0 <= lo < hi):
        raise ValueError(f"{who}: {name} must be ordered, 0 <= sigma_lo < sigma_hi, got {interval!r}")
    return jnp.asarray([lo, hi], dtype=jnp.result_type(float))


def check_callable(fn, who: str, name: str, what: str) -> None:
    if not callable(fn):
        raise ValueError(f"{who}: {name} must be callable, {what}; got {type(fn).__name__}")


def in_interval(sigma, interval: Optional[jax.Array]):
    """Whether ``sigma_lo < sigma <= sigma_hi`` (always true without an interval)."""
    if interval is None:
        return jnp.asarray(True)
    return (sigma > interval[0].astype(jnp.result_type(sigma))) & (sigma <= interval[1].astype(jnp.result_type(sigma)))


def _spec(a):
    return jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))


def checked_call(fn: Callable, args: Sequence, *, who: str, name: str, shape: tuple, returns: str):
    """``fn(*args)`` after ``jax.eval_shape`` has checked that it runs on these shapes and returns ``shape``.

    ``returns`` describes the expected output for the error message (e.g. ``"a scalar log p(y | x_sigma)"``).
    """
    try:
        out = jax.eval_shape(fn, *[_spec(a) for a in args])
    except Exception as e:  # noqa: BLE001 - re-raised with the argument named
        shapes = ", ".join(str(tuple(jnp.shape(a))) for a in args)
        raise ValueError(f"{who}: {name} fails on arguments of shapes ({shapes}): {type(e).__name__}: "
                         f"{str(e).rstrip('. ')}; it must return {returns}") from None
    got = getattr(out, "shape", None)
    if got != tuple(shape):
        raise ValueError(f"{who}: {name} must return {returns} (shape {tuple(shape)}) for one point; it returned "
                         + (f"shape {got}" if got is not None else type(out).__name__)
                         + ("; it is called on ONE point, so write it for a single point" if got else ""))
    return fn(*args)


def call_denoiser(denoiser: Callable, x, sigma, *, who: str, name: str = "denoiser"):
    """``denoiser(x, sigma)`` after checking (``jax.eval_shape``) that it returns a point of ``x``'s shape."""
    return checked_call(denoiser, (x, sigma), who=who, name=name, shape=jnp.shape(x),
                        returns="E[x0 | x] of the point's shape")


def _bits32(a) -> jax.Array:
    """The bits of a float array as uint32 words (float64: two words per element)."""
    a = jnp.ravel(jnp.asarray(a))
    if a.dtype.itemsize == 8:
        return jax.lax.bitcast_convert_type(a, jnp.uint32).reshape(-1)
    if a.dtype.itemsize == 4:
        return jax.lax.bitcast_convert_type(a, jnp.uint32)
    if a.dtype.itemsize == 2:
        return jax.lax.bitcast_convert_type(a, jnp.uint16).astype(jnp.uint32)
    return a.astype(jnp.uint32)


def _hash32(a) -> jax.Array:
    """A mixing hash of an array's bits to one uint32 (murmur3's finalizer per word, then a weighted sum)."""
    u = _bits32(jax.lax.stop_gradient(a))
    u = u ^ (u >> 16)
    u = u * jnp.uint32(0x85EBCA6B)
    u = u ^ (u >> 13)
    u = u * jnp.uint32(0xC2B2AE35)
    u = u ^ (u >> 16)
    w = jnp.arange(u.shape[0], dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.sum(u * (w * jnp.uint32(0x9E3779B1)), dtype=jnp.uint32)


def point_key(key: jax.Array, x: jax.Array, sigma) -> jax.Array:
    """The key of one call at point ``x`` and noise level ``sigma``: a deterministic function of both (see the
    module docstring), so a wrapper that draws noise is still a function ``D(x, sigma)``."""
    return jax.random.fold_in(jax.random.fold_in(key, _hash32(x)), _hash32(sigma))


def as_key(key, who: str) -> jax.Array:
    """A typed PRNG key (``jax.random.key``); a raw uint32 key is wrapped."""
    if key is None:
        raise ValueError(f"{who}: key is required (a typed key from jax.random.key)")
    if not isinstance(key, jax.Array):
        raise ValueError(f"{who}: key must be a JAX PRNG key, got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{who}: key must be a single key, got a key array of shape {key.shape}")
        return key
    if key.shape == (2,) and key.dtype == jnp.uint32:
        return jax.random.wrap_key_data(key)
    raise ValueError(f"{who}: key must be a JAX PRNG key (jax.random.key), got dtype {key.dtype} shape {key.shape}")
