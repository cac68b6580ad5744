"""DPM-OT: a semi-discrete optimal transport map from the prior noise to intermediate states, then a few-step solve
(Li, Li, Wang, Lei, Luo & Gu, ICCV 2023, "DPM-OT: A New Diffusion Probabilistic Model Based on Optimal Transport",
arXiv:2307.11308).

The paper treats the reverse diffusion as transport between the latents of different stages. It computes the
semi-discrete optimal transport (OT) map, for the quadratic cost, from the white noise (a continuous measure) to a
finite set of latents at an intermediate stage (a discrete measure with equal weights), and samples by mapping a
noise to the latent of its OT cell (the "expressway"), then running the remaining few reverse steps from that stage;
because the OT map sends the noise mass to each latent in proportion to its weight, the samples keep the modes' mass
(the paper's "mode mixture" is reduced). The map is the gradient of the Brenier potential
``u_h(z) = max_j (<z, y_j> + h_j)``: ``T(z) = y_{j(z)}``, ``j(z) = argmax_j (<z, y_j> + h_j)``, whose cells
``W_j(h) = {z : j(z) = j}`` must carry the target weights, ``mu(W_j(h)) = nu_j``. The potentials ``h`` minimise the
convex dual ``E(h) = E_{z ~ mu}[u_h(z)] - sum_j nu_j h_j``, whose gradient is ``mu(W_j(h)) - nu_j``; as in the
paper (and its AE-OT predecessors) the gradient is estimated by Monte Carlo on fresh noises each step and ``h`` is
updated by Adam.

What is implemented here, on samplax's VE state (``x = x0 + sigma noise``):

* :func:`semidiscrete_ot`: the semi-discrete OT dual above, from ``mu = N(0, I)`` to points ``y_j`` with weights
  ``nu_j`` (uniform by default): Adam on the Monte Carlo gradient with a learning rate decaying linearly to 0, the
  mean of ``h`` removed (the dual is invariant to a constant). The source scale does not matter: the OT cells of
  ``N(0, s^2 I)`` are those of ``N(0, I)`` scaled by ``s`` (``<s z, y> + h = s (<z, y> + h/s)``), so the map
  from ``sigma_max z`` is the same function of ``z``.
* :func:`dpm_ot_build`: the targets at ``sigma_mid``: either the data given (clean points, e.g. training data or
  exact draws) noised by the forward process, ``y_j = x0_j + sigma_mid eps_j`` (no model calls), or, without data,
  the model's own PF-ODE states at ``sigma_mid`` (``target_solver`` in ``target_nfe`` calls per target; the paper's
  code stores the reverse process's latents of a stage); then the OT map.
* :func:`sample_dpm_ot`: ``x = T(z)`` (no model call), then :func:`samplax.diffusion.sample` from ``sigma_mid`` to 0
  with any registered solver in ``nfe`` calls.

What is not: the paper's training of the score network (samplax takes any denoiser), its image-specific latents and
its filtering of "singular" target pairs (neighbouring cells whose targets are far apart, its ``topk > 1`` mode),
and the piecewise-linear extension between cells of the earlier AE-OT work. Note what follows from a
piecewise-constant map: the states at ``sigma_mid`` are the ``N`` targets themselves, so with a deterministic
(ODE) solver the samples take at most ``N`` distinct values; a stochastic solver (``"ddpm"``, ``"euler_maruyama"``,
``"sde_dpmpp_2m"``) adds fresh noise on the way down (the paper's NCSN sampler is stochastic).
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
from samplax.diffusion.checks import check_denoiser, positive_int, standard_noises
from samplax.diffusion.sampling import SampleInfo, sample
from samplax.diffusion.solvers import get_solver, solver_names


class SemiDiscreteOT(eqx.Module):
    """A semi-discrete OT map from ``N(0, I)`` to weighted points (:func:`semidiscrete_ot`).

    Attributes:
      targets: ``[N, *event_shape]`` the points ``y_j``.
      weights: ``[N]`` their weights ``nu_j`` (sum 1).
      potentials: ``[N]`` the dual potentials ``h_j`` (mean 0).
      num_iters, batch_size: the optimisation's Adam steps and Monte Carlo noises per step.
    """

    targets: jax.Array
    weights: jax.Array
    potentials: jax.Array
    num_iters: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)

    def assign(self, z):
        """The cell ``j(z) = argmax_j (<z, y_j> + h_j)`` of each noise ``z`` ``[B, *event_shape]`` -> ``[B]``."""
        n = self.targets.shape[0]
        return _assign(self.targets.reshape(n, -1), self.potentials, z.reshape(z.shape[0], -1))

    def __call__(self, z):
        """The OT map ``T(z) = y_{j(z)}`` of a batch of standard normal noises ``z`` ``[B, *event_shape]``."""
        return self.targets[self.assign(z)]

    def cell_masses(self, key, num_points: int):
        """Monte Carlo masses ``mu(W_j)`` ``[N]`` of the cells from ``num_points`` fresh noises (point b from
        ``fold_in(key, b)``); after the dual is solved they equal ``weights`` within Monte Carlo error."""
        num_points = positive_int(num_points, "num_points", "cell_masses")
        n = self.targets.shape[0]
        counts = jnp.zeros(n, jnp.int32)
        block = 1 << 16
        for start in range(0, num_points, block):
            m = min(block, num_points - start)
            z = standard_noises(key, m, self.targets.shape[1:], self.targets.dtype, start)
            counts = counts + jnp.bincount(self.assign(z), length=n)
        return counts / num_points


@jax.jit
def _assign(yf, h, zf):
    return jnp.argmax(zf @ yf.T + h[None, :], axis=1)




def _float_batch(a, name, who):
    """``a`` as a floating array (integers cast to the default float), checked to be a non-empty batch
    ``[N, *event_shape]``; a ValueError from ``who`` naming ``name`` otherwise."""
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    if a.ndim < 2 or a.shape[0] < 1:
        raise ValueError(f"{who}: {name} must be a non-empty batch [N, *event_shape], got shape {a.shape}")
    return a


@functools.partial(jax.jit, static_argnames=("num_iters", "batch_size"))
def _solve_dual(key, yf, nu, lr0, num_iters, batch_size):
    """Adam on ``E(h)`` with the Monte Carlo gradient ``mu_hat(W_j(h)) - nu_j`` and a linearly decaying rate."""
    n, d = yf.shape
    b1, b2, eps = 0.9, 0.999, 1e-12

    def step(carry, i):
        h, m, v, avg = carry
        z = jax.random.normal(jax.random.fold_in(key, i), (batch_size, d), yf.dtype)
        j = jnp.argmax(z @ yf.T + h[None, :], axis=1)
        g = jnp.bincount(j, length=n).astype(yf.dtype) / batch_size - nu
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        t = (i + 1).astype(yf.dtype)
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        lr = lr0 * (1.0 - i.astype(yf.dtype) / num_iters)
        h = h - lr * mh / (jnp.sqrt(vh) + eps)
        h = h - jnp.mean(h)
        tail = i >= num_iters // 2  # Polyak-Ruppert average of the second half's iterates
        k = jnp.maximum(i - num_iters // 2 + 1, 1).astype(yf.dtype)
        avg = jnp.where(tail, avg + (h - avg) / k, avg)
        return (h, m, v, avg), jnp.max(jnp.abs(g))

    z0 = jnp.zeros(n, yf.dtype)
    (_, _, _, h), gmax = jax.lax.scan(step, (z0, z0, z0, z0), jnp.arange(num_iters))
    return h, gmax


def semidiscrete_ot(key: jax.Array, targets, weights=None, *, num_iters: int = 1000, batch_size: int = 4096,
                    learning_rate: Optional[float] = None) -> SemiDiscreteOT:
    """The semi-discrete OT map (quadratic cost) from ``N(0, I)`` to the points ``targets`` with ``weights``.

    Solves the dual (module docstring) ``min_h E_z[max_j (<z, y_j> + h_j)] - sum_j nu_j h_j`` by Adam on its Monte
    Carlo gradient ``mu_hat(W_j(h)) - nu_j`` (``batch_size`` fresh noises per step, step ``i`` from
    ``fold_in(key, i)``), the rate decaying linearly from ``learning_rate`` (default: 0.05 times the targets'
    root-mean-square distance to their mean) to 0 over ``num_iters`` steps, and returns the mean of the second
    half's iterates (Polyak-Ruppert averaging). Li et al. 2023 and the AE-OT optimisation of An et al. 2020 use
    Adam on the same Monte Carlo gradient. No model calls; the work is ``num_iters * batch_size * N * D``
    multiply-adds. Accuracy falls as ``N`` grows, each step seeing ``batch_size / N`` noises per cell; measured
    with the defaults on 2-D points, the cell masses on 2^20 fresh noises are within Monte Carlo error of the
    weights for 8-16 points, within 0.83-1.06 times ``1/N`` for 256 (20 s on a loaded CPU), and from 0 to 3.4
    times ``1/N`` for 2048 (more steps and noises are needed there; :meth:`SemiDiscreteOT.cell_masses` checks).

    Args:
      key: typed PRNG key of the Monte Carlo noises.
      targets: ``[N, *event_shape]`` the points.
      weights: ``[N]`` positive weights (normalised here); default uniform.
      num_iters, batch_size: Adam steps and noises per step.
      learning_rate: Adam's initial rate (in the units of ``h``, those of ``<z, y>``).

    Returns:
      :class:`SemiDiscreteOT`.
    """
    who = "semidiscrete_ot"
    if key is None:
        raise ValueError(f"{who}: key is required (a typed key from jax.random.key)")
    y = _float_batch(targets, "targets", who)
    if not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError(f"{who}: targets has non-finite values")
    n = y.shape[0]
    if weights is None:
        nu = jnp.full(n, 1.0 / n, y.dtype)
    else:
        nu = jnp.asarray(weights, y.dtype)
        if nu.shape != (n,):
            raise ValueError(f"{who}: weights must have shape [{n}] (one per target), got {nu.shape}")
        if not bool(jnp.all(jnp.isfinite(nu) & (nu > 0))):
            raise ValueError(f"{who}: weights must be positive and finite")
        nu = nu / jnp.sum(nu)
    num_iters = positive_int(num_iters, "num_iters", who)
    batch_size = positive_int(batch_size, "batch_size", who)
    yf = y.reshape(n, -1)
    if learning_rate is None:
        spread = float(jnp.sqrt(jnp.mean(jnp.sum((yf - jnp.mean(yf, 0)) ** 2, 1))))
        lr0 = 0.05 * spread if spread > 0 else 1.0
    else:
        try:
            lr0 = float(learning_rate)
        except (TypeError, ValueError):
            raise ValueError(f"{who}: learning_rate must be a positive number, got {learning_rate!r}") from None
        if not (np.isfinite(lr0) and lr0 > 0):
            raise ValueError(f"{who}: learning_rate must be a positive number, got {learning_rate!r}")
    if n == 1:
        h = jnp.zeros(1, y.dtype)
    else:
        h, _ = _solve_dual(key, yf, nu, jnp.asarray(lr0, y.dtype), num_iters, batch_size)
    return SemiDiscreteOT(y, nu, h, num_iters, batch_size)


class DPMOT(eqx.Module):
    """What :func:`dpm_ot_build` returns: the OT map to the targets at ``sigma_mid`` and the build's cost.

    Attributes:
      ot: :class:`SemiDiscreteOT` from ``N(0, I)`` to the targets (states at ``sigma_mid``).
      sigma_mid: the noise level of the targets (where the few-step solve starts).
      source: ``"data"`` (data noised by the forward process) or ``"model"`` (the model's PF-ODE states).
      num_model_evals: model calls of the build (0 for ``"data"``).
      build_seconds: wall-clock seconds of the build (targets and OT).
    """

    ot: SemiDiscreteOT
    sigma_mid: float = eqx.field(static=True)
    source: str = eqx.field(static=True)
    num_model_evals: int = eqx.field(static=True)
    build_seconds: float = eqx.field(static=True)

    @property
    def cost(self) -> Cost:
        """The build's cost record (``num_model_evals``, ``sampling_seconds``, ``num_ot_iters``)."""
        return make_cost(num_model_evals=self.num_model_evals, sampling_seconds=self.build_seconds, num_devices=1,
                         num_ot_iters=self.ot.num_iters, num_ot_noises=self.ot.num_iters * self.ot.batch_size)


def dpm_ot_build(model, *, key: jax.Array, sigma_mid: float, data=None, num_targets: Optional[int] = None,
                 event_shape: Optional[tuple] = None, sigma_max: Optional[float] = None,
                 target_solver: str = "heun", target_nfe: int = 256, num_iters: int = 1000,
                 batch_size: int = 4096, learning_rate: Optional[float] = None) -> DPMOT:
    """Targets at ``sigma_mid`` and the semi-discrete OT map to them (module docstring).

    With ``data`` (``[N, *event_shape]`` clean points): ``y_j = data_j + sigma_mid eps_j``, ``eps_j ~ N(0, I)``
    from ``fold_in(k_t, j)`` (no model calls). Without: ``num_targets`` PF-ODE states of ``model`` at
    ``sigma_mid`` from ``sigma_max z_j`` (:func:`samplax.diffusion.sample` with ``target_solver`` in
    ``target_nfe`` calls, ``num_targets * target_nfe`` calls in all). Then :func:`semidiscrete_ot` with uniform
    weights, ``num_iters``, ``batch_size``, ``learning_rate``.
    """
    who = "dpm_ot_build"
    if key is None:
        raise ValueError(f"{who}: key is required (a typed key from jax.random.key)")
    try:
        sigma_mid = float(sigma_mid)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: sigma_mid must be a positive number, got {sigma_mid!r}") from None
    if not (np.isfinite(sigma_mid) and sigma_mid > 0):
        raise ValueError(f"{who}: sigma_mid must be positive and finite, got {sigma_mid}")
    k_t, k_ot = jax.random.split(key)
    t0 = time.perf_counter()
    if data is not None:
        if num_targets is not None or sigma_max is not None:
            raise ValueError(f"{who}: with data=, num_targets and sigma_max are not used (the targets are the data)")
        x0 = _float_batch(data, "data", who)
        if event_shape is not None and tuple(event_shape) != tuple(x0.shape[1:]):
            raise ValueError(f"{who}: data's points have shape {tuple(x0.shape[1:])}, not event_shape="
                             f"{tuple(event_shape)}")
        check_denoiser(model, tuple(x0.shape[1:]), x0.dtype, who, "data")
        y = x0 + sigma_mid * standard_noises(k_t, x0.shape[0], x0.shape[1:], x0.dtype)
        calls, source = 0, "data"
    else:
        if num_targets is None or event_shape is None or sigma_max is None:
            raise ValueError(f"{who}: without data=, give num_targets, event_shape and sigma_max (the targets are "
                             "the model's PF-ODE states at sigma_mid)")
        n = positive_int(num_targets, "num_targets", who)
        target_nfe = positive_int(target_nfe, "target_nfe", who)
        try:
            sigma_max = float(sigma_max)
        except (TypeError, ValueError):
            raise ValueError(f"{who}: sigma_max must be a number, got {sigma_max!r}") from None
        if not (np.isfinite(sigma_max) and sigma_max > sigma_mid):
            raise ValueError(f"{who}: sigma_max must be finite and > sigma_mid={sigma_mid}, got {sigma_max}")
        if target_solver not in solver_names() or target_solver == "auto" or get_solver(target_solver).stochastic:
            raise ValueError(f"{who}: target_solver must be a deterministic solver of sample, got {target_solver!r}")
        event_shape = tuple(int(d) for d in event_shape)
        dtype = jnp.dtype(jnp.result_type(float))
        check_denoiser(model, event_shape, dtype, who, "event_shape")
        z = standard_noises(k_t, n, event_shape, dtype)
        y, info = sample(model, key=jax.random.key(0), x_init=sigma_max * z, sigma_max=sigma_max, sigma_min=sigma_mid,
                         nfe=target_nfe, solver=target_solver, grid="logsnr")
        calls, source = n * int(info.num_model_evals), "model"
    ot = semidiscrete_ot(k_ot, y, num_iters=num_iters, batch_size=batch_size, learning_rate=learning_rate)
    jax.block_until_ready(ot.potentials)
    return DPMOT(ot, sigma_mid, source, int(calls), float(time.perf_counter() - t0))


class DPMOTInfo(NamedTuple):
    """Diagnostics of :func:`sample_dpm_ot`: ``num_model_evals`` (per sample; the OT map makes none), ``cells``
    ``[B]`` (the target index of each sample), ``start`` ``[B, *event_shape]`` (the mapped states at
    ``sigma_mid``), ``solve`` (the solver's :class:`~samplax.diffusion.SampleInfo`) and ``cost``."""

    num_model_evals: int
    cells: jax.Array
    start: jax.Array
    solve: SampleInfo
    cost: Cost


def sample_dpm_ot(model, plan: DPMOT, *, key: jax.Array, num_samples: int, nfe: int, solver: str = "dpmpp_2m",
                  grid: str = "logsnr", sigma_end: float = 0.002, solver_options: Optional[dict] = None):
    """Draw samples with DPM-OT: ``x = T(z)`` at ``plan.sigma_mid`` (``z_b ~ N(0, I)`` from ``fold_in(k_z, b)``,
    ``k_z, k_s = split(key)``; no model calls), then :func:`samplax.diffusion.sample` from ``plan.sigma_mid`` to 0
    with ``solver`` in ``nfe`` calls (``key=k_s`` for a stochastic solver's noise).

    Returns ``(samples [B, *event_shape], DPMOTInfo)``.
    """
    who = "sample_dpm_ot"
    if not isinstance(plan, DPMOT):
        raise TypeError(f"{who}: plan must be a DPMOT (from dpm_ot_build), got {type(plan).__name__}")
    if key is None:
        raise ValueError(f"{who}: key is required (a typed key from jax.random.key)")
    num_samples = positive_int(num_samples, "num_samples", who)
    nfe = positive_int(nfe, "nfe", who)
    if not (0.0 < float(sigma_end) < plan.sigma_mid):
        raise ValueError(f"{who}: sigma_end must be in (0, plan.sigma_mid={plan.sigma_mid}), got {sigma_end!r}")
    k_z, k_s = jax.random.split(key)
    ot = plan.ot
    z = standard_noises(k_z, num_samples, ot.targets.shape[1:], ot.targets.dtype)
    cells = ot.assign(z)
    x_mid = ot.targets[cells]
    x, info = sample(model, key=k_s, x_init=x_mid, sigma_max=plan.sigma_mid, nfe=nfe, solver=solver, grid=grid,
                     sigma_end=sigma_end, solver_options=solver_options)
    cost = make_cost(num_model_evals=int(info.num_model_evals), num_devices=1)
    for k in ("compile_seconds", "sampling_seconds", "num_compilations"):
        if k in info.cost:
            cost[k] = info.cost[k]
    return x, DPMOTInfo(int(info.num_model_evals), cells, x_mid, info, cost)
