"""Guidance for diffusion models: wrappers that turn a denoiser into a guided denoiser, and two small samplers
for guidance that acts on the steps.

Every wrapper returns a denoiser ``D(x, sigma) = E[x0 | x]``-style function of ONE point in the VE convention
(``x = x0 + sigma * noise``, score ``(D - x) / sigma^2``) that :func:`samplax.diffusion.sample` runs with any
solver. A term ``g`` added to the score enters the denoiser as ``sigma^2 g``.

* :func:`cfg` -- classifier-free guidance, guidance interval, rescaled CFG; denoisers or velocity models.
* :func:`classifier` -- guidance by a noise-aware classifier ``log p(y | x_sigma)``.
* :func:`gradient_free_classifier` -- GFCG: a clean classifier on the denoised estimate picks a reference class
  and the scale.
* :func:`minority` -- minority guidance from the Tweedie reconstruction loss.
* :func:`dps`, :func:`mcg`, :func:`tfg` (with :func:`tfg_preset`), :func:`symplectic_adjoint` -- training-free
  guidance by a differentiable log-likelihood ``ell(x0)`` of the clean estimate.
* :func:`svdd` -- soft value-based decoding, a sampler (candidates of the stochastic transition, chosen by a
  value function); :func:`recurrent_sample` -- DDIM with TFG/FreeDoM recurrence, a sampler.
* :mod:`samplax.diffusion.guidance.exact` -- class-labelled Gaussian mixtures (exact conditional denoisers and
  noise-aware classifiers) and exact diagonal linear-Gaussian posteriors, the tests' ground truth.

Cost: every wrapper has ``cost_per_call`` (its base-model denoiser evaluations ``denoiser_evals``, VJPs through
the denoiser ``denoiser_vjps``, and evaluations / gradients of the user function ``guide_evals`` /
``guide_grads``); ``diffusion.sample`` reports them multiplied by its calls as ``info.cost["num_denoiser_evals"]``
etc., next to ``num_model_evals`` (the solver's calls of the wrapper).
"""
from samplax.diffusion.guidance._base import Guided  # noqa: F401
from samplax.diffusion.guidance.cfg import cfg, CFG  # noqa: F401
from samplax.diffusion.guidance.classifier import (  # noqa: F401
    classifier, gradient_free_classifier, minority, confusion_ratio_scale, ClassifierGuidance,
    GradientFreeClassifier, Minority,
)
from samplax.diffusion.guidance.training_free import (  # noqa: F401
    dps, mcg, tfg, tfg_preset, symplectic_adjoint, TFG_PRESETS, DPS, MCG, TFG, SymplecticAdjoint,
)
from samplax.diffusion.guidance.stepwise import svdd, recurrent_sample  # noqa: F401
from samplax.diffusion.guidance import exact  # noqa: F401

__all__ = [
    "cfg", "classifier", "gradient_free_classifier", "minority", "dps", "mcg", "tfg", "tfg_preset",
    "symplectic_adjoint", "svdd", "recurrent_sample", "confusion_ratio_scale", "TFG_PRESETS", "exact",
    "Guided", "CFG", "ClassifierGuidance", "GradientFreeClassifier", "Minority", "DPS", "MCG", "TFG",
    "SymplecticAdjoint",
]
