"""Shortcut models: one network for 1-, 2-, 4-, ... step sampling (Frans, Hafner, Levine & Abbeel 2024).

Flow time ``tau`` in [0, 1] on the linear interpolant ``x_tau = (1 - tau) x0 + tau eps`` (``tau = 1`` pure
noise, ``tau = 0`` data; the VE state of ``x_tau`` is ``x_tau / (1 - tau)`` at ``sigma = tau / (1 - tau)``).
A shortcut model ``s(x, tau, d)`` is conditioned on the noise level AND on the step size ``d`` and predicts the
average velocity of the flow over ``[tau - d, tau]``, so that one sampling step is

``x_{tau - d} = x_tau - d * s(x_tau, tau, d)``.

Training (paper, sec. 3-4) mixes two regressions, all in velocity units, ``d`` a power of two
``1/M, 2/M, ..., 1`` with ``M = shortcut_steps``:

* flow matching at the smallest step: ``|s(x_tau, tau, 1/M) - (eps - x0)|^2`` with ``tau ~ U(0, 1]``
  (Lipman et al. 2022; Liu et al. 2022) -- as ``d -> 0`` the shortcut is the flow's velocity;
* self-consistency: a step of ``2d`` equals two steps of ``d``:
  ``|s(x_tau, tau, 2d) - sg[(s(x_tau, tau, d) + s(x', tau - d, d)) / 2]|^2`` with
  ``x' = x_tau - d s(x_tau, tau, d)``, ``sg`` a stop-gradient, ``2d`` drawn uniformly from ``{2/M, ..., 1}``
  (in log2 scale) and ``tau`` uniformly from the multiples ``{2d, 4d, ..., 1}`` (the sampling grid of step
  ``2d``). As in the paper a fraction ``shortcut_fraction`` (1/4) of each batch takes the self-consistency target,
  the rest the flow-matching one.

Each self-consistency point costs 3 network passes (1 with a backward pass, 2 for the target), each
flow-matching point 1; :func:`evals_per_batch` gives the count the trainer reports.

The network (:class:`ShortcutMLP`) is an MLP (SiLU) fed with ``x_tau`` and sinusoidal embeddings of ``tau`` and
of ``log2(1/d) / log2(M)``. It is also an ordinary samplax denoiser: ``model(x, sigma)`` reads the x0-prediction
off the smallest-step velocity, ``x0 = x_tau - tau s(x_tau, tau, 1/M)``, so every solver of
:func:`samplax.diffusion.sample` runs it; the few-step shortcut sampler is :func:`sample_shortcut` (the solver
protocol passes only ``sigma`` to the model, not a step size, so the shortcut steps have their own small loop
on the uniform ``tau`` grid, which is where the model was trained to be consistent).

Paper: K. Frans, D. Hafner, S. Levine, P. Abbeel, "One Step Diffusion via Shortcut Models", ICLR 2025
(arXiv:2410.12557).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import Cost, make_cost


def check_steps(shortcut_steps, name: str = "shortcut_steps") -> int:
    """``shortcut_steps`` (M, the finest sampling grid) as an int; it must be a power of two >= 2."""
    if (not isinstance(shortcut_steps, (int, np.integer)) or isinstance(shortcut_steps, bool) or shortcut_steps < 2
            or (int(shortcut_steps) & (int(shortcut_steps) - 1))):
        raise ValueError(f"{name} must be a power of two >= 2 (the finest grid has step 1/{name}), "
                         f"got {shortcut_steps!r}")
    return int(shortcut_steps)


def check_step_size(d, shortcut_steps: int, name: str = "d") -> float:
    """A step size ``d`` given as a number: it must be ``2^-k`` with ``1/shortcut_steps <= d <= 1``."""
    try:
        v = float(d)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number 2^-k, got {d!r}") from None
    k = -math.log2(v) if v > 0 else float("nan")
    if not (v > 0 and k == round(k) and 0 <= k <= math.log2(shortcut_steps)):
        raise ValueError(f"{name} must be a power-of-two fraction 2^-k with 1/{shortcut_steps} <= {name} <= 1 "
                         f"(shortcut_steps={shortcut_steps}), got {d!r}")
    return v


class ShortcutMLP(eqx.Module):
    """Shortcut network ``s(x_tau, tau, d)`` for one point ``[dim]`` (module docstring); also a denoiser."""

    mlp: eqx.nn.MLP
    sigma_data: float = eqx.field(static=True)
    emb_dim: int = eqx.field(static=True)
    shortcut_steps: int = eqx.field(static=True)

    def __init__(self, key, dim: int, width: int = 128, depth: int = 3, emb_dim: int = 16,
                 sigma_data: float = 0.5, shortcut_steps: int = 128, dtype=None):
        self.mlp = eqx.nn.MLP(dim + 2 * emb_dim, dim, width, depth, activation=jax.nn.silu, key=key, dtype=dtype)
        self.sigma_data = float(sigma_data)
        self.emb_dim = int(emb_dim)
        self.shortcut_steps = check_steps(shortcut_steps)

    def _embed(self, c):
        half = self.emb_dim // 2
        freqs = jnp.exp(jnp.linspace(0.0, math.log(64.0), half)).astype(c.dtype)
        return jnp.concatenate([jnp.cos(freqs * c), jnp.sin(freqs * c)])

    def velocity(self, x_tau, tau, d):
        """The shortcut ``s(x_tau, tau, d)``: the step ``x_{tau-d} = x_tau - d s`` (``d`` may be traced)."""
        dt = self.mlp.layers[0].weight.dtype
        x_tau = jnp.asarray(x_tau, dt)
        tau = jnp.asarray(tau, dt)
        level = jnp.log2(1.0 / jnp.asarray(d, dt)) / math.log2(self.shortcut_steps)  # 0 at d = 1, 1 at d = 1/M
        scale = jnp.sqrt((1.0 - tau) ** 2 * self.sigma_data**2 + tau**2)  # std of x_tau for data of std sigma_data
        h = jnp.concatenate([x_tau / scale, self._embed(4.0 * tau), self._embed(level)])
        return self.mlp(h)

    def __call__(self, x, sigma):
        """Denoiser ``D(x, sigma) = x_tau - tau s(x_tau, tau, 1/M)`` with ``tau = sigma/(1+sigma)``,
        ``x_tau = x/(1+sigma)`` (the smallest-step velocity as flow-matching velocity)."""
        dt = self.mlp.layers[0].weight.dtype
        s = jnp.asarray(sigma, dt)
        tau = s / (1.0 + s)
        x_tau = jnp.asarray(x, dt) / (1.0 + s)
        return x_tau - tau * self.velocity(x_tau, tau, 1.0 / self.shortcut_steps)


def consistency_target(model: Callable, x_tau, tau, d, shortcut_steps=None):
    """``(s(x_tau, tau, d) + s(x', tau - d, d)) / 2`` with ``x' = x_tau - d s(x_tau, tau, d)`` (stop-gradient):
    the velocity of two steps of size ``d``, the target of ``s(x_tau, tau, 2d)``. ``model(x, tau, d)``.

    With ``shortcut_steps`` (M) given, ``d`` must be a number ``2^-k`` with ``1/M <= d <= 1/2`` and ``tau`` a
    number with ``2d <= tau <= 1`` (checked; without it ``d`` and ``tau`` may be traced and are not checked)."""
    if shortcut_steps is not None:
        m = check_steps(shortcut_steps)
        d = check_step_size(d, m, "d")
        if d > 0.5:
            raise ValueError(f"consistency_target: d must be <= 1/2 (two steps of d must fit in [0, 1]), got {d}")
        if not (2.0 * d <= float(tau) <= 1.0):
            raise ValueError(f"consistency_target: tau must be in [2d, 1] = [{2.0 * d}, 1], got {tau!r}")
    v1 = model(x_tau, tau, d)
    v2 = model(x_tau - d * v1, tau - d, d)
    return jax.lax.stop_gradient(0.5 * (v1 + v2))


def consistency_loss(model: Callable, key, x0, shortcut_steps: int):
    """One point's self-consistency loss ``mean |s(x_tau, tau, 2d) - consistency_target(..., d)|^2`` with
    ``2d = 2^-k``, ``k`` uniform in ``{0, ..., log2(M) - 1}``, ``tau`` uniform in ``{2d, 4d, ..., 1}`` and
    ``x_tau = (1 - tau) x0 + tau eps``. ``model(x, tau, d)`` is the shortcut (e.g. ``ShortcutMLP.velocity``).
    Returns ``(loss, tau)``."""
    m = check_steps(shortcut_steps)
    kk, kt, ke = jax.random.split(key, 3)
    dt = x0.dtype
    k = jax.random.randint(kk, (), 0, int(math.log2(m)))
    n = jnp.left_shift(jnp.asarray(1, jnp.int32), k)  # 1/(2d), exact in integers
    d2 = 1.0 / n.astype(dt)  # the big step 2d
    tau = jax.random.randint(kt, (), 1, n + 1).astype(dt) / n.astype(dt)
    eps = jax.random.normal(ke, x0.shape, dt)
    x_tau = (1.0 - tau) * x0 + tau * eps
    target = consistency_target(model, x_tau, tau, 0.5 * d2)
    return jnp.mean((model(x_tau, tau, d2) - target) ** 2), tau


def flow_matching_loss(model: Callable, key, x0, shortcut_steps: int):
    """One point's flow-matching loss at the smallest step, ``mean |s(x_tau, tau, 1/M) - (eps - x0)|^2``,
    ``tau = 1 - U[0, 1)`` in (0, 1]. Returns ``(loss, tau)``."""
    m = check_steps(shortcut_steps)
    kt, ke = jax.random.split(key)
    dt = x0.dtype
    tau = 1.0 - jax.random.uniform(kt, (), dt)
    eps = jax.random.normal(ke, x0.shape, dt)
    x_tau = (1.0 - tau) * x0 + tau * eps
    return jnp.mean((model(x_tau, tau, 1.0 / m) - (eps - x0)) ** 2), tau


def num_consistency_points(batch_size: int, fraction: float) -> int:
    """How many points of a batch take the self-consistency target: ``round(fraction * B)`` clipped to
    ``[1, B - 1]`` (for ``B >= 2``)."""
    return int(min(max(round(fraction * batch_size), 1), max(batch_size - 1, 1)))


def evals_per_batch(batch_size: int, fraction: float) -> int:
    """Network passes of one training batch: 3 per self-consistency point, 1 per flow-matching point."""
    n_sc = num_consistency_points(batch_size, fraction)
    return 3 * n_sc + (batch_size - n_sc)


def batch_losses(model: ShortcutMLP, keys, x0, shortcut_steps: int, fraction: float):
    """Per-point losses ``[B]`` of a batch ``x0`` ``[B, dim]`` (point i uses ``keys[i]``) and their noise levels
    ``sigma = tau/(1 - tau)`` (inf at tau = 1): the first :func:`num_consistency_points` points take
    :func:`consistency_loss`, the rest :func:`flow_matching_loss` (the paper's batch split)."""
    n_sc = num_consistency_points(x0.shape[0], fraction)
    f = model.velocity
    l_sc, t_sc = jax.vmap(lambda k, x: consistency_loss(f, k, x, shortcut_steps))(keys[:n_sc], x0[:n_sc])
    l_fm, t_fm = jax.vmap(lambda k, x: flow_matching_loss(f, k, x, shortcut_steps))(keys[n_sc:], x0[n_sc:])
    tau = jnp.concatenate([t_sc, t_fm])
    return jnp.concatenate([l_sc, l_fm]), tau / (1.0 - tau)


class ShortcutInfo(NamedTuple):
    """Diagnostics of :func:`sample_shortcut`: ``num_model_evals`` (network calls per sample, = ``num_steps``),
    ``taus`` (the flow times visited, numpy, from 1 to 0), ``step_size`` (``d = 1/num_steps``) and ``cost``
    (:class:`samplax.core.cost.Cost` with ``num_model_evals`` and ``num_devices``)."""

    num_model_evals: int
    taus: np.ndarray
    step_size: float
    cost: Cost


@eqx.filter_jit
def _run(model, key, batch: int, num_steps):
    """``num_steps`` is traced: one compilation per model structure and batch serves every step count."""
    dt = model.mlp.layers[0].weight.dtype
    dim = model.mlp.layers[0].weight.shape[1] - 2 * model.emb_dim
    x = jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(key, b), (dim,), dt))(jnp.arange(batch))
    d = 1.0 / num_steps.astype(dt)

    def body(i, x):
        tau = 1.0 - i.astype(dt) * d
        return x - d * jax.vmap(model.velocity, in_axes=(0, None, None))(x, tau, d)

    return jax.lax.fori_loop(0, num_steps, body, x)


def sample_shortcut(model: ShortcutMLP, *, key, batch: int, num_steps: int):
    """Draw ``batch`` points from a shortcut model in ``num_steps`` network calls each.

    Starts from ``x_1 = eps ~ N(0, I)`` (sample b's noise from ``fold_in(key, b)``) and takes ``num_steps``
    shortcut steps of size ``d = 1/num_steps`` on the uniform flow-time grid,
    ``x_{tau - d} = x_tau - d s(x_tau, tau, d)``, ending at ``tau = 0`` (Frans et al. 2024, Algorithm 2).
    ``num_steps`` must be a power of two ``<= model.shortcut_steps`` (the step sizes the model was trained on).
    Returns ``(samples [batch, dim], ShortcutInfo)``.
    """
    if not isinstance(model, ShortcutMLP):
        raise ValueError(f"sample_shortcut: model must be a ShortcutMLP, got {type(model).__name__}")
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"sample_shortcut: batch must be a positive int, got {batch!r}")
    if (not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool) or num_steps < 1
            or (int(num_steps) & (int(num_steps) - 1)) or num_steps > model.shortcut_steps):
        raise ValueError(f"sample_shortcut: num_steps must be a power of two between 1 and the model's "
                         f"shortcut_steps={model.shortcut_steps}, got {num_steps!r}")
    x = _run(model, key, int(batch), jnp.asarray(int(num_steps), jnp.int32))
    n = int(num_steps)
    info = ShortcutInfo(n, np.linspace(1.0, 0.0, n + 1), 1.0 / n, make_cost(num_model_evals=n, num_devices=1))
    return x, info
