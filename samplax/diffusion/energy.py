"""Energy-parameterized diffusion models: ``E(x, sigma)`` with ``-grad_x E = grad_x log p_sigma(x)``.

A diffusion model that gives an energy, not only a denoiser, has a density (up to a constant per noise level)
at every noise level, so Metropolis corrections (MALA and HMC correctors, :mod:`samplax.diffusion.correctors`)
and importance weights (:func:`samplax.diffusion.sample_smc`) can be computed for compositions of such models
(Du et al. 2023, "Reduce, reuse, recycle: compositional generation with energy-based diffusion models and MCMC").
Every model here is also a samplax denoiser (VE convention, Tweedie's formula):

``D(x, sigma) = x + sigma^2 grad log p_sigma(x) = x - sigma^2 grad_x E(x, sigma)``,

so :func:`samplax.diffusion.sample` and the trainer (:mod:`samplax.diffusion.train`, DSM on ``D``) use them as
they are. The protocol (duck-typed): ``energy(x, sigma)`` for one point (a scalar), ``energy_and_score(x, sigma)
-> (E, -grad E)``, ``__call__`` the denoiser, and the flag ``normalized`` (``exp(-E(., sigma))`` integrates to 1
at every sigma; only then do log normalizers of compositions, ``info.log_Z`` of ``sample_smc``, mean anything).

* :class:`MixtureEnergy`: exact, ``E = -log p_sigma(x)`` of a Gaussian mixture (normalized, closed-form score).
* :class:`MLPDifferenceEnergy`: ``E = |x - F(x, sigma)|^2 / (2 sigma^2)`` with ``F`` an EDM-preconditioned MLP
  denoiser (the ``||x - D||^2``-type parameterization).
* :class:`MLPScalarEnergy`: ``E = |x|^2 / (2 (sigma^2 + sd^2)) + (sd / sigma) g(c_in x, emb(sigma))`` with ``g`` a
  scalar-output MLP (the ``sd / sigma`` factor makes the network's part of the denoiser ``c_out``-sized, as in EDM).

The networks are not normalized (their energies carry an unknown constant per noise level).
"""
from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from samplax.diffusion.gmm import FullCovGaussianMixtureDiffusion, GaussianMixtureDiffusion


class EnergyDiffusion(eqx.Module):
    """Base class of energy-parameterized diffusion models: subclasses define ``energy(x, sigma)`` for one point.

    ``energy_and_score`` is ``(E, -grad_x E)`` (one forward and one backward pass through ``energy``), ``score`` its
    second part and ``__call__`` the denoiser ``x - sigma^2 grad_x E`` (Tweedie, VE convention)."""

    normalized: ClassVar[bool] = False

    def energy(self, x, sigma):  # pragma: no cover - abstract
        raise NotImplementedError

    def energy_and_score(self, x, sigma):
        """``(E(x, sigma), -grad_x E(x, sigma))`` for one point."""
        e, g = jax.value_and_grad(lambda z: self.energy(z, sigma))(x)
        return e, -g

    def score(self, x, sigma):
        """``grad_x log p_sigma(x) = -grad_x E(x, sigma)``."""
        return self.energy_and_score(x, sigma)[1]

    def __call__(self, x, sigma):
        """The denoiser contract ``D(x, sigma) = x - sigma^2 grad_x E(x, sigma)`` for one point."""
        return x + sigma**2 * self.score(x, sigma)


class MixtureEnergy(EnergyDiffusion):
    """The exact energy ``E(x, sigma) = -log p_sigma(x)`` of a Gaussian mixture (diagonal or full covariance).

    Normalized at every noise level; score and denoiser are the mixture's closed forms (no autodiff).
    ``sample`` gives exact draws of ``p_sigma`` (the mixture's own)."""

    mixture: eqx.Module
    normalized: ClassVar[bool] = True

    def __init__(self, mixture):
        if not isinstance(mixture, (GaussianMixtureDiffusion, FullCovGaussianMixtureDiffusion)):
            raise ValueError("MixtureEnergy: mixture must be a GaussianMixtureDiffusion or "
                             f"FullCovGaussianMixtureDiffusion, got {type(mixture).__name__}")
        self.mixture = mixture

    @property
    def dim(self) -> int:
        """The mixture's dimension."""
        return self.mixture.dim

    def energy(self, x, sigma):
        """``-log p_sigma(x)``."""
        return -self.mixture.log_prob(x, sigma)

    def energy_and_score(self, x, sigma):
        """``(-log p_sigma(x), grad log p_sigma(x))`` in closed form."""
        return -self.mixture.log_prob(x, sigma), self.mixture.score(x, sigma)

    def score(self, x, sigma):
        """Closed-form ``grad log p_sigma(x)``."""
        return self.mixture.score(x, sigma)

    def __call__(self, x, sigma):
        """The mixture's exact denoiser."""
        return self.mixture.denoise(x, sigma)

    def sample(self, key, n: int, sigma=0.0):
        """``n`` exact draws of ``p_sigma``."""
        return self.mixture.sample(key, n, sigma)


def energy_model(model) -> EnergyDiffusion:
    """An energy-parameterized model from ``model``: a Gaussian mixture becomes its exact :class:`MixtureEnergy`;
    an energy model is returned as it is. Anything else is a ValueError."""
    if isinstance(model, EnergyDiffusion):
        return model
    if isinstance(model, (GaussianMixtureDiffusion, FullCovGaussianMixtureDiffusion)):
        return MixtureEnergy(model)
    raise ValueError(f"energy_model: model must be a Gaussian mixture or an energy-parameterized model, got "
                     f"{type(model).__name__}")


def has_energy(model) -> bool:
    """Whether ``model`` gives ``energy_and_score(x, sigma)``; a model's own ``has_energy`` flag decides when it has
    one (a composition has an energy only when all its models do)."""
    flag = getattr(model, "has_energy", None)
    if isinstance(flag, bool):
        return flag
    return callable(getattr(model, "energy_and_score", None))


def is_normalized(model) -> bool:
    """Whether ``exp(-E(., sigma))`` of ``model`` integrates to 1 at every sigma (its ``normalized`` flag)."""
    return has_energy(model) and bool(getattr(model, "normalized", False))


def _embed(c_noise, emb_dim):
    half = emb_dim // 2
    freqs = jnp.exp(jnp.linspace(0.0, math.log(64.0), half)).astype(c_noise.dtype)
    return jnp.concatenate([jnp.cos(freqs * c_noise), jnp.sin(freqs * c_noise)])


class MLPDifferenceEnergy(EnergyDiffusion):
    """``E(x, sigma) = |x - F(x, sigma)|^2 / (2 sigma^2)`` with ``F = c_skip x + c_out f(c_in x, emb)`` denoiser-shaped.

    ``f`` is an MLP (SiLU) and ``c_skip, c_out, c_in`` the EDM preconditioning (Karras et al. 2022) with data standard
    deviation ``sd``. The score is ``-grad E = (I - J_F)^T (F - x) / sigma^2``: where ``F`` varies slowly it is the
    score of the denoiser ``F``, so training the implied denoiser ``x - sigma^2 grad E`` by DSM makes ``F`` itself
    close to ``E[x0 | x]``. With ``f = 0`` the implied denoiser is ``(1 - sigma^4 / (sigma^2 + sd^2)^2) x`` (``x`` at
    small sigma, ``0`` at large sigma). Not normalized."""

    mlp: eqx.nn.MLP
    sigma_data: float = eqx.field(static=True)
    emb_dim: int = eqx.field(static=True)

    def __init__(self, key, dim: int, width: int = 128, depth: int = 3, emb_dim: int = 16, sigma_data: float = 0.5,
                 dtype=None):
        self.mlp = eqx.nn.MLP(dim + emb_dim, dim, width, depth, activation=jax.nn.silu, key=key, dtype=dtype)
        self.sigma_data = float(sigma_data)
        self.emb_dim = int(emb_dim)

    def energy(self, x, sigma):
        """``|x - F(x, sigma)|^2 / (2 sigma^2)``."""
        dt = self.mlp.layers[0].weight.dtype
        x = jnp.asarray(x, dt)
        s = jnp.asarray(sigma, dt)
        sd = self.sigma_data
        v = s * s + sd * sd
        norm = jnp.sqrt(v)
        h = jnp.concatenate([x / norm, _embed(jnp.log(s) / 4.0, self.emb_dim)])
        f = (sd * sd / v) * x + (s * sd / norm) * self.mlp(h)
        r = x - f
        return 0.5 * jnp.sum(r * r) / (s * s)


class MLPScalarEnergy(EnergyDiffusion):
    """``E(x, sigma) = |x|^2 / (2 (sigma^2 + sd^2)) + (sd / sigma) g(c_in x, emb(log(sigma) / 4))``, ``g`` a scalar MLP.

    The quadratic part is the exact energy of ``N(0, sd^2 I)`` data; the network's contribution to the denoiser,
    ``-sigma^2 grad(...) = -(sigma sd / sqrt(sigma^2 + sd^2)) grad g``, has EDM's ``c_out`` scale (Karras et al.
    2022). Not normalized."""

    mlp: eqx.nn.MLP
    sigma_data: float = eqx.field(static=True)
    emb_dim: int = eqx.field(static=True)

    def __init__(self, key, dim: int, width: int = 128, depth: int = 3, emb_dim: int = 16, sigma_data: float = 0.5,
                 dtype=None):
        self.mlp = eqx.nn.MLP(dim + emb_dim, "scalar", width, depth, activation=jax.nn.silu, key=key, dtype=dtype)
        self.sigma_data = float(sigma_data)
        self.emb_dim = int(emb_dim)

    def energy(self, x, sigma):
        """``|x|^2 / (2 (sigma^2 + sd^2)) + (sd / sigma) g(x / sqrt(sigma^2 + sd^2), emb)``."""
        dt = self.mlp.layers[0].weight.dtype
        x = jnp.asarray(x, dt)
        s = jnp.asarray(sigma, dt)
        sd = self.sigma_data
        v = s * s + sd * sd
        h = jnp.concatenate([x / jnp.sqrt(v), _embed(jnp.log(s) / 4.0, self.emb_dim)])
        return 0.5 * jnp.sum(x * x) / v + (sd / s) * self.mlp(h)
