"""Training-free guidance on the clean estimate: a differentiable log-likelihood (or negative loss)
``ell(x0)`` of the CLEAN point steers an unconditional denoiser.

All wrappers are denoisers ``D(x, sigma)`` for one point (VE, ``x = x0 + sigma * noise``). The exact
conditional denoiser would be ``D + sigma^2 grad_x log p(y | x_sigma = x)``; these methods replace the
intractable ``p(y | x_sigma)`` by something computable from ``D`` -- hence their known biases, which the
tests measure against exact posteriors of Gaussian-mixture priors.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from samplax.diffusion.guidance._base import (
    Guided, as_key, call_denoiser, check_callable, check_nonneg, check_positive_int, check_scale, checked_call, compose_cost,
    inner_cost, point_key,
)


def _ell(fn, who, name="log_likelihood"):
    def call(x0):
        return checked_call(fn, (x0,), who=who, name=name, shape=(), returns="a scalar log-likelihood ell(x0)")
    return call


# ---------------------------------------------------------------- DPS
class DPS(Guided):
    """Diffusion posterior sampling guidance as a denoiser (built by :func:`dps`)."""

    denoiser: Callable
    log_likelihood: Callable
    scale: jax.Array

    fixed_cost = (1, 1, {"guide_evals": 1, "guide_grads": 1})

    def guidance_term(self, x, sigma):
        """``(D(x, sigma), grad_x ell(D(x, sigma)))`` -- one forward pass and one VJP through the denoiser."""
        ell = _ell(self.log_likelihood, "dps")

        def f(z):
            d = call_denoiser(self.denoiser, z, sigma, who="dps")
            return ell(d), d

        (_, d), g = jax.value_and_grad(f, has_aux=True)(x)
        return d, g

    def __call__(self, x, sigma):
        d, g = self.guidance_term(x, sigma)
        return d + self.scale.astype(x.dtype) * sigma**2 * g


def dps(denoiser: Callable, log_likelihood: Callable, scale=1.0) -> DPS:
    """Diffusion posterior sampling (Chung et al. 2023, "Diffusion posterior sampling for general noisy inverse
    problems"): the gradient of the likelihood of the clean estimate, taken through the denoiser.

    Update rule: ``D_guided(x, sigma) = D(x, sigma) + scale * sigma^2 * grad_x ell(D(x, sigma))``, i.e. the score
    ``grad log p_sigma(x) + scale * grad_x log p(y | x0 = D(x))`` -- DPS's approximation
    ``p(y | x_sigma) ~ p(y | E[x0 | x_sigma])``. (Chung et al. step by ``zeta_i = zeta / ||y - A(x0_hat)||``
    on ``||y - A x0_hat||^2`` inside DDPM; ``scale = 1`` here is the approximation itself, for any solver.)
    Known bias: the plug-in likelihood ignores the spread of ``p(x0 | x_sigma)``, so the guidance is too strong
    at high noise (overconfident, component weights pulled toward the likelihood's mode); measured in the tests.

    Cost per call: 1 denoiser evaluation and 1 VJP through it; 1 evaluation and gradient of ``ell``.

    Args:
      denoiser: ``D(x, sigma)`` of the prior.
      log_likelihood: ``ell(x0) -> scalar``, e.g. ``-||y - A x0||^2 / (2 sigma_y^2)``.
      scale: guidance scale (finite).
    """
    check_callable(denoiser, "dps", "denoiser", "D(x, sigma)")
    check_callable(log_likelihood, "dps", "log_likelihood", "ell(x0) -> scalar")
    return DPS(denoiser, log_likelihood, check_scale(scale, "dps"))


# ---------------------------------------------------------------- MCG
class MCG(Guided):
    """Manifold-constrained gradient guidance as a denoiser (built by :func:`mcg`)."""

    denoiser: Callable
    log_likelihood: Callable
    project: Callable
    scale: jax.Array

    fixed_cost = (1, 1, {"guide_evals": 1, "guide_grads": 1, "project_evals": 1})

    def __call__(self, x, sigma):
        d, g = DPS(self.denoiser, self.log_likelihood, self.scale).guidance_term(x, sigma)
        x0 = d + self.scale.astype(x.dtype) * sigma**2 * g
        return checked_call(self.project, (x0,), who="mcg", name="project", shape=x.shape,
                            returns="the projected clean point, of the point's shape")


def mcg(denoiser: Callable, log_likelihood: Callable, project: Callable, scale=1.0) -> MCG:
    """Manifold-constrained gradient (MCG, Chung et al. 2022, "Improving diffusion models for inverse problems
    using manifold constraints"): the DPS gradient through the denoiser followed by a projection onto the
    measurement-consistent set.

    Update rule: ``D_guided(x, sigma) = P(D(x, sigma) + scale * sigma^2 * grad_x ell(D(x, sigma)))`` with ``P``
    the projection ``project(x0)`` (for a noiseless linear measurement ``y = A x0``:
    ``x0 + A^+ (y - A x0)``; for inpainting, the observed entries set to ``y``). MCG projects the noisy state
    onto ``A x_i = y_i`` with the measurement noised to level ``i``; projecting the clean estimate instead, a
    first-order (DDIM/Euler) step ``x_t = (t/s) x_s + (1 - t/s) D`` carries the measured part of the state to
    ``y`` plus the state's own noise scaled by ``t / sigma_max`` -- the same construction, with the noise of
    ``y_i`` taken from the initial draw. Without ``project`` MCG is :func:`dps`.
    Known bias: the projection is exact only for noiseless measurements; with ``sigma_y > 0`` the observed part
    is pinned to ``y`` (no posterior spread there); measured in the tests.

    Cost per call: 1 denoiser evaluation and 1 VJP; 1 evaluation and gradient of ``ell``; 1 projection.

    Args:
      denoiser: ``D(x, sigma)``.
      log_likelihood: ``ell(x0) -> scalar`` (MCG's ``-||W (y - A x0)||^2`` up to scale).
      project: ``project(x0) -> x0`` onto the data-consistent set.
      scale: guidance scale (finite).
    """
    check_callable(denoiser, "mcg", "denoiser", "D(x, sigma)")
    check_callable(log_likelihood, "mcg", "log_likelihood", "ell(x0) -> scalar")
    check_callable(project, "mcg", "project", "project(x0) -> x0")
    return MCG(denoiser, log_likelihood, project, check_scale(scale, "mcg"))


# ---------------------------------------------------------------- TFG
#: Named special cases of TFG's design space (Ye et al. 2024, sec. 3): which terms are on and how many
#: iterations / Monte-Carlo draws / recurrences. Strengths (``rho``, ``mu``) are task dependent (the paper tunes
#: them per task); the defaults here are a starting point. ``recurrence > 1`` needs
#: :func:`samplax.diffusion.guidance.recurrent_sample`.
TFG_PRESETS = {
    "dps": dict(rho=1.0, mu=0.0, gamma=0.0, num_iter=1, num_mc=1, recurrence=1),      # Chung et al. 2023
    "lgd": dict(rho=1.0, mu=0.0, gamma=1.0, num_iter=1, num_mc=4, recurrence=1),      # Song et al. 2023 (LGD-MC)
    "freedom": dict(rho=1.0, mu=0.0, gamma=0.0, num_iter=1, num_mc=1, recurrence=2),  # Yu et al. 2023
    "mpgd": dict(rho=0.0, mu=0.1, gamma=0.0, num_iter=1, num_mc=1, recurrence=1),     # He et al. 2024
    "ugd": dict(rho=1.0, mu=0.1, gamma=0.0, num_iter=2, num_mc=1, recurrence=2),      # Bansal et al. 2023
    "tfg": dict(rho=1.0, mu=0.1, gamma=0.5, num_iter=2, num_mc=4, recurrence=2),      # Ye et al. 2024
}


def tfg_preset(name: str, **overrides) -> dict:
    """The options of a named special case of :func:`tfg` (:data:`TFG_PRESETS`), with ``overrides`` applied:
    ``dps``, ``lgd``, ``freedom``, ``mpgd``, ``ugd``, ``tfg``. Pass them on as ``tfg(denoiser, ell, **opts)``
    (``recurrence`` included: the wrapper keeps it for :func:`recurrent_sample`)."""
    if name not in TFG_PRESETS:
        raise ValueError(f"tfg_preset: unknown preset {name!r}; choose one of {sorted(TFG_PRESETS)}")
    unknown = set(overrides) - set(TFG_PRESETS[name])
    if unknown:
        raise ValueError(f"tfg_preset: unknown options {sorted(unknown)}; a preset has {sorted(TFG_PRESETS[name])}")
    return {**TFG_PRESETS[name], **overrides}


class TFG(Guided):
    """TFG's unified training-free guidance as a denoiser (built by :func:`tfg`)."""

    denoiser: Callable
    log_likelihood: Callable
    rho: jax.Array
    mu: jax.Array
    gamma: jax.Array
    key: Optional[jax.Array]
    num_iter: int = eqx.field(static=True, default=1)
    num_mc: int = eqx.field(static=True, default=1)
    recurrence: int = eqx.field(static=True, default=1)
    variance_guidance: bool = eqx.field(static=True, default=True)
    mean_guidance: bool = eqx.field(static=True, default=False)

    @property
    def sampler_required(self) -> Optional[str]:
        if self.recurrence > 1:
            return (f"this tfg wrapper has recurrence={self.recurrence}, which repeats each solver step; run it with "
                    "samplax.diffusion.guidance.recurrent_sample (diffusion.sample would ignore the recurrence)")
        return None

    @property
    def smoothed(self) -> bool:
        return self.key is not None

    @property
    def cost_per_call(self) -> dict:
        n = self.num_mc if self.smoothed else 1
        v, m = int(self.variance_guidance), int(self.mean_guidance) * self.num_iter
        return compose_cost(inner_cost(self.denoiser), 1, v, guide_evals=n * (v + m), guide_grads=n * (v + m))

    def smoothed_log_likelihood(self, x0, eps, std):
        """``log f~(x0) = log mean_j exp ell(x0 + std eps_j)`` (TFG's implicit dynamics; ``ell`` without smoothing)."""
        ell = _ell(self.log_likelihood, "tfg")
        if eps is None:
            return ell(x0)
        vals = jax.vmap(lambda e: ell(x0 + std * e))(eps)
        return jax.nn.logsumexp(vals) - math.log(eps.shape[0])

    def __call__(self, x, sigma):
        eps, std = None, None
        if self.smoothed:
            eps = jax.random.normal(point_key(self.key, x, sigma), (self.num_mc,) + x.shape, x.dtype)
            std = self.gamma.astype(x.dtype) * sigma / jnp.sqrt(1.0 + sigma**2)
        if self.variance_guidance:
            def f(z):
                d = call_denoiser(self.denoiser, z, sigma, who="tfg")
                return self.smoothed_log_likelihood(d, eps, std), d

            (_, d), g = jax.value_and_grad(f, has_aux=True)(x)
            delta_t = self.rho.astype(x.dtype) * sigma**2 * g
        else:
            d = call_denoiser(self.denoiser, x, sigma, who="tfg")
            delta_t = jnp.zeros_like(x)
        z = jax.lax.stop_gradient(d)
        if self.mean_guidance:
            mu = self.mu.astype(x.dtype)
            grad0 = jax.grad(lambda v: self.smoothed_log_likelihood(v, eps, std))
            for _ in range(self.num_iter):
                z = z + mu * grad0(z)
        return d + (z - jax.lax.stop_gradient(d)) + delta_t


def tfg(denoiser: Callable, log_likelihood: Callable, *, rho=1.0, mu=0.0, gamma=0.0, num_iter: int = 1,
        num_mc: int = 1, recurrence: int = 1, key=None) -> TFG:
    """TFG, the unified design space of training-free guidance (Ye et al. 2024, "TFG: Unified training-free
    guidance for diffusion models"), in the denoiser form.

    Update rule, per call at ``(x, sigma)``, with ``x0 = D(x, sigma)``:

    * implicit dynamics (``gamma > 0``, needs ``key``): the likelihood is smoothed,
      ``log f~(z) = log mean_j exp ell(z + gamma * sigma / sqrt(1 + sigma^2) * eps_j)``, ``j = 1..num_mc``
      (the VP noise level ``sqrt(1 - alpha_bar)`` of this sigma; LGD's Monte-Carlo likelihood);
      otherwise ``f~ = exp ell``;
    * variance guidance (``rho``): ``Delta_t = rho * sigma^2 * grad_x log f~(D(x, sigma))`` (through the
      denoiser: DPS's gradient);
    * mean guidance (``mu``, ``num_iter``): ``z <- z + mu * grad_z log f~(z)`` from ``z = x0``, ``num_iter``
      times (directly on the clean estimate, no VJP through the denoiser: MPGD's step); ``Delta_0 = z - x0``;
    * ``D_guided = x0 + Delta_0 + Delta_t``;
    * recurrence (``recurrence = N``): each solver step is taken ``N`` times, re-noising back to its start in
      between -- a property of the sampler, so the wrapper records it and
      :func:`samplax.diffusion.guidance.recurrent_sample` runs it (``diffusion.sample`` refuses such a wrapper).

    Named special cases (:func:`tfg_preset`): ``dps`` (rho), ``lgd`` (rho + gamma), ``freedom`` (rho +
    recurrence), ``mpgd`` (mu), ``ugd`` (rho + mu + recurrence), ``tfg`` (all). In the paper the step
    sizes multiply the per-step update of a DDIM sampler; here they multiply the denoiser correction, so a
    solver's step size rescales them (with ``rho = 1`` the variance term is exactly DPS's posterior score).
    Known biases: those of DPS for the variance term; mean guidance moves the clean estimate by a fixed step
    size, which over- or under-shoots the posterior mean depending on ``mu``; measured in the tests.

    Cost per call: 1 denoiser evaluation, 1 VJP through it when ``rho != 0``; ``ell`` is evaluated and
    differentiated ``num_mc * (1[rho != 0] + num_iter * 1[mu != 0])`` times (``num_mc = 1`` without smoothing).

    Args:
      denoiser: ``D(x, sigma)``.
      log_likelihood: ``ell(x0) -> scalar``.
      rho, mu, gamma: variance-guidance, mean-guidance and smoothing strengths (finite; ``gamma >= 0``).
      num_iter: mean-guidance iterations. num_mc: Monte-Carlo draws of the smoothing.
      recurrence: repetitions per solver step (for :func:`recurrent_sample`).
      key: typed PRNG key, required when ``gamma > 0`` (draws from
        :func:`~samplax.diffusion.guidance._base.point_key`, so the wrapper stays a function of ``(x, sigma)``).
    """
    who = "tfg"
    check_callable(denoiser, who, "denoiser", "D(x, sigma)")
    check_callable(log_likelihood, who, "log_likelihood", "ell(x0) -> scalar")
    r, m = check_scale(rho, who, "rho"), check_scale(mu, who, "mu")
    g = check_nonneg(gamma, who, "gamma")
    num_iter = check_positive_int(num_iter, who, "num_iter")
    num_mc = check_positive_int(num_mc, who, "num_mc")
    recurrence = check_positive_int(recurrence, who, "recurrence")
    smooth = isinstance(g, jax.core.Tracer) or float(g) > 0
    if smooth:
        key = as_key(key, who + " (gamma > 0 smooths the likelihood by Monte Carlo)")
    else:
        key = None
    variance = isinstance(r, jax.core.Tracer) or float(r) != 0.0
    mean = isinstance(m, jax.core.Tracer) or float(m) != 0.0
    return TFG(denoiser, log_likelihood, r, m, g, key, num_iter, num_mc, recurrence, variance, mean)


# ---------------------------------------------------------------- symplectic adjoint guidance
class SymplecticAdjoint(Guided):
    """Symplectic-adjoint guidance as a denoiser (built by :func:`symplectic_adjoint`)."""

    denoiser: Callable
    log_likelihood: Callable
    scale: jax.Array
    num_steps: int = eqx.field(static=True, default=4)

    @property
    def cost_per_call(self) -> dict:
        n = self.num_steps
        return compose_cost(inner_cost(self.denoiser), 2 * n - 1, n, guide_evals=1, guide_grads=1)

    def _sigmas(self, sigma):
        n = self.num_steps
        return sigma * (1.0 - jnp.arange(n + 1, dtype=jnp.result_type(sigma)) / n)  # sigma, ..., 0

    def clean_estimate(self, x, sigma):
        """``x0^(n)(x)``: the probability-flow ODE from ``sigma`` to 0 in ``num_steps`` DDIM steps."""
        sig = self._sigmas(sigma)
        z = x
        for k in range(self.num_steps):
            z = self._step(z, sig[k], sig[k + 1])
        return z

    def _step(self, z, s, t):
        r = t / s
        return r * z + (1.0 - r) * self.denoiser(z, s)

    def __call__(self, x, sigma):
        n = self.num_steps
        sig = self._sigmas(sigma).astype(x.dtype)
        ell = _ell(self.log_likelihood, "symplectic_adjoint")

        def first(z):  # step 0, also returning the plain clean estimate D(x, sigma) for the output
            d = call_denoiser(self.denoiser, z, sig[0], who="symplectic_adjoint")
            r = sig[1] / sig[0]
            return r * z + (1.0 - r) * d, d

        z1, vjp0, d = jax.vjp(first, x, has_aux=True)
        if n > 1:
            def fwd(z, k):  # forward, keeping only the state at the start of each step (the checkpoints)
                return self._step(z, sig[k], sig[k + 1]), z

            zn, zs = jax.lax.scan(fwd, z1, jnp.arange(1, n))
        else:
            zn, zs = z1, None
        lam = jax.grad(ell)(zn)
        if n > 1:
            def bwd(lam, inp):  # adjoint of one step at its checkpoint: one evaluation and one VJP
                z, k = inp
                _, vjp = jax.vjp(lambda v: self._step(v, sig[k], sig[k + 1]), z)
                return vjp(lam)[0], None

            lam, _ = jax.lax.scan(bwd, lam, (zs, jnp.arange(1, n)), reverse=True)
        (g,) = vjp0(lam)
        return d + self.scale.astype(x.dtype) * sigma**2 * g


def symplectic_adjoint(denoiser: Callable, log_likelihood: Callable, scale=1.0, *,
                       num_steps: int = 4) -> SymplecticAdjoint:
    """Symplectic adjoint guidance (SAG, Pan et al. 2024, "Towards accurate guided diffusion sampling through
    symplectic adjoint method"): the likelihood of a better clean estimate -- an ODE solve from ``x`` to
    ``sigma = 0`` instead of the one-step Tweedie estimate -- differentiated by the adjoint of that solve.

    Update rule: ``x0^(n)(x)`` solves the probability-flow ODE from ``(x, sigma)`` to 0 in ``n = num_steps``
    DDIM steps on ``sigma_k = sigma (1 - k/n)`` (``z_{k+1} = (s_{k+1}/s_k) z_k + (1 - s_{k+1}/s_k) D(z_k, s_k)``);
    ``D_guided = D(x, sigma) + scale * sigma^2 * grad_x ell(x0^(n)(x))``. The gradient is the discrete adjoint
    of the solve, computed backwards step by step from the stored states ``z_k`` (one re-evaluation and one
    VJP per step): for this one-stage explicit integrator that is the symplectic adjoint method (Matsubara et
    al. 2021) -- the exact gradient of the discrete solve with the memory of ``n`` states and one step's
    activations. ``num_steps = 1`` is exactly :func:`dps`.
    Known bias: a sharper clean estimate makes the plug-in likelihood ``p(y | x0^(n)(x))`` even more
    concentrated than DPS's (the ODE endpoint is one point, not the posterior ``p(x0 | x_sigma)``); measured.

    Cost per call: ``2 n - 1`` denoiser evaluations and ``n`` VJPs; 1 evaluation and gradient of ``ell``.

    Args:
      denoiser: ``D(x, sigma)``.
      log_likelihood: ``ell(x0) -> scalar``.
      scale: guidance scale (finite).
      num_steps: ODE steps of the clean estimate.
    """
    who = "symplectic_adjoint"
    check_callable(denoiser, who, "denoiser", "D(x, sigma)")
    check_callable(log_likelihood, who, "log_likelihood", "ell(x0) -> scalar")
    return SymplecticAdjoint(denoiser, log_likelihood, check_scale(scale, who),
                             check_positive_int(num_steps, who, "num_steps"))
