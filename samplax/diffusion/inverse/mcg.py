"""MCG: manifold-constrained gradients (Chung, Sim, Ryu & Ye, NeurIPS 2022).

Each step is the DPS step (:mod:`samplax.diffusion.inverse.dps`: ancestral step plus the gradient of the
measurement fit through the denoiser, the "manifold constraint") followed by the projection onto the
measurement set at the new noise level,

``x_{i+1} <- x_{i+1} - A^+ (A x_{i+1} - y_{i+1})``, ``y_{i+1} = y + s_{i+1} A eps`` (``eps ~ N(0, I)``: the
measurement noised like ``A x`` at level ``s_{i+1}``; ``y_N = y`` at ``sigma = 0``),

with ``A^+ = A^T (A A^T)^+`` (exact for :class:`Mask` and :class:`SubsampledFourier` (``A^T``), a dense
``A`` and a circular :class:`Blur`; conjugate gradients otherwise). Cost as DPS: ``nfe`` denoiser
evaluations and ``nfe`` VJPs per sample (the projection uses ``A`` only).

Known bias: the projection makes ``A x = y`` hold exactly at the end, which is right for noiseless
measurements only; with ``sigma_y > 0`` the posterior spread along ``A`` is lost (and the DPS bias remains).
"""
from __future__ import annotations

import jax

from samplax.diffusion.inverse import common
from samplax.diffusion.inverse.dps import guidance_options, guided_reverse, plan_guided
from samplax.diffusion.inverse.registry import InverseMethod, register


def _run(denoiser, problem, key, sigmas, params, num_samples, shape, step):
    op = problem.operator

    def project(x, s_next, keys, i):
        eps = common.normals(keys, i, 1, shape, x.dtype)

        def one(xi, ei):
            y_next = problem.y + s_next * op.matvec(ei)
            return xi - op.pinv(op.matvec(xi) - y_next).reshape(shape)

        return jax.vmap(one)(x, eps)

    return guided_reverse(denoiser, problem, key, sigmas, params["scale"], num_samples, shape, step, project=project)


register(InverseMethod(
    "mcg", "Manifold-constrained gradients: DPS step plus projection onto A x = y + s A eps (Chung et al. 2022)",
    guidance_options(), lambda problem, nfe, sm, n, o: plan_guided("mcg", problem, nfe, sm, n, o), _run,
    linear_only=True,
    bias="hard data consistency A x = y at the end: exact only for sigma_y = 0; with noise it removes the "
         "posterior spread along A; the DPS guidance bias remains",
    remedy=("its guidance step (s_i^2 - s_(i+1)^2) grad log N(y; A D(x), sigma_y^2) overshoots when sigma_y is "
            "small next to the prior's spread along A; use step='normalized' (the paper's step), a scale below 1, "
            "or a larger nfe")))
