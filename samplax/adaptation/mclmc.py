"""Warm-up of microcanonical Langevin Monte Carlo: step size from the energy-error variance, trajectory
length and a diagonal preconditioner from the warm-up variances (Robnik et al. 2023)."""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplax.adaptation.mass_matrix import welford_covariance, welford_init, welford_update
from samplax.adaptation.windowed import Adapter


class MCLMCAdaptState(NamedTuple):
    """Per-chain MCLMC warm-up state (step size, L, preconditioner, decaying averages, Welford)."""

    step_size: jax.Array
    L: jax.Array
    scale: jax.Array
    x_avg: jax.Array
    w_avg: jax.Array
    welford: object


def mclmc_adapter(params_cls, dim: int, num_warmup: int, num_chains: int, *, desired_energy_var: float = 5e-4,
                  trust_in_estimate: float = 1.5, num_effective_samples: float = 150.0,
                  diagonal_preconditioning: bool = True, position_fn: Callable = lambda s: s.position) -> Adapter:
    """Per-chain MCLMC warm-up (after Robnik et al. 2023, sec. 4 / Alg. 1, stages 1-2).

    Step size: with the energy error ``dE`` of each step,
    ``xi = dE^2 / (d * desired_energy_var) + 1e-8``, weight
    ``w = exp(-0.5 (log(xi) / (6 * trust_in_estimate))^2)``, decaying averages
    ``X = r X + w xi / e^6``, ``W = r W + w`` with ``r = (N - 1)/(N + 1)``, ``N = num_effective_samples``;
    ``e = (X / W)^(-1/6)`` (so that ``E[dE^2] / d`` approaches ``desired_energy_var``);
    a non-finite ``dE`` halves ``e``.
    Schedule over ``W`` warm-up steps: ``[0, 0.3W)`` step size only (``L = sqrt(d)``,
    ``s = 1``); ``[0.3W, 0.6W)`` also a Welford estimate of the variances; at ``0.6W``
    the diagonal preconditioner becomes ``s = sqrt(var)`` (if enabled) and
    ``L = sqrt(sum var / s^2)``; ``[0.6W, W)`` step size re-tuned (averages reset) and
    variances re-estimated; at ``W`` ``L = sqrt(sum var / s^2)`` from the last stage.
    (Robnik et al.'s third stage, ``L`` from the effective sample size, is not implemented.)
    """
    w1 = int(0.3 * num_warmup)
    w2 = int(0.6 * num_warmup)
    decay = (num_effective_samples - 1.0) / (num_effective_samples + 1.0)
    n_w = jnp.asarray(num_warmup, jnp.int32)

    def init(keys, states):
        c = keys.shape[0]  # the batch of chains the driver passes (may be a block)
        pos = jax.vmap(position_fn)(states)
        dt = pos.dtype
        st = MCLMCAdaptState(jnp.full((c,), 0.25 * np.sqrt(dim), dt), jnp.full((c,), np.sqrt(dim), dt),
                             jnp.ones((c, dim), dt), jnp.zeros((c,), dt), jnp.zeros((c,), dt),
                             jax.vmap(lambda _: welford_init(dim, False, dt))(jnp.arange(c)))
        return st, jnp.zeros((c,), jnp.int32)

    def update_one(a: MCLMCAdaptState, i, x, de):
        eps = a.step_size
        ok = jnp.isfinite(de)
        xi = jnp.where(ok, de**2, 0.0) / (dim * desired_energy_var) + 1e-8
        w = jnp.exp(-0.5 * (jnp.log(xi) / (6.0 * trust_in_estimate)) ** 2)
        x_avg = jnp.where(ok, decay * a.x_avg + w * xi / eps**6, a.x_avg)
        w_avg = jnp.where(ok, decay * a.w_avg + w, a.w_avg)
        eps_new = jnp.where(ok, (x_avg / w_avg) ** (-1.0 / 6.0), 0.5 * eps)
        in_stats = (i >= w1) & (i < num_warmup)
        wf = jax.tree.map(lambda p, q: jnp.where(in_stats, p, q), welford_update(a.welford, x[None, :]), a.welford)
        var = welford_covariance(wf, regularize=False)
        var = jnp.where(var > 0, var, a.scale**2)
        end1 = i == w2 - 1
        end2 = i == num_warmup - 1
        scale = jnp.where(end1 & diagonal_preconditioning, jnp.sqrt(var), a.scale)
        L = jnp.where(end1 | end2, jnp.sqrt(jnp.sum(var / scale**2)), a.L)
        # restart the step-size averages (the metric changed) and the variance estimate at stage end 1
        x_avg = jnp.where(end1, 0.0, x_avg)
        w_avg = jnp.where(end1, 0.0, w_avg)
        wf = jax.tree.map(lambda p, q: jnp.where(end1, p, q), welford_init(dim, False, x.dtype), wf)
        new = MCLMCAdaptState(eps_new, L, scale, x_avg, w_avg, wf)
        return jax.tree.map(lambda p, q: jnp.where(i < n_w, p, q), new, a)

    def update(astate, i, states, infos):
        x = jax.vmap(position_fn)(states)
        return jax.vmap(update_one, in_axes=(0, None, 0, 0))(astate, i, x, infos.energy_change)

    def params(astate):
        return params_cls(astate.step_size, astate.L, astate.scale)

    return Adapter(init, update, params)
