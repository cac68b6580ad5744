"""Neal's funnel: exact sampler, analytic moments, log Z = 0.

Definition (Neal, "Slice sampling", Ann. Statist. 31(3), 2003, section 8;
d = 10 there)::

    x_0 ~ N(0, sigma^2)
    x_i | x_0 ~ N(0, e^{x_0}),   i = 1..d-1   (variance e^{x_0}, std e^{x_0/2})

``funnel``: ``sigma = 3``, ``d = 10`` (Neal's definition).
``easy_funnel``: ``sigma = 1`` — the variant found in some code bases (a known
bug when it is called "Neal's funnel"; much easier to sample).

``logdensity`` is the *normalized* log-density

    -x_0^2 / (2 sigma^2) - log sigma - 0.5 log 2 pi
      + sum_{i>=1} [ -x_i^2 e^{-x_0} / 2 - x_0 / 2 - 0.5 log 2 pi ],

so ``log Z = 0``.  Moments: ``E[x] = 0``, ``Var x_0 = sigma^2``,
``Var x_i = E[e^{x_0}] = e^{sigma^2 / 2}`` (e^{4.5} = 90.0 for ``funnel``).
"""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import GroundTruth, Target
from samplax.targets import register

_LOG_2PI = math.log(2.0 * math.pi)


class Funnel(Target):
    """Neal's funnel with ``x_0 ~ N(0, scale^2)`` and ``x_i | x_0 ~ N(0, e^{x_0})`` (normalized).

    See :mod:`samplax.targets.funnel` for the definition.  ``scale`` is an array
    field (no retrace when it changes); ``ndim`` is structural.
    """

    scale: jax.Array
    ndim: int = eqx.field(static=True, default=10)
    label: str = eqx.field(static=True, default="funnel")

    def logdensity(self, x):
        s = self.scale
        x0, rest = x[0], x[1:]
        k = rest.shape[0]
        lp0 = -0.5 * (x0 / s) ** 2 - jnp.log(s) - 0.5 * _LOG_2PI
        lpr = -0.5 * jnp.sum(rest**2) * jnp.exp(-x0) - 0.5 * k * x0 - 0.5 * k * _LOG_2PI
        return lp0 + lpr

    @property
    def event_shape(self):
        return (self.ndim,)

    @property
    def name(self):
        return self.label

    def sample(self, key, n):
        """Exact draws: ``x_0 = sigma z_0``, ``x_i = e^{x_0/2} z_i`` with ``z ~ N(0, I)``."""
        z = jax.random.normal(key, (n, self.ndim), dtype=jnp.result_type(self.scale))
        x0 = self.scale * z[:, 0]
        return jnp.concatenate([x0[:, None], jnp.exp(0.5 * x0)[:, None] * z[:, 1:]], axis=1)

    def ground_truth(self):
        s = float(self.scale)
        std = np.full(self.ndim, math.exp(s**2 / 4.0))
        std[0] = s
        z = np.zeros(self.ndim)
        return GroundTruth(
            kind="analytic", source="closed form: Var x_i = E[exp(x_0)] = exp(sigma^2/2)", version="2",
            mean=z.copy(), std=std, mean_se=z.copy(), std_se=z.copy(), log_Z=0.0, log_Z_se=0.0,
            names=tuple(f"x[{i}]" for i in range(self.ndim)),
            # E[x_i^4] = 3 E[e^{2 x0}] = 3 e^{2 sigma^2}, Var x_i = e^{sigma^2 / 2}: kurtosis 3 e^{sigma^2}
            kurtosis=np.concatenate([[3.0], np.full(self.ndim - 1, 3.0 * math.exp(s**2))]),
        )

    def provenance(self):
        return {
            "source": "Neal (2003), Slice sampling, Ann. Statist. 31(3):705-767, section 8",
            "variant": f"{self.label}: x0 ~ N(0, {float(self.scale)!r}^2), dim={self.ndim}, normalized",
            "version": "1",
        }


def _make(fn_name, dim, scale):
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ValueError(f"{fn_name}: dim must be an int >= 2, got {dim!r}")
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"{fn_name}: scale must be a number, got {scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{fn_name}: scale (std of x_0) must be positive and finite, got {scale}")
    return Funnel(scale=jnp.asarray(scale, dtype=float), ndim=int(dim), label=fn_name)


@register("funnel")
def funnel(dim: int = 10, scale: float = 3.0):
    """Neal's funnel, ``x_0 ~ N(0, 3^2)``, ``x_{1..d-1} | x_0 ~ N(0, e^{x_0})``, d = 10."""
    return _make("funnel", dim, scale)


@register("easy_funnel")
def easy_funnel(dim: int = 10, scale: float = 1.0):
    """The std-1 funnel variant: ``x_0 ~ N(0, 1)``, ``x_{1..d-1} | x_0 ~ N(0, e^{x_0})``."""
    return _make("easy_funnel", dim, scale)
