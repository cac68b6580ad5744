"""Host-side warm-up rules of ``method="auto"`` (:mod:`samplax.methods.auto`).

These work on numpy arrays of warm-up draws, gradients and per-chain adaptation
state copied out of the compiled chunk program, between chunks:

- :func:`pooled_low_rank`: nutpie's low-rank + diagonal Fisher metric from the
  draws and gradients of all chains pooled (Seyboldt's nutpie; Tran & Kleppe 2024
  for the diagonal);
- :func:`stuck_chains`: which chains to restart from a healthy chain's state;
- :func:`rhat_check`: the chains-agree statistic of the early-stopping rule;
- :func:`geometry_fallback_reason`: whether NUTS's draws show a geometry it cannot handle.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from samplax.adaptation.fisher import fisher_init, fisher_low_rank, fisher_update
from samplax.diagnostics import ebfmi, ess_bulk, rhat
from samplax.mcmc.metrics import LowRankMetric


def pooled_low_rank(xs, gs, max_rank: int, cutoff: float, gamma: float = 1e-5, rank=None):
    """nutpie's low-rank + diagonal Fisher metric from pooled warm-up draws ``xs`` and gradients ``gs`` ``[n, d]``.

    Diagonal ``D = sqrt(Var x / Var g)`` and ``s = sqrt(D)``; with ``x~ = x / s`` and
    ``g~ = g s`` the Fisher-optimal full covariance is the SPD geometric mean
    ``Sigma = A # B^{-1}`` of ``A = Cov[x~] + gamma I`` and ``B = Cov[g~] + gamma I``
    (exact for a Gaussian target from any ``d + 1`` draws, because ``g`` is then
    an affine function of ``x``).  The eigen-directions of ``Sigma`` with
    ``max(l, 1/l) > cutoff`` are kept (at most ``max_rank``, largest ``|log l|``
    first); the structural rank is their number rounded up to a power of two.
    ``rank`` fixes the structural rank instead (then the metric is returned
    even when no direction passes, with every ``l = 1``: the diagonal).
    Rows with a non-finite draw or gradient are dropped first.

    Returns ``(LowRankMetric or None, info)``; None when no direction passes the
    cutoff, when there are fewer than ``2 d`` finite draws, or when a moment is
    degenerate (``info["reason"]`` says which).  ``info`` also holds the number of
    draws used, the number of kept directions and the leading eigenvalues.
    """
    n, d = xs.shape
    ok = np.all(np.isfinite(xs), axis=1) & np.all(np.isfinite(gs), axis=1)
    xs, gs = xs[ok].astype(np.float64), gs[ok].astype(np.float64)
    info = {"num_draws": int(xs.shape[0]), "kept": 0, "eigenvalues": []}
    if xs.shape[0] < 2 * d:
        info["reason"] = "fewer than 2 d draws"
        return None, info
    if not (np.all(xs.var(axis=0, ddof=1) > 0) and np.all(gs.var(axis=0, ddof=1) > 0)):
        info["reason"] = "zero variance"
        return None, info
    dtype = jnp.result_type(float)
    state = fisher_update(fisher_init(d, True, dtype), jnp.asarray(xs, dtype), jnp.asarray(gs, dtype))
    # all d directions, furthest from 1 first; those within the cutoff already have l = 1
    full = fisher_low_rank(state, d, cutoff=cutoff, gamma=gamma)
    if not all(bool(jnp.all(jnp.isfinite(a))) for a in full):
        info["reason"] = "non-finite estimate"
        return None, info
    lam_sorted = np.sort(np.asarray(full.values))  # kept eigenvalues (l = 1 for the rest)
    kept = int(min(np.sum(np.asarray(full.values) != 1.0), max_rank, d))
    info.update(kept=kept, eigenvalues=lam_sorted[::-1][:8].tolist() + (["..."] if d > 8 else []))
    if kept == 0 and rank is None:
        info["reason"] = "no direction beyond the cutoff"
        return None, info
    k = int(rank) if rank is not None else int(min(d, max_rank, 1 << (kept - 1).bit_length()))
    kept = min(kept, k)
    info["kept"] = kept
    vals = jnp.where(jnp.arange(k) < kept, full.values[:k], 1.0)
    return LowRankMetric(full.scale, full.vectors[:, :k], vals), info


#: a log-density this far (or 1000 d, if more) below the best chain's marks a chain as hopeless even when most are
MAJORITY_GAP = 1e5


def stuck_chains(lp_last, step_size, d):
    """Chains to restart during warm-up: a log-density more than ``max(1000, 100 d)`` below the
    median of the better half of the chains, or a step size below ``1e-8`` times theirs.

    ``lp_last``: ``[C]`` the chains' latest log-densities; ``step_size``: ``[C]``
    their current step sizes; ``d``: the dimension.  Non-finite values count as
    stuck.  Returns the list of chain indices to restart (empty when there are
    none).  When more than half of the chains would be restarted there is no
    healthy majority to copy from; then only the hopeless ones are: those at least
    ``max(MAJORITY_GAP, 1000 d)`` below the best chain (a gap of ``exp(-1e5)`` in
    density, which no spurious high region of a sound model reaches within a few
    warm-up steps), and never all of them.

    Such a chain sits where the target has negligible mass (``exp(-1000)`` relative)
    or cannot move (e.g. a Stan-style initial point where the log-density is finite
    but -1e100).  At most half of the chains are restarted at one check; warm-up draws are
    discarded, so this changes no stationary distribution.
    """
    lp_last = np.asarray(lp_last, dtype=float)
    step_size = np.asarray(step_size, dtype=float)
    c = lp_last.shape[0]
    top = -(-c // 2)  # the reference is the median of the better half of the chains
    with np.errstate(all="ignore"):
        ref_lp = np.median(np.sort(np.where(np.isfinite(lp_last), lp_last, -np.inf))[-top:])
        ref_eps = np.median(np.sort(np.where(np.isfinite(step_size), step_size, 0.0))[-top:])
        bad = ~np.isfinite(lp_last) | (lp_last < ref_lp - max(1000.0, 100.0 * d))
        bad |= ~np.isfinite(step_size) | (step_size < 1e-8 * ref_eps)
    idx = [int(i) for i in np.flatnonzero(bad)]
    if 0 < len(idx) <= c // 2:
        return idx
    # No healthy majority. Restart the chains that are not merely worse but hopeless: a log-density at
    # least MAJORITY_GAP (scaled with d) below the best chain's, where none of the target's mass is
    # (arma11: three of four Stan-style starts at -1e7 .. -1e99, one chain at +200). At least one stays.
    with np.errstate(all="ignore"):
        best = np.max(np.where(np.isfinite(lp_last), lp_last, -np.inf))
        hopeless = ~np.isfinite(lp_last) | (lp_last < best - max(MAJORITY_GAP, 1000.0 * d))
    idx = [int(i) for i in np.flatnonzero(hopeless)]
    return idx if np.isfinite(best) and 0 < len(idx) < c else []


def rhat_check(pos, lp):
    """``max(R-hat of lp, median R-hat over coordinates)`` of warm-up draws ``pos [n, C, d]``, ``lp [n, C]``.

    Rank-normalized split R-hat (:func:`samplax.diagnostics.rhat`).  The median
    over coordinates, not the max, because the max over many coordinates of
    R-hats from short chunks exceeds 1.1 by chance.  Non-finite R-hats of
    coordinates are ignored; returns ``inf`` when the result is not finite.
    """
    with np.errstate(all="ignore"):
        r_lp = float(np.asarray(rhat(np.swapaxes(lp, 0, 1)[..., None]), dtype=float)[0])
        r_x = np.asarray(rhat(np.swapaxes(pos, 0, 1)), dtype=float)
    r_x = r_x[np.isfinite(r_x)]
    out = max(r_lp, float(np.median(r_x)) if r_x.size else float("inf"))
    return out if np.isfinite(out) else float("inf")


def geometry_fallback_reason(samples, energy, diverging, num_raises: int, max_raises: int, min_divergences: int,
                             divergence_rate: float, ebfmi_min: float, ess_per_chain_min: float):
    """Why NUTS's sampling draws cannot be trusted on this target's geometry, or None.

    ``samples [C, n, d]``, ``energy``/``diverging`` ``[C, n]``: the kept draws after the
    divergence rule of :mod:`samplax.methods.auto` raised ``target_accept`` ``num_raises`` times.
    Three signs, each of a step size that fits one region and not another:

    - E-BFMI below ``ebfmi_min`` in some chain (Betancourt 2016): the momentum
      resampling cannot move the energy across its range (Neal's funnel);
    - the divergence rule would fire again but ``target_accept`` was raised
      ``max_raises`` times already;
    - ``target_accept`` was raised, divergences remain, and the bulk ESS of some
      coordinate is below ``ess_per_chain_min`` per chain (the banana: the raised
      target leaves the curved tail under-explored).

    Slow mixing alone (low ESS without divergences, as on strongly correlated
    posteriors) is not a reason: a coordinate-wise sampler would be slower there.
    """
    c = np.asarray(samples).shape[0]
    with np.errstate(all="ignore"):
        e = np.asarray(ebfmi(np.asarray(energy)), dtype=float)
    if e.size and np.any(e[np.isfinite(e)] < ebfmi_min):
        return f"E-BFMI {float(np.nanmin(e)):.2f} < {ebfmi_min} (energy cannot cross its range: a funnel)"
    div = np.asarray(diverging, dtype=bool)
    n_div, n = int(div.sum()), int(div.size)
    if num_raises >= max_raises and n_div >= min_divergences and n_div >= divergence_rate * n:
        return (f"{n_div} divergent transitions of {n} after target_accept was raised {num_raises} times "
                f"(the step size that fits one region diverges in another)")
    if num_raises > 0 and n_div > 0:
        with np.errstate(all="ignore"):
            ess = np.asarray(ess_bulk(np.asarray(samples)), dtype=float)
        low = float(np.nanmin(ess)) if np.any(np.isfinite(ess)) else 0.0
        if low < ess_per_chain_min * c:
            return (f"{n_div} divergent transitions after target_accept was raised, and bulk ESS {low:.0f} < "
                    f"{ess_per_chain_min:g} per chain (a curved tail under-explored)")
    return None
