"""Sample-quality metrics, each defined once, with its settings returned beside its value.

Every public function returns a ``dict``: the number(s) under descriptive keys
and the settings that produced them (estimator, kernel, bandwidth and how it was
chosen, number of projections, power ``p``, ...). The literature often reports
such numbers without their settings, or reports a squared distance as a
distance; here the returned keys say which one you get.

* :func:`moment_errors` -- mean errors in posterior-sd and in MCSE units,
  relative variance error (numpy; uses :mod:`samplax.diagnostics`).
* :func:`log_z_error` -- error of repeated log-normalizer estimates.
* :func:`mmd` -- unbiased squared maximum mean discrepancy (Gretton et al. 2012).
* :func:`energy_distance` -- unbiased energy distance (Szekely & Rizzo 2013).
* :func:`sliced_wasserstein` -- Monte Carlo sliced Wasserstein-p distance
  (Rabin et al. 2011; Bonneel et al. 2015); returns ``SW_p``, not ``SW_p^p``.
* :func:`entropic_w2` -- Sinkhorn divergence with squared-Euclidean cost
  (Cuturi 2013; Genevay et al. 2018; Feydy et al. 2019) at a stated epsilon.
* :func:`elbo_eubo` -- ELBO and EUBO of an importance sampler from its log weights
  under its own paths and under target paths (Blessing et al. 2024).
* :func:`mode_coverage` -- entropic mode coverage: entropy of the nearest-mode
  histogram over ``log K`` (Blessing et al. 2024).
* :func:`wasserstein_1d` -- exact Wasserstein-p between two 1-D empirical laws.
* :func:`particle_w2` -- W2 between the energy laws and between the interatomic
  distance laws of two particle-system samples (DW-4, LJ-13; Akhound-Sadegh et al. 2024).

The two-sample metrics are JAX functions of ``[n, d]`` arrays. Pairwise sums
are accumulated in row blocks (``max_block_elements`` entries of the pairwise
matrix at a time), so memory stays bounded for large ``n * m``.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplax import diagnostics

__all__ = [
    "elbo_eubo",
    "energy_distance",
    "entropic_w2",
    "log_z_error",
    "mmd",
    "mode_coverage",
    "moment_errors",
    "particle_w2",
    "sliced_wasserstein",
    "wasserstein_1d",
]

_DEFAULT_BLOCK = 1 << 22  # entries of a pairwise matrix (times d) held at once
_MEDIAN_SUBSET = 1000  # points per sample used by the median heuristic


# --------------------------------------------------------------------------
# moment and log Z errors


def moment_errors(samples, truth_mean, truth_std, mcse=None, truth_mean_se=None) -> dict:
    """Errors of the sample mean and variance against known moments.

    With ``m_j`` and ``v_j`` the sample mean and variance (ddof 1, all draws) of
    coordinate ``j``, ``mu_j`` and ``s_j`` the true mean and standard deviation:

    * ``mean_err_std_j = |m_j - mu_j| / s_j`` (error in posterior-sd units);
    * ``mean_z_j = |m_j - mu_j| / sqrt(mcse_j^2 + se_j^2)`` (error in Monte
      Carlo standard errors; ``se_j`` is the standard error of the reference
      mean, 0 for analytic truth). Under the CLT ``mean_z_j`` is a |N(0, 1)|
      draw, so values above 4-5 flag a bias;
    * ``rel_var_err_j = |v_j - s_j^2| / s_j^2``;
    * ``sd_z_j = |sqrt(v_j) - s_j| / mcse_sd_j`` (only when ``mcse`` is
      estimated here from chains; NaN otherwise).

    When ``mcse`` is None it is estimated as ``sd / sqrt(ESS_mean)``
    (:func:`samplax.diagnostics.mcse_mean`, split-chain Geyer ESS, Vehtari et
    al. 2021); ``[n, k]`` samples are treated as one chain of ``n`` draws, so
    autocorrelated draws are not mistaken for independent ones.

    Args:
      samples: ``[chains, draws, k]`` or ``[n, k]``.
      truth_mean, truth_std: true means and standard deviations, broadcastable to ``[k]``.
      mcse: optional Monte Carlo standard errors of the means, ``[k]``.
      truth_mean_se: optional standard errors of ``truth_mean``, ``[k]``.

    Returns:
      dict with the maxima ``max_mean_err_std``, ``max_mean_z``,
      ``max_rel_var_err``, ``max_sd_z``, the per-coordinate arrays, and the
      settings ``num_chains``, ``num_draws``, ``mcse_source``, ``var_ddof``.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        chains = x[None]
    elif x.ndim == 3:
        chains = x
    else:
        raise ValueError(f"`samples` must have shape [chains, draws, k] or [n, k]; got {x.shape}.")
    k = chains.shape[-1]
    flat = chains.reshape(-1, k)
    if flat.shape[0] < 4:
        raise ValueError(f"`samples` needs at least 4 draws; got shape {x.shape}.")

    def _vec(v, name):
        arr = np.asarray(v, dtype=np.float64)
        try:
            return np.broadcast_to(arr, (k,))
        except ValueError:
            raise ValueError(f"`{name}` must broadcast to [k]={k}; got shape {arr.shape}.") from None

    mu = _vec(truth_mean, "truth_mean")
    sd = _vec(truth_std, "truth_std")
    if not np.all(sd > 0):
        raise ValueError("`truth_std` must be positive.")
    se_truth = np.zeros(k) if truth_mean_se is None else _vec(truth_mean_se, "truth_mean_se")
    if mcse is None:
        mcse_arr = np.atleast_1d(diagnostics.mcse_mean(chains))
        mcse_sd = np.atleast_1d(diagnostics.mcse_sd(chains))
        mcse_source = "estimated: sd / sqrt(ESS_mean), split-chain Geyer ESS (samplax.diagnostics)"
    else:
        mcse_arr = _vec(mcse, "mcse")
        mcse_sd = np.full(k, np.nan)
        mcse_source = "given"

    mean = flat.mean(axis=0)
    var = flat.var(axis=0, ddof=1)
    err = np.abs(mean - mu)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_z = err / np.sqrt(mcse_arr**2 + se_truth**2)
        sd_z = np.abs(np.sqrt(var) - sd) / mcse_sd
    out = {
        "mean_err_std": err / sd,
        "mean_z": mean_z,
        "rel_var_err": np.abs(var - sd**2) / sd**2,
        "sd_z": sd_z,
    }
    for name in list(out):
        out["max_" + name] = float(np.max(out[name]))
    out.update(
        num_chains=chains.shape[0],
        num_draws=flat.shape[0],
        mcse_source=mcse_source,
        truth_mean_se="given" if truth_mean_se is not None else "0 (analytic truth)",
        var_ddof=1,
    )
    return out


def log_z_error(estimates, truth) -> dict:
    """Error of repeated log-normalizer estimates ``hat(log Z)_r``, ``r = 1..R``.

    ``mean_abs_error = mean_r |hat_r - log Z|``, ``bias = mean_r hat_r - log Z``,
    ``mean = mean_r hat_r``, ``std = sd_r(hat_r)`` (ddof 1; NaN for R = 1),
    ``se_bias = std / sqrt(R)``.

    Args:
      estimates: ``[R]`` independent estimates.
      truth: the true ``log Z`` (scalar).
    """
    est = np.asarray(estimates, dtype=np.float64)
    if est.ndim != 1 or est.shape[0] < 1:
        raise ValueError(f"`estimates` must be a non-empty 1-D array [repeats]; got shape {est.shape}.")
    t = np.asarray(truth, dtype=np.float64)
    if t.ndim != 0 or not np.isfinite(t):
        raise ValueError(f"`truth` must be a finite scalar; got {truth!r}.")
    r = est.shape[0]
    std = float(est.std(ddof=1)) if r > 1 else float("nan")
    return {
        "mean_abs_error": float(np.mean(np.abs(est - t))),
        "bias": float(est.mean() - t),
        "mean": float(est.mean()),
        "std": std,
        "se_bias": std / np.sqrt(r),
        "num_repeats": r,
        "truth": float(t),
    }


# --------------------------------------------------------------------------
# blocked pairwise sums


def _check_pair(x, y, min_points=2):
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    for name, a in (("x", x), ("y", y)):
        if a.ndim != 2:
            raise ValueError(f"`{name}` must have shape [n, d]; got {a.shape}.")
        if a.shape[0] < min_points:
            raise ValueError(f"`{name}` needs at least {min_points} points; got shape {a.shape}.")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"`x` and `y` must have the same dimension d; got {x.shape} and {y.shape}.")
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    return x.astype(dtype), y.astype(dtype)


def _block_rows(m: int, d: int, max_block_elements: int) -> int:
    return max(1, max_block_elements // max(1, m * d))


@functools.partial(jax.jit, static_argnames=("fn", "exclude_diagonal", "block"))
def _pairwise_sum(fn: Callable, a, b, params, exclude_diagonal: bool, block: int):
    """``sum_{i, j} fn(|a_i - b_j|^2, params)`` (``i != j`` if ``exclude_diagonal``), in row blocks."""
    n = a.shape[0]
    block = min(block, n)
    nblocks = -(-n // block)
    pad = nblocks * block - n
    a_pad = jnp.concatenate([a, jnp.zeros((pad, a.shape[1]), a.dtype)], axis=0)
    rows = a_pad.reshape(nblocks, block, a.shape[1])
    cols = jnp.arange(b.shape[0])

    def one_block(args):
        i, blk = args
        row_idx = i * block + jnp.arange(block)
        sq = jnp.sum((blk[:, None, :] - b[None, :, :]) ** 2, axis=-1)
        vals = fn(sq, params)
        keep = (row_idx < n)[:, None]
        if exclude_diagonal:
            keep = keep & (row_idx[:, None] != cols[None, :])
        return jnp.sum(jnp.where(keep, vals, 0.0))

    sums = jax.lax.map(one_block, (jnp.arange(nblocks), rows))
    return jnp.sum(sums)


def _rbf(sq, h):
    return jnp.exp(-sq / (2.0 * h**2))


def _imq(sq, h):
    return jax.lax.rsqrt(1.0 + sq / h**2)


def _neg_dist(sq, _):
    return -jnp.sqrt(jnp.maximum(sq, 0.0))


_KERNELS = {"rbf": _rbf, "imq": _imq}


def _u_statistic(fn, x, y, params, max_block_elements):
    """``mean_{i!=j} f(x_i,x_j) + mean_{i!=j} f(y_i,y_j) - 2 mean_{i,j} f(x_i,y_j)``."""
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    sxx = _pairwise_sum(fn, x, x, params, True, _block_rows(n, d, max_block_elements))
    syy = _pairwise_sum(fn, y, y, params, True, _block_rows(m, d, max_block_elements))
    sxy = _pairwise_sum(fn, x, y, params, False, _block_rows(m, d, max_block_elements))
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def _strided_subset(a, size):
    if a.shape[0] <= size:
        return a
    idx = np.linspace(0, a.shape[0] - 1, size).round().astype(int)
    return a[idx]


@jax.jit
def _median_pairwise_distance(z):
    sq = jnp.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=-1)
    iu = jnp.triu_indices(z.shape[0], k=1)
    return jnp.median(jnp.sqrt(sq[iu]))


def mmd(x, y, kernel: str = "rbf", bandwidth=None, max_block_elements: int = _DEFAULT_BLOCK) -> dict:
    """Unbiased squared maximum mean discrepancy (Gretton et al. 2012, JMLR, Lemma 6).

    ``MMD^2_u = 1/(n(n-1)) sum_{i!=j} k(x_i,x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i,y_j)
    - 2/(nm) sum_{i,j} k(x_i,y_j)``, an unbiased U-statistic: its expectation
    is 0 when x and y come from the same law, and it can be slightly negative.

    Kernels: ``"rbf"``: ``k(a,b) = exp(-|a-b|^2 / (2 h^2))``; ``"imq"``
    (inverse multiquadric): ``k(a,b) = (1 + |a-b|^2 / h^2)^{-1/2}``.

    Bandwidth: if ``bandwidth`` is None, the median heuristic ``h = median
    {|z_i - z_j| : i < j}`` over the pooled sample ``z = (x, y)``; for samples
    larger than 1000 points an evenly strided subset of 1000 points of each
    is used for the median. The bandwidth used is returned.

    Args:
      x: ``[n, d]``; y: ``[m, d]``.
      kernel: ``"rbf"`` or ``"imq"``.
      bandwidth: positive scalar or None (median heuristic).
      max_block_elements: size of the pairwise blocks (memory bound).

    Returns:
      dict: ``mmd2`` (squared MMD, unbiased), ``bandwidth``, ``bandwidth_rule``,
      ``kernel``, ``estimator``, ``n_x``, ``n_y``.
    """
    if kernel not in _KERNELS:
        raise ValueError(f"`kernel` must be one of {sorted(_KERNELS)}; got {kernel!r}.")
    x, y = _check_pair(x, y)
    if bandwidth is None:
        pooled = jnp.concatenate([_strided_subset(x, _MEDIAN_SUBSET), _strided_subset(y, _MEDIAN_SUBSET)])
        h = _median_pairwise_distance(pooled)
        rule = "median heuristic: median pairwise Euclidean distance of the pooled sample"
        if x.shape[0] > _MEDIAN_SUBSET or y.shape[0] > _MEDIAN_SUBSET:
            rule += f" (strided subset of {_MEDIAN_SUBSET} points per sample)"
    else:
        h = jnp.asarray(bandwidth, dtype=x.dtype)
        if h.ndim != 0 or not bool(h > 0):
            raise ValueError(f"`bandwidth` must be a positive scalar or None; got {bandwidth!r}.")
        rule = "given"
    value = _u_statistic(_KERNELS[kernel], x, y, h, max_block_elements)
    return {
        "mmd2": value,
        "bandwidth": h,
        "bandwidth_rule": rule,
        "kernel": kernel,
        "estimator": "unbiased U-statistic (Gretton et al. 2012)",
        "n_x": x.shape[0],
        "n_y": y.shape[0],
    }


def energy_distance(x, y, max_block_elements: int = _DEFAULT_BLOCK) -> dict:
    """Unbiased energy distance (Szekely & Rizzo 2013, J. Stat. Plann. Inference).

    ``E = 2/(nm) sum_{i,j} |x_i - y_j| - 1/(n(n-1)) sum_{i!=j} |x_i - x_j|
    - 1/(m(m-1)) sum_{i!=j} |y_i - y_j|`` (Euclidean norm). This is the
    *squared-distance form* ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` (zero iff the laws
    agree), not its square root; it equals ``MMD^2_u`` with the
    distance-induced kernel. Unbiased, so it can be slightly negative.

    Args:
      x: ``[n, d]``; y: ``[m, d]``.

    Returns:
      dict: ``energy_distance``, ``form``, ``estimator``, ``n_x``, ``n_y``.
    """
    x, y = _check_pair(x, y)
    value = _u_statistic(_neg_dist, x, y, jnp.zeros((), x.dtype), max_block_elements)
    return {
        "energy_distance": value,
        "form": "2E|X-Y| - E|X-X'| - E|Y-Y'| (squared-distance form, not its square root)",
        "estimator": "unbiased U-statistic",
        "n_x": x.shape[0],
        "n_y": y.shape[0],
    }


# --------------------------------------------------------------------------
# sliced Wasserstein


def _w_pp_1d(xs, ys, p):
    """``W_p^p`` between 1-D empirical laws given sorted samples ``xs [n]``, ``ys [m]``.

    ``W_p^p = int_0^1 |F^{-1}(t) - G^{-1}(t)|^p dt``; both quantile functions are
    step functions with jumps at ``i/n`` and ``j/m``, so the integral is an
    exact sum over the merged breakpoints.
    """
    n, m = xs.shape[0], ys.shape[0]
    if n == m:
        return jnp.mean(jnp.abs(xs - ys) ** p)
    dtype = xs.dtype
    knots = jnp.sort(jnp.concatenate([jnp.arange(1, n + 1, dtype=dtype) / n, jnp.arange(1, m + 1, dtype=dtype) / m]))
    widths = jnp.diff(jnp.concatenate([jnp.zeros((1,), dtype), knots]))
    mid = knots - widths / 2
    ix = jnp.clip(jnp.floor(mid * n).astype(jnp.int32), 0, n - 1)
    iy = jnp.clip(jnp.floor(mid * m).astype(jnp.int32), 0, m - 1)
    return jnp.sum(widths * jnp.abs(xs[ix] - ys[iy]) ** p)


@functools.partial(jax.jit, static_argnames=("num_projections", "block"))
def _sliced_wpp(key, x, y, p, num_projections: int, block: int):
    d = x.shape[1]
    dirs = jax.random.normal(key, (num_projections, d), dtype=x.dtype)
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    nblocks = -(-num_projections // block)
    pad = nblocks * block - num_projections
    dirs = jnp.concatenate([dirs, jnp.zeros((pad, d), x.dtype)]).reshape(nblocks, block, d)

    def one_block(u):
        px = jnp.sort(u @ x.T, axis=-1)  # [block, n]
        py = jnp.sort(u @ y.T, axis=-1)
        return jax.vmap(lambda a, b: _w_pp_1d(a, b, p))(px, py)

    vals = jax.lax.map(one_block, dirs).reshape(-1)[:num_projections]
    return jnp.mean(vals)


def sliced_wasserstein(key, x, y, num_projections: int = 128, p=2,
                       max_block_elements: int = _DEFAULT_BLOCK) -> dict:
    """Monte Carlo sliced Wasserstein-p distance (Rabin et al. 2011; Bonneel et al. 2015).

    ``SW_p(x, y) = ( (1/L) sum_{l=1}^{L} W_p^p(u_l . x, u_l . y) )^{1/p}`` with
    ``u_l`` uniform on the unit sphere (normalised Gaussians drawn from ``key``)
    and ``W_p^p`` the exact 1-D optimal transport cost between the projected
    empirical laws (sorted-sample matching; merged quantile steps when
    ``n != m``). Returns the distance ``SW_p`` itself, **not** ``SW_p^p``
    (``sliced_wasserstein_pp`` holds the p-th power). Example: for
    ``N(0, I_d)`` vs ``N(mu, I_d)``, ``SW_2 = |mu| / sqrt(d)`` in the limit.

    Args:
      key: a JAX PRNG key for the directions.
      x: ``[n, d]``; y: ``[m, d]``.
      num_projections: number ``L`` of directions (static).
      p: order, ``p >= 1``.

    Returns:
      dict: ``sliced_wasserstein`` (= SW_p), ``sliced_wasserstein_pp``, ``p``,
      ``num_projections``, ``directions``, ``n_x``, ``n_y``.
    """
    x, y = _check_pair(x, y, min_points=1)
    if not isinstance(num_projections, (int, np.integer)) or num_projections < 1:
        raise ValueError(f"`num_projections` must be a positive integer; got {num_projections!r}.")
    p_arr = jnp.asarray(p, dtype=x.dtype)
    if p_arr.ndim != 0 or not bool(p_arr >= 1):
        raise ValueError(f"`p` must be a scalar >= 1; got {p!r}.")
    block = max(1, min(int(num_projections), max_block_elements // max(1, x.shape[0] + y.shape[0])))
    wpp = _sliced_wpp(key, x, y, p_arr, int(num_projections), block)
    return {
        "sliced_wasserstein": wpp ** (1.0 / p_arr),
        "sliced_wasserstein_pp": wpp,
        "p": p,
        "num_projections": int(num_projections),
        "directions": "uniform on the unit sphere, Monte Carlo",
        "n_x": x.shape[0],
        "n_y": y.shape[0],
    }


# --------------------------------------------------------------------------
# entropic optimal transport


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _sinkhorn_ot(x, y, eps, tol, max_iters: int):
    """Entropic OT value ``OT_eps`` with cost ``|x_i - y_j|^2`` and uniform weights.

    Log-domain Sinkhorn with epsilon scaling (Schmitzer 2019): the
    regularisation starts at the largest cost and is halved every iteration
    down to ``eps`` (potentials warm-started); iterations then continue at
    ``eps`` until the row-marginal L1 error is below ``tol``.
    """
    n, m = x.shape[0], y.shape[0]
    cost = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    log_a = -jnp.log(n) * jnp.ones((n,), x.dtype)
    log_b = -jnp.log(m) * jnp.ones((m,), x.dtype)
    eps0 = jnp.maximum(jnp.max(cost), eps)

    def update(g, e):
        f = -e * jax.nn.logsumexp(log_b[None, :] + (g[None, :] - cost) / e, axis=1)
        g = -e * jax.nn.logsumexp(log_a[:, None] + (f[:, None] - cost) / e, axis=0)
        return f, g

    def row_error(f, g):
        # after a g-update the column marginals are exact; measure the row marginals
        log_p = log_a[:, None] + log_b[None, :] + (f[:, None] + g[None, :] - cost) / eps
        return jnp.sum(jnp.abs(jnp.exp(jax.nn.logsumexp(log_p, axis=1)) - jnp.exp(log_a)))

    def cond(state):
        it, _, _, err = state
        return (it < max_iters) & (err > tol)

    def body(state):
        it, _, g, _ = state
        e = jnp.maximum(eps, eps0 * 0.5 ** it.astype(x.dtype))
        f, g = update(g, e)
        err = jnp.where(e <= eps, row_error(f, g), jnp.inf)
        return it + 1, f, g, err

    init = (jnp.zeros((), jnp.int32), jnp.zeros((n,), x.dtype), jnp.zeros((m,), x.dtype),
            jnp.asarray(jnp.inf, x.dtype))
    it, f, g, err = jax.lax.while_loop(cond, body, init)
    value = jnp.mean(f) + jnp.mean(g)
    return value, it, err


def entropic_w2(x, y, epsilon, tol=1e-6, max_iters: int = 10_000) -> dict:
    """Debiased Sinkhorn divergence with squared-Euclidean cost, a smoothed W2^2.

    ``OT_eps(a, b) = min_P <P, C> + eps KL(P | a (x) b)`` with ``C_ij = |x_i -
    y_j|^2`` and uniform weights (Cuturi 2013), computed by log-domain Sinkhorn
    iterations ``f = -eps LSE_j(log b_j + (g_j - C_ij)/eps)``, ``g = -eps
    LSE_i(log a_i + (f_i - C_ij)/eps)`` (with epsilon scaling from ``max C``
    down to ``epsilon``) until the row-marginal L1 error is below ``tol``; at
    convergence ``OT_eps = <a, f> + <b, g>``. The divergence is

      ``S_eps = OT_eps(x, y) - OT_eps(x, x)/2 - OT_eps(y, y)/2``

    (Genevay et al. 2018; Feydy et al. 2019): nonnegative, zero iff the laws
    agree, ``S_eps -> W2^2`` as ``eps -> 0``, and exactly ``|mu|^2`` between a
    point cloud and its translate by ``mu``. ``epsilon`` is in squared-distance
    units and has no default on purpose: report it. Holds the ``n x m`` cost
    matrix in memory. When ``epsilon`` is well below the typical squared
    nearest-neighbour distance Sinkhorn converges slowly; check ``converged``
    (the divergence itself is usually accurate well before the marginals).

    Args:
      x: ``[n, d]``; y: ``[m, d]``.
      epsilon: entropic regularisation, > 0.
      tol: stopping tolerance on the row-marginal L1 error.
      max_iters: iteration cap (static).

    Returns:
      dict: ``sinkhorn_divergence`` (squared units, ~W2^2), ``entropic_w2`` =
      ``sqrt(max(S_eps, 0))`` (distance units), ``epsilon``, ``cost``,
      ``iterations`` (max over the three solves), ``marginal_error``,
      ``converged``.
    """
    x, y = _check_pair(x, y, min_points=1)
    eps = jnp.asarray(epsilon, dtype=x.dtype)
    if eps.ndim != 0 or not bool(eps > 0):
        raise ValueError(f"`epsilon` must be a positive scalar; got {epsilon!r}.")
    tol_arr = jnp.asarray(tol, dtype=x.dtype)
    results = [_sinkhorn_ot(a, b, eps, tol_arr, int(max_iters)) for a, b in ((x, y), (x, x), (y, y))]
    (xy, itxy, exy), (xx, itxx, exx), (yy, ityy, eyy) = results
    div = xy - 0.5 * (xx + yy)
    err = jnp.max(jnp.stack([exy, exx, eyy]))
    return {
        "sinkhorn_divergence": div,
        "entropic_w2": jnp.sqrt(jnp.maximum(div, 0.0)),
        "epsilon": epsilon,
        "cost": "squared Euclidean |x - y|^2",
        "iterations": int(max(itxy, itxx, ityy)),
        "marginal_error": err,
        "converged": bool(err <= tol_arr),
        "n_x": x.shape[0],
        "n_y": y.shape[0],
    }


# --------------------------------------------------------------------------
# bounds, mode coverage and 1-D transport (learned samplers)


def _finite_mean(a, name):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size < 2:
        raise ValueError(f"`{name}` needs at least 2 log weights; got {a.size}.")
    ok = np.isfinite(a)
    if not ok.any():
        return float("nan"), float("nan"), 0
    v = a[ok]
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan"), int(v.size)


def elbo_eubo(log_w_model, log_w_target=None, log_z=None) -> dict:
    """Evidence lower and upper bounds from log importance weights ``log w = log P~ - log Q``.

    ``ELBO = mean_i log w(tau_i)``, ``tau_i ~ Q`` (the sampler's own paths or draws):
    ``E[ELBO] = log Z - KL(Q || P) <= log Z``.
    ``EUBO = mean_j log w(tau_j)``, ``tau_j ~ P`` (paths of the target path measure, e.g. exact
    target draws continued backwards): ``E[EUBO] = log Z + KL(P || Q) >= log Z`` (Blessing, Jia,
    Berner, Nusken & Neumann 2024, "Beyond ELBOs", ICML).  Each comes with its standard error
    ``sd / sqrt(n)``; non-finite weights are left out (their number is returned).  With the true
    ``log_z``, the gaps ``log Z - ELBO`` (the reverse KL) and ``EUBO - log Z`` (the forward KL).

    Args:
      log_w_model: ``[n]`` log weights of paths drawn from the sampler.
      log_w_target: optional ``[m]`` log weights of paths drawn from the target path measure.
      log_z: optional true ``log Z``.

    Returns:
      dict: ``elbo``, ``elbo_se``, ``eubo``, ``eubo_se`` (NaN without ``log_w_target``), ``n_model``,
      ``n_target`` (finite weights used), and with ``log_z`` ``reverse_kl`` and ``forward_kl``.
    """
    elbo, elbo_se, n = _finite_mean(log_w_model, "log_w_model")
    if log_w_target is None:
        eubo, eubo_se, m = float("nan"), float("nan"), 0
    else:
        eubo, eubo_se, m = _finite_mean(log_w_target, "log_w_target")
    out = {"elbo": elbo, "elbo_se": elbo_se, "eubo": eubo, "eubo_se": eubo_se, "n_model": n, "n_target": m}
    if log_z is not None:
        out["reverse_kl"] = float(log_z) - elbo
        out["forward_kl"] = eubo - float(log_z)
    return out


def mode_coverage(samples, modes) -> dict:
    """Entropic mode coverage (Blessing et al. 2024): each draw is assigned to its nearest mode
    (Euclidean), ``p_k`` is the fraction of draws at mode ``k`` and

      ``EMC = -sum_k p_k log p_k / log K``

    (``0 log 0 = 0``): 1 when the draws are spread evenly over all ``K`` modes, 0 when they sit at one.
    It measures the spread over modes only (a sampler that fills each mode at the wrong weight is
    marked down; one that puts the right mass in the wrong shape is not).  For mixtures with equal
    weights, as GMM-25 and GMM-40.

    Args:
      samples: ``[n, d]``.
      modes: ``[K, d]`` mode locations, ``K >= 2``.

    Returns:
      dict: ``mode_coverage`` (EMC), ``modes_hit`` (modes with at least one draw), ``num_modes``,
      ``counts`` (``[K]``), ``assignment`` (the rule), ``n``.
    """
    x = np.asarray(samples, dtype=np.float64)
    c = np.asarray(modes, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"`samples` must have shape [n, d] with n >= 1; got {x.shape}.")
    if c.ndim != 2 or c.shape[0] < 2 or c.shape[1] != x.shape[1]:
        raise ValueError(f"`modes` must have shape [K, d] with K >= 2 and d = {x.shape[1]}; got {c.shape}.")
    ok = np.all(np.isfinite(x), axis=1)
    x = x[ok]
    k = c.shape[0]
    counts = np.zeros(k, np.int64)
    for start in range(0, x.shape[0], 4096):  # nearest mode, in blocks
        blk = x[start:start + 4096]
        d2 = np.sum((blk[:, None, :] - c[None, :, :]) ** 2, axis=-1)
        counts += np.bincount(np.argmin(d2, axis=1), minlength=k)
    n = int(counts.sum())
    if n == 0:
        emc = float("nan")
    else:
        p = counts[counts > 0] / n
        emc = float(-np.sum(p * np.log(p)) / np.log(k))
    return {"mode_coverage": emc, "modes_hit": int(np.sum(counts > 0)), "num_modes": k, "counts": counts,
            "assignment": "nearest mode (Euclidean); non-finite draws left out", "n": n}


def wasserstein_1d(x, y, p=2) -> dict:
    """Exact Wasserstein-p distance between two 1-D empirical laws:
    ``W_p = ( int_0^1 |F^{-1}(t) - G^{-1}(t)|^p dt )^{1/p}`` with the empirical quantile functions (the
    sorted samples; merged quantile steps when the sizes differ).  This is the OT distance between the
    two samples' histograms in the limit of fine bins, with no binning.  Returns the distance, not its
    p-th power.  Example: ``W_p(x, x + c) = |c|``.

    Returns:
      dict: ``wasserstein`` (= W_p), ``wasserstein_pp``, ``p``, ``n_x``, ``n_y``.
    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    for name, v in (("x", a), ("y", b)):
        if v.size < 1 or not np.all(np.isfinite(v)):
            raise ValueError(f"`{name}` must be a non-empty array of finite numbers; got {v.size} values "
                             f"({int(np.sum(~np.isfinite(v)))} non-finite).")
    if not (np.ndim(p) == 0 and float(p) >= 1):
        raise ValueError(f"`p` must be a scalar >= 1; got {p!r}.")
    wpp = float(_w_pp_1d(jnp.asarray(np.sort(a)), jnp.asarray(np.sort(b)), float(p)))
    return {"wasserstein": wpp ** (1.0 / float(p)), "wasserstein_pp": wpp, "p": p, "n_x": a.size, "n_y": b.size}


def pair_distances(samples, n_particles: int, spatial_dim: int) -> np.ndarray:
    """All interatomic distances ``|x_i - x_j|``, ``i < j``, of ``[n, n_particles * spatial_dim]`` configurations,
    ``[n, n_particles (n_particles - 1) / 2]``."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_particles * spatial_dim:
        raise ValueError(f"`samples` must have shape [n, n_particles * spatial_dim] = [n, "
                         f"{n_particles * spatial_dim}]; got {x.shape}.")
    pos = x.reshape(x.shape[0], n_particles, spatial_dim)
    i, j = np.triu_indices(n_particles, 1)
    return np.sqrt(np.sum((pos[:, i] - pos[:, j]) ** 2, axis=-1))


def particle_w2(samples, reference, n_particles: int, spatial_dim: int, energy_fn) -> dict:
    """Energy-W2 and distance-W2 of a particle system (DEM, Akhound-Sadegh et al. 2024, ICML):

    * ``energy_w2 = W_2(E(x_i), E(y_j))``: the 1-D Wasserstein-2 distance (:func:`wasserstein_1d`)
      between the energies of the draws and of the reference draws;
    * ``distance_w2 = W_2({|x_i,a - x_i,b|}, {|y_j,a - y_j,b|})``: the same between the pooled
      interatomic distances (all pairs ``a < b`` of every configuration).

    Both are distances, **not** squared (papers differ); no binning.  Draws with a non-finite
    energy are left out of the energy law and counted (``num_nonfinite``).

    Args:
      samples, reference: ``[n, n_particles * spatial_dim]`` and ``[m, ...]`` configurations.
      energy_fn: ``E(x)`` of one flat configuration (a JAX function; vmapped here).

    Returns:
      dict: ``energy_w2``, ``distance_w2``, ``num_nonfinite``, ``p`` (2), ``binning`` ("none").
    """
    x = np.asarray(samples, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    dx = pair_distances(x, n_particles, spatial_dim)
    dy = pair_distances(y, n_particles, spatial_dim)
    ex = np.asarray(jax.vmap(energy_fn)(jnp.asarray(x)), np.float64)
    ey = np.asarray(jax.vmap(energy_fn)(jnp.asarray(y)), np.float64)
    bad = ~np.isfinite(ex)
    if bad.all():
        ew2 = float("nan")
    else:
        ew2 = wasserstein_1d(ex[~bad], ey[np.isfinite(ey)])["wasserstein"]
    okd = np.all(np.isfinite(dx), axis=1)
    dw2 = wasserstein_1d(dx[okd], dy)["wasserstein"] if okd.any() else float("nan")
    return {"energy_w2": ew2, "distance_w2": dw2, "num_nonfinite": int(bad.sum()), "p": 2, "binning": "none",
            "n_x": x.shape[0], "n_y": y.shape[0]}
