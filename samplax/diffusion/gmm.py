"""Exact Gaussian-mixture diffusion model.

If ``x0 ~ sum_k w_k N(mu_k, diag(v_k))`` then the VE-noised marginal
``x = x0 + s * eps`` is again a mixture, ``sum_k w_k N(mu_k, diag(v_k + s^2))``,
so the log-density, score and denoiser are closed form at every noise level:

* ``log p_s(x) = logsumexp_k [log w_k + log N(x; mu_k, v_k + s^2)]``
* responsibilities ``r_k(x, s) = softmax_k [log w_k + log N(x; mu_k, v_k + s^2)]``
* denoiser (Tweedie): ``E[x0 | x] = sum_k r_k (mu_k + v_k/(v_k + s^2) (x - mu_k))
  = x + s^2 grad log p_s(x)`` (Robbins 1956; Efron 2011).

It is a model (a denoiser obeying samplax's contract ``D(x, sigma)`` for one
point) and the ground truth for the solver tests and the diffusers benchmark.
"""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class GaussianMixtureDiffusion(eqx.Module):
    """A diagonal-covariance Gaussian mixture with its exact noised marginals.

    Attributes:
      weights: mixture weights ``[K]`` (normalized at construction).
      means: component means ``[K, D]``.
      variances: per-coordinate component variances ``[K, D]``.
    """

    weights: jax.Array
    means: jax.Array
    variances: jax.Array

    def __init__(self, weights, means, stds):
        means = jnp.asarray(means, dtype=jnp.result_type(float))
        if means.ndim != 2:
            raise ValueError(f"GaussianMixtureDiffusion: means must have shape [K, D], got {means.shape}")
        k, d = means.shape
        w = jnp.asarray(weights, dtype=means.dtype)
        if w.shape != (k,):
            raise ValueError(f"GaussianMixtureDiffusion: weights must have shape [{k}], got {w.shape}")
        if np.any(np.asarray(w) <= 0):
            raise ValueError("GaussianMixtureDiffusion: weights must be positive")
        stds = jnp.broadcast_to(jnp.asarray(stds, dtype=means.dtype).reshape(
            (k, 1) if jnp.ndim(stds) == 1 else jnp.shape(stds)), (k, d))
        if np.any(np.asarray(stds) <= 0):
            raise ValueError("GaussianMixtureDiffusion: stds must be positive")
        self.weights = w / jnp.sum(w)
        self.means = means
        self.variances = stds**2

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    def _component_logpdf(self, x, sigma):
        var = self.variances + sigma**2  # [K, D]
        diff = x[None, :] - self.means
        return -0.5 * jnp.sum(diff**2 / var + jnp.log(2.0 * math.pi * var), axis=-1)

    def log_prob(self, x, sigma=0.0):
        """Exact ``log p_sigma(x)`` of the VE-noised marginal at one point ``x`` ``[D]``."""
        return jax.nn.logsumexp(jnp.log(self.weights) + self._component_logpdf(x, sigma))

    def responsibilities(self, x, sigma=0.0):
        """Posterior component probabilities ``r_k(x, sigma)``."""
        return jax.nn.softmax(jnp.log(self.weights) + self._component_logpdf(x, sigma))

    def score(self, x, sigma=0.0):
        """Closed-form ``grad_x log p_sigma(x) = sum_k r_k (mu_k - x)/(v_k + sigma^2)``."""
        r = self.responsibilities(x, sigma)
        return jnp.sum(r[:, None] * (self.means - x[None, :]) / (self.variances + sigma**2), axis=0)

    def denoise(self, x, sigma):
        """Exact ``E[x0 | x0 + sigma eps = x] = sum_k r_k (mu_k + v_k/(v_k+sigma^2)(x - mu_k))``."""
        r = self.responsibilities(x, sigma)
        gain = self.variances / (self.variances + sigma**2)
        post = self.means + gain * (x[None, :] - self.means)
        return jnp.sum(r[:, None] * post, axis=0)

    def __call__(self, x, sigma):
        """The denoiser contract: ``D(x, sigma) = E[x0 | x]`` for one point (VE convention)."""
        return self.denoise(x, sigma)

    def eps(self, x, sigma):
        """Noise prediction ``(x - D(x, sigma)) / sigma`` in the VE convention."""
        return (x - self.denoise(x, sigma)) / sigma

    def sample(self, key, n: int, sigma=0.0):
        """``n`` exact draws of the noised marginal ``p_sigma``; draw i depends only on ``fold_in(key, i)``."""

        return _sample_impl(self, key, int(n), jnp.asarray(sigma, self.means.dtype))

    def component_of(self, x0):
        """Most probable component of each clean point (for mode-weight metrics); ``x0`` is ``[n, D]``."""
        return jax.vmap(lambda x: jnp.argmax(self._component_logpdf(x, 0.0) + jnp.log(self.weights)))(x0)

    def mean_and_cov(self):
        """Mean ``[D]`` and full covariance ``[D, D]`` of the clean mixture."""
        m = jnp.sum(self.weights[:, None] * self.means, axis=0)
        d = self.means - m
        cov = jnp.einsum("k,ki,kj->ij", self.weights, d, d) + jnp.diag(jnp.sum(self.weights[:, None] * self.variances, 0))
        return m, cov


@eqx.filter_jit
def _sample_impl(model, key, n, sigma):
    def one(i):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        c = jax.random.categorical(k1, jnp.log(model.weights))
        z = jax.random.normal(k2, (model.dim,), dtype=model.means.dtype)
        return model.means[c] + jnp.sqrt(model.variances[c] + sigma**2) * z

    return jax.vmap(one)(jnp.arange(n))


def ring8(std: float = 0.05) -> GaussianMixtureDiffusion:
    """8 equal-weight modes on the unit circle at angles ``2 pi k / 8``, isotropic std 0.05."""
    ang = 2.0 * np.pi * np.arange(8) / 8
    means = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    return GaussianMixtureDiffusion(np.ones(8), means, np.full(8, std))


def grid25(std: float = 0.05) -> GaussianMixtureDiffusion:
    """25 equal-weight modes on the 5x5 grid ``{-1,-0.5,0,0.5,1}^2``, isotropic std 0.05."""
    g = np.linspace(-1.0, 1.0, 5)
    means = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    return GaussianMixtureDiffusion(np.ones(25), means, np.full(25, std))


def random_mixture(seed: int = 0, dim: int = 64, num_components: int = 10, std: float = 0.05) -> GaussianMixtureDiffusion:
    """``num_components`` modes with means ~ N(0, I/dim) (norm about 1), Dirichlet(5) weights, isotropic ``std``.

    Fully determined by ``seed`` (numpy PCG64), so the benchmark's 64-D mixture is reproducible.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_components, dim)) / math.sqrt(dim)
    weights = rng.dirichlet(np.full(num_components, 5.0))
    return GaussianMixtureDiffusion(weights, means, np.full(num_components, std))


MODELS = {"ring8": ring8, "grid25": grid25, "mixture64": lambda: random_mixture(0, 64, 10)}


def get_model(name: str) -> GaussianMixtureDiffusion:
    """A named exact GMM model: ``ring8``, ``grid25`` or ``mixture64``."""
    if name not in MODELS:
        raise ValueError(f"unknown GMM model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]()
