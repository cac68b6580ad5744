"""Log-Gaussian Cox process on the Finnish pines data (Møller, Syversveen & Waagepetersen 1998).

Definition (the benchmark of Girolami & Calderhead 2011 and of the annealed-flow /
SMC literature, e.g. Arbel, Matthews & Doucet, "Annealed flow transport Monte
Carlo", ICML 2021), data variant ``"pines126"``:

* Data: the 126 pine locations in ``[0, 1]^2`` of ``samplax/data/pines126.csv``
  (the Beyond-ELBOs copy; checksummed).  Another circulating file has 127 points
  and a different reference log Z (TARGETS.md: 501.8 vs 512.6) — the variant
  name records which file is used.
* Grid: M = 40 bins per axis, d = M^2 = 1600 cells; the count ``n_i`` of cell
  ``i = (i_1, i_2)`` is the number of points with ``floor(M * point) = i``
  (clipped to ``M - 1``), cells in row-major order of ``(i_1 = floor(M x), i_2 = floor(M y))``.
* GP prior on the log-intensity ``f``: mean ``mu = log(126) - sigma^2 / 2``,
  covariance ``K_ij = sigma^2 exp(-||i - j|| / (M beta))`` (distance between cell
  indices), ``sigma^2 = 1.91``, ``beta = 1/33``.
* Likelihood: ``sum_i [f_i n_i - exp(f_i) / M^2]`` (Poisson counts with cell area 1/M^2,
  the ``-log n_i!`` constant dropped).

The target is written in the *whitened* parameterization (as in AFT/CRAFT):
``x ~ N(0, I_1600)``, ``f = mu + L x`` with ``L L^T = K`` (Cholesky), so

    logdensity(x) = -||x||^2 / 2 - (d/2) log 2 pi + sum_i [ (mu + L x)_i n_i - exp((mu + L x)_i) / M^2 ],

and ``constrain(x) = f = mu + L x`` (the reported quantities are the log-intensities).
Ground truth: none shipped (the literature's reference log Z comes from long SMC
runs that are not reproduced here); ``ground_truth()`` returns None.
"""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import Target
from samplax.targets import register
from samplax.targets._data import data_path

_LOG_2PI = math.log(2.0 * math.pi)


def bin_counts(points: np.ndarray, num_bins: int) -> np.ndarray:
    """Counts ``[num_bins^2]`` of points in ``[0, 1]^2`` per cell, row-major in ``(floor(M x), floor(M y))``."""
    idx = np.clip(np.floor(points * num_bins).astype(int), 0, num_bins - 1)
    counts = np.zeros((num_bins, num_bins))
    np.add.at(counts, (idx[:, 0], idx[:, 1]), 1.0)
    return counts.reshape(-1)


def lgcp_prior(num_bins: int, variance: float, beta: float, num_points: int):
    """Prior mean ``mu`` and Cholesky factor ``L`` of ``K_ij = variance exp(-||i - j|| / (M beta))``."""
    g = np.stack(np.meshgrid(np.arange(num_bins), np.arange(num_bins), indexing="ij"), -1).reshape(-1, 2)
    dist = np.sqrt(((g[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    k = variance * np.exp(-dist / (num_bins * beta))
    return math.log(num_points) - 0.5 * variance, np.linalg.cholesky(k)


class LGCP(Target):
    """Whitened log-Gaussian Cox process (see :mod:`samplax.targets.lgcp` for the definition)."""

    counts: jax.Array     # [d]
    chol: jax.Array       # [d, d], lower Cholesky factor of the prior covariance
    mu: jax.Array         # scalar prior mean
    cell_area: jax.Array  # scalar 1 / M^2
    label: str = eqx.field(static=True, default="lgcp")
    variant: str = eqx.field(static=True, default="pines126")

    def constrain(self, x):
        return self.mu + self.chol @ x

    def logdensity(self, x):
        f = self.constrain(x)
        d = x.shape[0]
        prior = -0.5 * jnp.sum(x**2) - 0.5 * d * _LOG_2PI
        return prior + jnp.sum(f * self.counts - jnp.exp(f) * self.cell_area)

    @property
    def event_shape(self):
        return (self.counts.shape[0],)

    @property
    def name(self):
        return self.label

    def initial_point(self, key):
        """Small random whitened point (f close to the prior mean)."""
        return 0.1 * jax.random.normal(key, self.event_shape, dtype=self.chol.dtype)

    def provenance(self):
        return {"source": "Møller, Syversveen & Waagepetersen (1998), Scand. J. Stat.; "
                          "Girolami & Calderhead (2011); Arbel et al. (2021), AFT",
                "variant": f"{self.variant}: 126 points, 40x40 grid, sigma^2=1.91, beta=1/33, "
                           "whitened, Poisson constant dropped",
                "version": "1", "data_file": "samplax/data/pines126.csv"}


@register("lgcp")
def lgcp(num_bins: int = 40):
    """LGCP on the 126-point pines data (variant ``pines126``); ``num_bins`` cells per axis (40)."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or not 2 <= num_bins <= 64:
        raise ValueError(f"lgcp: num_bins must be an int in [2, 64], got {num_bins!r}")
    pts = np.genfromtxt(data_path("pines126.csv"), delimiter=",", skip_header=1)[:, 1:]
    if pts.shape != (126, 2) or pts.min() < 0 or pts.max() > 1:
        raise ValueError(f"lgcp: pines126.csv must hold 126 points in [0, 1]^2, got {pts.shape}")
    mu, chol = lgcp_prior(num_bins, 1.91, 1.0 / 33.0, pts.shape[0])
    f = lambda v: jnp.asarray(v, dtype=float)  # noqa: E731
    return LGCP(counts=f(bin_counts(pts, num_bins)), chol=f(chol), mu=f(mu),
                cell_area=f(1.0 / num_bins**2), label="lgcp", variant="pines126")
