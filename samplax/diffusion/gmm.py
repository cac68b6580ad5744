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


def _means_and_weights(means, weights, who):
    """``means`` as a float array ``[K, D]`` and ``weights`` as ``[K]`` of its dtype (ValueError naming the argument
    otherwise); the weights' values are checked by each class."""
    means = jnp.asarray(means, dtype=jnp.result_type(float))
    if means.ndim != 2:
        raise ValueError(f"{who}: means must have shape [K, D], got {means.shape}")
    w = jnp.asarray(weights, dtype=means.dtype)
    if w.shape != (means.shape[0],):
        raise ValueError(f"{who}: weights must have shape [{means.shape[0]}], got {w.shape}")
    return means, w


class GaussianMixtureBase(eqx.Module):
    """What the diagonal and the full-covariance mixtures share (the denoiser contract, noise prediction, density,
    responsibilities, component labels, moments), written once on top of each subclass's
    ``_component_logpdf(x, sigma) -> [K]`` (``log N(x; mu_k, S_k + sigma^2 I)``), ``denoise`` and
    ``_within_covariance()`` (``sum_k w_k S_k``). Subclasses hold ``weights [K]`` and ``means [K, D]``."""

    @property
    def dim(self) -> int:
        """``D``."""
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        """``K``."""
        return int(self.means.shape[0])

    def log_prob(self, x, sigma=0.0):
        """Exact ``log p_sigma(x)`` of the VE-noised marginal at one point ``x`` ``[D]``."""
        return jax.nn.logsumexp(jnp.log(self.weights) + self._component_logpdf(x, sigma))

    def responsibilities(self, x, sigma=0.0):
        """Posterior component probabilities ``r_k(x, sigma)``."""
        return jax.nn.softmax(jnp.log(self.weights) + self._component_logpdf(x, sigma))

    def __call__(self, x, sigma):
        """The denoiser contract: ``D(x, sigma) = E[x0 | x]`` for one point (VE convention)."""
        return self.denoise(x, sigma)

    def eps(self, x, sigma):
        """Noise prediction ``(x - D(x, sigma)) / sigma`` in the VE convention."""
        return (x - self.denoise(x, sigma)) / sigma

    def component_of(self, x0):
        """Most probable component of each clean point (for mode-weight metrics); ``x0`` is ``[n, D]``."""
        return jax.vmap(lambda x: jnp.argmax(self._component_logpdf(x, 0.0) + jnp.log(self.weights)))(x0)

    def mean_and_cov(self):
        """Mean ``[D]`` and full covariance ``[D, D]`` of the clean mixture: between-component spread of the
        means plus ``sum_k w_k S_k``."""
        m = jnp.sum(self.weights[:, None] * self.means, axis=0)
        d = self.means - m
        cov = jnp.einsum("k,ki,kj->ij", self.weights, d, d) + self._within_covariance()
        return m, cov


class GaussianMixtureDiffusion(GaussianMixtureBase):
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
        means, w = _means_and_weights(means, weights, "GaussianMixtureDiffusion")
        k, d = means.shape
        if np.any(np.asarray(w) <= 0):
            raise ValueError("GaussianMixtureDiffusion: weights must be positive")
        stds = jnp.broadcast_to(jnp.asarray(stds, dtype=means.dtype).reshape(
            (k, 1) if jnp.ndim(stds) == 1 else jnp.shape(stds)), (k, d))
        if np.any(np.asarray(stds) <= 0):
            raise ValueError("GaussianMixtureDiffusion: stds must be positive")
        self.weights = w / jnp.sum(w)
        self.means = means
        self.variances = stds**2

    def _component_logpdf(self, x, sigma):
        var = self.variances + sigma**2  # [K, D]
        diff = x[None, :] - self.means
        return -0.5 * jnp.sum(diff**2 / var + jnp.log(2.0 * math.pi * var), axis=-1)

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

    def sample(self, key, n: int, sigma=0.0):
        """``n`` exact draws of the noised marginal ``p_sigma``; draw i depends only on ``fold_in(key, i)``."""

        return _sample_impl(self, key, int(n), jnp.asarray(sigma, self.means.dtype))

    def _within_covariance(self):
        """``sum_k w_k diag(v_k)``."""
        return jnp.diag(jnp.sum(self.weights[:, None] * self.variances, 0))


@eqx.filter_jit
def _sample_impl(model, key, n, sigma):
    def one(i):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        c = jax.random.categorical(k1, jnp.log(model.weights))
        z = jax.random.normal(k2, (model.dim,), dtype=model.means.dtype)
        return model.means[c] + jnp.sqrt(model.variances[c] + sigma**2) * z

    return jax.vmap(one)(jnp.arange(n))


class FullCovGaussianMixtureDiffusion(GaussianMixtureBase):
    """A Gaussian mixture with full component covariances and its exact VE-noised marginals.

    ``x0 ~ sum_k w_k N(mu_k, S_k)``; the noised marginal ``x = x0 + s * eps`` is
    ``sum_k w_k N(mu_k, S_k + s^2 I)``.  With the eigendecomposition ``S_k = U_k diag(l_k) U_k^T``
    (computed once at construction) every noise level costs ``O(K D^2)`` per point:

    * ``log N(x; mu_k, S_k + s^2 I) = -1/2 [ |U_k^T (x - mu_k)|^2_{1/(l_k + s^2)} + sum log(2 pi (l_k + s^2)) ]``
    * denoiser (Tweedie; Robbins 1956, Efron 2011): ``E[x0 | x] = sum_k r_k(x, s) (mu_k + S_k (S_k + s^2 I)^{-1}
      (x - mu_k))`` with ``S_k (S_k + s^2 I)^{-1} = U_k diag(l_k / (l_k + s^2)) U_k^T``.

    It is the prior (and, through :func:`samplax.diffusion.inverse.posterior`, the exact posterior) of
    the inverse-problem tests: a linear-Gaussian measurement of a full-covariance mixture is again one.

    Attributes:
      weights: ``[K]`` (normalized at construction).
      means: ``[K, D]``.
      covariances: ``[K, D, D]`` symmetric positive definite.
      eigvals, eigvecs: ``[K, D]`` and ``[K, D, D]``, ``S_k = eigvecs_k diag(eigvals_k) eigvecs_k^T``.
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    eigvals: jax.Array
    eigvecs: jax.Array

    def __init__(self, weights, means, covariances):
        means, w = _means_and_weights(means, weights, "FullCovGaussianMixtureDiffusion")
        k, d = means.shape
        if not np.all(np.isfinite(np.asarray(w))) or np.any(np.asarray(w) < 0) or float(jnp.sum(w)) <= 0:
            raise ValueError("FullCovGaussianMixtureDiffusion: weights must be finite, non-negative, with a positive sum")
        cov = jnp.asarray(covariances, dtype=means.dtype)
        if cov.shape != (k, d, d):
            raise ValueError(f"FullCovGaussianMixtureDiffusion: covariances must have shape [{k}, {d}, {d}], "
                             f"got {cov.shape}")
        if not np.all(np.isfinite(np.asarray(cov))) or not np.all(np.isfinite(np.asarray(means))):
            raise ValueError("FullCovGaussianMixtureDiffusion: means and covariances must be finite")
        asym = float(jnp.max(jnp.abs(cov - jnp.swapaxes(cov, 1, 2))))
        scale = float(jnp.max(jnp.abs(cov)))
        if asym > 1e-8 * max(scale, 1e-300):
            raise ValueError(f"FullCovGaussianMixtureDiffusion: covariances must be symmetric (max |S - S^T| = {asym:.3g})")
        cov = 0.5 * (cov + jnp.swapaxes(cov, 1, 2))
        lam, vec = jnp.linalg.eigh(cov)
        if np.any(np.asarray(lam) <= 0):
            bad = int(np.flatnonzero(np.min(np.asarray(lam), axis=1) <= 0)[0])
            raise ValueError(f"FullCovGaussianMixtureDiffusion: covariances must be positive definite; component {bad} "
                             f"has smallest eigenvalue {float(jnp.min(lam[bad])):.3g}")
        self.weights = w / jnp.sum(w)
        self.means = means
        self.covariances = cov
        self.eigvals = lam
        self.eigvecs = vec

    @classmethod
    def from_diagonal(cls, model: "GaussianMixtureDiffusion") -> "FullCovGaussianMixtureDiffusion":
        """The same mixture as a diagonal :class:`GaussianMixtureDiffusion`, with full covariance matrices."""
        cov = jax.vmap(jnp.diag)(model.variances)
        return cls(model.weights, model.means, cov)

    def noised(self, sigma) -> "FullCovGaussianMixtureDiffusion":
        """The mixture of ``x0 + sigma * eps`` (covariances ``S_k + sigma^2 I``) as a clean mixture."""
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        return FullCovGaussianMixtureDiffusion(self.weights, self.means, self.covariances + sigma**2 * eye)

    def _component_logpdf(self, x, sigma):
        var = self.eigvals + sigma**2  # [K, D]
        z = jnp.einsum("kij,ki->kj", self.eigvecs, x[None, :] - self.means)  # U_k^T (x - mu_k)
        return -0.5 * jnp.sum(z**2 / var + jnp.log(2.0 * math.pi * var), axis=-1)

    def component_log_probs(self, x, sigma=0.0):
        """``[K]``: ``log N(x; mu_k, S_k + sigma^2 I)`` at one point (without the weights)."""
        return self._component_logpdf(x, sigma)

    def score(self, x, sigma=0.0):
        """Closed-form ``grad_x log p_sigma(x) = sum_k r_k (S_k + sigma^2 I)^{-1} (mu_k - x)``."""
        r = self.responsibilities(x, sigma)
        z = jnp.einsum("kij,ki->kj", self.eigvecs, self.means - x[None, :]) / (self.eigvals + sigma**2)
        return jnp.sum(r[:, None] * jnp.einsum("kij,kj->ki", self.eigvecs, z), axis=0)

    def denoise(self, x, sigma):
        """Exact ``E[x0 | x0 + sigma eps = x] = sum_k r_k (mu_k + S_k (S_k + sigma^2 I)^{-1} (x - mu_k))``."""
        r = self.responsibilities(x, sigma)
        z = jnp.einsum("kij,ki->kj", self.eigvecs, x[None, :] - self.means)
        gain = self.eigvals / (self.eigvals + sigma**2)
        post = self.means + jnp.einsum("kij,kj->ki", self.eigvecs, gain * z)
        return jnp.sum(r[:, None] * post, axis=0)

    def denoise_observed(self, x, sigma, mask):
        """``E[x0 | x_O]``: the denoiser given only the entries ``O = {i: mask_i}`` of ``x = x0 + sigma eps``.

        The exact ambient-diffusion denoiser (Daras et al. 2023: a model trained on corrupted data learns
        ``E[x0 | A~ x_t, A~]``) of this mixture: ``sum_k r_k (mu_k + S_k[:, O] (S_k[O, O] + sigma^2 I)^{-1}
        (x_O - mu_k[O]))`` with responsibilities from ``N(x_O; mu_k[O], S_k[O, O] + sigma^2 I)``. Computed with a
        traceable mask (float or bool ``[D]``): ``G_k = M (S_k + sigma^2 I) M + (I - M)`` on ``M x`` has the
        observed block's density times a constant shared by all components.
        """
        m = jnp.asarray(mask, self.means.dtype)
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        mm = m[:, None] * m[None, :]
        g = mm * (self.covariances + sigma**2 * eye) + jnp.diag(1.0 - m)  # [K, D, D]
        diff = m * x - m * self.means  # [K, D]
        sol = jnp.linalg.solve(g, diff[..., None])[..., 0]
        _, logdet = jnp.linalg.slogdet(g)
        logp = jnp.log(self.weights) - 0.5 * (jnp.sum(diff * sol, axis=-1) + logdet)
        r = jax.nn.softmax(logp)
        post = self.means + jnp.einsum("kij,kj->ki", self.covariances, m * sol)
        return jnp.sum(r[:, None] * post, axis=0)

    def sample(self, key, n: int, sigma=0.0):
        """``n`` exact draws of ``p_sigma``: ``mu_c + U_c diag(sqrt(l_c + sigma^2)) z``; draw i uses ``fold_in(key, i)``."""
        return _sample_full_impl(self, key, int(n), jnp.asarray(sigma, self.means.dtype))

    def _within_covariance(self):
        """``sum_k w_k S_k``."""
        return jnp.einsum("k,kij->ij", self.weights, self.covariances)


@eqx.filter_jit
def _sample_full_impl(model, key, n, sigma):
    def one(i):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        c = jax.random.categorical(k1, jnp.log(model.weights))
        z = jax.random.normal(k2, (model.dim,), dtype=model.means.dtype)
        return model.means[c] + model.eigvecs[c] @ (jnp.sqrt(model.eigvals[c] + sigma**2) * z)

    return jax.vmap(one)(jnp.arange(n))


def random_full_mixture(seed: int = 0, dim: int = 8, num_components: int = 4, scale: float = 1.0,
                        std_range=(0.05, 0.3)) -> FullCovGaussianMixtureDiffusion:
    """A reproducible mixture with rotated anisotropic components (the inverse-problem test priors).

    Means ``~ N(0, scale^2 I)``, Dirichlet(3) weights, covariance ``Q diag(s^2) Q^T`` with ``Q`` a random rotation (QR of a Gaussian matrix)
    and standard deviations ``s`` log-uniform in ``std_range``. Fully determined by ``seed`` (numpy PCG64).
    """
    rng = np.random.default_rng(seed)
    means = scale * rng.normal(size=(num_components, dim))
    weights = rng.dirichlet(np.full(num_components, 3.0))
    lo, hi = std_range
    covs = []
    for _ in range(num_components):
        q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
        q = q * np.sign(np.diag(r))
        s = np.exp(rng.uniform(np.log(lo), np.log(hi), size=dim))
        covs.append((q * s**2) @ q.T)
    return FullCovGaussianMixtureDiffusion(weights, means, np.stack(covs))


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
