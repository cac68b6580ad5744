"""Simulation-based calibration (SBC) of the posterior samplers against the diffusion model's own prior.

Where no exact posterior exists (a trained denoiser), a sampler can still be checked against the joint law of
the model (Cook, Gelman & Rubin 2006; Talts, Betancourt, Simpson, Vehtari & Gelman 2018): draw
``x* ~ p(x0)`` from the model, measure ``y = A x* + sigma_y n``, draw ``x_1..x_L`` from the sampler given
``y``; if the sampler draws from the exact posterior of that prior, then for every scalar statistic ``f`` the
rank ``#{l : f(x_l) < f(x*)}`` is uniform on ``{0, ..., L}``. Repeated over ``R`` replicates, a histogram
of the ranks that is not flat shows miscalibration: a U shape is an over-confident sampler, a hump an
under-confident one, a slope a biased one.

The prior is the *discretized* model that the samplers run (:func:`prior_draws`: ``x_0 ~ N(0, s_0^2 I)``,
DDPM ancestral steps on the method's noise levels, the final denoise), so for the twisted diffusion sampler
(``tds``, whose particles converge to exactly that model's posterior) the ranks are uniform up to the
particle error; the approximate methods' biases show up as non-flat histograms.

Tests of uniformity (:func:`rank_uniformity`), per statistic: Pearson's chi-square over bins of the ranks
(``L + 1`` bins, merged into fewer bins of nearly equal probability when fewer than 5 replicates per bin are
expected; the expected counts use the exact bin probabilities)
and Kolmogorov–Smirnov on the jittered ranks ``(rank + v) / (L + 1)``, ``v ~ U(0, 1)``, which are exactly
``U(0, 1)`` under uniform ranks (asymptotic p-value with Stephens' 1970 correction). The verdict ``uniform``
holds when every p-value is at least ``alpha / (2 K)`` (Bonferroni over the ``2 K`` tests of ``K``
statistics).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.inverse import common
from samplax.diffusion.inverse.api import sample as inverse_sample
from samplax.diffusion.inverse.problems import LinearGaussian, Nonlinear
from samplax.diffusion.inverse.registry import get_method


@eqx.filter_jit
def _prior_program(denoiser, key, levels, n, shape):
    keys, init_keys = common.start_keys(key, n)
    x = common.initial_noise(init_keys, levels[0], shape, levels.dtype)
    return common.prior_ancestral(denoiser, x, levels, keys)


def prior_draws(denoiser: Callable, shape, *, key, num_samples: int, nfe: int, sigma_max: float,
                grid: str = "karras", sigma_end: float = common.DEFAULT_SIGMA_END):
    """Draws of the discretized diffusion prior that the posterior samplers run.

    ``x_0 ~ N(0, s_0^2 I)`` at ``s_0 = sigma_max``, ``nfe - 1`` DDPM ancestral steps (Ho et al. 2020, VE form)
    down the ``nfe`` positive levels of ``grid`` from ``sigma_max`` to ``sigma_end`` (the levels of ``tds`` with
    the same ``nfe``, ``grid`` and ``sigma_end``), and the clean output ``D(x_{N-1}, s_{N-1})``: the model whose
    posterior the twisted diffusion sampler targets. ``nfe`` denoiser evaluations per draw; draw ``i`` depends
    only on ``fold_in`` of ``key`` by ``i`` (batch-size invariant). Returns ``[num_samples, *shape]``.
    """
    for name, v in (("num_samples", num_samples), ("nfe", nfe)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"prior_draws: {name} must be a positive int, got {v!r}")
    if not (np.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"prior_draws: sigma_max must be positive and finite, got {sigma_max}")
    levels = jnp.asarray(common.positive_levels(grid, int(nfe), float(sigma_max), float(sigma_end), "prior_draws"),
                         jnp.result_type(float))
    return _prior_program(denoiser, key, levels, int(num_samples), tuple(int(s) for s in shape))


def default_statistics(problem) -> tuple:
    """``(names, f)``: every entry of the point (``x[i]``, row-major) and its log-likelihood ``log p(y | x)``;
    ``f(x, problem) -> [d + 1]`` for one point. The log-likelihood depends on ``y``, which SBC allows (it is
    fixed within a replicate) and which is sensitive to a wrong spread along ``A``."""
    d = int(math.prod(problem.shape))
    names = [f"x[{i}]" for i in range(d)] + ["log_likelihood"]

    def f(x, prob):
        return jnp.concatenate([jnp.reshape(x, (-1,)), prob.log_likelihood(x)[None]])

    return names, f


@eqx.filter_jit
def _statistics(f, draws, problem):
    return jax.vmap(lambda x: f(x, problem))(draws)


def _chi2_sf(x, dof):
    return float(jax.scipy.special.gammaincc(0.5 * dof, 0.5 * x))


def _ks_sf(d, n):
    """Asymptotic P(D_n > d) of the one-sample Kolmogorov–Smirnov statistic (Stephens 1970 correction)."""
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if lam < 0.2:
        return 1.0
    j = np.arange(1, 101)
    return float(np.clip(2.0 * np.sum((-1.0) ** (j - 1) * np.exp(-2.0 * j**2 * lam**2)), 0.0, 1.0))


def rank_uniformity(ranks, num_draws: int, *, key=None, alpha: float = 0.01, names=None) -> dict:
    """Tests that SBC ranks are uniform on ``{0, ..., num_draws}``, per statistic (column).

    Args:
      ranks: ``[R, K]`` integer ranks (R replicates, K statistics), each in ``0..num_draws``.
      num_draws: ``L``, the posterior draws per replicate.
      key: a typed key for the KS jitter (default ``jax.random.key(0)``).
      alpha: family-wise level; each of the ``2 K`` p-values is compared with ``alpha / (2 K)``.
      names: optional names of the K statistics.

    Returns a dict: ``chi2``, ``chi2_dof``, ``chi2_p``, ``ks``, ``ks_p`` (lists over statistics), ``bins`` (the
    chi-square's number of bins), ``min_p``, ``threshold`` (``alpha / (2 K)``), ``worst`` (the statistic with
    the smallest p-value), ``uniform`` (every p-value at least the threshold), ``num_replicates``,
    ``num_draws``.
    """
    r = np.asarray(ranks)
    if r.ndim != 2 or r.shape[0] < 2:
        raise ValueError(f"rank_uniformity: ranks must be [replicates >= 2, statistics], got shape {r.shape}")
    if not isinstance(num_draws, (int, np.integer)) or num_draws < 1:
        raise ValueError(f"rank_uniformity: num_draws must be a positive int, got {num_draws!r}")
    if np.any(r < 0) or np.any(r > num_draws) or np.any(r != np.round(r)):
        raise ValueError(f"rank_uniformity: ranks must be integers in 0..{num_draws}")
    if not (0 < alpha < 1):
        raise ValueError(f"rank_uniformity: alpha must be in (0, 1), got {alpha}")
    rep, k = r.shape
    levels = num_draws + 1
    bins = int(min(levels, max(2, rep // 5)))
    which = (np.arange(levels) * bins) // levels  # rank -> bin (equal widths up to one level)
    probs = np.bincount(which, minlength=bins) / levels
    expected = rep * probs
    key = jax.random.key(0) if key is None else key
    jitter = np.asarray(jax.random.uniform(key, r.shape))
    u = np.sort((r + jitter) / levels, axis=0)
    grid = np.arange(1, rep + 1)[:, None] / rep
    ks = np.max(np.maximum(grid - u, u - (grid - 1.0 / rep)), axis=0)
    chi2, chi2_p, ks_p = [], [], []
    for j in range(k):
        obs = np.bincount(which[r[:, j].astype(int)], minlength=bins)
        c = float(np.sum((obs - expected) ** 2 / expected))
        chi2.append(c)
        chi2_p.append(_chi2_sf(c, bins - 1))
        ks_p.append(_ks_sf(float(ks[j]), rep))
    all_p = np.concatenate([chi2_p, ks_p])
    threshold = alpha / (2 * k)
    worst = int(np.argmin(np.minimum(chi2_p, ks_p)))
    names = list(names) if names is not None else [str(j) for j in range(k)]
    return {"chi2": chi2, "chi2_dof": bins - 1, "chi2_p": chi2_p, "ks": [float(v) for v in ks], "ks_p": ks_p,
            "bins": bins, "min_p": float(np.min(all_p)), "threshold": threshold, "alpha": alpha,
            "worst": names[worst], "uniform": bool(np.min(all_p) >= threshold), "num_replicates": rep,
            "num_draws": int(num_draws), "names": names}


def _with_measurement(problem, y):
    return eqx.tree_at(lambda p: p.y, problem, y)


def sbc(denoiser: Callable, problem, *, key, num_replicates: int, num_draws: int, nfe: int, sigma_max: float,
        method: str = "tds", statistics: Optional[dict] = None, alpha: float = 0.01, prior_nfe: Optional[int] = None,
        **options) -> dict:
    """Simulation-based calibration of ``inverse.sample(method=...)`` with the prior ``denoiser`` (Talts et al. 2018).

    Per replicate ``r`` of ``num_replicates``: ``x*_r`` from :func:`prior_draws` (``prior_nfe`` levels, default
    ``nfe``, on the method's ``grid`` and ``sigma_end`` when it has those options, else the defaults), a new
    measurement ``y_r = forward(x*_r) + sigma_y n_r`` of ``problem`` (its operator or forward model and
    ``sigma_y``; its own ``y`` is not used), ``num_draws`` posterior draws from :func:`inverse.sample` (one
    compiled program for every replicate), and the ranks of ``f(x*_r)`` among the draws' ``f`` for each
    statistic. A method with a ``draws_per_run`` option (``tds``) gets ``draws_per_run=1`` unless ``options``
    say otherwise, so that the draws of a replicate are independent given ``y`` (draws resampled from one
    particle set are not, and their ranks would not be uniform even for an exact sampler).

    Args:
      denoiser: ``D(x, sigma)`` of the prior, for one point of ``problem.shape``.
      problem: a :class:`LinearGaussian` or :class:`Nonlinear` measurement model (the template).
      key: a typed key; replicate ``r`` uses ``fold_in`` of its sub-keys by ``r``.
      num_replicates, num_draws: ``R >= 2`` and ``L >= 1``.
      nfe, sigma_max, method, options: as :func:`samplax.diffusion.inverse.sample`.
      statistics: ``{name: f(x, problem) -> scalar}``; default every entry and the log-likelihood
        (:func:`default_statistics`).
      alpha: family-wise level of :func:`rank_uniformity`.

    Returns:
      :func:`rank_uniformity`'s dict plus ``ranks`` (``[R, K]`` numpy ints), ``truths`` (``[R, *shape]``),
      ``num_nonfinite_draws``, ``method``, ``options`` (those passed to the sampler) and ``cost``
      (``prior_model_evals``, ``total_model_evals`` and ``total_model_vjps`` of the posterior draws,
      ``num_likelihood_grads``, ``compile_seconds``, ``sampling_seconds``).

    Raises ValueError on a problem that is not a measurement model, bad counts, and whatever
    :func:`inverse.sample` raises for its arguments.
    """
    if not isinstance(problem, (LinearGaussian, Nonlinear)):
        raise ValueError(f"sbc: problem must be a LinearGaussian or Nonlinear measurement model, got "
                         f"{type(problem).__name__}")
    for name, v, lo in (("num_replicates", num_replicates, 2), ("num_draws", num_draws, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"sbc: {name} must be an int >= {lo}, got {v!r}")
    m = get_method(method)
    opts = dict(options)
    if "draws_per_run" in m.options and "draws_per_run" not in opts:
        opts["draws_per_run"] = 1
    resolved = m.resolve_options(opts)
    shape = tuple(problem.shape)
    if statistics is None:
        names, f = default_statistics(problem)
    else:
        if not isinstance(statistics, dict) or not statistics or not all(callable(g) for g in statistics.values()):
            raise ValueError("sbc: statistics must be a non-empty dict {name: f(x, problem) -> scalar}")
        names, fs = list(statistics), tuple(statistics.values())

        def f(x, prob):
            return jnp.stack([jnp.asarray(g(x, prob)).reshape(()) for g in fs])

    k_prior, k_meas, k_post, k_jit = (jax.random.fold_in(key, i) for i in range(4))
    pn = int(prior_nfe or nfe)
    truths = prior_draws(denoiser, shape, key=k_prior, num_samples=int(num_replicates), nfe=pn,
                         sigma_max=sigma_max, grid=resolved.get("grid", "karras"),
                         sigma_end=resolved.get("sigma_end", common.DEFAULT_SIGMA_END))
    measure = jax.jit(jax.vmap(lambda k, x, p: p.sample_measurement(k, x), in_axes=(0, 0, None)))
    ys = measure(common.item_keys(k_meas, int(num_replicates)), truths, problem)
    ranks, bad = [], 0
    cost = {"prior_model_evals": pn * int(num_replicates), "total_model_evals": 0, "total_model_vjps": 0,
            "num_likelihood_grads": 0, "compile_seconds": 0.0, "sampling_seconds": 0.0}
    for r in range(int(num_replicates)):
        prob_r = _with_measurement(problem, ys[r])
        draws, info = inverse_sample(denoiser, prob_r, key=jax.random.fold_in(k_post, r), num_samples=int(num_draws),
                                     nfe=nfe, sigma_max=sigma_max, method=method, **opts)
        c = info["cost"]
        for name in ("total_model_evals", "total_model_vjps", "num_likelihood_grads"):
            cost[name] += int(c.get(name, 0))
        for name in ("compile_seconds", "sampling_seconds"):
            cost[name] += float(c.get(name, 0.0))
        bad += int(np.sum(~np.all(np.isfinite(np.asarray(draws).reshape(int(num_draws), -1)), axis=1)))
        s_draws = np.asarray(_statistics(f, draws, prob_r))
        s_true = np.asarray(_statistics(f, truths[r][None], prob_r))[0]
        ranks.append(np.sum(s_draws < s_true[None, :], axis=0))
    ranks = np.stack(ranks).astype(np.int64)
    out = rank_uniformity(ranks, int(num_draws), key=k_jit, alpha=alpha, names=names)
    out.update(ranks=ranks, truths=np.asarray(truths), num_nonfinite_draws=bad, method=method,
               options={k: v for k, v in opts.items()}, cost=cost)
    return out
