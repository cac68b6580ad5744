"""Argument and output checks shared by the diffusion entry points (sampling, likelihood, ODE solves, training).

* :func:`check_denoiser`: ``jax.eval_shape`` of the denoiser on one point before anything is compiled, so a
  wrong event shape or a denoiser written for a batch is a ValueError naming the argument, not a
  broadcasting error from inside a compiled loop.
* :func:`nonfinite_report` / :func:`nonfinite_ode_report`: the host side of the non-finite tracking that the
  compiled programs carry (per item: the first step and noise level where the model's output was not
  finite): a ``"nonfinite_samples"`` warning (also a Python ``UserWarning``) that says which step, which
  sigma and how many items, and a ValueError when every item is non-finite.
* :func:`in_staging_trace`: whether the caller runs inside ``jit`` (or another staging trace), where host
  caches must not keep the arrays it creates and nothing can be tuned.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

_MAX_CHECKED = 512


def in_staging_trace() -> bool:
    """Whether the caller runs inside a staging trace (``jit``, ``lax.scan``, ``eval_shape``, ...): there every
    operation, even on concrete arrays, gives a tracer (``vmap`` and ``grad`` alone do not stage)."""
    return isinstance(jnp.zeros(()) + 0, jax.core.Tracer)


_CHECKED: "OrderedDict" = OrderedDict()  # (id(denoiser), event shape, dtype) -> denoiser checked


def check_sigma_range(who: str, sigma_max, sigma_end) -> tuple:
    """``(sigma_max, sigma_end)`` as floats, or a ``ValueError`` naming ``who`` unless ``0 < sigma_end < sigma_max``
    (finite)."""
    try:
        sigma_max, sigma_end = float(sigma_max), float(sigma_end)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: sigma_max and sigma_end must be numbers") from None
    if not (np.isfinite(sigma_max) and 0.0 < sigma_end < sigma_max):
        raise ValueError(f"{who}: need 0 < sigma_end < sigma_max (finite), got sigma_end={sigma_end}, "
                         f"sigma_max={sigma_max}")
    return sigma_max, sigma_end


def check_denoiser(denoiser: Callable, event_shape: tuple, dtype, who: str, arg: str) -> None:
    """``jax.eval_shape`` of ``denoiser(x, sigma)`` on one point of ``event_shape``: a clear ValueError when the
    call fails (``arg``, the argument that gave the event shape, does not fit the model) or when the output
    does not have the point's shape. Cached per denoiser, event shape and dtype (nothing is compiled)."""
    key = (id(denoiser), tuple(event_shape), str(dtype))
    if _CHECKED.get(key) is denoiser:
        return
    if not callable(denoiser):
        raise ValueError(f"{who}: denoiser must be callable D(x, sigma), got {type(denoiser).__name__}")
    point = jax.ShapeDtypeStruct(tuple(event_shape), dtype)
    try:
        out = jax.eval_shape(denoiser, point, jax.ShapeDtypeStruct((), dtype))
    except Exception as e:  # noqa: BLE001 - re-raised with the argument named
        err = str(e).rstrip(". ")
        raise ValueError(f"{who}: the denoiser fails on one point of shape {tuple(event_shape)} (the event shape "
                         f"given by {arg}, whose first axis is the batch): {type(e).__name__}: {err}. Check that "
                         f"{arg} is (batch, *event_shape) with the model's event shape") from None
    shape = getattr(out, "shape", None)
    if shape != tuple(event_shape):
        raise ValueError(f"{who}: denoiser(x, sigma) must return E[x0 | x] for ONE point, of the point's shape "
                         f"{tuple(event_shape)} (from {arg}); it returned "
                         f"{'shape ' + str(shape) if shape is not None else type(out).__name__}"
                         + ("; it is vmapped over the batch, so write it for a single point"
                            if shape is not None and len(shape) > len(event_shape) else ""))
    _CHECKED[key] = denoiser
    while len(_CHECKED) > _MAX_CHECKED:
        _CHECKED.popitem(last=False)


MODEL_REMEDY = "Check the model (its weights, and its input scaling at this noise level)"


def nonfinite_report(who: str, step: np.ndarray, sigma: np.ndarray, num_steps: int, what: str = "sample",
                     cause: str = "the denoiser returned non-finite values (NaN or inf)",
                     remedy: str = MODEL_REMEDY) -> list:
    """Warnings (and a ValueError when every item is non-finite) from per-item first non-finite steps.
    ``cause`` says what went non-finite, ``remedy`` what to do when every item did."""
    step = np.asarray(step)
    bad = step >= 0
    n_bad = int(bad.sum())
    if n_bad == 0:
        return []
    first = int(step[bad].min())
    at_first = bad & (step == first)
    sig = float(np.asarray(sigma)[at_first][0])
    where = (f"the final denoise (sigma {sig:.4g})" if first == num_steps
             else f"step {first} of {num_steps} (the step from sigma {sig:.4g})")
    msg = (f"{who}: {cause}: {n_bad} of {step.size} {what}s are "
           f"non-finite; the first at {where}, in {int(at_first.sum())} {what}(s) there")
    return _report(msg, n_bad, step.size, f"every output is non-finite. {remedy}")


def nonfinite_ode_report(who: str, bad: np.ndarray, sigma_stop: np.ndarray, steps: np.ndarray, sigma_from: float,
                         sigma_to: float, what: str = "point") -> list:
    """Warnings (a ValueError when every item is non-finite) of a probability-flow ODE solve that stopped at the
    first non-finite model output of each item (``sigma_stop``: the end of the step where it happened)."""
    bad = np.asarray(bad, bool)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return []
    i = int(np.flatnonzero(bad)[np.argmin(np.abs(np.log(sigma_stop[bad]) - np.log(sigma_from)))])
    msg = (f"{who}: the denoiser returned non-finite values (NaN or inf) along the probability-flow ODE from "
           f"sigma {sigma_from:.4g} to {sigma_to:.4g}: {n_bad} of {bad.size} {what}s are non-finite (NaN); the "
           f"earliest in the solve at ODE step {int(steps[i])} (the step ending at sigma {float(sigma_stop[i]):.4g}), "
           f"{what} {i}")
    return _report(msg, n_bad, bad.size, "every result is non-finite. Check the model (its weights, and its input "
                   "scaling at these noise levels)")


def _report(msg: str, n_bad: int, n_total: int, all_bad: str) -> list:
    """The ValueError (``msg; all_bad``) when every item is non-finite; else a ``UserWarning`` pointing at the caller
    of the public report function and the ``"nonfinite_samples"`` warning entry."""
    if n_bad == n_total:
        raise ValueError(f"{msg}; {all_bad}")
    warnings.warn(msg, UserWarning, stacklevel=4)
    return [{"code": "nonfinite_samples", "value": n_bad, "message": msg}]


def positive_int(v, name: str, who: str, least: int = 1) -> int:
    """``v`` as an int, or a ValueError from ``who`` naming ``name`` when it is not an int ``>= least``
    (a bool is not an int here)."""
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < least:
        raise ValueError(f"{who}: {name} must be an int >= {least}, got {v!r}")
    return int(v)


def point_shape(event_shape, who: str, name: str = "event_shape") -> tuple:
    """``event_shape`` as a tuple of positive ints (the shape of one point), or a ValueError from ``who`` naming
    the argument ``name``."""
    try:
        event_shape = tuple(int(d) for d in event_shape)
    except TypeError:
        raise ValueError(f"{who}: {name} must be a tuple of ints, got {event_shape!r}") from None
    if len(event_shape) < 1 or any(d < 1 for d in event_shape):
        raise ValueError(f"{who}: {name} must be the shape of one point (positive sizes), got {event_shape}")
    return event_shape


def standard_noises(key, n: int, event_shape: tuple, dtype, start: int = 0):
    """``n`` standard normal points ``[n, *event_shape]``, point ``b`` drawn from ``fold_in(key, start + b)``:
    the same point for the same index whatever ``n`` and the batching."""
    return jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(key, b), event_shape, dtype))(
        jnp.arange(start, start + n))
