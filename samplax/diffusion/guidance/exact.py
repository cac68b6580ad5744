"""Exact ground truth for guidance: class-labelled Gaussian mixtures and diagonal linear-Gaussian posteriors.

* :class:`LabelledMixture`: a diagonal :class:`~samplax.diffusion.GaussianMixtureDiffusion` whose component
  ``k`` carries a class ``labels[k]``. The class-conditional model is the mixture restricted to the class's
  components, reweighted; at every noise level the exact noise-aware classifier is
  ``log p(c | x_sigma) = logsumexp_{k: labels_k = c} [log w_k + log N(x; mu_k, v_k + sigma^2)] - log p_sigma(x)``
  (the class responsibility), and ``D(x, sigma) + sigma^2 grad_x log p(c | x_sigma)`` is exactly the
  conditional denoiser (Bayes' rule on the scores).
* :func:`diagonal_posterior`: for the measurement ``y = a * x0 + sigma_y * n`` (``a`` a vector: a diagonal
  operator; 0 = unobserved coordinate) the posterior of a diagonal mixture prior is the diagonal mixture with
  ``var_k = 1 / (1/v_k + a^2/sigma_y^2)``, ``mean_k = var_k (mu_k / v_k + a y / sigma_y^2)`` and weights
  ``w_k N(y; a mu_k, a^2 v_k + sigma_y^2)`` (renormalized) -- closed form, per coordinate.
* :func:`noisy_log_likelihood`: the exact ``log p(y | x_sigma)`` of that measurement,
  ``log sum_k r_k(x, sigma) N(y; a m_k, a^2 V_k + sigma_y^2)`` with ``m_k = mu_k + v_k/(v_k + sigma^2)(x - mu_k)``
  and ``V_k = v_k sigma^2 / (v_k + sigma^2)`` (the per-component posterior of ``x0`` given ``x``); used as a
  noise-aware "classifier" it turns the prior's denoiser into the posterior's, exactly.

(Full covariances and general linear operators are :mod:`samplax.diffusion.inverse`'s.)
"""
from __future__ import annotations

import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.gmm import GaussianMixtureDiffusion


class LabelledMixture(eqx.Module):
    """A diagonal Gaussian mixture with a class label per component, and its exact conditional pieces.

    Attributes:
      model: the unconditional :class:`~samplax.diffusion.GaussianMixtureDiffusion` (a denoiser itself).
      labels: ``[K]`` int32 class of each component, in ``0..num_classes-1`` (every class used).
      num_classes: number of classes.
    """

    model: GaussianMixtureDiffusion
    labels: jax.Array
    num_classes: int = eqx.field(static=True)

    def __init__(self, weights, means, stds, labels):
        self.model = GaussianMixtureDiffusion(weights, means, stds)
        lab = np.asarray(labels)
        if lab.shape != (self.model.num_components,) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"LabelledMixture: labels must be {self.model.num_components} ints, got {labels!r}")
        c = int(lab.max()) + 1
        if lab.min() < 0 or set(np.unique(lab)) != set(range(c)):
            raise ValueError(f"LabelledMixture: labels must use every class 0..C-1, got {sorted(set(lab.tolist()))}")
        self.labels = jnp.asarray(lab, jnp.int32)
        self.num_classes = c

    def __call__(self, x, sigma):
        """The unconditional denoiser ``E[x0 | x]``."""
        return self.model(x, sigma)

    def _joint(self, x, sigma):
        return jnp.log(self.model.weights) + self.model._component_logpdf(x, sigma)

    def class_log_probs(self, x, sigma=0.0):
        """Exact ``log p(c | x_sigma = x)`` for every class ``c`` (``[num_classes]``); at ``sigma = 0`` the
        clean classifier."""
        lj = self._joint(x, sigma)
        onehot = self.labels[:, None] == jnp.arange(self.num_classes)[None, :]
        per = jax.nn.logsumexp(jnp.where(onehot, lj[:, None], -jnp.inf), axis=0)
        return per - jax.nn.logsumexp(lj)

    def classifier(self, c: int) -> Callable:
        """The exact noise-aware classifier of class ``c``: ``fn(x, sigma) = log p(c | x_sigma = x)``."""
        return lambda x, sigma: self.class_log_probs(x, sigma)[c]

    def clean_classifier(self) -> Callable:
        """The exact clean classifier ``fn(x0) = [log p(c | x0)]_c``."""
        return lambda x0: self.class_log_probs(x0, 0.0)

    def class_denoiser(self, x, sigma, c):
        """``E[x0 | x, class c]`` for one point (``c`` may be traced): the conditional mixture's denoiser."""
        lj = jnp.where(self.labels == c, self._joint(x, sigma), -jnp.inf)
        r = jax.nn.softmax(lj)
        gain = self.model.variances / (self.model.variances + sigma**2)
        post = self.model.means + gain * (x[None, :] - self.model.means)
        return jnp.sum(r[:, None] * post, axis=0)

    def conditional(self, c: int) -> GaussianMixtureDiffusion:
        """The class-``c`` model: the mixture restricted to class ``c``'s components, reweighted (host-side)."""
        keep = np.asarray(self.labels) == int(c)
        if not keep.any():
            raise ValueError(f"LabelledMixture.conditional: no component has class {c}")
        m = self.model
        return GaussianMixtureDiffusion(np.asarray(m.weights)[keep], np.asarray(m.means)[keep],
                                        np.sqrt(np.asarray(m.variances)[keep]))

    def class_prior(self) -> np.ndarray:
        """``p(c)``: the summed weights of each class's components."""
        return np.bincount(np.asarray(self.labels), weights=np.asarray(self.model.weights), minlength=self.num_classes)


def _measurement(model, a, y, sigma_y, who):
    d = model.dim
    a = jnp.broadcast_to(jnp.asarray(a, model.means.dtype), (d,))
    y = jnp.asarray(y, model.means.dtype)
    if y.shape != (d,):
        raise ValueError(f"{who}: y must have shape ({d},) like the model's points, got {y.shape}")
    if not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError(f"{who}: y must be finite")
    sy = float(sigma_y)
    if not (math.isfinite(sy) and sy > 0):
        raise ValueError(f"{who}: sigma_y must be positive and finite, got {sigma_y!r}")
    return a, y, sy


def gaussian_log_likelihood(a, y, sigma_y) -> Callable:
    """``ell(x0) = log N(y; a * x0, sigma_y^2 I)`` of the diagonal measurement (``a`` broadcast to ``y``)."""
    y = jnp.asarray(y)
    a = jnp.broadcast_to(jnp.asarray(a, y.dtype), y.shape)
    sy = float(sigma_y)
    if not (math.isfinite(sy) and sy > 0):
        raise ValueError(f"gaussian_log_likelihood: sigma_y must be positive and finite, got {sigma_y!r}")
    const = -0.5 * y.size * math.log(2.0 * math.pi * sy * sy)

    def ell(x0):
        r = (y - a * x0) / sy
        return const - 0.5 * jnp.sum(r * r)

    return ell


def diagonal_posterior(model: GaussianMixtureDiffusion, a, y, sigma_y) -> GaussianMixtureDiffusion:
    """The exact posterior mixture of ``model`` given ``y = a * x0 + sigma_y n`` (see the module docstring)."""
    a, y, sy = _measurement(model, a, y, sigma_y, "diagonal_posterior")
    v, mu = model.variances, model.means
    var = 1.0 / (1.0 / v + a**2 / sy**2)
    mean = var * (mu / v + a * y / sy**2)
    pred_var = a**2 * v + sy**2
    logw = jnp.log(model.weights) - 0.5 * jnp.sum((y - a * mu) ** 2 / pred_var + jnp.log(2 * math.pi * pred_var), -1)
    w = np.asarray(jax.nn.softmax(logw))
    keep = w > 1e-300  # a weight that underflows cannot be represented as a positive mixture weight
    return GaussianMixtureDiffusion(w[keep], np.asarray(mean)[keep], np.sqrt(np.asarray(var))[keep])


def posterior_log_evidence(model: GaussianMixtureDiffusion, a, y, sigma_y) -> float:
    """``log p(y)`` under ``model`` and the diagonal measurement."""
    a, y, sy = _measurement(model, a, y, sigma_y, "posterior_log_evidence")
    pred_var = a**2 * model.variances + sy**2
    logw = jnp.log(model.weights) - 0.5 * jnp.sum((y - a * model.means) ** 2 / pred_var
                                                  + jnp.log(2 * math.pi * pred_var), -1)
    return float(jax.nn.logsumexp(logw))


def noisy_log_likelihood(model: GaussianMixtureDiffusion, a, y, sigma_y) -> Callable:
    """The exact ``fn(x, sigma) = log p(y | x_sigma = x)`` for the diagonal measurement (module docstring)."""
    a, y, sy = _measurement(model, a, y, sigma_y, "noisy_log_likelihood")

    def fn(x, sigma):
        v, mu = model.variances, model.means
        lj = jnp.log(model.weights) + model._component_logpdf(x, sigma)
        logr = lj - jax.nn.logsumexp(lj)
        gain = v / (v + sigma**2)
        m = mu + gain * (x[None, :] - mu)
        pv = a**2 * (v * sigma**2 / (v + sigma**2)) + sy**2
        comp = -0.5 * jnp.sum((y - a * m) ** 2 / pv + jnp.log(2 * math.pi * pv), axis=-1)
        return jax.nn.logsumexp(logr + comp)

    return fn
