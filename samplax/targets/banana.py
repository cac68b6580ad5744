"""Banana (twisted Gaussian) target: exact sampler, analytic moments, log Z = 0.

Definition (variant ``"inference_gym"``, the Banana of TensorFlow Probability's
inference gym; a sign-flipped version of the twisted Gaussian of Haario,
Saksman & Tamminen, "Adaptive proposal distribution for random walk
Metropolis", Comp. Stat. 1999)::

    x_1 ~ N(0, s^2),            s = 10
    x_2 | x_1 ~ N(b (x_1^2 - s^2), 1),  b = 0.03 (curvature)
    x_3..x_d ~ N(0, 1)          (only when dim > 2)

``logdensity`` is the *normalized* log-density

    log N(x_1; 0, s^2) + log N(x_2 - b (x_1^2 - s^2); 0, 1) + sum_{i>2} log N(x_i; 0, 1),

so ``log Z = 0``.  The map ``(x_1, x_2) -> (x_1, x_2 - b (x_1^2 - s^2))`` has unit
Jacobian, which gives the exact sampler and the moments
``E[x] = 0``, ``Var x_1 = s^2``, ``Var x_2 = 1 + 2 b^2 s^4`` (= 19 for the defaults;
Haario's "strongly twisted" ``b = 0.1`` gives 201), ``Var x_i = 1`` for ``i > 2``.
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


class Banana(Target):
    """Twisted Gaussian ``x_1 ~ N(0, s^2)``, ``x_2 | x_1 ~ N(b (x_1^2 - s^2), 1)`` (normalized).

    See the module docstring for the exact definition and moments.
    ``scale`` (``s``) and ``curvature`` (``b``) are array fields, so changing them
    never retraces.
    """

    scale: jax.Array
    curvature: jax.Array
    ndim: int = eqx.field(static=True, default=2)

    def logdensity(self, x):
        s, b = self.scale, self.curvature
        x1, x2 = x[0], x[1]
        u = x2 - b * (x1**2 - s**2)
        lp = -0.5 * (x1 / s) ** 2 - jnp.log(s) - 0.5 * u**2 - _LOG_2PI
        rest = x[2:]
        return lp - 0.5 * jnp.sum(rest**2) - 0.5 * rest.shape[0] * _LOG_2PI

    @property
    def event_shape(self):
        return (self.ndim,)

    @property
    def name(self):
        return "banana"

    def sample(self, key, n):
        """Exact draws: ``z ~ N(0, I)``, ``x_1 = s z_1``, ``x_2 = z_2 + b (x_1^2 - s^2)``."""
        z = jax.random.normal(key, (n, self.ndim), dtype=jnp.result_type(self.scale))
        x1 = self.scale * z[:, 0]
        x2 = z[:, 1] + self.curvature * (x1**2 - self.scale**2)
        return jnp.concatenate([x1[:, None], x2[:, None], z[:, 2:]], axis=1)

    def ground_truth(self):
        s, b = float(self.scale), float(self.curvature)
        std = np.ones(self.ndim)
        std[0] = s
        std[1] = math.sqrt(1.0 + 2.0 * b**2 * s**4)
        z = np.zeros(self.ndim)
        return GroundTruth(
            kind="analytic", source="closed form (unit-Jacobian map of a Gaussian)", version="1",
            mean=z.copy(), std=std, mean_se=z.copy(), std_se=z.copy(), log_Z=0.0, log_Z_se=0.0,
            names=tuple(f"x[{i}]" for i in range(self.ndim)),
        )

    def provenance(self):
        return {
            "source": "Haario, Saksman & Tamminen (1999), Comp. Stat. 14:375; "
                      "TFP inference_gym Banana (sign convention)",
            "variant": f"inference_gym: scale={float(self.scale)!r}, curvature={float(self.curvature)!r}, "
                       f"dim={self.ndim}, normalized",
            "version": "1",
        }


@register("banana")
def banana(dim: int = 2, curvature: float = 0.03, scale: float = 10.0):
    """Banana target (inference-gym variant; see :mod:`samplax.targets.banana`).

    Args:
      dim: number of coordinates (>= 2); coordinates beyond the second are N(0, 1).
      curvature: ``b`` (0.03 default; 0.1 is Haario's strongly twisted case).
      scale: ``s``, the standard deviation of ``x_1`` (> 0).
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ValueError(f"banana: dim must be an int >= 2, got {dim!r}")
    try:
        curvature, scale = float(curvature), float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"banana: curvature and scale must be numbers, got {curvature!r}, {scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"banana: scale must be a positive finite number, got {scale}")
    if not math.isfinite(curvature):
        raise ValueError(f"banana: curvature must be finite, got {curvature}")
    return Banana(scale=jnp.asarray(scale, dtype=float), curvature=jnp.asarray(curvature, dtype=float),
                  ndim=int(dim))
