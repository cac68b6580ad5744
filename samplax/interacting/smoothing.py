"""Gaussian-smoothed densities ``p_s(y) = ∫ p(x) N(y; x, s I) dx`` and their scores.

Used by walk-jump sampling (noise variance ``s = sigma^2 / m``) and by the
reverse-diffusion samplers (where the OU marginal is a rescaled smoothing).

Two estimators of ``log p_s`` and ``grad log p_s`` (Tweedie / Miyasawa:
``E[x | y] = y + s grad log p_s(y)``):

* exact, for Gaussian mixtures ``p = sum_k w_k N(mu_k, Sigma_k)``:
  ``p_s = sum_k w_k N(mu_k, Sigma_k + s I)``; each ``Sigma_k`` is
  eigendecomposed once, so any ``s`` costs no new factorisation;
* self-normalised importance sampling for any target, proposal ``N(y, s I)``:
  ``x_k = y + sqrt(s) eps_k``, ``w_k ∝ p(x_k)``,
  ``E[x | y] ≈ sum_k w_k x_k``, ``log p_s(y) ≈ log mean_k p(x_k)`` (up to log Z);
  ``K`` target log-density evaluations per call, biased O(1/K).

Every estimator ``f(key, y, s)`` also returns the number of target evaluations it
made that were NaN or ``+inf`` (zero weight; :mod:`samplax.core.nonfinite`): 0 for
the exact ones, which evaluate no target.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.nonfinite import is_nonfinite


class MixtureParts(NamedTuple):
    """``p = sum_k exp(log_w_k) N(mu_k, U_k diag(lam_k) U_k^T)`` (``means`` [K, d], ``eigvecs`` [K, d, d], ``eigvals`` [K, d])."""

    means: jax.Array
    eigvecs: jax.Array
    eigvals: jax.Array
    log_weights: jax.Array


def gaussian_mixture_parts(target) -> Optional[MixtureParts]:
    """Closed-form mixture description of ``target`` when it exposes one, else None.

    Recognised: a Gaussian mixture exposing ``means`` [K, d], ``weights`` [K]
    (or ``log_weights``), and ``covs`` [K, d, d] or ``scales`` (standard
    deviations, [K], [K, d] or a scalar); a single Gaussian exposing ``mean`` and
    ``chol`` (:class:`samplax.targets.gaussian.Gaussian`) or ``mean`` and ``cov``.
    """
    means = getattr(target, "means", None)
    if means is not None:
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 2:
            return None
        K, d = means.shape
        if getattr(target, "weights", None) is not None:
            w = np.asarray(target.weights, dtype=np.float64)
            logw = np.log(w / w.sum())
        elif getattr(target, "log_weights", None) is not None:
            lw = np.asarray(target.log_weights, dtype=np.float64)
            logw = lw - np.logaddexp.reduce(lw)
        else:
            return None
        if getattr(target, "covs", None) is not None:
            covs = np.broadcast_to(np.asarray(target.covs, dtype=np.float64), (K, d, d))
        elif getattr(target, "scales", None) is not None:
            sc = np.asarray(target.scales, dtype=np.float64)
            sc = np.broadcast_to(sc.reshape(sc.shape + (1,) * (2 - sc.ndim)) if sc.ndim < 2 else sc, (K, d))
            covs = np.einsum("ki,ij->kij", sc**2, np.eye(d))
        else:
            return None
    elif getattr(target, "mean", None) is not None and (getattr(target, "chol", None) is not None
                                                         or getattr(target, "cov", None) is not None):
        m = np.asarray(target.mean, dtype=np.float64)
        if m.ndim != 1:
            return None
        if getattr(target, "chol", None) is not None:
            L = np.asarray(target.chol, dtype=np.float64)
            c = L @ L.T
        else:
            c = np.asarray(target.cov, dtype=np.float64)
        means, covs, logw = m[None], c[None], np.zeros(1)
    else:
        return None
    lam, U = np.linalg.eigh(covs)
    if np.any(lam <= 0):
        return None
    f = jnp.result_type(float)
    return MixtureParts(jnp.asarray(means, f), jnp.asarray(U, f), jnp.asarray(lam, f), jnp.asarray(logw, f))


def mixture_smoothed_logdensity(parts: MixtureParts, y: jax.Array, s) -> jax.Array:
    """``log sum_k w_k N(y; mu_k, Sigma_k + s I)`` (normalised) for one point ``y`` [d]."""
    z = jnp.einsum("kij,ki->kj", parts.eigvecs, y[None, :] - parts.means)  # U_k^T (y - mu_k)
    v = parts.eigvals + s
    comp = -0.5 * jnp.sum(z * z / v + jnp.log(2 * jnp.pi * v), axis=-1)
    return jax.scipy.special.logsumexp(parts.log_weights + comp)


def exact_smoothed(parts: MixtureParts):
    """``f(key, y, s) -> (log p_s(y), grad log p_s(y), 0)`` in closed form (key unused)."""
    vg = jax.value_and_grad(lambda y, s: mixture_smoothed_logdensity(parts, y, s))

    def f(key, y, s):
        del key
        v, g = vg(y, s)
        return v, g, jnp.zeros((), jnp.int32)

    return f


def exact_posterior(parts: MixtureParts):
    """``f(key, y, s) -> (E[x | y], Cov[x | y], 0)`` for ``y = x + sqrt(s) eps`` (Tweedie: ``s I + s^2 Hess log p_s``)."""
    lp = lambda y, s: mixture_smoothed_logdensity(parts, y, s)  # noqa: E731

    def f(key, y, s):
        del key
        g = jax.grad(lp)(y, s)
        H = jax.hessian(lp)(y, s)
        cov = s * jnp.eye(y.shape[0], dtype=y.dtype) + s * s * H
        return y + s * g, 0.5 * (cov + cov.T), jnp.zeros((), jnp.int32)

    return f


def snis_posterior(lp_fn, num_is: int):
    """``f(key, y, s) -> (E[x | y], Cov[x | y], n_nonfinite)`` by SNIS (weighted mean and covariance of
    ``N(y, s I)`` draws)."""

    def f(key, y, s):
        x = y + jnp.sqrt(s) * jax.random.normal(key, (num_is,) + y.shape, y.dtype)
        lw = jax.vmap(lp_fn)(x)
        bad = is_nonfinite(lw)
        lw = jnp.where(bad, -jnp.inf, lw)
        w = jax.nn.softmax(lw)
        m = w @ x
        r = x - m
        return m, (w[:, None] * r).T @ r, jnp.sum(bad, dtype=jnp.int32)

    return f


def snis_smoothed(lp_fn, num_is: int):
    """``f(key, y, s) -> (log p_s(y) + const, grad log p_s(y), n_nonfinite)`` by SNIS with ``num_is`` draws from
    ``N(y, s I)``."""

    def f(key, y, s):
        x = y + jnp.sqrt(s) * jax.random.normal(key, (num_is,) + y.shape, y.dtype)
        lw = jax.vmap(lp_fn)(x)
        bad = is_nonfinite(lw)
        lw = jnp.where(bad, -jnp.inf, lw)
        logZ = jax.scipy.special.logsumexp(lw) - jnp.log(num_is)
        w = jax.nn.softmax(lw)
        post_mean = w @ x
        return logZ, (post_mean - y) / s, jnp.sum(bad, dtype=jnp.int32)

    return f
