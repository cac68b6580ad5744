"""Combining the ``log Z`` estimates of independent runs, with a standard error (host-side numpy).

- :func:`combine_log_Z`: unbiased-``Z`` methods (tempered SMC, AIS, population
  annealing): ``log mean_r Z_r``, the error from the between-run spread and the
  single-run Lee & Whiteley (2018) estimates;
- :func:`mean_log_Z`: methods whose runs give ``log Z`` estimates with a
  per-run variance (nested sampling, parallel tempering): the mean of the
  ``log Z_r`` and the error from the larger of the between-run and the mean
  within-run variance.
"""
from __future__ import annotations

import numpy as np


def combine_log_Z(log_z_runs: np.ndarray, lw_relvar: np.ndarray):
    """``log mean_r Z_r`` and its standard error from the between-run spread and the Lee–Whiteley estimates.

    With ``R`` runs, the relative variance of one run's ``Z_hat`` is estimated
    twice: by the spread ``var_r(Z_r / Z_bar)`` (unbiased but noisy: ``R - 1``
    degrees of freedom) and by the mean of the single-run Lee & Whiteley (2018)
    estimates (one per run, from the genealogy; it can under-cover when the
    particles miss a region altogether).  The larger one is used:
    ``se = sqrt(max(v_between, mean_r V_r) / R)`` (delta method for ``log``).
    With one run only the Lee–Whiteley estimate exists. It is unbiased but can be
    negative (``1 - (N / (N - 1))^{R + 1} (1 - sum S^2)`` with many resampling
    events ``R``); a negative single-run estimate says nothing about the error,
    so the standard error is then NaN (not 0), with the reason in the
    description: run several independent runs.

    ``log_z_runs [R]``: the runs' ``log Z_r`` (non-finite runs count as ``Z_r = 0``);
    ``lw_relvar [R]``: their Lee–Whiteley relative variances
    (:func:`samplax.smc.base.lee_whiteley_relative_variance`).
    Returns ``(log_Z, se, description of the standard error)``; ``(nan, nan, "none")``
    when no run is finite.
    """
    r = log_z_runs.shape[0]
    finite = np.isfinite(log_z_runs)
    if not finite.any():
        return float("nan"), float("nan"), "none"
    m = np.max(log_z_runs[finite])
    z = np.exp(np.where(finite, log_z_runs - m, -np.inf))
    log_z = float(m + np.log(np.mean(z)))
    v_lw = float(np.mean(np.maximum(lw_relvar, 0.0)))
    if r > 1:
        ratio = z / np.mean(z)
        v_between = float(np.var(ratio, ddof=1))
        return (log_z, float(np.sqrt(max(v_between, v_lw) / r)),
                "sqrt(max(between-run relative variance, mean Lee & Whiteley (2018) estimate) / runs)")
    if float(np.mean(lw_relvar)) < -1e-12:  # without resampling it is >= 0 up to rounding
        return (log_z, float("nan"), "none: the Lee & Whiteley (2018) single-run estimate is negative (too many "
                "resampling events for one run); use several independent runs")
    return log_z, float(np.sqrt(v_lw)), "Lee & Whiteley (2018) single-run estimator"


def mean_log_Z(log_z_runs: np.ndarray, within_var_runs: np.ndarray):
    """Mean of the runs' ``log Z_r`` and its standard error ``sqrt(max(mean_r v_r, var_r log Z_r) / R)``.

    ``within_var_runs [R]``: each run's own estimate ``v_r`` of the variance of
    its ``log Z_r`` (nested sampling: :func:`samplax.smc.nested.log_Z_variance`;
    parallel tempering: the squared batch-means error).  The between-run
    variance (``R - 1`` degrees of freedom, 0 for one run) is noisy for few runs;
    the within-run one misses what a single run cannot see (a mode it never
    found, autocorrelation longer than a batch), so the larger is used.

    Returns ``(log_Z, se, v_between)`` as Python floats.
    """
    log_z_runs = np.asarray(log_z_runs, dtype=np.float64)
    num_runs = log_z_runs.shape[0]
    log_z = float(np.mean(log_z_runs))
    v_within = float(np.mean(within_var_runs))
    v_between = float(np.var(log_z_runs, ddof=1)) if num_runs > 1 else 0.0
    return log_z, float(np.sqrt(max(v_within, v_between) / num_runs)), v_between
