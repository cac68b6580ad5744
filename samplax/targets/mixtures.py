"""Isotropic Gaussian mixture targets: GMM-40, GMM-25 and GMM-9 (normalized, log Z = 0).

All are ``p(x) = sum_k w_k N(x; m_k, s_k^2 I)`` with equal weights ``w_k = 1/K``
and ``logdensity`` the normalized log-density

    logsumexp_k [ log w_k - ||x - m_k||^2 / (2 s_k^2) - d log s_k - (d/2) log 2 pi ],

so ``log Z = 0``; exact sampler (component, then Gaussian); moments in closed
form: ``E[x] = sum_k w_k m_k``, ``Var x_j = sum_k w_k (s_k^2 + m_kj^2) - E[x_j]^2``.

* ``gmm40``: K = 40, d = 2 (or 50), means ``Uniform[-40, 40]^d`` as drawn by the
  fab-jax recipe ``jax.random.uniform(PRNGKey(0), (40, d), float32, -1, 1) * 40``
  (Midgley et al., ICLR 2023), stored in ``samplax/data/gmm40_means.json``
  (checksummed; see ``benchmarks/make_gmm40_means.py``).  Component std by
  ``variant``:

  - ``"std1"`` (default): std 1.0 — fab-jax ``gmm_v0`` / Beyond-ELBOs (TARGETS.md variant a).
  - ``"softplus0.1"``: std softplus(0.1) = 0.7444 — the older fab-jax GMM with
    ``log_var_scaling=0.1`` used by CMCD (variant c), same means.
  - ``"softplus1"``: std softplus(1) = 1.3133, the std of FAB-torch / iDEM (variant b).
    Caution: the means are the stored JAX ones above, *not* FAB-torch's means
    (drawn with ``torch.manual_seed(0)``), which cannot be reproduced without torch.

* ``gmm25``: K = 25, d = 2, means on the grid ``{-10, -5, 0, 5, 10}^2``, variance 0.3.
* ``gmm9``: K = 9, d = 2, means on the grid ``{-5, 0, 5}^2``, variance 0.3.
"""
from __future__ import annotations

import itertools
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import GroundTruth, Target
from samplax.targets import register
from samplax.targets._data import data_path

_LOG_2PI = math.log(2.0 * math.pi)

GMM40_VARIANTS = {
    "std1": 1.0,
    "softplus0.1": math.log1p(math.exp(0.1)),
    "softplus1": math.log1p(math.exp(1.0)),
}


class IsotropicGaussianMixture(Target):
    """``p(x) = sum_k exp(log_weights_k) N(x; means_k, stds_k^2 I)`` (normalized).

    Fields (all arrays, so new parameters never retrace): ``means [K, d]``,
    ``log_weights [K]`` (normalized: ``logsumexp = 0``), ``stds [K]``.
    """

    means: jax.Array
    log_weights: jax.Array
    stds: jax.Array
    label: str = eqx.field(static=True, default="gmm")
    details: str = eqx.field(static=True, default="")

    def logdensity(self, x):
        d = self.means.shape[1]
        sq = jnp.sum((x[None, :] - self.means) ** 2, axis=1)
        comp = (self.log_weights - 0.5 * sq / self.stds**2 - d * jnp.log(self.stds)
                - 0.5 * d * _LOG_2PI)
        return jax.scipy.special.logsumexp(comp)

    @property
    def event_shape(self):
        return (self.means.shape[1],)

    @property
    def name(self):
        return self.label

    def sample(self, key, n):
        """Exact draws: ``k ~ Categorical(w)``, ``x = m_k + s_k z``, ``z ~ N(0, I)``."""
        kc, kz = jax.random.split(key)
        k = jax.random.categorical(kc, self.log_weights, shape=(n,))
        z = jax.random.normal(kz, (n, self.means.shape[1]), dtype=self.means.dtype)
        return self.means[k] + self.stds[k][:, None] * z

    def ground_truth(self):
        m = np.asarray(self.means, dtype=np.float64)
        w = np.exp(np.asarray(self.log_weights, dtype=np.float64))
        s2 = np.asarray(self.stds, dtype=np.float64) ** 2
        mean = w @ m
        var = w @ (s2[:, None] + m**2) - mean**2
        d = m.shape[1]
        return GroundTruth(
            kind="analytic", source="closed-form mixture moments", version="1",
            mean=mean, std=np.sqrt(var), mean_se=np.zeros(d), std_se=np.zeros(d),
            log_Z=0.0, log_Z_se=0.0, names=tuple(f"x[{i}]" for i in range(d)),
        )

    def provenance(self):
        return {"source": _SOURCES.get(self.label, "user"), "variant": self.details or self.label,
                "version": "1"}


_SOURCES = {
    "gmm40": "Midgley et al. (2023), Flow annealed importance sampling bootstrap, ICLR; "
             "fab-jax GMM target (means from jax PRNGKey(0), stored in samplax/data/gmm40_means.json)",
    "gmm25": "grid mixture {-10,-5,0,5,10}^2 with variance 0.3 (e.g. Zhang & Chen, PIS, ICLR 2022)",
    "gmm9": "grid mixture {-5,0,5}^2 with variance 0.3",
}


def _mixture(means, std, label, details):
    means = np.asarray(means, dtype=np.float64)
    k = means.shape[0]
    return IsotropicGaussianMixture(
        means=jnp.asarray(means, dtype=float),
        log_weights=jnp.full((k,), -math.log(k), dtype=float),
        stds=jnp.full((k,), std, dtype=float),
        label=label, details=details,
    )


def gmm40_means(dim: int = 2) -> np.ndarray:
    """The stored GMM-40 means ``[40, dim]`` (dim 2 or 50), after checking the file's checksum."""
    if dim not in (2, 50):
        raise ValueError(f"gmm40: dim must be 2 or 50 (the stored mean sets), got {dim!r}")
    with open(data_path("gmm40_means.json")) as f:
        return np.asarray(json.load(f)[f"means_dim{dim}"], dtype=np.float64)


@register("gmm40")
def gmm40(dim: int = 2, variant: str = "std1"):
    """GMM-40: 40 equal-weight isotropic Gaussians, means Uniform[-40, 40]^dim (stored).

    Args:
      dim: 2 (default) or 50.
      variant: component std: ``"std1"`` (1.0, default), ``"softplus0.1"`` (0.7444,
        CMCD) or ``"softplus1"`` (1.3133; FAB-torch's std but *our* stored means).
    """
    if variant not in GMM40_VARIANTS:
        raise ValueError(f"gmm40: variant must be one of {sorted(GMM40_VARIANTS)}, got {variant!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise ValueError(f"gmm40: dim must be 2 or 50, got {dim!r}")
    std = GMM40_VARIANTS[variant]
    return _mixture(gmm40_means(int(dim)), std, "gmm40",
                    f"gmm40 variant={variant} (std {std:.6g}), dim={dim}, fab-jax PRNGKey(0) means")


def _grid_means(values):
    return np.array(list(itertools.product(values, values)), dtype=np.float64)


@register("gmm25")
def gmm25(variance: float = 0.3):
    """GMM-25: uniform mixture of 25 isotropic Gaussians, means {-10,-5,0,5,10}^2, variance 0.3."""
    variance = _check_variance("gmm25", variance)
    return _mixture(_grid_means([-10.0, -5.0, 0.0, 5.0, 10.0]), math.sqrt(variance), "gmm25",
                    f"gmm25: grid {{-10,-5,0,5,10}}^2, variance {variance!r}")


@register("gmm9")
def gmm9(variance: float = 0.3):
    """GMM-9: uniform mixture of 9 isotropic Gaussians, means {-5,0,5}^2, variance 0.3."""
    variance = _check_variance("gmm9", variance)
    return _mixture(_grid_means([-5.0, 0.0, 5.0]), math.sqrt(variance), "gmm9",
                    f"gmm9: grid {{-5,0,5}}^2, variance {variance!r}")


def _check_variance(fn_name, variance):
    try:
        variance = float(variance)
    except (TypeError, ValueError):
        raise TypeError(f"{fn_name}: variance must be a number, got {variance!r}") from None
    if not (math.isfinite(variance) and variance > 0):
        raise ValueError(f"{fn_name}: variance must be positive and finite, got {variance}")
    return variance
