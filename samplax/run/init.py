"""Initial points: Stan's rule (uniform(-2, 2) in unconstrained space, retried) or the user's ``init``."""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

#: Attempts per chain before giving up.
MAX_INIT_ATTEMPTS = 100


@eqx.filter_jit
def _initial_point_search(target, key, point_ids, gradient_based: bool, dtype):
    """Jitted once per target structure (module-level, so repeated runs reuse it)."""
    lp = target.flat_logdensity()
    vg = jax.value_and_grad(lp)
    d = target.dim

    def ok(x):
        if gradient_based:
            v, g = vg(x)
            return jnp.isfinite(v) & jnp.all(jnp.isfinite(g)), v
        v = lp(x)
        return jnp.isfinite(v), v

    def one(c):
        kc = jax.random.fold_in(key, c)

        def draw(a):
            return jnp.reshape(target.initial_point(jax.random.fold_in(kc, a)), (d,)).astype(dtype)

        def cond(s):
            return (~s[2]) & (s[1] < MAX_INIT_ATTEMPTS)

        def body(s):
            x = draw(s[1])
            good, v = ok(x)
            return x, s[1] + 1, good, v

        x0 = draw(0)
        good0, v0 = ok(x0)
        return jax.lax.while_loop(cond, body, (x0, jnp.asarray(1, jnp.int32), good0, v0))

    return jax.vmap(one)(point_ids)


def find_initial_points(target, key, num_points: int, gradient_based: bool, dtype=None):
    """Stan-style initial points ``[num_points, d]`` and attempts: uniform(-2, 2) in unconstrained
    space (``target.initial_point``), up to 100 attempts per point until the log-density (and the
    gradient, if ``gradient_based``) is finite; point ``j`` uses ``fold_in(key, j)``.  A point that
    stays non-finite is a clear ``ValueError``."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    x, attempts, good, value = _initial_point_search(target, key, jnp.arange(num_points), bool(gradient_based),
                                                     jnp.dtype(dtype))
    good = np.asarray(good)
    if not good.all():
        bad = int(np.flatnonzero(~good)[0])
        try:  # which terms (a model's sites) are not finite at the last attempt, where the target can tell
            terms = tuple(target.nonfinite_terms(jnp.reshape(jnp.asarray(x)[bad], tuple(target.event_shape))))
        except Exception:  # noqa: BLE001 - a diagnosis only; the error below stands without it
            terms = ()
        raise ValueError(
            f"sample: could not find a finite initial point for target {target.name!r} "
            f"(chain {bad}: log-density {float(np.asarray(value)[bad])} after {MAX_INIT_ATTEMPTS} "
            "uniform(-2, 2) attempts" + (f"; not finite there: the terms of {list(terms)}" if terms else "")
            + "); pass init= with a point where the log-density "
            + ("and its gradient are finite" if gradient_based else "is finite"))
    return x, attempts


def search_evaluations(attempts) -> int:
    """Log-density evaluations that :func:`find_initial_points` computed, from its ``attempts`` per point.

    The search is one ``vmap`` over the points of a ``while_loop`` of retries: every round evaluates
    every point (a point that is already done is evaluated and its result discarded), until the
    slowest point is done.  So it computes ``num_points * max(attempts)`` evaluations (one each when
    every first draw is finite); a gradient-based search computes as many gradients (each attempt is
    one value-and-gradient).
    """
    a = np.asarray(attempts)
    return int(a.size * a.max()) if a.size else 0


@eqx.filter_jit
def _values_and_grads(target, x):
    return jax.vmap(jax.value_and_grad(target.flat_logdensity()))(x)


@eqx.filter_jit
def _values(target, x):
    return jax.vmap(target.flat_logdensity())(x)


def check_user_init(target, init, num_chains: int, gradient_based: bool, dtype=None):
    """The user's ``init`` (``[*event_shape]`` or ``[num_chains, *event_shape]``) as flat points
    ``[num_chains, d]``, refused with a clear error when its shape is wrong or the log-density
    (or gradient) is not finite there.  The check evaluates each chain's point once: ``num_chains``
    log-densities, and as many gradients when ``gradient_based`` (callers count them)."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    init = np.asarray(init, dtype=np.float64)
    shape = tuple(target.event_shape)
    if init.shape == shape:
        init = np.broadcast_to(init, (num_chains,) + shape)
    elif init.shape != (num_chains,) + shape:
        raise ValueError(
            f"sample: init must have shape {shape} or {(num_chains,) + shape} (num_chains, *event_shape), "
            f"got {init.shape}")
    x = jnp.asarray(init.reshape(num_chains, -1), dtype=dtype)
    if gradient_based:
        v, g = _values_and_grads(target, x)
        v, g = np.asarray(v), np.asarray(g)
        bad = ~np.isfinite(v) | ~np.all(np.isfinite(g), axis=-1)
    else:
        v = np.asarray(_values(target, x))
        bad = ~np.isfinite(v)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        what = f"log-density {v[c]}" if not np.isfinite(v[c]) else "a non-finite gradient"
        raise ValueError(f"sample: init for chain {c} gives {what} on target {target.name!r}; "
                         "choose a point inside the support")
    return x
