"""Noise schedules: ``x_t = alpha(t) x0 + sigma(t) eps``.

Every schedule gives ``alpha(t)``, ``sigma(t)``, the log signal-to-noise ratio
``logsnr(t) = log(alpha^2 / sigma^2)`` and its inverse ``t_from_logsnr``.
samplax's solvers work in the variance-exploding (VE) convention
``x = x0 + s * eps`` with ``s = sigma(t) / alpha(t) = exp(-logsnr / 2)``; every
schedule therefore also offers ``sigma_ve(t)`` and ``t_from_sigma_ve(s)``, and
a VP/flow state converts to VE by dividing by ``alpha(t)``.

Schedules:

* :class:`VPDiscrete` -- DDPM tables ``alphas_cumprod = prod(1 - beta_i)``
  (Ho et al. 2020), on a continuous index ``t in [0, N-1]`` with ``logsnr``
  linearly interpolated between table entries.
* :class:`VPLinear` -- continuous VP SDE with linear beta(t) (Song et al. 2021):
  ``log alpha(t) = -t^2 (b1 - b0) / 4 - t b0 / 2``.
* :class:`VPCosine` -- cosine schedule (Nichol & Dhariwal 2021):
  ``alpha(t) = cos((t + s)/(1 + s) pi/2) / cos(s/(1 + s) pi/2)``.
* :class:`VE` -- ``alpha = 1``, ``sigma(t) = smin (smax/smin)^t`` (Song et al. 2021).
* :class:`EDM` -- ``alpha = 1``, ``sigma(t) = t`` (Karras et al. 2022).
* :class:`LinearInterpolant` -- rectified flow / flow matching
  ``alpha = 1 - t``, ``sigma = t`` (Liu et al. 2022; Lipman et al. 2022).
"""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class Schedule(eqx.Module):
    """Abstract schedule. Subclasses define ``alpha``, ``sigma`` and ``t_from_logsnr``."""

    def alpha(self, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma(self, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def logsnr(self, t):
        """``log(alpha(t)^2 / sigma(t)^2)``."""
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))

    def t_from_logsnr(self, lam):  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma_ve(self, t):
        """Noise level in the VE convention: ``sigma(t) / alpha(t)``."""
        return self.sigma(t) / self.alpha(t)

    def t_from_sigma_ve(self, s):
        """Inverse of :meth:`sigma_ve`."""
        return self.t_from_logsnr(-2.0 * jnp.log(s))

    def state_to_ve(self, x, t):
        """Map a state of this schedule, ``x_t = alpha(t) x0 + sigma(t) eps``, to the VE convention.

        Returns ``(x_t / alpha(t), sigma(t) / alpha(t))``: the VE state ``x0 + sigma_ve eps``
        and its noise level, which is what :func:`samplax.diffusion.sample` works with.
        """
        return x / self.alpha(t), self.sigma_ve(t)

    def state_from_ve(self, x_ve, sigma_ve):
        """Inverse of :meth:`state_to_ve`: ``(alpha(t) x_ve, t)`` with ``t = t_from_sigma_ve(sigma_ve)``."""
        t = self.t_from_sigma_ve(sigma_ve)
        return self.alpha(t) * x_ve, t

    def dalpha(self, t):
        """``d alpha / dt`` (autodiff)."""
        return jax.grad(lambda u: self.alpha(u))(jnp.asarray(t, dtype=jnp.result_type(float)))

    def dsigma(self, t):
        """``d sigma / dt`` (autodiff)."""
        return jax.grad(lambda u: self.sigma(u))(jnp.asarray(t, dtype=jnp.result_type(float)))

    @property
    def t_range(self) -> tuple:
        """The time interval (t_min, t_max) on which the schedule is defined."""
        return (0.0, 1.0)


class VPLinear(Schedule):
    """Continuous VP SDE with ``beta(t) = b0 + t (b1 - b0)``, ``t in [0, 1]`` (Song et al. 2021).

    ``log alpha(t) = -t^2 (b1 - b0)/4 - t b0/2``, ``sigma = sqrt(1 - alpha^2)``.
    The defaults (0.1, 20) are the continuous limit of DDPM's 1e-4..0.02 over 1000 steps.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def _log_alpha(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        return jnp.exp(self._log_alpha(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self._log_alpha(t)))

    def logsnr(self, t):
        la = self._log_alpha(t)
        return 2.0 * la - jnp.log(-jnp.expm1(2.0 * la))

    def t_from_logsnr(self, lam):
        # -2 log alpha = log(1 + e^-lam) = (b1-b0)/2 t^2 + b0 t: positive root
        c = jax.nn.softplus(-lam)
        a = 0.5 * (self.beta_max - self.beta_min)
        b = self.beta_min
        return 2.0 * c / (b + jnp.sqrt(b * b + 4.0 * a * c))


class VPCosine(Schedule):
    """Cosine VP schedule (Nichol & Dhariwal 2021): ``alpha(t) = cos((t+s)/(1+s) pi/2) / cos(s/(1+s) pi/2)``.

    ``t_max`` (default 0.9946, as in the paper's clipping) keeps ``alpha > 0``.
    """

    s: float = 0.008
    t_max: float = 0.9946

    def _alpha_bar_sqrt_raw(self, t):
        return jnp.cos((t + self.s) / (1.0 + self.s) * math.pi / 2.0)

    def alpha(self, t):
        return self._alpha_bar_sqrt_raw(t) / math.cos(self.s / (1.0 + self.s) * math.pi / 2.0)

    def sigma(self, t):
        return jnp.sqrt(jnp.clip(1.0 - self.alpha(t) ** 2, 0.0))

    def t_from_logsnr(self, lam):
        a = jnp.sqrt(jax.nn.sigmoid(lam))  # alpha from alpha^2 = 1/(1+e^-lam)
        c0 = math.cos(self.s / (1.0 + self.s) * math.pi / 2.0)
        return jnp.arccos(jnp.clip(a * c0, -1.0, 1.0)) * 2.0 / math.pi * (1.0 + self.s) - self.s

    @property
    def t_range(self):
        return (0.0, self.t_max)


class VPDiscrete(Schedule):
    """A DDPM table (Ho et al. 2020): ``alphas_cumprod[n] = prod_{i<=n} (1 - beta_i)``.

    Time is a continuous index ``t in [0, N-1]``; ``logsnr`` is linearly
    interpolated between table entries (so integer ``t`` reproduce the table
    exactly), and ``t_from_logsnr`` is the exact inverse of that interpolation.
    """

    alphas_cumprod: jax.Array

    @staticmethod
    def linear(beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000) -> "VPDiscrete":
        """DDPM's linear betas (``beta_start..beta_end`` over ``num_steps``)."""
        betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
        return VPDiscrete(jnp.asarray(np.cumprod(1.0 - betas)))

    @staticmethod
    def scaled_linear(beta_start: float = 0.00085, beta_end: float = 0.012, num_steps: int = 1000) -> "VPDiscrete":
        """Stable-Diffusion's "scaled_linear" betas (linear in sqrt(beta))."""
        betas = np.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=np.float64) ** 2
        return VPDiscrete(jnp.asarray(np.cumprod(1.0 - betas)))

    @property
    def num_steps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def t_range(self):
        return (0.0, float(self.num_steps - 1))

    def _table_logsnr(self):
        ac = self.alphas_cumprod
        return jnp.log(ac) - jnp.log1p(-ac)

    def logsnr(self, t):
        idx = jnp.arange(self.num_steps, dtype=jnp.result_type(float))
        return jnp.interp(t, idx, self._table_logsnr())

    def alpha(self, t):
        return jnp.sqrt(jax.nn.sigmoid(self.logsnr(t)))

    def sigma(self, t):
        return jnp.sqrt(jax.nn.sigmoid(-self.logsnr(t)))

    def t_from_logsnr(self, lam):
        idx = jnp.arange(self.num_steps, dtype=jnp.result_type(float))
        tab = self._table_logsnr()  # decreasing in t
        return jnp.interp(-lam, -tab, idx)

    def sigma_ve_table(self):
        """VE noise levels ``sqrt((1 - abar)/abar)`` of the integer timesteps."""
        ac = self.alphas_cumprod
        return jnp.sqrt((1.0 - ac) / ac)


class VE(Schedule):
    """Variance exploding (Song et al. 2021): ``alpha = 1``, ``sigma(t) = smin (smax/smin)^t``."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def t_from_logsnr(self, lam):
        return (-0.5 * lam - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)


class EDM(Schedule):
    """EDM (Karras et al. 2022): ``alpha = 1``, ``sigma(t) = t``; the VE noise level is the time."""

    sigma_max: float = 80.0

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def sigma(self, t):
        return jnp.asarray(t, dtype=jnp.result_type(float))

    def t_from_logsnr(self, lam):
        return jnp.exp(-0.5 * lam)

    @property
    def t_range(self):
        return (0.0, self.sigma_max)


class LinearInterpolant(Schedule):
    """Rectified flow / linear interpolant: ``x_t = (1 - t) x0 + t eps`` (Liu et al. 2022).

    ``logsnr = 2 log((1-t)/t)`` and ``t = 1 / (1 + exp(logsnr/2))``; the VE
    noise level is ``t / (1 - t)``.
    """

    def alpha(self, t):
        return 1.0 - t

    def sigma(self, t):
        return jnp.asarray(t, dtype=jnp.result_type(float))

    def t_from_logsnr(self, lam):
        return jax.nn.sigmoid(-0.5 * lam)


def ddpm_linear() -> VPDiscrete:
    """The standard DDPM schedule: linear betas 1e-4..0.02 over 1000 steps (``sigma_max = 157.4`` in VE)."""
    return VPDiscrete.linear()
