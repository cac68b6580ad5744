"""Exact posteriors of Gaussian-mixture priors under linear-Gaussian measurements (the inverse problems' ground truth).

Prior ``x0 ~ sum_k w_k N(mu_k, S_k)``, measurement ``y = A x0 + n``, ``n ~ N(0, R)``, ``R = diag(sigma_y^2)``.
Each component is conjugate (Kalman 1960; e.g. Bishop 2006, sec. 2.3.3), so the posterior is the mixture

* weights ``w'_k ∝ w_k N(y; A mu_k, G_k)``, ``G_k = A S_k A^T + R`` (the component's evidence),
* means ``m_k = mu_k + K_k (y - A mu_k)``, gain ``K_k = S_k A^T G_k^{-1}``,
* covariances ``C_k = (I - K_k A) S_k (I - K_k A)^T + K_k R K_k^T`` (Joseph form: symmetric positive
  definite in floating point; equal to ``S_k - K_k G_k K_k^T``),

and the evidence is ``log p(y) = logsumexp_k [log w_k + log N(y; A mu_k, G_k)]``. Everything is computed
on the host in float64 from the operator's dense form (small ``d``).
"""
from __future__ import annotations

import math

import numpy as np

from samplax.diffusion.gmm import FullCovGaussianMixtureDiffusion, GaussianMixtureDiffusion
from samplax.diffusion.inverse.problems import LinearGaussian


def _prior(prior, who) -> FullCovGaussianMixtureDiffusion:
    if isinstance(prior, GaussianMixtureDiffusion):
        return FullCovGaussianMixtureDiffusion.from_diagonal(prior)
    if isinstance(prior, FullCovGaussianMixtureDiffusion):
        return prior
    raise ValueError(f"{who}: prior must be a GaussianMixtureDiffusion or FullCovGaussianMixtureDiffusion, "
                     f"got {type(prior).__name__}")


def _components(prior, problem, who):
    prior = _prior(prior, who)
    if not isinstance(problem, LinearGaussian):
        raise ValueError(f"{who}: an exact posterior needs a LinearGaussian problem, got {type(problem).__name__} "
                         "(a nonlinear measurement has no closed form)")
    if problem.dim != prior.dim:
        raise ValueError(f"{who}: the problem's A acts on points of dimension {problem.dim} (shape {problem.shape}) "
                         f"but the prior has dimension {prior.dim}")
    a = np.asarray(problem.operator.dense(), np.float64)
    y = np.asarray(problem.y, np.float64)
    r = np.asarray(problem.noise_var(), np.float64)
    w = np.asarray(prior.weights, np.float64)
    mus = np.asarray(prior.means, np.float64)
    covs = np.asarray(prior.covariances, np.float64)
    eye = np.eye(prior.dim)
    log_w, means, post_covs = [], [], []
    for k in range(prior.num_components):
        s = covs[k]
        as_ = a @ s
        g = as_ @ a.T + np.diag(r)
        g = 0.5 * (g + g.T)
        chol = np.linalg.cholesky(g)
        resid = y - a @ mus[k]
        z = np.linalg.solve(chol, resid)
        log_det = 2.0 * np.sum(np.log(np.diag(chol)))
        log_w.append(math.log(w[k]) - 0.5 * (z @ z + log_det + len(y) * math.log(2.0 * math.pi)))
        gain = np.linalg.solve(chol.T, np.linalg.solve(chol, as_)).T  # S A^T G^{-1}
        means.append(mus[k] + gain @ resid)
        i_ka = eye - gain @ a
        c = i_ka @ s @ i_ka.T + (gain * r) @ gain.T
        post_covs.append(0.5 * (c + c.T))
    return np.asarray(log_w), np.stack(means), np.stack(post_covs)


def log_evidence(prior, problem: LinearGaussian) -> float:
    """Exact ``log p(y) = logsumexp_k [log w_k + log N(y; A mu_k, A S_k A^T + diag(sigma_y^2))]`` (host float64).

    ``prior``: a diagonal or full-covariance Gaussian mixture; ``problem``: a :class:`LinearGaussian`
    whose ``A`` acts on points of the prior's dimension."""
    log_w, _, _ = _components(prior, problem, "log_evidence")
    m = np.max(log_w)
    return float(m + np.log(np.sum(np.exp(log_w - m))))


def posterior(prior, problem: LinearGaussian) -> FullCovGaussianMixtureDiffusion:
    """The exact posterior ``p(x0 | y)`` of a Gaussian-mixture prior under a linear-Gaussian measurement.

    Update (per component ``k``, Kalman 1960): ``w'_k ∝ w_k N(y; A mu_k, G_k)`` with
    ``G_k = A S_k A^T + diag(sigma_y^2)``, ``m_k = mu_k + K_k (y - A mu_k)``, ``K_k = S_k A^T G_k^{-1}``,
    ``C_k = (I - K_k A) S_k (I - K_k A)^T + K_k diag(sigma_y^2) K_k^T``. The result is a
    :class:`~samplax.diffusion.gmm.FullCovGaussianMixtureDiffusion` (exact draws with ``.sample``, exact
    denoiser, component labels with ``.component_of``) in the prior's component order.

    Raises ValueError when the problem is not linear-Gaussian or its ``A`` does not act on the prior's
    dimension.
    """
    log_w, means, covs = _components(prior, problem, "posterior")
    w = np.exp(log_w - np.max(log_w))
    return FullCovGaussianMixtureDiffusion(w / w.sum(), means, covs)
