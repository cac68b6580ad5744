"""Classifier-free guidance (Ho & Salimans 2022) with a guidance interval and rescaling, for denoisers and
for velocity (flow-matching) models.

Convention: the wrapper is a samplax denoiser ``D(x, sigma) = E[x0 | x]`` for one point (VE,
``x = x0 + sigma * noise``); guidance scale ``w`` (``w = 1`` is the conditional model, ``w = 0`` the
unconditional one). For a velocity model the guidance acts on the velocity, as in guided flows
(Zheng et al. 2023), and the guided velocity is turned into a denoiser by
:func:`samplax.diffusion.from_velocity`.
"""
from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from samplax.diffusion.denoisers import from_velocity
from samplax.diffusion.guidance._base import (
    Guided, check_callable, check_interval, check_scale, checked_call, compose_cost, in_interval, inner_cost,
)
from samplax.diffusion.schedules import LinearInterpolant, Schedule

PARAMETERIZATIONS = ("denoiser", "velocity")


def _add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}


class CFG(Guided):
    """Classifier-free guidance as a denoiser (built by :func:`cfg`)."""

    cond: Callable
    uncond: Callable
    scale: jax.Array
    interval: Optional[jax.Array]
    rescale: Optional[jax.Array]
    schedule: Optional[Schedule]
    parameterization: str = eqx.field(static=True, default="denoiser")

    @property
    def cost_per_call(self) -> dict:
        return _add(compose_cost(inner_cost(self.cond), 1, 0), compose_cost(inner_cost(self.uncond), 1, 0))

    def _combine(self, c, u, w):
        g = u + w * (c - u)
        if self.rescale is None:
            return g
        phi = self.rescale.astype(g.dtype)
        sd_c, sd_g = jnp.std(c), jnp.std(g)
        factor = jnp.where(sd_g > 0, phi * sd_c / jnp.where(sd_g > 0, sd_g, 1.0) + (1.0 - phi), 1.0)
        return g * factor

    def __call__(self, x, sigma):
        w = jnp.where(in_interval(sigma, self.interval), self.scale, 1.0).astype(x.dtype)
        if self.parameterization == "denoiser":
            c = checked_call(self.cond, (x, sigma), who="cfg", name="cond_denoiser", shape=x.shape,
                             returns="E[x0 | x, condition], the point's shape")
            u = checked_call(self.uncond, (x, sigma), who="cfg", name="uncond_denoiser", shape=x.shape,
                             returns="E[x0 | x], the point's shape")
            return self._combine(c, u, w)

        def velocity(xt, t):
            c = checked_call(self.cond, (xt, t), who="cfg", name="cond_denoiser", shape=xt.shape,
                             returns="the conditional velocity u(x_t, t), the point's shape")
            u = checked_call(self.uncond, (xt, t), who="cfg", name="uncond_denoiser", shape=xt.shape,
                             returns="the unconditional velocity u(x_t, t), the point's shape")
            return self._combine(c, u, w)

        return from_velocity(velocity, self.schedule)(x, sigma)


def cfg(cond_denoiser: Callable, uncond_denoiser: Callable, scale, *, interval=None, rescale=None,
        parameterization: str = "denoiser", schedule: Optional[Schedule] = None) -> CFG:
    """Classifier-free guidance (Ho & Salimans 2022) as a denoiser for :func:`samplax.diffusion.sample`.

    Update rule (per call, ``w = scale`` inside the interval and ``w = 1`` outside):

    * ``g = D_u + w (D_c - D_u)``, i.e. the score ``(1 - w) grad log p_sigma(x) + w grad log p_sigma(x | c)``;
    * guidance interval (Kynkäänniemi et al. 2024): guidance only for ``sigma_lo < sigma <= sigma_hi``;
      elsewhere the conditional model (``w = 1``);
    * rescaled CFG (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", sec. 3.4),
      with ``rescale = phi``: ``g <- g * (phi * std(D_c) / std(g) + 1 - phi)``, the standard deviations taken
      over all elements of the point; it undoes the over-saturation of large ``w``. Applied to the x0-prediction
      (``parameterization="denoiser"``) or to the velocity (``"velocity"``).

    With ``parameterization="velocity"``, ``cond_denoiser`` and ``uncond_denoiser`` are velocity models
    ``u(x_t, t)`` of ``schedule`` (default :class:`~samplax.diffusion.LinearInterpolant`, rectified flow,
    ``x_t = (1 - t) x0 + t eps``); the guidance is applied to the velocity (guided flows, Zheng et al. 2023:
    ``u = u_u + w (u_c - u_u)``) and the result is converted with :func:`~samplax.diffusion.from_velocity`.
    Without ``rescale`` this is the same denoiser as guiding ``from_velocity(cond)`` and
    ``from_velocity(uncond)`` (the velocity is affine in the x0-prediction at fixed ``(x_t, t)`` and the
    weights sum to 1); with ``rescale`` the two differ (the standard deviations are of different quantities).

    Cost per call: one evaluation of each model (2 denoiser evaluations, no VJP).

    Args:
      cond_denoiser, uncond_denoiser: ``D(x, sigma)`` for one point (or velocity models, see above).
      scale: guidance scale ``w`` (finite).
      interval: ``(sigma_lo, sigma_hi)``, ``0 <= sigma_lo < sigma_hi`` (``sigma_hi`` may be ``inf``), or None.
      rescale: ``phi`` in ``[0, 1]`` or None.
      parameterization: ``"denoiser"`` or ``"velocity"``.
      schedule: the velocity models' schedule (velocity only).
    """
    check_callable(cond_denoiser, "cfg", "cond_denoiser", "D(x, sigma)")
    check_callable(uncond_denoiser, "cfg", "uncond_denoiser", "D(x, sigma)")
    w = check_scale(scale, "cfg")
    iv = check_interval(interval, "cfg")
    phi = None
    if rescale is not None:
        phi = check_scale(rescale, "cfg", "rescale")
        if not isinstance(phi, jax.core.Tracer) and not (0.0 <= float(phi) <= 1.0):
            raise ValueError(f"cfg: rescale (phi) must be in [0, 1], got {rescale!r}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"cfg: parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if parameterization == "velocity":
        schedule = schedule if schedule is not None else LinearInterpolant()
        if not isinstance(schedule, Schedule):
            raise ValueError(f"cfg: schedule must be a samplax.diffusion.Schedule, got {type(schedule).__name__}")
    elif schedule is not None:
        raise ValueError("cfg: schedule is only used with parameterization='velocity'")
    return CFG(cond_denoiser, uncond_denoiser, w, iv, phi, schedule, parameterization)
