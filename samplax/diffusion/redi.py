"""ReDi: learning-free few-step sampling by trajectory retrieval (Zhang, Yang, Wang & Li, ICML 2023).

ReDi (arXiv:2302.02285) precomputes a knowledge base of PF-ODE trajectories and, at sampling time, skips the
middle of the trajectory: it runs the first steps of the sampler, looks the partial trajectory up in the knowledge
base, jumps to a later noise level with the retrieved trajectories' state there, and finishes with the sampler.
Here, on the VE state ``x = x0 + sigma * noise`` of samplax (``D(x, sigma) = E[x0 | x]``):

* **build** (:func:`redi_build`): for noises ``z_i`` (``z_i ~ N(0, I)`` from ``fold_in(key, i)``),
  the *key* ``k_i`` is the state at ``sigma_key`` reached from ``sigma_max z_i`` by the query phase, i.e. by
  :func:`samplax.diffusion.sample` with ``key_solver`` in ``key_nfe`` calls down to ``sigma_min=sigma_key`` (the
  very computation a query makes, so a stored noise gives its own key back); the *value* ``v_i`` is the state at
  ``sigma_value`` of the PF-ODE trajectory of the same noise, computed with a fine solve (``value_solver`` in
  ``value_nfe`` calls, default 2nd-order Heun on a 256-call log-sigma grid, which is exact to about 1e-6 on the
  2-D mixtures). The build costs ``num_trajectories * (key_nfe + value_nfe)`` model calls
  (``KnowledgeBase.num_model_evals``).
* **query** (:func:`sample_redi`): ``q = `` the query phase from ``sigma_max z`` (``key_nfe`` calls); retrieval of
  the ``H = num_neighbors`` nearest keys (Euclidean, brute force) and a combination of their values
  (:func:`redi_retrieve`); then the finishing solver from ``sigma_value`` to 0 with the remaining
  ``nfe - key_nfe`` calls (:func:`samplax.diffusion.sample`, final denoise included).

The combination (``combine=``):

* ``"linear"`` -- the paper's: weights ``w = argmin_w |sum_h w_h k_h - q|^2`` (least squares, the minimum-norm
  solution through the pseudo-inverse) and the value ``sum_h w_h v_h``. Meant for high-dimensional states
  (``H <= D`` keys are then linearly independent); with ``H > D`` or keys near a common line through the origin
  the weights are not local.
* ``"affine"`` (default) -- the weights are constrained to sum to 1 (an affine combination, as locally linear
  embedding's), anchored at the nearest key ``k_1``: ``c = argmin_c |sum_{h>1} c_h (k_h - k_1) - (q - k_1)|^2
  + ridge * s |c|^2`` (minimum-norm through the pseudo-inverse; ``s`` the mean squared length of the differences)
  and the value ``v_1 + sum_{h>1} c_h (v_h - v_1)``. It is the first-order (linear) interpolation of the map
  ``key -> value`` from the neighbours, exact for an affine map, with an error ``O(h^2)`` in the neighbour
  spacing ``h`` where the map is smooth (``O(h)`` for the nearest neighbour). A query equal to a stored key gives
  ``c = 0`` exactly, so the retrieval returns that key's value bit for bit.
* ``"nearest"`` -- the value of the nearest key (``H = 1``).

The paper combines its neighbours with ``"linear"`` weights in the latent space of Stable Diffusion, where
``H << D``; on the low-dimensional models of samplax the affine form is the consistent one (measured in
``docs/architecture.md`` / the tests). What is not implemented: the paper's domain-specific retrieval for
stylisation (keys from one prompt, values guided by another) and approximate nearest-neighbour indexes (the
search here is exact and brute force, ``O(N)`` per query, in blocks).
"""
from __future__ import annotations

import functools
import time
from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import Cost, make_cost
from samplax.diffusion.checks import check_denoiser, point_shape, positive_int, standard_noises
from samplax.diffusion.grids import grid_names
from samplax.diffusion.sampling import SampleInfo, sample
from samplax.diffusion.solvers import get_solver, solver_names

COMBINE = ("affine", "linear", "nearest")


class KnowledgeBase(eqx.Module):
    """ReDi's knowledge base (:func:`redi_build`): ``N`` PF-ODE trajectories, each as its noise, key and value.

    Attributes:
      noises: ``[N, *event_shape]`` the standard normal noises ``z_i`` (the trajectory starts at ``sigma_max z_i``).
      keys: ``[N, *event_shape]`` the query phase's state at ``sigma_key`` from each noise.
      values: ``[N, *event_shape]`` the fine PF-ODE state at ``sigma_value`` from each noise.
      sigma_max, sigma_key, sigma_value: the noise levels (``sigma_max > sigma_key > sigma_value > 0``).
      key_solver, key_nfe, key_grid: the query phase (:func:`samplax.diffusion.sample` down to ``sigma_key``).
      value_solver, value_nfe: the fine solve that gave the values.
      num_model_evals: model calls of the build, summed over the trajectories.
      build_seconds: wall-clock seconds of the build.
    """

    noises: jax.Array
    keys: jax.Array
    values: jax.Array
    sigma_max: float = eqx.field(static=True)
    sigma_key: float = eqx.field(static=True)
    sigma_value: float = eqx.field(static=True)
    key_solver: str = eqx.field(static=True)
    key_nfe: int = eqx.field(static=True)
    key_grid: str = eqx.field(static=True)
    value_solver: str = eqx.field(static=True)
    value_nfe: int = eqx.field(static=True)
    num_model_evals: int = eqx.field(static=True)
    build_seconds: float = eqx.field(static=True)

    @property
    def size(self) -> int:
        """``N``, the number of stored trajectories."""
        return int(self.keys.shape[0])

    @property
    def event_shape(self) -> tuple:
        """The shape of one point."""
        return tuple(self.keys.shape[1:])

    @property
    def cost(self) -> Cost:
        """The build's cost record (``num_model_evals``, ``sampling_seconds``)."""
        return make_cost(num_model_evals=self.num_model_evals, sampling_seconds=self.build_seconds, num_devices=1)


class RetrievalInfo(NamedTuple):
    """What :func:`redi_retrieve` found per query: ``indices`` ``[B, H]`` (nearest first), ``weights`` ``[B, H]``
    (the value is ``sum_h weights_h values[indices_h]``), ``distance`` ``[B]`` (to the nearest key) and ``residual``
    ``[B]`` (``|q - sum_h weights_h keys[indices_h]|``)."""

    indices: jax.Array
    weights: jax.Array
    distance: jax.Array
    residual: jax.Array


class ReDiInfo(NamedTuple):
    """Diagnostics of :func:`sample_redi`.

    Attributes:
      num_model_evals: model calls per sample (query phase + finishing solver; the build is not included).
      query: the query phase's :class:`~samplax.diffusion.SampleInfo`.
      finish: the finishing solver's :class:`~samplax.diffusion.SampleInfo`.
      retrieval: :class:`RetrievalInfo`.
      retrieved: ``[B, *event_shape]`` the combined values at ``sigma_value`` (the finishing solver's start).
      cost: :class:`samplax.core.cost.Cost` of this call (``num_model_evals``, compile and sampling seconds of the
        two solver calls; the retrieval's seconds in ``retrieval_seconds``).
    """

    num_model_evals: int
    query: SampleInfo
    finish: SampleInfo
    retrieval: RetrievalInfo
    retrieved: jax.Array
    cost: Cost




def _query_phase(model, x_t, sigma_max, sigma_key, key_solver, key_nfe, key_grid):
    """The states at ``sigma_key`` from ``x_t`` at ``sigma_max`` (the same call in the build and in a query)."""
    return sample(model, key=jax.random.key(0), x_init=x_t, sigma_max=sigma_max, sigma_min=sigma_key, nfe=key_nfe,
                  solver=key_solver, grid=key_grid)


def redi_build(model, *, key: jax.Array, num_trajectories: int, event_shape: tuple, sigma_max: float,
               sigma_key: float, sigma_value: float, key_solver: str = "ddim", key_nfe: int = 1,
               key_grid: str = "logsnr", value_solver: str = "heun", value_nfe: int = 256,
               batch_size: int = 4096) -> KnowledgeBase:
    """Build ReDi's knowledge base for ``model`` (module docstring): keys at ``sigma_key``, values at ``sigma_value``.

    Trajectory ``i`` starts at ``sigma_max z_i``, ``z_i ~ N(0, I)`` from ``fold_in(key, i)`` (the noises of
    :func:`sample_redi` with the same key, so its first samples query stored trajectories). The key is
    :func:`samplax.diffusion.sample` with ``key_solver``, ``key_nfe`` calls and ``key_grid`` down to
    ``sigma_min=sigma_key``; the value is the same with ``value_solver`` and ``value_nfe`` calls (uniform in
    ``log sigma``) down to ``sigma_value``.

    Args:
      model: ``D(x, sigma)`` for one point.
      key: typed PRNG key of the noises.
      num_trajectories: ``N >= 1``.
      event_shape: the shape of one point.
      sigma_max, sigma_key, sigma_value: ``sigma_max > sigma_key > sigma_value > 0``.
      key_solver, key_nfe, key_grid: the query phase (a deterministic solver of ``sample``, so that the key is a
        function of the noise).
      value_solver, value_nfe: the fine solve of the values.
      batch_size: trajectories per call of the solvers.

    Returns:
      :class:`KnowledgeBase` (``num_model_evals = N * (key_nfe + value_nfe)``).
    """
    who = "redi_build"
    if key is None:
        raise ValueError(f"{who}: key is required (a typed key from jax.random.key)")
    n = positive_int(num_trajectories, "num_trajectories", who)
    key_nfe = positive_int(key_nfe, "key_nfe", who)
    value_nfe = positive_int(value_nfe, "value_nfe", who)
    batch_size = positive_int(batch_size, "batch_size", who)
    sigma_max, sigma_key, sigma_value = _check_sigmas(who, sigma_max, sigma_key, sigma_value)
    for name, s in (("key_solver", key_solver), ("value_solver", value_solver)):
        if s not in solver_names() or s == "auto":
            raise ValueError(f"{who}: {name} must be one of {[x for x in solver_names() if x != 'auto']}, got {s!r}")
        if get_solver(s).stochastic:
            raise ValueError(f"{who}: {name} must be a deterministic (ODE) solver, got the stochastic {s!r}")
    if key_grid not in grid_names() or key_grid == "optimized":
        raise ValueError(f"{who}: key_grid must be one of {[g for g in grid_names() if g != 'optimized']}, "
                         f"got {key_grid!r}")
    event_shape = point_shape(event_shape, who)
    dtype = jnp.dtype(jnp.result_type(float))
    check_denoiser(model, event_shape, dtype, who, "event_shape")
    t0 = time.perf_counter()
    zs, ks, vs, calls = [], [], [], 0
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        z = standard_noises(key, m, event_shape, dtype, start)
        k, ki = _query_phase(model, sigma_max * z, sigma_max, sigma_key, key_solver, key_nfe, key_grid)
        v, vi = sample(model, key=jax.random.key(0), x_init=sigma_max * z, sigma_max=sigma_max, sigma_min=sigma_value,
                       nfe=value_nfe, solver=value_solver, grid="logsnr")
        calls += m * (int(ki.num_model_evals) + int(vi.num_model_evals))
        zs.append(z)
        ks.append(k)
        vs.append(v)
    z, k, v = (jnp.concatenate(a) for a in (zs, ks, vs))
    jax.block_until_ready(v)
    seconds = time.perf_counter() - t0
    bad = ~(jnp.all(jnp.isfinite(k.reshape(n, -1)), 1) & jnp.all(jnp.isfinite(v.reshape(n, -1)), 1))
    if bool(jnp.any(bad)):
        raise ValueError(f"{who}: {int(jnp.sum(bad))} of {n} trajectories became non-finite (first: index "
                         f"{int(jnp.argmax(bad))}); check the model at these noise levels")
    return KnowledgeBase(z, k, v, sigma_max, sigma_key, sigma_value, key_solver, key_nfe, key_grid, value_solver,
                         value_nfe, int(calls), float(seconds))


def _check_sigmas(who, sigma_max, sigma_key, sigma_value):
    try:
        sigma_max, sigma_key, sigma_value = float(sigma_max), float(sigma_key), float(sigma_value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: sigma_max, sigma_key and sigma_value must be numbers") from None
    if not (np.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"{who}: sigma_max must be positive and finite, got {sigma_max}")
    if not sigma_key < sigma_max:
        raise ValueError(f"{who}: sigma_key must be < sigma_max={sigma_max}, got sigma_key={sigma_key}")
    if not sigma_value < sigma_key:
        raise ValueError(f"{who}: sigma_value must be < sigma_key={sigma_key} (the jump goes down in noise), got "
                         f"sigma_value={sigma_value}")
    if not sigma_value > 0:
        raise ValueError(f"{who}: sigma_value must be > 0 (the finishing solver runs from it to 0), got "
                         f"sigma_value={sigma_value}")
    return sigma_max, sigma_key, sigma_value


def _check_kb(kb, who):
    if not isinstance(kb, KnowledgeBase):
        raise TypeError(f"{who}: kb must be a KnowledgeBase (from redi_build), got {type(kb).__name__}")
    if kb.keys.shape[0] < 1:
        raise ValueError(f"{who}: kb is empty (0 trajectories)")
    if kb.keys.shape != kb.values.shape:
        raise ValueError(f"{who}: kb.keys {kb.keys.shape} and kb.values {kb.values.shape} differ in shape")


@jax.jit
def _search(keys, queries, k_neighbors):
    """Indices ``[B, H]`` of the ``H`` nearest keys of each query, nearest first (exact, in blocks of queries)."""
    h = k_neighbors.shape[0]
    sq = jnp.sum(keys * keys, axis=1)

    def block(qb):
        d2 = jnp.sum(qb * qb, 1)[:, None] - 2.0 * qb @ keys.T + sq[None, :]
        rows = jnp.arange(qb.shape[0])
        found = []
        for _ in range(h):  # h argmin passes, O(h N) per query (lax.top_k sorts whole rows on CPU)
            j = jnp.argmin(d2, axis=1)
            found.append(j)
            d2 = d2.at[rows, j].set(jnp.inf)
        return jnp.stack(found, axis=1)

    b = queries.shape[0]
    size = 128
    pad = (-b) % size
    qp = jnp.concatenate([queries, jnp.zeros((pad, queries.shape[1]), queries.dtype)]).reshape(-1, size,
                                                                                                queries.shape[1])
    return jax.lax.map(block, qp).reshape(-1, h)[:b]


def _pinv_solve(a, r, ridge):
    """Minimum-norm ``c`` of ``min |a^T c - r|^2 + ridge * mean(|a_h|^2) |c|^2`` for ``a`` ``[H', D]`` and ``r``
    ``[D]`` (``c`` is exactly 0 when ``r`` is 0)."""
    if ridge > 0:
        m = a.shape[0]
        s = jnp.mean(jnp.sum(a * a, 1))
        g = a @ a.T + ridge * s * jnp.eye(m, dtype=a.dtype)
        return jnp.linalg.solve(g, a @ r)
    return jnp.linalg.pinv(a.T) @ r


def _combine_one(kn, vn, q, combine, ridge):
    """Weights ``[H]`` and the value of one query from its neighbours' keys ``kn`` and values ``vn`` ``[H, D]``."""
    if combine == "nearest" or kn.shape[0] == 1:
        w = jnp.zeros(kn.shape[0], kn.dtype).at[0].set(1.0)
        return w, vn[0]
    if combine == "linear":
        w = _pinv_solve(kn, q, ridge)
        return w, w @ vn
    c = _pinv_solve(kn[1:] - kn[0], q - kn[0], ridge)
    w = jnp.concatenate([(1.0 - jnp.sum(c))[None], c])
    return w, vn[0] + c @ (vn[1:] - vn[0])


def redi_retrieve(kb: KnowledgeBase, queries, *, num_neighbors: int = 4, combine: str = "affine",
                  ridge: float = 0.0):
    """ReDi's retrieval: the ``num_neighbors`` nearest keys of each query and the combination of their values.

    ``queries`` ``[B, *event_shape]`` are states at ``kb.sigma_key``. The combination is the module docstring's
    ``combine`` (``"affine"``, ``"linear"`` -- the paper's least-squares weights -- or ``"nearest"``), with an
    optional ``ridge`` (>= 0, relative to the neighbours' mean squared size) on the weights. A query equal to a
    stored key returns that key's value exactly with ``"affine"`` and ``"nearest"`` (with ``"linear"`` to round-off
    when the neighbours' keys are linearly independent, ``num_neighbors <= D``, and ``ridge=0``).

    Returns ``(values [B, *event_shape], RetrievalInfo)``.
    """
    who = "redi_retrieve"
    _check_kb(kb, who)
    num_neighbors = positive_int(num_neighbors, "num_neighbors", who)
    if num_neighbors > kb.size:
        raise ValueError(f"{who}: num_neighbors={num_neighbors} exceeds the knowledge base's {kb.size} trajectories")
    if combine not in COMBINE:
        raise ValueError(f"{who}: combine must be one of {COMBINE}, got {combine!r}")
    try:
        ridge = float(ridge)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: ridge must be a number >= 0, got {ridge!r}") from None
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"{who}: ridge must be a finite number >= 0, got {ridge}")
    q = jnp.asarray(queries)
    if q.ndim < 1 or tuple(q.shape[1:]) != kb.event_shape:
        raise ValueError(f"{who}: queries must be a batch [B, *{kb.event_shape}] matching the knowledge base's "
                         f"event shape, got shape {q.shape}")
    if q.shape[0] < 1:
        raise ValueError(f"{who}: queries is an empty batch")
    return _retrieve(kb.keys, kb.values, q.astype(kb.keys.dtype), num_neighbors, combine, ridge)


def _retrieve(keys, values, q, num_neighbors, combine, ridge):
    n, b = keys.shape[0], q.shape[0]
    kf, vf, qf = keys.reshape(n, -1), values.reshape(n, -1), q.reshape(b, -1)
    idx = _search(kf, qf, jnp.zeros(num_neighbors))
    return _gather_combine(kf, vf, qf, idx, combine, ridge, values.shape[1:])


@jax.jit
def _dist(kf, qf, idx):
    return jnp.linalg.norm(qf - kf[idx[:, 0]], axis=1)


def _gather_combine(kf, vf, qf, idx, combine, ridge, event_shape):
    w, out = _combine_all(kf, vf, qf, idx, combine, ridge)
    resid = jnp.linalg.norm(qf - jnp.einsum("bh,bhd->bd", w, kf[idx]), axis=1)
    info = RetrievalInfo(idx, w, _dist(kf, qf, idx), resid)
    return out.reshape((qf.shape[0],) + tuple(event_shape)), info


@functools.partial(jax.jit, static_argnames=("combine", "ridge"))
def _combine_all(kf, vf, qf, idx, combine, ridge):
    return jax.vmap(lambda i, q: _combine_one(kf[i], vf[i], q, combine, ridge))(idx, qf)


def sample_redi(model, kb: KnowledgeBase, *, key: Optional[jax.Array] = None, num_samples: Optional[int] = None,
                x_init: Optional[jax.Array] = None, nfe: int, num_neighbors: int = 4, combine: str = "affine",
                ridge: float = 0.0, solver: str = "dpmpp_2m", grid: str = "logsnr", sigma_end: float = 0.002,
                solver_options: Optional[dict] = None):
    """Draw samples with ReDi (module docstring) in ``nfe`` model calls each (the build's calls are in ``kb``).

    1. query phase: ``q = `` :func:`samplax.diffusion.sample` from ``x_T`` at ``kb.sigma_max`` down to
       ``kb.sigma_key`` with ``kb.key_solver`` in ``kb.key_nfe`` calls (as in the build);
    2. retrieval (:func:`redi_retrieve`): ``x_v = `` the combined values of the ``num_neighbors`` nearest keys;
    3. finishing: :func:`samplax.diffusion.sample` from ``x_v`` at ``kb.sigma_value`` to 0 with ``solver`` in
       ``nfe - kb.key_nfe`` calls (grid ``grid`` down to ``sigma_end``, then the final denoise).

    Args:
      model: the model the knowledge base was built for (``D(x, sigma)`` for one point).
      kb: :class:`KnowledgeBase` from :func:`redi_build`.
      key, num_samples: sample b's noise ``z_b ~ N(0, I)`` from ``fold_in(key, b)`` (so ``key`` equal to the
        build's key queries the stored trajectories' noises), ``x_T = kb.sigma_max z_b``; or
      x_init: ``[B, *event_shape]`` the states at ``kb.sigma_max`` instead.
      nfe: model calls per sample, ``>= kb.key_nfe + 2`` (at least one finishing step and the final denoise).
      num_neighbors, combine, ridge: the retrieval (:func:`redi_retrieve`).
      solver, grid, sigma_end, solver_options: the finishing solver (:func:`samplax.diffusion.sample`).

    Returns ``(samples [B, *event_shape], ReDiInfo)``.
    """
    who = "sample_redi"
    _check_kb(kb, who)
    nfe = positive_int(nfe, "nfe", who)
    if nfe < kb.key_nfe + 2:
        raise ValueError(f"{who}: nfe must be >= kb.key_nfe + 2 = {kb.key_nfe + 2} (the query phase's {kb.key_nfe} "
                         f"calls, a finishing step and the final denoise), got {nfe}")
    if not (0.0 < float(sigma_end) < kb.sigma_value):
        raise ValueError(f"{who}: sigma_end must be in (0, kb.sigma_value={kb.sigma_value}), got {sigma_end!r}")
    if (x_init is None) == (key is None or num_samples is None):
        raise ValueError(f"{who}: give either key= and num_samples= (fresh noises) or x_init= (states at sigma_max)")
    dtype = kb.keys.dtype
    if x_init is None:
        num_samples = positive_int(num_samples, "num_samples", who)
        x_t = kb.sigma_max * standard_noises(key, num_samples, kb.event_shape, dtype)
    else:
        x_t = jnp.asarray(x_init)
        if x_t.ndim < 1 or tuple(x_t.shape[1:]) != kb.event_shape or x_t.shape[0] < 1:
            raise ValueError(f"{who}: x_init must be a batch [B, *{kb.event_shape}] matching the knowledge base's "
                             f"event shape, got shape {x_t.shape}")
        x_t = x_t.astype(dtype)
    check_denoiser(model, kb.event_shape, dtype, who, "kb")
    q, qi = _query_phase(model, x_t, kb.sigma_max, kb.sigma_key, kb.key_solver, kb.key_nfe, kb.key_grid)
    t0 = time.perf_counter()
    xv, rinfo = redi_retrieve(kb, q, num_neighbors=num_neighbors, combine=combine, ridge=ridge)
    jax.block_until_ready(xv)
    t_ret = time.perf_counter() - t0
    x, fi = sample(model, key=jax.random.key(0), x_init=xv, sigma_max=kb.sigma_value, nfe=nfe - kb.key_nfe,
                   solver=solver, grid=grid, sigma_end=sigma_end, solver_options=solver_options)
    calls = int(qi.num_model_evals) + int(fi.num_model_evals)
    cost = make_cost(num_model_evals=calls, num_devices=1)
    for k in ("compile_seconds", "sampling_seconds", "num_compilations"):
        if k in qi.cost and k in fi.cost:
            cost[k] = qi.cost[k] + fi.cost[k]
    cost["retrieval_seconds"] = t_ret
    return x, ReDiInfo(calls, qi, fi, rinfo, xv, cost)
