"""Ground truth for composed diffusion models built from Gaussian mixtures (the composition tests' targets).

* :func:`product`: the product of Gaussian mixtures is a Gaussian mixture in closed form (every pair of
  components multiplies to a scaled Gaussian): for ``N(x; a, A) N(x; b, B)``,
  ``= N(a; b, A + B) N(x; m, S)`` with ``S = A (A + B)^{-1} B`` and ``m = B (A + B)^{-1} a + A (A + B)^{-1} b``
  (e.g. Petersen & Pedersen, *The Matrix Cookbook*, sec. 8.1.8), so
  ``p1 p2 = sum_ij w_i v_j N(a_i; b_j, A_i + B_j) N(x; m_ij, S_ij)`` and ``log int p1 p2 = logsumexp_ij [log w_i
  + log v_j + log N(a_i; b_j, A_i + B_j)]``. Integer powers are repeated products.
* :func:`geometric_logdensity`: ``sum_k a_k log p_k(x)`` (powers ``p^beta``, CFG's ``p(x|c)^w p(x)^(1-w)``, negation),
  exact and unnormalized, at any noise level (the noised mixture is a mixture).
* :func:`separated_geometric`: mixtures that share their components (e.g. a conditional and an unconditional model
  that differ only in the weights) and whose components are far apart: ``prod_k (sum_j w_kj N_j)^{a_k} =
  sum_j prod_k w_kj^{a_k} N_j^{gamma}`` up to the overlaps, ``gamma = sum_k a_k``, and ``N(m, S)^gamma`` is
  ``N(m, S / gamma)`` times ``(2 pi)^{d (1 - gamma) / 2} |S|^{(1 - gamma) / 2} gamma^{-d / 2}``. The overlap error is
  measured, not assumed: the exact and the approximate log-densities are compared at draws of the result.
* :func:`grid_reference`: 2-D quadrature on a fine grid (midpoint rule): ``log Z`` with the change from a grid of
  half the resolution as its error estimate, and draws (a cell by its mass, uniform inside the cell).
* :func:`smc_reference`: a long adaptive tempered SMC run (:func:`samplax.smc.tempered.run`, HMC moves) for higher
  dimensions: equally weighted draws and ``log Z`` with its standard error over independent runs.
* :func:`truncated_draws`: exact draws of a mixture truncated to a set (given by a projection ``P``, the set being
  ``{x: P(x) = x}``) by rejection, with the acceptance rate (the set's probability) and its standard error.

Host computations are numpy float64.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.energy import MixtureEnergy
from samplax.diffusion.gmm import FullCovGaussianMixtureDiffusion, GaussianMixtureDiffusion
from samplax.smc import resampling
from samplax.smc.base import lee_whiteley_relative_variance
from samplax.smc.logz import combine_log_Z
from samplax.smc.paths import make_reference
from samplax.smc.tempered import TemperedConfig, run

MAX_COMPONENTS = 200_000


def as_full_mixture(model, who: str = "exact") -> FullCovGaussianMixtureDiffusion:
    """``model`` (a Gaussian mixture, diagonal or full, or a :class:`MixtureEnergy`) as a full-covariance mixture."""
    if isinstance(model, MixtureEnergy):
        model = model.mixture
    if isinstance(model, GaussianMixtureDiffusion):
        return FullCovGaussianMixtureDiffusion.from_diagonal(model)
    if isinstance(model, FullCovGaussianMixtureDiffusion):
        return model
    raise ValueError(f"{who}: expected a Gaussian mixture (GaussianMixtureDiffusion, FullCovGaussianMixtureDiffusion "
                     f"or MixtureEnergy), got {type(model).__name__}")


def _parts(model, sigma, who):
    m = as_full_mixture(model, who)
    w = np.asarray(m.weights, np.float64)
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    covs = np.asarray(m.covariances, np.float64) + float(sigma) ** 2 * np.eye(m.dim)
    return logw, np.asarray(m.means, np.float64), covs


def _pair_product(la, ma, ca, lb, mb, cb):
    """Unnormalized log weights, means and covariances of the products of every pair of components."""
    ka, d = ma.shape
    kb = mb.shape[0]
    if ka * kb > MAX_COMPONENTS:
        raise ValueError(f"product: {ka} x {kb} components is more than {MAX_COMPONENTS}")
    a = ca[:, None]  # [ka, 1, d, d]
    b = cb[None, :]
    s = a + b  # [ka, kb, d, d]
    chol = np.linalg.cholesky(s)
    diff = ma[:, None, :] - mb[None, :, :]  # [ka, kb, d]
    z = np.linalg.solve(chol, diff[..., None])[..., 0]
    logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    logc = la[:, None] + lb[None, :] - 0.5 * (np.sum(z * z, -1) + logdet + d * math.log(2.0 * math.pi))
    a_b = np.broadcast_to(a, s.shape)
    b_b = np.broadcast_to(b, s.shape)
    s_inv_b = np.linalg.solve(s, b_b)  # (A + B)^{-1} B
    s_inv_a = np.linalg.solve(s, a_b)
    cov = a_b @ s_inv_b  # A (A + B)^{-1} B
    cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
    mean = (np.swapaxes(s_inv_b, -1, -2) @ ma[:, None, :, None])[..., 0] \
        + (np.swapaxes(s_inv_a, -1, -2) @ mb[None, :, :, None])[..., 0]
    return logc.reshape(-1), mean.reshape(ka * kb, d), cov.reshape(ka * kb, d, d)


def _logsumexp(v):
    m = np.max(v)
    if not np.isfinite(m):
        return float(m)
    return float(m + np.log(np.sum(np.exp(v - m))))


def _mixture_from_log(logc, means, covs):
    keep = np.isfinite(logc)
    logc, means, covs = logc[keep], means[keep], covs[keep]
    w = np.exp(logc - np.max(logc))
    return FullCovGaussianMixtureDiffusion(w / w.sum(), means, covs)


def product(*models, sigma: float = 0.0):
    """The normalized product ``prod_k p_k / Z`` of Gaussian mixtures at noise level ``sigma`` and ``log Z``.

    ``Z = int prod_k p_{k, sigma}(x) dx``. Returns ``(mixture, log_Z)``: the product as a
    :class:`~samplax.diffusion.gmm.FullCovGaussianMixtureDiffusion` (exact draws with ``.sample``) and its log
    normalizer. Needs at least two models of the same dimension."""
    if len(models) < 2:
        raise ValueError(f"product: needs at least two mixtures, got {len(models)}")
    parts = [_parts(m, sigma, "product") for m in models]
    dims = [p[1].shape[1] for p in parts]
    if len(set(dims)) > 1:
        raise ValueError(f"product: the mixtures have different dimensions {dims}")
    la, ma, ca = parts[0]
    for lb, mb, cb in parts[1:]:
        la, ma, ca = _pair_product(la, ma, ca, lb, mb, cb)
    return _mixture_from_log(la, ma, ca), _logsumexp(la)


def power(model, beta: int, sigma: float = 0.0):
    """``p_sigma^beta / Z`` for an integer ``beta >= 1`` as a mixture (a ``beta``-fold product) and ``log Z``."""
    if isinstance(beta, bool) or not float(beta).is_integer() or beta < 1:
        raise ValueError(f"power: a closed form exists for integer beta >= 1 only, got {beta!r} (use "
                         "separated_geometric, grid_reference or smc_reference)")
    beta = int(beta)
    if beta == 1:
        m = as_full_mixture(model, "power")
        return m.noised(sigma), 0.0
    return product(*([model] * beta), sigma=sigma)


def geometric_logdensity(models: Sequence, exponents: Sequence[float], sigma: float = 0.0) -> Callable:
    """``x -> sum_k a_k log p_{k, sigma}(x)`` (one point, jax) for Gaussian mixtures ``p_k`` and exponents ``a_k``."""
    ms = [as_full_mixture(m, "geometric_logdensity") for m in models]
    a = [float(e) for e in exponents]
    if len(a) != len(ms):
        raise ValueError(f"geometric_logdensity: {len(ms)} models but {len(a)} exponents")
    s = float(sigma)

    def logdensity(x):
        return sum(ak * m.log_prob(x, s) for ak, m in zip(a, ms))

    return logdensity


class SeparatedGeometric(NamedTuple):
    """What :func:`separated_geometric` returns: the mixture, ``log Z``, and the measured approximation error
    ``max_abs_log_error`` (max over the check draws of |exact - approximate log-density|)."""

    mixture: FullCovGaussianMixtureDiffusion
    log_Z: float
    max_abs_log_error: float


def separated_geometric(models: Sequence, exponents: Sequence[float], sigma: float = 0.0, *, key=None,
                        num_check: int = 4096, tol: float = 1e-6) -> SeparatedGeometric:
    """``prod_k p_k^{a_k} / Z`` for mixtures with shared, well separated components, as a mixture, and ``log Z``.

    Valid when every mixture has the same means and covariances (only the weights differ) and the components do
    not overlap where the result has its mass; the error of dropping the overlaps is measured at ``num_check``
    draws of the result and a ValueError is raised when it exceeds ``tol`` (in log-density). ``gamma = sum a_k``
    must be positive. A component with weight 0 in a mixture raised to a positive power drops out; to a negative
    power it makes the density unbounded (a ValueError)."""
    if len(models) != len(exponents) or not models:
        raise ValueError("separated_geometric: give one exponent per model (and at least one model)")
    ms = [as_full_mixture(m, "separated_geometric") for m in models]
    base = ms[0]
    for i, m in enumerate(ms[1:], 1):
        if m.means.shape != base.means.shape or not (
                np.allclose(np.asarray(m.means), np.asarray(base.means), rtol=0, atol=1e-12)
                and np.allclose(np.asarray(m.covariances), np.asarray(base.covariances), rtol=0, atol=1e-12)):
            raise ValueError(f"separated_geometric: model {i} does not have the components (means, covariances) of "
                             "model 0; only the weights may differ")
    a = np.asarray([float(e) for e in exponents])
    gamma = float(a.sum())
    if not gamma > 0:
        raise ValueError(f"separated_geometric: the exponents must sum to a positive number, got {gamma}")
    d = base.dim
    covs = np.asarray(base.covariances, np.float64) + float(sigma) ** 2 * np.eye(d)
    with np.errstate(divide="ignore"):
        logw = np.stack([np.log(np.asarray(m.weights, np.float64)) for m in ms])  # [M, K]
    if np.any(np.isneginf(logw) & (a[:, None] < 0)):
        raise ValueError("separated_geometric: a component with weight 0 raised to a negative power")
    with np.errstate(invalid="ignore"):
        lw = np.where(np.isneginf(logw), -np.inf, a[:, None] * logw).sum(0)
    logdet = np.linalg.slogdet(covs)[1]
    lw = lw + 0.5 * d * (1.0 - gamma) * math.log(2.0 * math.pi) + 0.5 * (1.0 - gamma) * logdet \
        - 0.5 * d * math.log(gamma)
    mix = _mixture_from_log(lw, np.asarray(base.means, np.float64), covs / gamma)
    log_z = _logsumexp(lw)
    exact = geometric_logdensity(models, a, sigma)
    key = jax.random.key(0) if key is None else key
    x = mix.sample(key, int(num_check))
    err = np.asarray(jax.vmap(exact)(x)) - np.asarray(jax.vmap(lambda z: mix.log_prob(z))(x)) - log_z
    max_err = float(np.max(np.abs(err)))
    if not max_err <= tol:
        raise ValueError(f"separated_geometric: the components overlap: the approximation is off by up to {max_err:.3g} "
                         f"in log-density at draws of the result (tol {tol})")
    return SeparatedGeometric(mix, log_z, max_err)


class GridReference(NamedTuple):
    """A 2-D quadrature reference (:func:`grid_reference`): ``log_Z``, its error estimate, the grid and cell masses."""

    log_Z: float
    log_Z_error: float
    lo: np.ndarray
    hi: np.ndarray
    num: int
    log_mass: np.ndarray  # [num * num] normalized log masses of the cells (row-major, first axis first)

    def sample(self, key, n: int) -> jax.Array:
        """``n`` draws: a cell by its mass, then uniform inside the cell (error of order the cell size)."""
        k1, k2 = jax.random.split(key)
        cdf = np.cumsum(np.exp(self.log_mass - np.max(self.log_mass)))  # inverse CDF: O(n log cells) memory
        u = np.asarray(jax.random.uniform(k1, (int(n),), dtype=jnp.result_type(float))) * cdf[-1]
        idx = np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1)
        i, j = idx // self.num, idx % self.num
        h = (self.hi - self.lo) / self.num
        u = jax.random.uniform(k2, (int(n), 2), dtype=jnp.result_type(float))
        return jnp.stack([self.lo[0] + (i + u[:, 0]) * h[0], self.lo[1] + (j + u[:, 1]) * h[1]], axis=1)


def _grid_log_values(logdensity, lo, hi, num, chunk=65536):
    h = (hi - lo) / num
    g0 = lo[0] + (np.arange(num) + 0.5) * h[0]
    g1 = lo[1] + (np.arange(num) + 0.5) * h[1]
    pts = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2)
    f = jax.jit(jax.vmap(logdensity))
    out = [np.asarray(f(jnp.asarray(pts[i:i + chunk]))) for i in range(0, len(pts), chunk)]
    vals = np.concatenate(out).astype(np.float64)
    return np.where(np.isnan(vals), -np.inf, vals), float(np.log(h[0] * h[1]))


def grid_reference(logdensity: Callable, lo, hi, num: int = 1024) -> GridReference:
    """Midpoint-rule quadrature of an unnormalized 2-D log-density on ``[lo, hi]`` with ``num x num`` cells.

    ``log Z = log sum_cells h1 h2 exp(logdensity(center))``; ``log_Z_error`` is the change from ``num / 2`` cells per
    axis (the midpoint rule's error falls 4x per halving, so it bounds the error of the fine grid generously). The
    box must hold the mass (the caller's responsibility; the mass in the border cells is in ``log_mass``)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if lo.shape != (2,) or hi.shape != (2,) or not np.all(hi > lo):
        raise ValueError(f"grid_reference: lo and hi must be 2-vectors with hi > lo, got {lo}, {hi}")
    if num < 4 or num % 2:
        raise ValueError(f"grid_reference: num must be an even int >= 4, got {num}")
    vals, log_cell = _grid_log_values(logdensity, lo, hi, int(num))
    log_z = _logsumexp(vals) + log_cell
    coarse, log_cell_c = _grid_log_values(logdensity, lo, hi, int(num) // 2)
    log_z_c = _logsumexp(coarse) + log_cell_c
    return GridReference(log_z, abs(log_z - log_z_c), lo, hi, int(num), vals + log_cell - log_z)


class TruncatedDraws(NamedTuple):
    """Exact draws of a truncated mixture (:func:`truncated_draws`) and the set's probability with its error."""

    samples: jax.Array
    acceptance: float
    acceptance_se: float


def inside(project: Callable, x, atol: float = 0.0):
    """``[n]`` bool: whether each point of ``x`` ``[n, d]`` is in the set ``{x: P(x) = x}`` (``|P(x) - x| <= atol``)."""
    px = jax.vmap(project)(x)
    return jnp.max(jnp.abs(px - x), axis=-1) <= atol


def truncated_draws(model, key, n: int, project: Callable, sigma: float = 0.0, batch: int = 65536,
                    max_batches: int = 1000) -> TruncatedDraws:
    """``n`` exact draws of a mixture's ``p_sigma`` restricted to the set ``{x: project(x) = x}`` (rejection).

    Batch ``b`` of proposals uses ``fold_in(key, b)``. ``acceptance`` (the set's probability) and its binomial
    standard error come from all proposals made."""
    m = as_full_mixture(model, "truncated_draws")
    kept, tried, acc = [], 0, 0
    f = jax.jit(lambda x: inside(project, x))
    for b in range(max_batches):
        x = m.sample(jax.random.fold_in(key, b), batch, sigma)
        ok = np.asarray(f(x))
        kept.append(np.asarray(x)[ok])
        tried += batch
        acc += int(ok.sum())
        if acc >= n:
            break
    if acc < n:
        raise ValueError(f"truncated_draws: only {acc} of {tried} proposals fell in the set (needed {n})")
    p = acc / tried
    return TruncatedDraws(jnp.asarray(np.concatenate(kept)[:n]), p, math.sqrt(p * (1 - p) / tried))


class SMCReference(NamedTuple):
    """A long tempered-SMC reference (:func:`smc_reference`): draws, ``log Z`` and its standard error."""

    samples: jax.Array
    log_Z: float
    log_Z_se: float


def smc_reference(logdensity: Callable, dim: int, key, *, num_particles: int = 8192, num_runs: int = 4,
                  reference_mean=None, reference_scale=1.0, num_mcmc_steps: int = 10) -> SMCReference:
    """Draws and ``log Z`` of an unnormalized log-density by adaptive tempered SMC (HMC moves) from a Gaussian.

    ``num_runs`` independent runs of ``num_particles`` (run ``r`` uses ``fold_in(key, r)``) from the reference
    ``N(reference_mean, reference_scale^2 I)``; ``log Z`` is ``log mean_r Z_r`` with the standard error of
    :func:`samplax.smc.logz.combine_log_Z`; the draws are every run's particles resampled to equal weights."""
    ref = make_reference(int(dim), mean=reference_mean, scale=reference_scale)
    cfg = TemperedConfig(num_particles=int(num_particles), kernel="hmc", num_mcmc_steps=int(num_mcmc_steps),
                         num_integration_steps=5, max_steps=1000)

    @jax.jit
    def one(k):
        out = run(k, logdensity, ref, cfg)
        st = out.state
        draws = resampling.equal_weight_draws(jax.random.fold_in(k, 7), st.particles.position, st.log_weights,
                                              int(num_particles))
        return draws, st.log_Z, lee_whiteley_relative_variance(st)

    res = [one(jax.random.fold_in(key, r)) for r in range(int(num_runs))]
    draws = jnp.concatenate([r[0] for r in res])
    log_z, se, _ = combine_log_Z(np.asarray([float(r[1]) for r in res]), np.asarray([float(r[2]) for r in res]))
    return SMCReference(draws, log_z, se)
