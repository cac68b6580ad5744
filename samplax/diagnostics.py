"""MCMC convergence diagnostics: R-hat, effective sample size, Monte Carlo standard error.

Definitions follow

  Vehtari, Gelman, Simpson, Carpenter, Buerkner (2021), "Rank-normalization,
  folding, and localization: an improved R-hat for assessing convergence of
  MCMC", Bayesian Analysis 16(2) (arXiv:1903.08008),

computed the way ArviZ 0.23 computes them (``az.rhat(method="rank")``,
``az.ess(method="bulk" | "tail" | "mean" | "sd")``, ``az.mcse(method="mean" |
"sd")``, ``az.bfmi``), so that numbers agree with ArviZ to floating-point
round-off. The tests check this agreement.

Conventions
-----------
* ``x`` has shape ``[chains, draws]`` (one scalar quantity) or
  ``[chains, draws, *event]`` (one diagnostic per quantity; outputs then have
  shape ``event``). A single chain is a valid input: the split diagnostics cut
  it into two halves. 1-D input is rejected rather than guessed at.
* At least 4 draws per chain are required (``ValueError`` otherwise).
* A quantity containing NaN or +-inf gets NaN for every diagnostic.
* A constant quantity (range below float64 resolution) gets ESS equal to the
  number of (split) draws and R-hat NaN -- exactly what ArviZ returns. Its
  MCSE of the mean is 0 and its MCSE of the sd is NaN.
* Everything is float64 numpy, vectorised over quantities; no warnings are
  emitted for degenerate (constant) quantities.

Known, deliberate difference from ArviZ: for a single chain ArviZ returns NaN
for R-hat (it asks for at least two chains); here the split R-hat of the two
halves is returned, as the R package ``posterior`` does.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.fft
import scipy.special
import scipy.stats

__all__ = [
    "autocorrelation",
    "autocovariance",
    "ebfmi",
    "ess_bulk",
    "ess_mean",
    "ess_sd",
    "ess_tail",
    "mcse_mean",
    "mcse_sd",
    "rhat",
    "split_rhat",
    "summarize",
]

_MIN_DRAWS = 4


# --------------------------------------------------------------------------
# input handling


def _as_chains(x, name: str = "x") -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate and reshape ``x`` to ``[chains, draws, K]`` float64; return it and the event shape."""
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"`{name}` must be a real numeric array, got dtype {arr.dtype}.")
    if arr.ndim < 2:
        raise ValueError(
            f"`{name}` must have shape [chains, draws] or [chains, draws, *event]; got shape "
            f"{arr.shape}. For a single chain pass x[None]."
        )
    chains, draws = arr.shape[:2]
    if chains < 1:
        raise ValueError(f"`{name}` must contain at least one chain; got shape {arr.shape}.")
    if draws < _MIN_DRAWS:
        raise ValueError(
            f"`{name}` must have at least {_MIN_DRAWS} draws per chain (axis 1); got shape "
            f"{arr.shape}."
        )
    event = arr.shape[2:]
    arr = arr.astype(np.float64).reshape(chains, draws, -1)
    return arr, event


def _mask_bad(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace non-finite quantities by zeros (so no warnings fire) and return the bad mask [K]."""
    bad = ~np.all(np.isfinite(arr), axis=(0, 1))
    if np.any(bad):
        arr = np.where(bad[None, None, :], 0.0, arr)
    return arr, bad


def _finish(values: np.ndarray, bad: np.ndarray, event: tuple[int, ...]) -> np.ndarray:
    values = np.where(bad, np.nan, values)
    return values.reshape(event) if event else values.reshape(())[()]


def _split_chains(arr: np.ndarray) -> np.ndarray:
    """``[m, n, K] -> [2m, n//2, K]``: first and last halves of each chain (middle draw dropped when n is odd)."""
    half = arr.shape[1] // 2
    return np.concatenate([arr[:, :half], arr[:, arr.shape[1] - half:]], axis=0)


def _z_scale(arr: np.ndarray) -> np.ndarray:
    """Rank-normalise each quantity over all chains and draws.

    ``z = Phi^{-1}((r - 3/8) / (S - 3/4 + 1))`` with ``r`` the average rank
    (ties share their mean rank) and ``S`` the number of draws; the offset 3/8
    is Blom's (1958).
    """
    m, n, k = arr.shape
    size = m * n
    ranks = scipy.stats.rankdata(arr.reshape(size, k), method="average", axis=0)
    return scipy.special.ndtri((ranks - 0.375) / (size - 0.75 + 1.0)).reshape(m, n, k)


def _quantile_type7(arr: np.ndarray, prob: float) -> np.ndarray:
    """Hyndman-Fan type-7 quantile per quantity over all draws: ``[m, n, K] -> [K]``.

    With ``N`` sorted values ``s_1..s_N``: ``h = N p + (1 - p)``, ``j = floor(h)``
    clipped to ``[1, N-1]``, ``g = clip(h - j, 0, 1)``, ``q = (1-g) s_j + g s_{j+1}``
    (the form used by R and by ArviZ).
    """
    flat = np.sort(arr.reshape(-1, arr.shape[-1]), axis=0)
    size = flat.shape[0]
    aleph = size * prob + (1.0 + prob * (-1.0))
    j = int(np.floor(np.clip(aleph, 1, size - 1)))
    gamma = float(np.clip(aleph - j, 0.0, 1.0))
    return (1.0 - gamma) * flat[j - 1] + gamma * flat[j]


# --------------------------------------------------------------------------
# autocorrelation


def _autocov_draws(arr: np.ndarray) -> np.ndarray:
    """Biased autocovariance along axis 1 (draws) of ``[m, n, K]`` via zero-padded FFT."""
    n = arr.shape[1]
    centred = arr - arr.mean(axis=1, keepdims=True)
    nfft = scipy.fft.next_fast_len(2 * n)
    spec = np.fft.rfft(centred, n=nfft, axis=1)
    acov = np.fft.irfft(spec * np.conjugate(spec), n=nfft, axis=1)[:, :n]
    return acov / n


def autocovariance(x) -> np.ndarray:
    """Per-chain autocovariance at every lag, computed by FFT.

    ``gamma_t = (1/n) sum_{s=0}^{n-1-t} (x_s - xbar)(x_{s+t} - xbar)`` for
    ``t = 0..n-1`` (the biased estimator; Geyer 1992). The series is zero-padded
    to at least ``2n`` so the circular FFT correlation equals the linear one.

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.

    Returns:
      Array of the same shape as ``x``; lag is axis 1.
    """
    arr, event = _as_chains(x)
    out = _autocov_draws(arr)
    return out.reshape(out.shape[:2] + event)


def autocorrelation(x) -> np.ndarray:
    """Per-chain autocorrelation ``rho_t = gamma_t / gamma_0`` at every lag, via FFT.

    See :func:`autocovariance` for ``gamma_t``. Matches ``arviz.autocorr``
    applied along the draw axis. A constant chain gives NaN (0/0).

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.

    Returns:
      Array of the same shape as ``x``; lag is axis 1, ``rho_0 = 1``.
    """
    arr, event = _as_chains(x)
    acov = _autocov_draws(arr)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = acov / acov[:, :1]
    return out.reshape(out.shape[:2] + event)


# --------------------------------------------------------------------------
# core estimators on [m, n, K] arrays


def _rhat_core(arr: np.ndarray) -> np.ndarray:
    """Classic potential scale reduction of ``[m, n, K]`` chains (Gelman & Rubin 1992).

    ``B = n var_j(mean_j)``, ``W = mean_j var_j`` (both with ddof 1),
    ``R = sqrt(((n-1)/n W + B/n) / W) = sqrt((B/W + n - 1)/n)``.
    """
    n = arr.shape[1]
    chain_mean = arr.mean(axis=1)
    within = arr.var(axis=1, ddof=1).mean(axis=0)
    between = n * chain_mean.var(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((between / within + n - 1.0) / n)


def _ess_core(arr: np.ndarray) -> np.ndarray:
    """Multi-chain ESS of ``[m, n, K]`` chains with Geyer's initial monotone sequence.

    Following Vehtari et al. (2021, sec. 3.2) as implemented in ArviZ:
    ``W = mean_j gamma_{j,0} n/(n-1)``, ``var+ = (n-1)/n W + var_j(mean_j)``
    (the between-chain term only when m > 1), ``rho_0 = 1``,
    ``rho_t = 1 - (W - mean_j gamma_{j,t}) / var+``. Pair sums
    ``P_k = rho_{2k} + rho_{2k+1}`` are accumulated while positive (initial
    positive sequence, capped at lag n-3), replaced by their running minimum
    (initial monotone sequence), and ``tau = -1 + 2 sum_{k<M} P_k + rho_{2M}^+``
    where ``M`` is the last pair examined and ``rho_{2M}^+`` its even term
    when it is positive (or was accepted). ``tau`` is floored at
    ``1/log10(m n)`` and ``ESS = m n / tau``. A constant quantity (range below
    float64 resolution) gets ``ESS = m n``.
    """
    m, n, _ = arr.shape
    size = m * n
    const = (arr.max(axis=(0, 1)) - arr.min(axis=(0, 1))) < np.finfo(np.float64).resolution
    with np.errstate(invalid="ignore", divide="ignore"):
        acov = _autocov_draws(arr)
        mean_var = acov[:, 0].mean(axis=0) * n / (n - 1.0)
        var_plus = mean_var * (n - 1.0) / n
        if m > 1:
            var_plus = var_plus + arr.mean(axis=1).var(axis=0, ddof=1)
        rho = 1.0 - (mean_var[None] - acov.mean(axis=0)) / var_plus[None]  # [n, K]
    rho[0] = 1.0

    last_pair = max((n - 3) // 2, 0)  # pairs k = 1..last_pair are examined
    pairs = rho[0 : 2 * last_pair + 1 : 2] + rho[1 : 2 * last_pair + 2 : 2]  # [last_pair+1, K]
    nonpos = pairs <= 0.0
    first_nonpos = np.where(nonpos.any(axis=0), nonpos.argmax(axis=0), last_pair + 1)
    stop = np.minimum(first_nonpos, last_pair)  # M
    cols = np.arange(arr.shape[2])
    monotone = np.minimum.accumulate(pairs, axis=0)
    csum = np.concatenate([np.zeros((1, arr.shape[2])), np.cumsum(monotone, axis=0)], axis=0)
    head = csum[stop, cols]  # sum_{k < M} of the monotone pair sums
    even = rho[2 * stop, cols]
    accepted = (stop == 0) | (pairs[stop, cols] >= 0.0)
    tail = np.where((even > 0.0) | accepted, even, 0.0)
    tau = -1.0 + 2.0 * head + tail
    tau = np.maximum(tau, 1.0 / np.log10(size))
    with np.errstate(invalid="ignore", divide="ignore"):
        ess = size / tau
    return np.where(const, float(size), ess)


def _ess_split_core(arr: np.ndarray) -> np.ndarray:
    return _ess_core(_split_chains(arr))


def _ess_bulk_core(arr: np.ndarray) -> np.ndarray:
    return _ess_core(_z_scale(_split_chains(arr)))


def _ess_tail_core(arr: np.ndarray, prob: tuple[float, float]) -> np.ndarray:
    out = None
    for p in prob:
        q = _quantile_type7(arr, p)
        indicator = (arr <= q[None, None, :]).astype(np.float64)
        e = _ess_split_core(indicator)
        out = e if out is None else np.minimum(out, e)
    return out


def _rhat_rank_core(arr: np.ndarray) -> np.ndarray:
    split = _split_chains(arr)
    bulk = _rhat_core(_z_scale(split))
    med = np.median(split.reshape(-1, split.shape[-1]), axis=0)
    tail = _rhat_core(_z_scale(np.abs(split - med[None, None, :])))
    # NaN-propagating max (a constant quantity gives NaN, as in ArviZ)
    return np.where(np.isnan(bulk) | np.isnan(tail), np.nan, np.maximum(bulk, tail))


def _mcse_mean_core(arr: np.ndarray) -> np.ndarray:
    sd = arr.reshape(-1, arr.shape[-1]).std(axis=0, ddof=1)
    return sd / np.sqrt(_ess_split_core(arr))


def _mcse_sd_core(arr: np.ndarray) -> np.ndarray:
    flat = arr.reshape(-1, arr.shape[-1])
    sq = (arr - flat.mean(axis=0)) ** 2
    ess = _ess_split_core(sq)
    sq_flat = sq.reshape(-1, arr.shape[-1])
    evar = sq_flat.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        varvar = ((sq_flat**2).mean(axis=0) - evar**2) / ess
        return np.sqrt(varvar / evar / 4.0)


# --------------------------------------------------------------------------
# public API


def split_rhat(x) -> np.ndarray:
    """Classic split R-hat (Gelman et al. 2013, BDA3 sec. 11.4).

    Each chain is cut into halves (middle draw dropped for odd length), and
    ``R = sqrt((B/W + n - 1)/n)`` is computed on the ``2m`` half-chains with
    ``B = n var(chain means)``, ``W = mean(chain variances)`` (ddof 1), ``n``
    the half-chain length. Equals ``az.rhat(x, method="split")`` for m >= 2.

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.

    Returns:
      Scalar, or array of shape ``event``. NaN for constant quantities.
    """
    arr, event = _as_chains(x)
    arr, bad = _mask_bad(arr)
    return _finish(_rhat_core(_split_chains(arr)), bad, event)


def rhat(x) -> np.ndarray:
    """Rank-normalized split R-hat (Vehtari et al. 2021, eqs. 4-5 and sec. 4.2).

    ``max(R_bulk, R_tail)`` where ``R_bulk`` is the split R-hat of the
    rank-normalised split chains and ``R_tail`` the split R-hat of the
    rank-normalised folded draws ``|x - median(x)|``. Ranks use Blom's offset:
    ``z = Phi^{-1}((r - 3/8)/(S + 1/4))``. Equals ``az.rhat(x, method="rank")``
    for two or more chains (ArviZ returns NaN for one chain; here the two
    halves of the single chain are compared).

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.

    Returns:
      Scalar, or array of shape ``event``. NaN for constant quantities.
    """
    arr, event = _as_chains(x)
    arr, bad = _mask_bad(arr)
    return _finish(_rhat_rank_core(arr), bad, event)


def ess_bulk(x) -> np.ndarray:
    """Bulk effective sample size (Vehtari et al. 2021, sec. 4.1).

    Multi-chain ESS (Geyer initial monotone sequence, see ``_ess_core``) of the
    rank-normalised split chains. Equals ``az.ess(x, method="bulk")``.

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.
    """
    arr, event = _as_chains(x)
    arr, bad = _mask_bad(arr)
    return _finish(_ess_bulk_core(arr), bad, event)


def ess_tail(x, prob: Sequence[float] = (0.05, 0.95)) -> np.ndarray:
    """Tail effective sample size (Vehtari et al. 2021, sec. 4.3).

    ``min(ESS(I[x <= q_{0.05}]), ESS(I[x <= q_{0.95}]))``: the split-chain ESS
    of the indicator of lying below the 5% and the 95% quantile (type-7
    quantiles over all draws). Equals ``az.ess(x, method="tail")``.

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.
      prob: the two quantile levels, default ``(0.05, 0.95)``.
    """
    prob = tuple(float(p) for p in np.atleast_1d(prob))
    if len(prob) != 2 or not all(0.0 < p < 1.0 for p in prob):
        raise ValueError(f"`prob` must be two probabilities in (0, 1); got {prob}.")
    arr, event = _as_chains(x)
    arr, bad = _mask_bad(arr)
    return _finish(_ess_tail_core(arr, prob), bad, event)


def ess_mean(x) -> np.ndarray:
    """Effective sample size for the mean, without rank normalisation.

    Multi-chain ESS of the split chains of ``x`` itself (Vehtari et al. 2021,
    sec. 3.2; Geyer 1992). Equals ``az.ess(x, method="mean")``. Use this ESS
    for MCSE of a mean; it assumes a finite variance.

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.
    """
    arr, event = _as_chains(x)
    arr, bad = _mask_bad(arr)
    return _finish(_ess_split_core(arr), bad, event)


def ess_sd(x) -> np.ndarray:
    """Effective sample size for the standard deviation.

    Split-chain ESS of the squared deviations ``(x - mean(x))^2``, mean over
    all draws. Equals ``az.ess(x, method="sd")``.

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.
    """
    arr, event = _as_chains(x)
    arr, bad = _mask_bad(arr)
    mean = arr.reshape(-1, arr.shape[-1]).mean(axis=0)
    return _finish(_ess_split_core((arr - mean) ** 2), bad, event)


def mcse_mean(x) -> np.ndarray:
    """Monte Carlo standard error of the posterior mean.

    ``sd(x) / sqrt(ESS_mean(x))`` with ``sd`` over all draws (ddof 1) and
    ``ESS_mean`` from :func:`ess_mean` (Vehtari et al. 2021, sec. 3.2).
    Equals ``az.mcse(x, method="mean")``.

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.
    """
    arr, event = _as_chains(x)
    arr, bad = _mask_bad(arr)
    return _finish(_mcse_mean_core(arr), bad, event)


def mcse_sd(x) -> np.ndarray:
    """Monte Carlo standard error of the posterior standard deviation.

    With ``s = (x - mean x)^2``, ``E = mean(s)``, ``Var(E) ~ (mean(s^2) - E^2)
    / ESS_mean(s)`` and the delta method ``sd = sqrt(E)``:
    ``MCSE_sd = sqrt(Var(E) / (4 E))``. Equals ``az.mcse(x, method="sd")``
    (ArviZ 0.23 definition).

    Args:
      x: ``[chains, draws]`` or ``[chains, draws, *event]``.
    """
    arr, event = _as_chains(x)
    arr, bad = _mask_bad(arr)
    return _finish(_mcse_sd_core(arr), bad, event)


def ebfmi(energy) -> np.ndarray:
    """Energy Bayesian fraction of missing information, one value per chain.

    ``E-BFMI = mean_t (E_t - E_{t-1})^2 / var(E)`` (variance with ddof 1), from
    Betancourt (2016), "Diagnosing suboptimal cotangent disintegrations in
    Hamiltonian Monte Carlo", arXiv:1604.00695. Values below about 0.3 flag
    poor momentum resampling. Equals ``az.bfmi(energy)``.

    Args:
      energy: Hamiltonian energy at each draw, ``[chains, draws]``.

    Returns:
      ``[chains]`` array (NaN for a constant chain).
    """
    e = np.asarray(energy, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"`energy` must have shape [chains, draws]; got shape {e.shape}.")
    if e.shape[1] < 2:
        raise ValueError(f"`energy` needs at least 2 draws per chain; got shape {e.shape}.")
    num = np.mean(np.diff(e, axis=1) ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / np.var(e, axis=1, ddof=1)


def summarize(samples, names: Sequence[str] | None = None) -> dict:
    """Posterior summary table for ``k`` scalar quantities.

    For each quantity: ``mean``, ``sd`` (ddof 1, all draws), ``mcse_mean``,
    ``mcse_sd``, ``ess_bulk``, ``ess_tail``, ``rhat`` (rank-normalised split
    R-hat) as defined above, and type-7 quantiles ``q5``, ``q50``, ``q95``.
    Same numbers as the corresponding columns of ``az.summary``.

    Args:
      samples: ``[chains, draws, k]``.
      names: optional ``k`` names, returned under ``"names"``.

    Returns:
      dict of float64 arrays of shape ``[k]`` (plus ``"names"`` if given).
    """
    arr0 = np.asarray(samples)
    if arr0.ndim != 3:
        raise ValueError(
            f"`samples` must have shape [chains, draws, k]; got shape {arr0.shape}."
        )
    arr, _ = _as_chains(arr0, name="samples")
    k = arr.shape[2]
    if names is not None:
        names = list(names)
        if len(names) != k:
            raise ValueError(f"`names` has {len(names)} entries but `samples` has k={k} quantities.")
    arr, bad = _mask_bad(arr)
    flat = arr.reshape(-1, k)
    out = {
        "mean": flat.mean(axis=0),
        "sd": flat.std(axis=0, ddof=1),
        "mcse_mean": _mcse_mean_core(arr),
        "mcse_sd": _mcse_sd_core(arr),
        "ess_bulk": _ess_bulk_core(arr),
        "ess_tail": _ess_tail_core(arr, (0.05, 0.95)),
        "rhat": _rhat_rank_core(arr),
        "q5": _quantile_type7(arr, 0.05),
        "q50": _quantile_type7(arr, 0.5),
        "q95": _quantile_type7(arr, 0.95),
    }
    out = {name: np.where(bad, np.nan, v) for name, v in out.items()}
    if names is not None:
        out["names"] = names
    return out
