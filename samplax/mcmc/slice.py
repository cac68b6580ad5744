"""Hit-and-run slice sampling (MacKay 2003, sec. 29.7; Neal 2003) and the shared 1-D slice routines.

Auxiliary-variable view (Neal 2003, "Slice sampling", Ann. Statist. 31):
draw a level ``log y = log p(x) - E``, ``E ~ Exp(1)``, then move uniformly
on the slice ``{x' : log p(x') > log y}``.  Hit-and-run slice sampling moves
along a random line: with ``z = (x - c) / s`` (a fixed affine whitening, see
below), a direction ``u`` uniform on the unit sphere and the 1-D function
``t -> log p(c + s (z + t u))``:

1. *stepping out* (Neal 2003, Fig. 3, with the limit ``m`` on the number of
   steps): ``L = -U w``, ``R = L + w`` with ``U ~ U(0, 1)``; ``J = floor(m V)``,
   ``K = m - 1 - J``; while ``J > 0`` and ``L`` is inside the slice,
   ``L -= w``; likewise ``R += w`` up to ``K`` times;
2. *shrinkage* (Neal 2003, Fig. 5): draw ``t ~ U(L, R)``; accept if inside the
   slice, else replace ``L`` (``t < 0``) or ``R`` (``t > 0``) by ``t``; repeat.

Both steps leave the uniform distribution on the slice invariant, so the
kernel is exact (no Metropolis correction; acceptance rate 1).  The affine
whitening ``x = c + s z`` (``c``, ``s`` fixed after warm-up: the estimated mean
and standard deviations) changes nothing but efficiency.  Every evaluation of
``log p`` is counted; the count varies from step to step.

Numerical safeguards (structural): at most ``max_steps`` stepping-out steps per
side (exact: this is Neal's limited procedure) and at most ``max_shrink``
shrinkage proposals (after which the chain stays put; in floating point the
bracket collapses onto the current point long before, so this never fires in
practice and is reported as ``is_nonfinite`` if it does).  A NaN or ``+inf``
log-density at a proposal is treated as outside the slice and flagged in
``is_nonfinite``; ``-inf`` is a legitimate zero density.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.types import Kernel
from samplax.core.method import Option
from samplax.core.options import pos_float, pos_int
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel


class SliceState(NamedTuple):
    """Position and its log-density (no gradient: slice samplers are derivative free)."""

    position: jax.Array
    logdensity: jax.Array


class HitAndRunSliceParams(NamedTuple):
    """``center`` ``c`` [d], ``scale`` ``s`` [d] of the whitening ``x = c + s z``; ``width`` ``w`` in z units."""

    center: jax.Array
    scale: jax.Array
    width: jax.Array


class SliceInfo(NamedTuple):
    """Per-step information of a slice sampler.

    ``num_logdensity_evals`` counts every evaluation of the target log-density
    (stepping out plus shrinkage); ``num_steps_out`` and ``num_shrink`` split it.
    """

    acceptance_rate: jax.Array
    is_nonfinite: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array
    num_steps_out: jax.Array
    num_shrink: jax.Array


def _bad(lp):
    """NaN or +inf (a -inf log-density is a legitimate zero density)."""
    return jnp.isnan(lp) | (lp == jnp.inf)


def init(key, position, logdensity_fn: Callable) -> SliceState:
    """Evaluate the log-density at ``position`` (one evaluation)."""
    del key
    position = jnp.asarray(position)
    return SliceState(position, logdensity_fn(position))


def step_out(key, level_fn: Callable, t0, log_y, width, max_steps: int, lower=None):
    """Neal's (2003, Fig. 3) limited stepping-out around ``t0`` for the slice ``{t: level_fn(t) > log_y}``.

    Args:
      key: PRNG key.
      level_fn: ``t -> value`` compared with ``log_y`` (one log-density evaluation per call).
      t0: current point (inside the slice).
      log_y: slice level.
      width: initial interval width ``w``.
      max_steps: the limit ``m`` on the total number of steps (static).
      lower: optional hard lower bound of the domain (e.g. 0 for a radius):
        the interval is clipped there and stepping out stops there.

    Returns:
      ``(L, R, num_evals, bad)`` with ``bad`` true if a NaN/+inf was seen.
    """
    k_u, k_v = jax.random.split(key)
    dtype = jnp.result_type(t0)
    left = t0 - width * jax.random.uniform(k_u, dtype=dtype)
    right = left + width
    if lower is not None:
        left = jnp.maximum(left, lower)
    j = jnp.floor(max_steps * jax.random.uniform(k_v, dtype=dtype)).astype(jnp.int32)
    k = max_steps - 1 - j

    def can_go(edge, n_left, is_left):
        ok = n_left > 0
        if lower is not None and is_left:
            ok = ok & (edge > lower)
        return ok

    def expand(edge, n_left, sign, is_left):
        def cond(c):
            return c[2]

        def body(c):
            e, n, _, evals, bad = c
            v = level_fn(e)
            inside = (v > log_y) & ~_bad(v)
            e_new = e + sign * width
            if lower is not None and is_left:
                e_new = jnp.maximum(e_new, lower)
            e = jnp.where(inside, e_new, e)
            n = n - 1
            return e, n, inside & can_go(e, n, is_left), evals + 1, bad | _bad(v)

        zero = jnp.zeros((), jnp.int32)
        c0 = (edge, n_left, can_go(edge, n_left, is_left), zero, jnp.zeros((), bool))
        e, _, _, evals, bad = jax.lax.while_loop(cond, body, c0)
        return e, evals, bad

    left, n_l, bad_l = expand(left, j, -1.0, True)
    right, n_r, bad_r = expand(right, k, 1.0, False)
    return left, right, n_l + n_r, bad_l | bad_r


def shrink(key, propose_fn: Callable, t0, left, right, log_y, max_shrink: int, first=None):
    """Neal's (2003, Fig. 5) shrinkage: ``t ~ U(L, R)`` until inside the slice, shrinking towards ``t0``.

    ``propose_fn(t) -> (value, payload)``: ``value`` is compared with ``log_y``,
    ``payload`` (any pytree, e.g. the point and its log-density) is returned
    for the accepted ``t``.  Returns ``(t, payload, num_evals, accepted, bad)``;
    when ``max_shrink`` proposals all fail, ``accepted`` is False and the caller
    keeps the current point.  ``first``: optional first proposal (elliptical
    and geodesic shrinkage propose the bracket end ``theta`` first).
    """
    dtype = jnp.result_type(t0)

    def cond(c):
        return (~c[3]) & (c[4] < max_shrink)

    def body(c):
        lo, hi, _, _, n, bad, payload = c
        t = lo + (hi - lo) * jax.random.uniform(jax.random.fold_in(key, n), dtype=dtype)
        if first is not None:
            t = jnp.where(n == 0, first, t)
        v, pl = propose_fn(t)
        inside = (v > log_y) & ~_bad(v)
        lo = jnp.where(~inside & (t < t0), t, lo)
        hi = jnp.where(~inside & (t >= t0), t, hi)
        payload = jax.tree.map(lambda a, b: jnp.where(inside, a, b), pl, payload)
        return lo, hi, t, inside, n + 1, bad | _bad(v), payload

    payload0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(propose_fn, t0)[1])
    c0 = (left, right, t0, jnp.zeros((), bool), jnp.zeros((), jnp.int32), jnp.zeros((), bool), payload0)
    _, _, t, accepted, n, bad, payload = jax.lax.while_loop(cond, body, c0)
    return t, payload, n, accepted, bad


def random_direction(key, d: int, dtype):
    """A direction uniform on the unit sphere ``S^{d-1}`` (normalized Gaussian)."""
    u = jax.random.normal(key, (d,), dtype=dtype)
    return u / jnp.linalg.norm(u)


def build_kernel(logdensity_fn: Callable, max_steps: int = 32, max_shrink: int = 200) -> Callable:
    """``step(key, state, params) -> (state, info)`` for hit-and-run slice sampling (MacKay 2003).

    See the module docstring for the update rule.  ``max_steps`` (stepping-out
    limit ``m``) and ``max_shrink`` are structural.
    """

    def step(key, state: SliceState, params: HitAndRunSliceParams):
        s, w = params.scale, params.width
        x = state.position
        k_dir, k_lvl, k_out, k_shr = jax.random.split(key, 4)
        u = random_direction(k_dir, x.shape[0], x.dtype)
        v = s * u  # move along x + t s u, i.e. z + t u in whitened coordinates
        log_y = state.logdensity - jax.random.exponential(k_lvl, dtype=x.dtype)
        zero = jnp.zeros((), x.dtype)

        def level(t):
            return logdensity_fn(x + t * v)

        def propose(t):
            y = x + t * v
            lp = logdensity_fn(y)
            return lp, SliceState(y, lp)

        left, right, n_out, bad_out = step_out(k_out, level, zero, log_y, w, max_steps)
        _, new, n_shr, accepted, bad_shr = shrink(k_shr, propose, zero, left, right, log_y, max_shrink)
        new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), new, state)
        info = SliceInfo(jnp.ones((), x.dtype), bad_out | bad_shr | ~accepted, n_out + n_shr,
                         jnp.zeros((), jnp.int32), n_out, n_shr)
        return new, info

    return step


def hit_and_run_slice(logdensity_fn: Callable, width=2.0, center=None, scale=None,
                      max_steps: int = 32, max_shrink: int = 200) -> Kernel:
    """Hit-and-run slice sampling kernel (MacKay 2003, "Information Theory, Inference, and
    Learning Algorithms", sec. 29.7; stepping out and shrinkage from Neal 2003).

    Random direction uniform on the sphere (in coordinates ``z = (x - center) / scale``),
    then a 1-D slice update along that line with interval width ``width``.
    """
    return whitened_slice_kernel(build_kernel(logdensity_fn, max_steps, max_shrink), HitAndRunSliceParams,
                                 logdensity_fn, width, center, scale)


def whitened_slice_kernel(step_fn: Callable, params_cls, logdensity_fn: Callable, width, center, scale) -> Kernel:
    """The :class:`Kernel` of a stepping-out slice sampler whose params are ``params_cls(center, scale, width)``:
    ``center`` (default 0) and ``scale`` (default 1) of the whitening, ``width`` checked positive."""
    _check_positive("width", width)

    def init_fn(key, position):
        return init(key, position, logdensity_fn)

    def step(key, state):
        d = state.position.shape[0]
        cc = jnp.zeros((d,), state.position.dtype) if center is None else jnp.asarray(center)
        ss = jnp.ones((d,), state.position.dtype) if scale is None else jnp.asarray(scale)
        return step_fn(key, state, params_cls(cc, ss, jnp.asarray(width, state.position.dtype)))

    return Kernel(init_fn, step)


def _check_positive(name, v):
    try:
        ok = float(v) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a positive number, got {v!r}")


def slice_stats(state, info, params):
    """Per-step stats of the slice samplers (``n_steps``: log-density evaluations of the step)."""
    del params
    return {"acceptance_rate": info.acceptance_rate, "lp": state.logdensity,
            "n_steps": info.num_logdensity_evals, "nonfinite": info.is_nonfinite}


def slice_options(width: float) -> dict:
    """The ``width`` and ``max_steps`` options of a stepping-out slice sampler (initial width ``width``)."""
    return {"width": Option(width, "initial slice interval width w in whitened units", pos_float, "a positive number"),
            "max_steps": Option(32, "limit m of Neal's stepping-out procedure", pos_int, "an int >= 1")}


def slice_params(params_cls):
    """``make_params(center, scale, options)`` of a slice sampler whose params end with ``width``."""
    def make(c, s, o):
        return params_cls(c, s, jnp.asarray(o["width"], c.dtype))
    return make


register_kernel(KernelSpec("hit_and_run_slice", init, build_kernel, HitAndRunSliceParams, hit_and_run_slice,
                           gradient_based=False, invariant=True,
                           method=ChainMethod("Hit-and-run slice sampling with stepping out and shrinkage "
                                              "(MacKay 2003; Neal 2003)", slice_stats, adapter="moments",
                                              options=slice_options(2.0), make_params=slice_params(HitAndRunSliceParams))))
