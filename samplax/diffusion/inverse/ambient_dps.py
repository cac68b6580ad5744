"""Ambient DPS: posterior sampling with a prior trained on corrupted data (Aali, Arvinte, Kumar, Daras & Tamir,
2025, "Ambient diffusion posterior sampling: solving inverse problems with diffusion models trained on corrupted
data").

An ambient diffusion model (Daras et al. 2023) never saw clean data: it is trained on further-corrupted
measurements and predicts ``h(x, sigma, mask) = E[x0 | mask * x]``, the clean point given only the entries in
``mask`` of the noisy state. Ambient DPS runs the DPS reverse diffusion (:mod:`samplax.diffusion.inverse.dps`)
with this estimate in place of ``E[x0 | x]``:

``d = h(x_i, s_i, mask)``, ``x_{i+1} = d + (s_{i+1}/s_i)^2 (x_i - d) + step_i + s_{i+1} sqrt(s_i^2 - s_{i+1}^2)/s_i z``

with the DPS guidance ``step_i`` through ``h`` (one evaluation and one VJP per step). The denoiser argument of
:func:`samplax.diffusion.inverse.sample` is ``h(x, sigma, mask)`` (one point; ``mask`` a float array of the point's
shape), and the option ``mask`` (boolean, the point's shape) says which entries it is conditioned on. With every
entry in the mask it is DPS exactly.

Known bias: that of DPS, plus the information the mask withholds: ``E[x0 | mask * x]`` is a smoother estimate
than ``E[x0 | x]``, so the reverse chain's prior is a worse approximation of the clean one (measured in
``tests/diffusion/test_inverse.py`` with the exact ambient denoiser of a Gaussian mixture,
:meth:`~samplax.diffusion.gmm.FullCovGaussianMixtureDiffusion.denoise_observed`).
"""
from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import numpy as np

from samplax.core.method import Option
from samplax.diffusion.inverse.dps import guidance_options, guided_reverse, plan_guided
from samplax.diffusion.inverse.registry import InverseMethod, register


class AmbientDenoiser(eqx.Module):
    """``D(x, sigma) = h(mask * x, sigma, mask)``: an ambient model ``h`` seen through a fixed mask."""

    model: Callable
    mask: jax.Array

    def __call__(self, x, sigma):
        return self.model(self.mask * x, sigma, self.mask)


def _adapt(denoiser, opts, shape):
    mask = opts["mask"]
    if mask is None:
        raise ValueError("inverse.sample: method 'ambient_dps' needs the option mask= (boolean, the point's shape: "
                         "the entries the ambient model is conditioned on)")
    m = np.asarray(mask)
    if m.dtype != bool or m.shape != tuple(shape):
        raise ValueError(f"inverse.sample: ambient_dps option mask must be a boolean array of the point's shape "
                         f"{tuple(shape)}, got dtype {m.dtype} and shape {m.shape}")
    if not m.any():
        raise ValueError("inverse.sample: ambient_dps option mask keeps no entry")
    if not callable(denoiser):
        raise ValueError(f"inverse.sample: denoiser must be callable h(x, sigma, mask), got {type(denoiser).__name__}")
    return AmbientDenoiser(denoiser, jax.numpy.asarray(m, jax.numpy.result_type(float)))


def _run(denoiser, problem, key, sigmas, params, num_samples, shape, step):
    return guided_reverse(denoiser, problem, key, sigmas, params["scale"], num_samples, shape, step)


OPTIONS = {
    "mask": Option(None, "entries the ambient model is conditioned on (boolean, the point's shape); required",
                   None, "a boolean array of the point's shape"),
    **guidance_options(),
}

register(InverseMethod(
    "ambient_dps", "Ambient DPS: DPS with an ambient model h(x, sigma, mask) = E[x0 | mask * x] trained on corrupted "
                   "data (Aali et al. 2025)",
    OPTIONS, lambda problem, nfe, sm, n, o: plan_guided("ambient_dps", problem, nfe, sm, n, o), _run,
    adapt_denoiser=_adapt,
    bias="the DPS bias, plus the information the mask withholds from the prior's denoiser",
    remedy=("its guidance step (s_i^2 - s_(i+1)^2) grad log N(y; A D(x), sigma_y^2) overshoots when sigma_y is "
            "small next to the prior's spread along A; use step='normalized' (the paper's step), a scale below 1, "
            "or a larger nfe")))
