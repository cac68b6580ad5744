"""Mass-matrix estimates from draws AND gradients (Fisher-divergence adaptation).

For a Gaussian ``N(m, S)`` the score is ``g(x) = -S^{-1}(x - m)``, so
``Cov[g] = S^{-1}`` and the covariance can be read off draws and gradients
together.  The inverse mass matrix ``C`` that minimises the Fisher divergence
between the target and the Gaussian that ``C`` describes, among diagonal ``C``
(Tran & Kleppe 2024, "Tuning diagonal scale matrices for HMC"; Seyboldt's
nutpie), is

    C_ii = sqrt(Var[x_i] / Var[g_i]).

For a diagonal Gaussian ``x_i = m_i + s_i z_i`` and ``g_i = -z_i / s_i`` use the
same ``z``, so the *sample* estimate equals ``s_i^2`` exactly for any number of
draws.  For correlated targets it sits between the marginal variance and the
inverse of the diagonal precision (better than either for HMC).

Low rank + diagonal (nutpie's low-rank modification): with the diagonal
``D = sqrt(Var x / Var g)`` and ``s = sqrt(D)``, rescale ``x~ = x / s``,
``g~ = g * s``; the full-matrix Fisher-optimal covariance ``Sigma`` solves
``Sigma Cov[g~] Sigma = Cov[x~]``, i.e. the SPD geometric mean

    Sigma = A^{1/2} (A^{1/2} B A^{1/2})^{-1/2} A^{1/2},   A = Cov[x~] + gamma I,  B = Cov[g~] + gamma I.

Keep the eigen-directions ``u_k`` of ``Sigma`` whose eigenvalues ``l_k`` are
furthest from 1 (at most ``rank``, only those with ``l_k > cutoff`` or
``l_k < 1/cutoff``) and set the rest to 1:

    C = diag(s) (I + U diag(l - 1) U^T) diag(s).

Here the (co)variances come from batched Welford accumulators, so ``Sigma`` is
computed on the full ``d x d`` matrices (exactly nutpie's estimate when the
window holds more draws than dimensions; nutpie instead projects on the span of
the draws and gradients when it holds fewer).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.adaptation.mass_matrix import WelfordState, welford_init, welford_update
from samplax.adaptation.step_size import DualAveragingState, da_init, da_update
from samplax.mcmc.metrics import LowRankMetric, low_rank_to_dense
from samplax.adaptation.windowed import Adapter, MetricEstimator, identity_metric, windowed_adapter

#: bounds of a diagonal inverse-mass entry (guards against a zero gradient variance)
IMM_MIN, IMM_MAX = 1e-20, 1e20


class FisherState(NamedTuple):
    """Running moments of draws and of gradients (Welford; diagonal or dense)."""

    draws: WelfordState
    grads: WelfordState


def fisher_init(dim: int, dense: bool = False, dtype=float) -> FisherState:
    """Empty accumulators of dimension ``dim`` (``dense``: keep full ``d x d`` sums)."""
    return FisherState(welford_init(dim, dense, dtype), welford_init(dim, dense, dtype))


def fisher_update(state: FisherState, positions, grads) -> FisherState:
    """Merge a batch of positions ``[b, d]`` and their log-density gradients ``[b, d]``."""
    return FisherState(welford_update(state.draws, positions), welford_update(state.grads, grads))


def _variances(state: FisherState):
    n = state.draws.count
    m2x, m2g = state.draws.m2, state.grads.m2
    if m2x.ndim == 2:
        m2x, m2g = jnp.diagonal(m2x), jnp.diagonal(m2g)
    den = jnp.maximum(n - 1.0, 1.0)
    return m2x / den, m2g / den


def fisher_diagonal(state: FisherState, fallback=None):
    """Diagonal inverse mass matrix ``sqrt(Var[x] / Var[g])`` (Tran & Kleppe 2024; nutpie).

    Entries where either variance is zero or not finite (fewer than 2 draws, a
    parameter that never moved) take ``fallback`` (default 1); the result is
    clipped to ``[1e-20, 1e20]``.
    """
    vx, vg = _variances(state)
    ok = (vx > 0) & (vg > 0) & jnp.isfinite(vx) & jnp.isfinite(vg)
    est = jnp.sqrt(jnp.where(ok, vx, 1.0) / jnp.where(ok, vg, 1.0))
    fb = jnp.ones_like(vx) if fallback is None else jnp.broadcast_to(fallback, vx.shape)
    return jnp.clip(jnp.where(ok, est, fb), IMM_MIN, IMM_MAX)


def _sym_fn(a, fn):
    lam, u = jnp.linalg.eigh(0.5 * (a + a.T))
    return (u * fn(jnp.maximum(lam, 1e-300))) @ u.T


def spd_geometric_mean_inverse(a, b):
    """``Sigma`` with ``Sigma B Sigma = A`` for SPD ``A``, ``B``: ``A^{1/2} (A^{1/2} B A^{1/2})^{-1/2} A^{1/2}``.

    This is the SPD geometric mean ``A # B^{-1}`` (Bhatia, "Positive definite
    matrices", ch. 4); for a Gaussian, ``A = Cov[x]`` and ``B = Cov[grad] = Cov[x]^{-1}``
    give ``Sigma = Cov[x]``.
    """
    a_half = _sym_fn(a, jnp.sqrt)
    inner = _sym_fn(a_half @ b @ a_half, lambda l: 1.0 / jnp.sqrt(l))
    out = a_half @ inner @ a_half
    return 0.5 * (out + out.T)


def fisher_low_rank(state: FisherState, rank: int, cutoff: float = 2.0, gamma: float = 1e-5) -> LowRankMetric:
    """nutpie's low-rank + diagonal estimate from dense accumulators (see the module docstring).

    ``rank`` (static) is the most eigen-directions kept; a direction is kept
    only if its eigenvalue ``l`` has ``max(l, 1/l) > cutoff``.  ``gamma``
    regularizes both rescaled covariances (``+ gamma I``).
    """
    if state.draws.m2.ndim != 2:
        raise ValueError("fisher_low_rank: needs dense accumulators (fisher_init(dim, dense=True))")
    d = state.draws.mean.shape[0]
    rank = int(rank)
    if not 1 <= rank <= d:
        raise ValueError(f"fisher_low_rank: rank must be in [1, {d}], got {rank}")
    n = state.draws.count
    den = jnp.maximum(n - 1.0, 1.0)
    cx, cg = state.draws.m2 / den, state.grads.m2 / den
    s = jnp.sqrt(fisher_diagonal(state))
    eye = jnp.eye(d, dtype=cx.dtype)
    a = cx / jnp.outer(s, s) + gamma * eye
    b = cg * jnp.outer(s, s) + gamma * eye
    sigma = spd_geometric_mean_inverse(a, b)
    lam, u = jnp.linalg.eigh(sigma)
    lam = jnp.maximum(lam, 1e-300)
    dist = jnp.abs(jnp.log(lam))
    order = jnp.argsort(-dist)[:rank]
    lam_k, u_k = lam[order], u[:, order]
    keep = dist[order] > jnp.log(cutoff)
    return LowRankMetric(s, u_k, jnp.where(keep, lam_k, 1.0))


def low_rank_inverse_mass_matrix(m: LowRankMetric):
    """The dense ``[d, d]`` inverse mass matrix of a :class:`LowRankMetric`."""
    return low_rank_to_dense(m)


def fisher_inverse_mass_matrix(state: FisherState, metric: str, rank: int = 0):
    """``"diag"``: :func:`fisher_diagonal`; ``"low_rank"``: dense matrix of :func:`fisher_low_rank`."""
    if metric == "diag":
        return fisher_diagonal(state)
    if metric == "low_rank":
        return low_rank_inverse_mass_matrix(fisher_low_rank(state, rank))
    raise ValueError(f"metric must be 'diag' or 'low_rank', got {metric!r}")


# ---------------------------------------------------------------------------
# Metric estimators for the Stan-windowed adapter (samplax.adaptation.windowed)


def fisher_diag_estimator() -> MetricEstimator:
    """:class:`~samplax.adaptation.windowed.MetricEstimator`: :func:`fisher_diagonal` of a window's draws and gradients.

    ``C_ii = sqrt(Var[x_i] / Var[g_i])`` (Tran & Kleppe 2024; nutpie's
    gradient-based mass matrix adaptation).
    """
    return MetricEstimator(
        init=lambda dim, dtype: fisher_init(dim, False, dtype),
        update=fisher_update,
        finalize=fisher_diagonal,
        initial=identity_metric(False),
        uses_grads=True,
    )


def fisher_low_rank_estimator(rank: int) -> MetricEstimator:
    """:class:`~samplax.adaptation.windowed.MetricEstimator`: nutpie's low-rank + diagonal metric (module docstring).

    Dense accumulators; ``finalize`` gives the dense ``[d, d]`` matrix of
    :func:`fisher_low_rank` (at most ``rank`` eigen-directions).
    """
    return MetricEstimator(
        init=lambda dim, dtype: fisher_init(dim, True, dtype),
        update=fisher_update,
        finalize=lambda state: low_rank_inverse_mass_matrix(fisher_low_rank(state, rank)),
        initial=identity_metric(True),
        uses_grads=True,
    )


def fisher_window_adapter(logdensity_fn: Callable, params_cls, dim: int, num_warmup: int, *,
                          target_accept: float, metric: str = "diag", rank: int = 10,
                          pooled: bool = False, initial_step_size=None, num_chains: int = 1) -> Adapter:
    """Stan's windowed warm-up (:mod:`samplax.adaptation.window`) with a draws+gradients metric.

    :func:`samplax.adaptation.windowed.windowed_adapter` (dual averaging
    throughout, slow windows of doubling length, restart of dual averaging at
    each window end) whose inverse mass matrix, at the end of each slow window,
    is the Fisher estimate of that window's draws and gradients:
    ``sqrt(Var x / Var g)`` (``metric="diag"``, :func:`fisher_diag_estimator`) or
    nutpie's low-rank + diagonal matrix (``metric="low_rank"``, at most ``rank``
    directions, :func:`fisher_low_rank_estimator`).  Kernel states must carry
    ``position`` and ``logdensity_grad``.
    """
    if metric == "diag":
        estimator = fisher_diag_estimator()
    elif metric == "low_rank":
        estimator = fisher_low_rank_estimator(min(int(rank), dim))
    else:
        raise ValueError(f"fisher_window_adapter: metric must be 'diag' or 'low_rank', got {metric!r}")
    return windowed_adapter(logdensity_fn, params_cls, dim, num_warmup, estimator, target_accept=target_accept,
                            pooled=pooled, initial_step_size=initial_step_size, find_initial_step_size=True,
                            num_chains=num_chains)


# ---------------------------------------------------------------------------
# Running (every-step) Fisher adaptation with two overlapping windows (nutpie-style)


class RunningFisherState(NamedTuple):
    """One chain's state of :func:`running_update`.

    ``foreground`` feeds the metric at every step; ``background`` accumulates
    since the last switch and replaces the foreground at the next one.
    ``phase``: 0 adapting everything, 1 step size only, 2 frozen (sampling).
    """

    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    da: DualAveragingState
    foreground: FisherState
    background: FisherState
    num_adapt: jax.Array  # adaptation steps taken in phase 0
    phase: jax.Array
    last_log_step_size_avg: jax.Array  # dual-averaging average just before the last switch


def running_init(step_size, position, grad) -> RunningFisherState:
    """Start from ``step_size``, a unit diagonal metric and the point ``(position, grad)``."""
    d = position.shape[0]
    f = fisher_update(fisher_init(d, False, position.dtype), position[None], grad[None])
    step_size = jnp.asarray(step_size, position.dtype)
    return RunningFisherState(step_size, jnp.ones((d,), position.dtype), da_init(step_size), f,
                              fisher_init(d, False, position.dtype), jnp.asarray(0, jnp.int32),
                              jnp.asarray(0, jnp.int32), jnp.log(step_size))


def switch_interval(num_adapt, early_interval: int = 10, late_interval: int = 50, early_steps: int = 100):
    """Window switch period: ``early_interval`` during the first ``early_steps`` steps, then ``late_interval``."""
    return jnp.where(num_adapt < early_steps, early_interval, late_interval)


def running_prepare(rs: RunningFisherState, phase, restart_terminal: bool = True) -> RunningFisherState:
    """Phase transitions, applied before the step that runs in ``phase``.

    Entering phase 1 (step size only) restarts dual averaging at the current
    step size (``restart_terminal``; otherwise dual averaging goes on); entering
    phase 2 (sampling) sets the step size to the dual averaging average
    ``exp(log e_bar)`` (Hoffman & Gelman 2014, Alg. 5).
    """
    phase = jnp.asarray(phase, jnp.int32)
    enter1 = (phase == 1) & (rs.phase == 0) & restart_terminal
    da = jax.tree.map(lambda a, b: jnp.where(enter1, a, b), da_init(rs.step_size), rs.da)
    enter2 = (phase == 2) & (rs.phase != 2)
    step_size = jnp.where(enter2 & (da.t > 0), jnp.exp(da.log_step_size_avg), rs.step_size)
    return rs._replace(da=da, step_size=step_size, phase=jnp.maximum(rs.phase, phase))


def running_update(rs: RunningFisherState, accept_stat, position, grad, target_accept,
                   min_count: int = 4, late_interval: int = 50, restart_until=None) -> RunningFisherState:
    """One adaptation step after a transition (no-op in phase 2).

    Phase 0: dual averaging on ``accept_stat``; ``(position, grad)`` enter both
    windows; the metric becomes ``sqrt(Var x / Var g)`` of the foreground window
    (once it holds ``min_count`` draws); every :func:`switch_interval` steps (10
    during the first 100 steps, then ``late_interval``) the
    background window becomes the foreground, a new background starts, and dual
    averaging restarts from the current step size (only at switches up to step
    ``restart_until`` when that is given: later, one dual averaging runs on, so
    that its gain keeps falling).  Phase 1: dual averaging only.
    """
    accept_stat = jnp.where(jnp.isfinite(accept_stat), accept_stat, 0.0)
    da = da_update(rs.da, accept_stat, target_accept)
    step_size = jnp.exp(da.log_step_size)
    fg = fisher_update(rs.foreground, position[None], grad[None])
    bg = fisher_update(rs.background, position[None], grad[None])
    imm = jnp.where(fg.draws.count >= min_count, fisher_diagonal(fg, fallback=rs.inverse_mass_matrix),
                    rs.inverse_mass_matrix)
    n = rs.num_adapt + 1
    switch = (n % switch_interval(rs.num_adapt, late_interval=late_interval)) == 0
    fg = jax.tree.map(lambda a, b: jnp.where(switch, a, b), bg, fg)
    bg = jax.tree.map(lambda a, b: jnp.where(switch, a, b), fisher_init(position.shape[0], False, position.dtype), bg)
    restart = switch if restart_until is None else switch & (n <= restart_until)
    da0 = jax.tree.map(lambda a, b: jnp.where(restart, a, b), da_init(step_size), da)
    last_avg = jnp.where(switch, da.log_step_size_avg, rs.last_log_step_size_avg)
    adapt_all = RunningFisherState(step_size, imm, da0, fg, bg, n, rs.phase, last_avg)
    step_only = rs._replace(step_size=step_size, da=da)
    out = jax.tree.map(lambda a, b: jnp.where(rs.phase == 0, a, b), adapt_all, step_only)
    return jax.tree.map(lambda a, b: jnp.where(rs.phase == 2, a, b), rs, out)
