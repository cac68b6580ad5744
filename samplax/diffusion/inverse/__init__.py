"""Inverse problems with diffusion priors: measurement models, exact Gaussian-mixture posteriors, posterior samplers.

* Measurement models (:mod:`.problems`): :class:`LinearGaussian` ``y = A x0 + sigma_y n`` with ``A`` a matrix or a
  structured operator (:mod:`.operators`: :class:`Dense`, :class:`Mask`, :class:`Blur`, :class:`SubsampledFourier`),
  and :class:`Nonlinear` ``y = f(x0) + sigma_y n``.
* Ground truth (:mod:`.exact`): :func:`posterior` (the exact posterior mixture of a Gaussian-mixture prior under
  a linear-Gaussian measurement) and :func:`log_evidence`.
* Samplers: ``sample(denoiser, problem, *, key, num_samples, nfe, sigma_max, method=..., **options)`` with
  :func:`method_names` (``dps``, ``mcg``, ``daps``, ``pnp_ula``, ``tds``, ``ambient_dps``; one module each,
  registered in :mod:`.registry`).
* Calibration without an exact posterior (:mod:`.calibration`): :func:`sbc` (simulation-based calibration against
  the model's own prior: ranks of the truth among posterior draws, tested for uniformity by :func:`rank_uniformity`)
  and :func:`prior_draws` (the discretized prior the samplers run).
* Active measurement design (:mod:`.design`): :func:`next_block` picks the mask block where the posterior samples
  disagree most (largest expected information gain under a Gaussian approximation).
"""
from samplax.diffusion.inverse.operators import LinearOperator, Dense, Mask, Blur, SubsampledFourier  # noqa: F401
from samplax.diffusion.inverse.problems import LinearGaussian, Nonlinear  # noqa: F401
from samplax.diffusion.inverse.exact import posterior, log_evidence  # noqa: F401
from samplax.diffusion.inverse.design import block_scores, next_block  # noqa: F401
from samplax.diffusion.inverse.registry import InverseMethod, get_method, method_names  # noqa: F401
from samplax.diffusion.inverse import dps, mcg, daps, pnp_ula, tds, ambient_dps  # noqa: F401,E402  (registration)
from samplax.diffusion.inverse.api import sample  # noqa: F401
from samplax.diffusion.inverse.calibration import prior_draws, rank_uniformity, sbc  # noqa: F401

__all__ = ["LinearOperator", "Dense", "Mask", "Blur", "SubsampledFourier", "LinearGaussian", "Nonlinear",
           "posterior", "log_evidence", "block_scores", "next_block", "InverseMethod", "get_method", "method_names", "sample",
           "prior_draws", "rank_uniformity", "sbc"]
