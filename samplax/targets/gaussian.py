"""Gaussian targets (analytic moments and log Z).

Registered targets (all with exact samplers and closed-form ground truth):

* ``std_gaussian``: ``N(0, I_d)``.
* ``correlated_gaussian``: ``N(0, C)`` with unit variances and every pair of
  coordinates correlated ``rho`` (compound symmetry), default ``d = 10``,
  ``rho = 0.9``.
* ``ill_conditioned_gaussian``: ``N(0, diag(v))``, ``d = 100``, variances
  ``v_i = 10^(-2 + 4 i / (d - 1))`` log-spaced from 1e-2 to 1e2 (condition
  number 1e4); optionally rotated ``C = Q diag(v) Q^T`` by a Haar-random
  orthogonal ``Q`` drawn with numpy from a fixed seed.

As for every :class:`Gaussian` here, ``logdensity`` is *unnormalized*
(``-0.5 (x - m)^T C^{-1} (x - m)``), so ``log Z = 0.5 log det(2 pi C)``.
"""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import GroundTruth, Target
from samplax.targets import register


class Gaussian(Target):
    """Multivariate normal ``N(mean, cov)``, unnormalized log-density.

    ``logdensity(x) = -0.5 (x - m)^T C^{-1} (x - m)``, so
    ``log Z = 0.5 log det(2 pi C)``.
    """

    mean: jax.Array
    chol: jax.Array  # lower Cholesky factor of the covariance
    label: str = eqx.field(static=True, default="gaussian")
    details: str = eqx.field(static=True, default="")  # variant description for provenance()
    #: optional precomputed ``chol^{-1}``: a mat-vec instead of a triangular solve per
    #: evaluation (much faster under vmap on CPU).
    chol_inv: jax.Array | None = None

    def logdensity(self, x):
        if self.chol_inv is not None:
            z = self.chol_inv @ (x - self.mean)
        else:
            z = jax.scipy.linalg.solve_triangular(self.chol, x - self.mean, lower=True)
        return -0.5 * jnp.sum(z**2)

    @property
    def event_shape(self):
        return (self.mean.shape[0],)

    @property
    def name(self):
        return self.label

    def sample(self, key, n):
        z = jax.random.normal(key, (n, self.mean.shape[0]), dtype=self.mean.dtype)
        return self.mean + z @ self.chol.T

    def ground_truth(self):
        chol = np.asarray(self.chol, dtype=np.float64)
        cov = chol @ chol.T
        d = cov.shape[0]
        logdet = 2.0 * np.sum(np.log(np.abs(np.diag(chol))))
        return GroundTruth(
            kind="analytic", source="closed form", version="1",
            mean=np.asarray(self.mean, dtype=np.float64), std=np.sqrt(np.diag(cov)),
            mean_se=np.zeros(d), std_se=np.zeros(d),
            log_Z=float(0.5 * (d * np.log(2 * np.pi) + logdet)),
            names=tuple(f"x[{i}]" for i in range(d)),
        )

    def provenance(self):
        out = {"source": "analytic", "variant": self.label, "version": "1"}
        if self.details:
            out["details"] = self.details
        return out


def _gaussian(mean, cov, label, details=""):
    mean = jnp.asarray(mean, dtype=float)
    chol = jnp.asarray(np.linalg.cholesky(np.asarray(cov, dtype=np.float64)), dtype=float)
    chol_inv = jnp.asarray(np.linalg.inv(np.asarray(chol, dtype=np.float64)), dtype=float)
    return Gaussian(mean=mean, chol=chol, label=label, details=details, chol_inv=chol_inv)


def _check_dim(dim, fn_name, minimum=1):
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{fn_name}: dim must be an int, got {dim!r}")
    if int(dim) < minimum:
        raise ValueError(f"{fn_name}: dim must be >= {minimum}, got {dim}")
    return int(dim)


@register("std_gaussian")
def std_gaussian(dim: int = 10):
    """Standard normal in ``dim`` dimensions."""
    dim = _check_dim(dim, "std_gaussian")
    return _gaussian(np.zeros(dim), np.eye(dim), "std_gaussian")


@register("correlated_gaussian")
def correlated_gaussian(dim: int = 10, rho: float = 0.9):
    """Equicorrelated Gaussian ``N(0, C)``, ``C = (1 - rho) I + rho 1 1^T``.

    Unit marginal variances and correlation ``rho`` between every pair of
    coordinates (compound symmetry).  Eigenvalues ``1 + (d - 1) rho`` (once) and
    ``1 - rho`` (``d - 1`` times), so it is positive definite iff
    ``-1 / (d - 1) < rho < 1``.  Default ``d = 10, rho = 0.9``: condition number
    ``(1 + 9 * 0.9) / 0.1 = 91``.  Unnormalized: ``log Z = 0.5 log det(2 pi C)``
    with ``det C = (1 - rho)^(d-1) (1 + (d - 1) rho)``.
    """
    dim = _check_dim(dim, "correlated_gaussian", minimum=2)
    try:
        rho = float(rho)
    except (TypeError, ValueError):
        raise TypeError(f"correlated_gaussian: rho must be a number, got {rho!r}") from None
    lo = -1.0 / (dim - 1)
    if not (lo < rho < 1.0):
        raise ValueError(
            f"correlated_gaussian: rho must lie in ({lo:.4g}, 1) for dim={dim} "
            f"(otherwise the covariance is not positive definite), got {rho}"
        )
    cov = (1.0 - rho) * np.eye(dim) + rho * np.ones((dim, dim))
    return _gaussian(np.zeros(dim), cov, "correlated_gaussian",
                     details=f"dim={dim}, equicorrelated rho={rho!r}, unit variances")


@register("ill_conditioned_gaussian")
def ill_conditioned_gaussian(dim: int = 100, rotate: bool = False, seed: int = 0):
    """Ill-conditioned Gaussian ``N(0, C)``: variances log-spaced from 1e-2 to 1e2.

    ``v_i = 10^(-2 + 4 i / (d - 1))``, ``i = 0..d-1`` (stds 0.1 to 10,
    condition number 1e4), ``C = diag(v)``.  With ``rotate=True``,
    ``C = Q diag(v) Q^T`` where ``Q`` is Haar-random orthogonal: the QR
    factorization of a ``d x d`` standard normal matrix drawn by
    ``numpy.random.default_rng(seed).standard_normal`` (PCG64, stable across
    numpy versions), with the signs of ``Q``'s columns fixed so that
    ``diag(R) > 0``.  Unnormalized: ``log Z = 0.5 log det(2 pi C)``.
    """
    dim = _check_dim(dim, "ill_conditioned_gaussian", minimum=2)
    if not isinstance(rotate, (bool, np.bool_)):
        raise TypeError(f"ill_conditioned_gaussian: rotate must be a bool, got {rotate!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"ill_conditioned_gaussian: seed must be a non-negative int, got {seed!r}")
    var = 10.0 ** np.linspace(-2.0, 2.0, dim)
    if rotate:
        q, r = np.linalg.qr(np.random.default_rng(int(seed)).standard_normal((dim, dim)))
        q = q * np.sign(np.diag(r))[None, :]
        cov = (q * var[None, :]) @ q.T
        cov = 0.5 * (cov + cov.T)
        details = f"dim={dim}, variances 10**linspace(-2, 2, dim), rotated by Haar Q (numpy PCG64 seed={seed})"
    else:
        cov = np.diag(var)
        details = f"dim={dim}, diagonal, variances 10**linspace(-2, 2, dim)"
    return _gaussian(np.zeros(dim), cov, "ill_conditioned_gaussian", details=details)
