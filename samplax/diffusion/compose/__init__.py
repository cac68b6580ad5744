"""Composing diffusion models: products, mixtures, negation, powers, CFG, costs and constraints.

``product(m1, m2)``, ``mixture(...)``, ``negation(m, n, ...)``, ``power(m, beta)``, ``cfg(cond, uncond, w)``,
``tilt(m, cost)`` and ``constrain(m, project)`` return models that :func:`samplax.diffusion.sample` runs naively
(summed scores) and that the MCMC correctors (``sample(..., corrector=)``) and the Feynman–Kac corrector SMC
:func:`samplax.diffusion.sample_smc` run correctly. :mod:`samplax.diffusion.compose.exact` holds the ground truth
(closed-form products of Gaussian mixtures, quadrature and SMC references, truncated draws).
"""
from samplax.diffusion.compose.operators import (  # noqa: F401
    Composition, Mixture, BallProjection, BoxProjection, ball, box, cfg, constrain, mixture, negation, power, product,
    tilt,
)
from samplax.diffusion.compose.fk import SMCInfo, sample_smc  # noqa: F401
from samplax.diffusion.compose import exact  # noqa: F401,E402

__all__ = ["Composition", "Mixture", "BallProjection", "BoxProjection", "ball", "box", "cfg", "constrain", "mixture",
           "negation", "power", "product", "tilt", "SMCInfo", "sample_smc", "exact"]
