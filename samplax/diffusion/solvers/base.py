"""Solver protocol and the generic step loop.

Conventions (DESIGN.md, diffusion): the state is VE, ``x = x0 + sigma * eps``;
the denoiser ``D(x, sigma) = E[x0 | x]`` acts on one point and is vmapped here.
``lambda = -log sigma`` (half the log-SNR). A solver walks the nodes
``sigmas[0] > sigmas[1] > ... > sigmas[N]`` (``sigmas[N]`` may be 0) with

* ``init(x, sigmas, plan) -> carry``
* ``step(carry, i, ctx) -> (carry, num_evals)``: interval ``[sigmas[i], sigmas[i+1]]``,
  ``num_evals`` the number of denoiser calls it made (an int32 array),
* ``plan(budget, ends_at_zero) -> dict`` of per-step int arrays of length N (the
  number of steps that fit in ``budget`` denoiser calls; e.g. the order used at each
  step: warm-up and final steps),
* ``evals(plan, ends_at_zero) -> int`` the exact number of denoiser calls of that plan.

Randomness is batch-size invariant: the j-th normal draw of step i for sample b
comes from ``fold_in(fold_in(fold_in(key, b), i), j)``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np


class StepContext(NamedTuple):
    """What a solver step may use: the batched denoiser, the nodes, its plan and noise."""

    denoise: Callable  # denoise(x[B,...], sigma scalar) -> [B,...]
    sigmas: jax.Array
    plan: Dict[str, jax.Array]
    noise: Callable  # noise(i, j) -> [B,...] standard normals
    params: Dict[str, jax.Array]


class Solver(NamedTuple):
    """A diffusion ODE/SDE solver (see module docstring for the protocol).

    Attributes:
      name: registry name.
      order: theoretical order of convergence of the deterministic solver (0 for SDE samplers).
      stochastic: whether steps draw noise.
      evals_per_step: denoiser calls of one full step (away from sigma = 0).
      init, step, plan, evals: the protocol functions.
      params: array parameters (changing them never retraces).
      keeps_nonfinite: whether a step never turns a non-finite state finite again: every update is
        elementwise and uses the state ``x`` it starts from with a finite weight (``w * nan = nan``,
        ``w * inf`` is infinite or NaN, and adding anything keeps it non-finite). Then a sample whose
        state is finite after the last step was finite after every step, which lets
        :func:`samplax.diffusion.sample` skip the per-step non-finite check on finite runs
        (:func:`run_solver`'s ``track``). False for UniPC with its corrector, whose next update
        starts again from the previous corrected state.
      fitted_nodes: for a solver whose per-step parameters were fitted on one grid (``iia``, ``dc_solver``, ``usf``), the
        positive nodes of that grid (a tuple); :func:`samplax.diffusion.sample` refuses another grid. ``None``:
        any grid.
    """

    name: str
    order: int
    stochastic: bool
    init: Callable
    step: Callable
    plan: Callable
    evals: Callable
    params: Dict[str, Any] = {}
    keeps_nonfinite: bool = False
    fitted_nodes: Optional[tuple] = None


def lam(s):
    """``lambda = -log sigma`` (``+inf`` at sigma = 0)."""
    return -jnp.log(s)


def one_eval_per_step(order_max: int, warmup: bool = True):
    """Planning helpers for multistep solvers: 1 call per step, order ramps up, order 1 into sigma = 0."""

    def plan(budget, ends_at_zero):
        n = int(budget)
        orders = np.minimum(np.arange(n) + 1, order_max) if warmup else np.full(n, order_max)
        if ends_at_zero:
            orders[-1] = 1
        return {"order": orders.astype(np.int32)}

    def evals(plan_, ends_at_zero):
        return int(len(plan_["order"]))

    return plan, evals


class NonFinite(NamedTuple):
    """Where each sample of a batch first became non-finite: ``step`` ``[B]`` int32 (-1: never) and
    ``sigma`` ``[B]`` (the noise level at the start of that step; NaN: never).  Carried through the
    solver loop (no host callbacks); see :func:`mark_nonfinite`."""

    step: jax.Array
    sigma: jax.Array


def no_nonfinite(x: jax.Array) -> NonFinite:
    """The tracker of a batch ``x`` ``[B, ...]`` in which no sample has become non-finite yet."""
    b = x.shape[0]
    return NonFinite(jnp.full((b,), -1, jnp.int32), jnp.full((b,), jnp.nan, x.dtype))


def nonfinite_rows(x: jax.Array) -> jax.Array:
    """``[B]`` bool: which samples of a batch ``x`` ``[B, ...]`` have a non-finite value."""
    return ~jnp.all(jnp.isfinite(jnp.reshape(x, (x.shape[0], -1))), axis=1)


def mark_nonfinite(nf: NonFinite, x: jax.Array, step, sigma) -> NonFinite:
    """Record ``step`` and ``sigma`` for the samples of ``x`` that are non-finite now and were not before.

    A non-finite denoiser output reaches the state in the step that made it (every update
    uses the newest ``D`` with a nonzero weight, and ``0 * nan = nan``), so checking the state
    after each step locates the model's first non-finite output to the step.
    """
    new = nonfinite_rows(x) & (nf.step < 0)
    return NonFinite(jnp.where(new, jnp.asarray(step, jnp.int32), nf.step),
                     jnp.where(new, jnp.asarray(sigma, nf.sigma.dtype), nf.sigma))


def run_solver(solver: Solver, denoise_batched: Callable, x: jax.Array, sigmas: jax.Array,
               plan: Dict[str, np.ndarray], sample_keys: Optional[jax.Array], params: Dict[str, jax.Array],
               num_steps=None, start=0, nonfinite: Optional[NonFinite] = None, step_offset=0,
               after_step: Optional[Callable] = None, hook_state=None, track=True):
    """Run ``solver`` over the first ``num_steps`` intervals of ``sigmas``; returns ``(x, num_evals)``.

    ``sigmas`` and the plan arrays may be padded beyond ``num_steps + 1`` entries and
    ``num_steps`` may be a traced integer: the loop is a ``fori_loop`` with a dynamic
    trip count, so one compilation serves every step count that fits the padding.

    With a ``nonfinite`` tracker (:class:`NonFinite`) the loop also records, per sample, the first
    step (numbered ``step_offset + i``) after which the state is non-finite, and the sigma where
    that step started; it then returns ``(x, num_evals, nonfinite)``.

    That per-step check is a per-sample reduction over the whole state, which costs XLA on CPU several times
    an elementwise pass. A traced bool ``track`` switches it on and off at run time (one program for both), and
    the call then returns ``(x, num_evals, nonfinite, unsure)``: ``unsure`` ``[B]`` marks the samples that may
    have been non-finite after some step of an untracked run (all False when ``track`` is True), whose caller
    runs again with ``track=True`` to find the step (as :func:`samplax.diffusion.sample` does). For a solver
    that keeps non-finite states non-finite (:attr:`Solver.keeps_nonfinite`) these are the samples non-finite at
    the end (no per-step work); for the others, the samples non-finite after any step or at the start, from an
    elementwise running check ``w <- w + 0 * x`` (``0 * x`` is NaN exactly where ``x`` is not finite) carried
    through the loop.

    With ``after_step(i, x, sigma_next, hook_state) -> (x, num_evals, hook_state)`` (a corrector or a projection of
    :func:`samplax.diffusion.sample`; needs ``nonfinite``) the state's ``x`` is replaced after each step by the
    hook's output (the carry must be a NamedTuple with a field ``x``, or have a method ``with_x``), its evaluations are added, and the call
    returns ``(x, num_evals, nonfinite, hook_state)``.
    """
    n = int(sigmas.shape[0]) - 1 if num_steps is None else num_steps
    plan_j = {k: jnp.asarray(v) for k, v in plan.items()}

    def noise(i, j):
        if sample_keys is None:
            raise ValueError(f"solver {solver.name!r} needs randomness but no key was given")
        return jax.vmap(lambda k: jax.random.normal(
            jax.random.fold_in(jax.random.fold_in(k, i), j), x.shape[1:], dtype=x.dtype))(sample_keys)

    ctx = StepContext(denoise_batched, sigmas, plan_j, noise, params)
    carry = solver.init(x, sigmas, plan_j)

    if nonfinite is None:
        def body(i, state):
            c, ne = state
            c, k = solver.step(c, i, ctx)
            return c, ne + jnp.asarray(k, jnp.int32)

        carry, nevals = jax.lax.fori_loop(start, n, body, (carry, jnp.asarray(0, jnp.int32)))
        return carry.x, nevals

    if after_step is not None:
        def body_hooked(i, state):
            c, ne, nf, hs = state
            c, k = solver.step(c, i, ctx)
            x_new, k2, hs = after_step(i, c.x, sigmas[i + 1], hs)
            c = c.with_x(x_new) if hasattr(c, "with_x") else c._replace(x=x_new)
            ne = ne + jnp.asarray(k, jnp.int32) + jnp.asarray(k2, jnp.int32)
            return c, ne, mark_nonfinite(nf, x_new, step_offset + i, sigmas[i]), hs

        carry, nevals, nonfinite, hook_state = jax.lax.fori_loop(
            start, n, body_hooked, (carry, jnp.asarray(0, jnp.int32), nonfinite, hook_state))
        return carry.x, nevals, nonfinite, hook_state

    switched = not isinstance(track, (bool, np.bool_))
    running = switched and not solver.keeps_nonfinite  # the elementwise running check (see above)

    def mark(nf, c, i):
        if not switched:
            return mark_nonfinite(nf, c.x, step_offset + i, sigmas[i]) if track else nf
        # the carry (not c.x) goes into the conditional, behind a barrier: XLA then sees no other use of the new
        # state and keeps computing it inside the step's fused update
        return jax.lax.cond(track, lambda a: mark_nonfinite(a[0], a[1].x, step_offset + i, sigmas[i]),
                            lambda a: a[0], (nf, jax.lax.optimization_barrier(c)))

    def body_tracked(i, state):
        c, ne, nf, w = state
        c, k = solver.step(c, i, ctx)
        if running:
            w = w + 0 * c.x
        return c, ne + jnp.asarray(k, jnp.int32), mark(nf, c, i), w

    w0 = 0 * x if running else None
    carry, nevals, nonfinite, w = jax.lax.fori_loop(start, n, body_tracked,
                                                    (carry, jnp.asarray(0, jnp.int32), nonfinite, w0))
    if not switched:
        return carry.x, nevals, nonfinite
    unsure = ~track & nonfinite_rows(w if running else carry.x)
    return carry.x, nevals, nonfinite, unsure
