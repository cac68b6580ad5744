"""One denoiser contract and adapters to it.

The contract: ``D(x, sigma) = E[x0 | x0 + sigma * eps = x]`` for ONE point ``x`` in
the VE convention (Karras et al. 2022). A model trained on a schedule
``x_t = alpha(t) x0 + sigma(t) eps`` sees the scaled state ``x_t = alpha(t) x`` at
the time ``t`` with ``sigma(t)/alpha(t) = sigma``; the adapters below do that
conversion and turn each parameterization into an x0-prediction:

* eps:      ``x0 = (x_t - sigma_t eps) / alpha_t``                       (Ho et al. 2020)
* v:        ``x0 = (alpha_t x_t - sigma_t v) / (alpha_t^2 + sigma_t^2)``, ``v = alpha eps - sigma x0``
                                                                          (Salimans & Ho 2022)
* score:    ``x0 = x + sigma^2 grad_x log p_sigma(x)``, ``grad_x = alpha_t * score_t(x_t)`` (Tweedie)
* velocity: ``u = alpha' x0 + sigma' eps``  =>  ``x0 = (sigma' x_t - sigma_t u)/(alpha_t sigma' - sigma_t alpha')``
                                                                          (flow matching, Lipman et al. 2022)
* discrete: an eps-network on integer timesteps ``0..N-1`` of a :class:`VPDiscrete` table;
  ``sigma`` maps to the continuous index by interpolating ``log sigma`` in the table
  and is rounded to the nearest integer, as diffusers' schedulers do.

The inverse direction, :func:`to_eps` and friends, wrap a samplax denoiser as a
model of another parameterization (used to drive diffusers' schedulers).
"""
from __future__ import annotations

import math
from typing import Callable

import equinox as eqx
import jax.numpy as jnp

from samplax.diffusion.schedules import LinearInterpolant, Schedule, VPDiscrete


def _t_alpha_sigma(schedule: Schedule, sigma):
    t = schedule.t_from_sigma_ve(sigma)
    return t, schedule.alpha(t), schedule.sigma(t)


def from_eps(eps_fn: Callable, schedule: Schedule) -> Callable:
    """Denoiser from a noise-prediction model ``eps_fn(x_t, t)`` of ``schedule``."""

    def denoiser(x, sigma):
        t, a, s = _t_alpha_sigma(schedule, sigma)
        return x - (s / a) * eps_fn(a * x, t)

    return denoiser


def from_v(v_fn: Callable, schedule: Schedule) -> Callable:
    """Denoiser from a v-prediction model ``v_fn(x_t, t)``, ``v = alpha eps - sigma x0``."""

    def denoiser(x, sigma):
        t, a, s = _t_alpha_sigma(schedule, sigma)
        xt = a * x
        return (a * xt - s * v_fn(xt, t)) / (a * a + s * s)

    return denoiser


def from_score(score_fn: Callable, schedule: Schedule) -> Callable:
    """Denoiser from a score model ``score_fn(x_t, t) = grad log p_t(x_t)`` (Tweedie's formula)."""

    def denoiser(x, sigma):
        t, a, s = _t_alpha_sigma(schedule, sigma)
        return x + sigma**2 * a * score_fn(a * x, t)

    return denoiser


def from_velocity(u_fn: Callable, schedule: Schedule | None = None) -> Callable:
    """Denoiser from a flow-matching velocity model ``u_fn(x_t, t) = d x_t / dt`` (default: rectified flow)."""
    schedule = schedule or LinearInterpolant()

    def denoiser(x, sigma):
        t, a, s = _t_alpha_sigma(schedule, sigma)
        da, ds = schedule.dalpha(t), schedule.dsigma(t)
        xt = a * x
        return (ds * xt - s * u_fn(xt, t)) / (a * ds - s * da)

    return denoiser


def from_discrete_eps(eps_fn: Callable, schedule: VPDiscrete, rounding: str = "nearest") -> Callable:
    """Denoiser from a discrete-timestep eps-network ``eps_fn(x_t, n)`` (``n`` an integer index).

    ``rounding="nearest"`` rounds the continuous index like diffusers (the network
    only knows integer steps; the conversion to x0 still uses the exact ``sigma``);
    ``rounding="none"`` passes the fractional index.
    """
    if rounding not in ("nearest", "none"):
        raise ValueError(f"from_discrete_eps: rounding must be 'nearest' or 'none', got {rounding!r}")
    log_tab = jnp.log(schedule.sigma_ve_table())

    def denoiser(x, sigma):
        idx = jnp.arange(log_tab.shape[0], dtype=x.dtype)
        t = jnp.interp(jnp.log(sigma), log_tab, idx)
        if rounding == "nearest":
            t = jnp.round(t).astype(jnp.int32)
        a = 1.0 / jnp.sqrt(1.0 + sigma**2)  # the VP alpha of this sigma
        return x - sigma * eps_fn(a * x, t)

    return denoiser


def to_eps(denoiser: Callable, schedule: Schedule) -> Callable:
    """The eps-prediction model ``eps(x_t, t)`` equivalent to a samplax denoiser under ``schedule``."""

    def eps(xt, t):
        a, s = schedule.alpha(t), schedule.sigma(t)
        sv = s / a
        x = xt / a
        return (x - denoiser(x, sv)) / sv

    return eps


def to_score(denoiser: Callable) -> Callable:
    """VE score ``grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2`` (Tweedie)."""

    def score(x, sigma):
        return (denoiser(x, sigma) - x) / sigma**2

    return score


class Reshaped(eqx.Module):
    """A denoiser for points of ``shape`` made from one for points of ``model_shape`` with as many entries
    (built by :func:`reshaped`); the wrapped model is a field, so its arrays stay data of a compiled program."""

    denoiser: Callable
    shape: tuple = eqx.field(static=True)
    model_shape: tuple = eqx.field(static=True)

    def __call__(self, x, sigma):
        """``D(x.reshape(model_shape), sigma).reshape(shape)``."""
        return jnp.reshape(self.denoiser(jnp.reshape(x, self.model_shape), sigma), self.shape)


def reshaped(denoiser: Callable, shape, model_shape) -> Reshaped:
    """The denoiser ``denoiser`` (written for points of ``model_shape``, e.g. a flat ``[64]`` MLP) on points of
    ``shape`` with the same number of entries (e.g. ``(8, 8)`` images, the event shape of a 2-D blur):
    ``D'(x, sigma) = D(x.reshape(model_shape), sigma).reshape(shape)`` (row-major order).

    Raises ValueError when the two shapes have different numbers of entries."""
    shape, model_shape = tuple(int(s) for s in shape), tuple(int(s) for s in model_shape)
    if math.prod(shape) != math.prod(model_shape):
        raise ValueError(f"reshaped: shape {shape} has {math.prod(shape)} entries but the model's points "
                         f"{model_shape} have {math.prod(model_shape)}")
    return Reshaped(denoiser, shape, model_shape)
