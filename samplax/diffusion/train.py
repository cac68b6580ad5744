"""Training small denoisers: an EDM-preconditioned MLP, DSM and flow-matching losses, EMA, checkpoints.

The trained object is always a samplax denoiser ``D(x, sigma) = E[x0 | x0 + sigma eps = x]``
for ONE point (VE convention), so it plugs straight into :func:`samplax.diffusion.sample`.

Network (:class:`MLPDenoiser`): the preconditioning of Karras et al. (2022, Table 1, "EDM"),

``D(x, s) = c_skip(s) x + c_out(s) F(c_in(s) x, emb(c_noise(s)))`` with
``c_skip = sd^2/(s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``, ``c_in = 1/sqrt(s^2 + sd^2)``,
``c_noise = log(s)/4`` and ``sd`` the data standard deviation; ``F`` is an MLP (SiLU)
fed with the scaled point and a sinusoidal embedding of ``c_noise`` (Vaswani et al. 2017).

Losses (both regress the clean point; they differ in the noise distribution and weight):

* ``"dsm"`` -- denoising score matching (Vincent 2011) in EDM form:
  ``E_{s, x0, eps} lambda(s) |D(x0 + s eps, s) - x0|^2`` with ``ln s ~ N(P_mean, P_std^2)``
  and ``lambda(s) = (s^2 + sd^2) / (s sd)^2`` (Karras et al. 2022, sec. 5).
* ``"fm"`` -- conditional flow matching on the linear interpolant
  ``x_t = (1 - t) x0 + t eps``, ``t ~ U(t_min, t_max)`` (Lipman et al. 2022; Liu et al. 2022):
  ``E |u_hat(x_t, t) - (eps - x0)|^2``. Reading the velocity off the x0-prediction
  ``D = D(x_t/(1-t), t/(1-t))`` (the VE state of ``x_t`` is ``x0 + sigma eps`` with
  ``sigma = t/(1-t)``) gives ``u_hat = (x_t - D)/t`` and ``u = (x_t - x0)/t``, so
  ``u_hat - u = (x0 - D)/t`` and the loss is ``E |D(x0 + sigma eps, sigma) - x0|^2 / t^2``.
* ``"shortcut"`` (with ``model="shortcut"``) -- shortcut models (Frans et al. 2024,
  :mod:`samplax.diffusion.shortcut`): the network also takes a step size ``d``; a fraction
  ``shortcut_fraction`` of each batch regresses ``s(x, tau, 2d)`` on two steps of size ``d`` (self-consistency),
  the rest is flow matching at the smallest step ``1/shortcut_steps``. Sample it in 1, 2, 4, ... steps with
  :func:`samplax.diffusion.shortcut.sample_shortcut`.
* ``"sfd"`` -- Simple and Fast Distillation (Zhou et al. 2024, :mod:`samplax.diffusion.distill`): the denoiser
  is fine-tuned so that one DDIM step per interval of a fixed ``sfd_steps``-step grid follows the teacher's
  multi-step PF-ODE trajectory from the same noise (``train(..., teacher=...)``; data-free, ``data_fn`` may be
  ``None``). Sample it with :func:`samplax.diffusion.distill.sample_sfd`.
* ``"emd"`` (with ``model="emd"``) -- EM distillation (Xie et al. 2024, :mod:`samplax.diffusion.distill`): a
  one-step generator fitted to the teacher's noised marginals by an E-step of reparameterized Langevin on
  ``(eps, z)`` and an M-step regression, with a student-score network trained by DSM on generator samples
  (``train(..., teacher=...)``; data-free). Sample it with :func:`samplax.diffusion.distill.sample_emd`.

Optimiser: Adam (Kingma & Ba 2015) after global-norm clipping. EMA of the weights
(Polyak & Juditsky 1992) with the warm-up ``decay_k = min(decay, (1 + k)/(10 + k))``
(as TensorFlow's ``ExponentialMovingAverage(num_updates=k)``).

Randomness: the batch and the noise of step ``k`` come from ``fold_in(key, k)`` only, so a
run split into chunks, or saved and resumed with the same key, reproduces a single
uninterrupted run exactly. Keys are never stored; the CLI stores the seed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplax.core.cost import make_cost
from samplax.diffusion._compiled import Clock, ExecutableCache
from samplax.diffusion import distill as _distill
from samplax.diffusion import shortcut as _shortcut
from samplax.diffusion.energy import MLPDifferenceEnergy, MLPScalarEnergy

LOSSES = ("dsm", "fm", "shortcut", "sfd", "emd")
#: Losses that distil a teacher (``train(..., teacher=...)``) and need no data (``data_fn`` may be ``None``).
DISTILL_LOSSES = ("sfd", "emd")
#: ``TrainConfig.model``: the network trained. ``"denoiser"`` is :class:`MLPDenoiser`; the energy-parameterized
#: models (:mod:`samplax.diffusion.energy`) are trained through their implied denoiser ``x - sigma^2 grad_x E``.
#: ``"shortcut"`` is :class:`~samplax.diffusion.shortcut.ShortcutMLP` (trained with ``loss="shortcut"`` only).
#: ``"emd"`` is :class:`~samplax.diffusion.distill.EMDModel` (generator + student-score MLPs, with ``loss="emd"``).
MODEL_KINDS = ("denoiser", "energy_difference", "energy_scalar", "shortcut", "emd")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Structure and hyper-parameters of a training run (JSON-serialisable, hashable).

    Attributes:
      dim: data dimension.
      width, depth: MLP hidden width and number of hidden layers.
      emb_dim: size of the sinusoidal noise embedding (even).
      sigma_data: data standard deviation used by the preconditioning.
      loss: ``"dsm"``, ``"fm"``, ``"shortcut"`` (exactly with ``model="shortcut"``), ``"sfd"`` (a denoiser
        model) or ``"emd"`` (exactly with ``model="emd"``); the last two distil ``train``'s ``teacher``.
      learning_rate, batch_size, grad_clip: Adam step size, points per step, global-norm clip.
      ema_decay: EMA decay (with warm-up, see module docstring).
      p_mean, p_std: log-normal noise distribution of the DSM loss.
      t_min, t_max: time range of the flow-matching loss.
      dtype: ``"float32"`` or ``"float64"`` (parameters).
      model: ``"denoiser"`` (:class:`MLPDenoiser`), ``"energy_difference"``
        (:class:`~samplax.diffusion.energy.MLPDifferenceEnergy`) or ``"energy_scalar"``
        (:class:`~samplax.diffusion.energy.MLPScalarEnergy`); the losses act on the model's denoiser (for an
        energy model ``x - sigma^2 grad_x E``, so every step differentiates through a gradient), or
        ``"shortcut"`` (:class:`~samplax.diffusion.shortcut.ShortcutMLP`, with ``loss="shortcut"``).
      shortcut_steps: for ``"shortcut"``: M, a power of two; the step sizes trained are ``1/M, 2/M, ..., 1``.
      shortcut_fraction: for ``"shortcut"``: fraction of each batch given the self-consistency target (paper: 1/4).
      sfd_steps: for ``"sfd"``: the student's step count N (denoiser calls per sample).
      sfd_sigma_max, sfd_sigma_end: for ``"sfd"``: the student's grid, :func:`~samplax.diffusion.distill.sfd_grid`.
      sfd_teacher_steps: for ``"sfd"``: teacher Heun steps per student interval (``2 M`` teacher calls each).
      emd_langevin_steps: for ``"emd"``: K, E-step Langevin steps per M-step (K teacher calls per point).
      emd_step_eps, emd_step_z: for ``"emd"``: Langevin step sizes on the reparameterized noise and the latent.
      emd_sigma_min, emd_sigma_max: for ``"emd"``: the E-step noise level is log-uniform in this range.
      emd_gen_sigma: for ``"emd"``: the generator is ``g(z) = G(emd_gen_sigma z, emd_gen_sigma)``.
      emd_noise_cancellation: for ``"emd"``: drop the chain's Gaussian noise from the M-step target (the
        paper's variance reduction; biased for long chains, see :mod:`samplax.diffusion.distill`).
    """

    dim: int = 2
    width: int = 128
    depth: int = 3
    emb_dim: int = 16
    sigma_data: float = 0.5
    loss: str = "dsm"
    learning_rate: float = 1e-3
    batch_size: int = 256
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_mean: float = -1.2
    p_std: float = 1.2
    t_min: float = 1e-3
    t_max: float = 0.999
    dtype: str = "float32"
    model: str = "denoiser"
    shortcut_steps: int = 128
    shortcut_fraction: float = 0.25
    sfd_steps: int = 2
    sfd_sigma_max: float = 80.0
    sfd_sigma_end: float = 0.5
    sfd_teacher_steps: int = 32
    emd_langevin_steps: int = 4
    emd_step_eps: float = 0.1
    emd_step_z: float = 0.01
    emd_sigma_min: float = 0.05
    emd_sigma_max: float = 5.0
    emd_gen_sigma: float = 2.5
    emd_noise_cancellation: bool = True

    def __post_init__(self):
        for name in ("dim", "width", "depth", "emb_dim", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainConfig: {name} must be a positive int, got {v!r}")
        if self.emb_dim % 2:
            raise ValueError(f"TrainConfig: emb_dim must be even, got {self.emb_dim}")
        if self.loss not in LOSSES:
            raise ValueError(f"TrainConfig: loss must be one of {LOSSES}, got {self.loss!r}")
        if not (0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"TrainConfig: ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("sigma_data", "learning_rate", "grad_clip", "p_std"):
            if not (getattr(self, name) > 0):
                raise ValueError(f"TrainConfig: {name} must be positive, got {getattr(self, name)}")
        if not (0.0 < self.t_min < self.t_max < 1.0):
            raise ValueError(f"TrainConfig: need 0 < t_min < t_max < 1, got {self.t_min}, {self.t_max}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"TrainConfig: dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.model not in MODEL_KINDS:
            raise ValueError(f"TrainConfig: model must be one of {MODEL_KINDS}, got {self.model!r}")
        if (self.loss == "shortcut") != (self.model == "shortcut"):
            raise ValueError(f"TrainConfig: loss 'shortcut' goes with model 'shortcut' and only with it, got "
                             f"loss={self.loss!r}, model={self.model!r}")
        if (self.loss == "emd") != (self.model == "emd"):
            raise ValueError(f"TrainConfig: loss 'emd' goes with model 'emd' and only with it, got "
                             f"loss={self.loss!r}, model={self.model!r}")
        for name in ("sfd_steps", "sfd_teacher_steps", "emd_langevin_steps"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainConfig: {name} must be a positive int, got {v!r}")
        if not (0.0 < self.sfd_sigma_end < self.sfd_sigma_max < math.inf):
            raise ValueError(f"TrainConfig: need 0 < sfd_sigma_end < sfd_sigma_max (finite), got sfd_sigma_end="
                             f"{self.sfd_sigma_end}, sfd_sigma_max={self.sfd_sigma_max}")
        if not (0.0 < self.emd_sigma_min < self.emd_sigma_max < math.inf):
            raise ValueError(f"TrainConfig: need 0 < emd_sigma_min < emd_sigma_max (finite), got emd_sigma_min="
                             f"{self.emd_sigma_min}, emd_sigma_max={self.emd_sigma_max}")
        for name in ("emd_step_eps", "emd_step_z", "emd_gen_sigma"):
            if not (0.0 < getattr(self, name) < math.inf):
                raise ValueError(f"TrainConfig: {name} must be positive and finite, got {getattr(self, name)}")
        if not isinstance(self.emd_noise_cancellation, bool):
            raise ValueError(f"TrainConfig: emd_noise_cancellation must be a bool, got {self.emd_noise_cancellation!r}")
        _shortcut.check_steps(self.shortcut_steps, "TrainConfig: shortcut_steps")
        if not (0.0 < self.shortcut_fraction < 1.0):
            raise ValueError(f"TrainConfig: shortcut_fraction must be in (0, 1), got {self.shortcut_fraction}")


class MLPDenoiser(eqx.Module):
    """EDM-preconditioned MLP denoiser ``D(x, sigma)`` for one point ``x`` ``[dim]`` (see module docstring)."""

    mlp: eqx.nn.MLP
    sigma_data: float = eqx.field(static=True)
    emb_dim: int = eqx.field(static=True)

    def __init__(self, key, dim: int, width: int = 128, depth: int = 3, emb_dim: int = 16,
                 sigma_data: float = 0.5, dtype=None):
        self.mlp = eqx.nn.MLP(dim + emb_dim, dim, width, depth, activation=jax.nn.silu, key=key, dtype=dtype)
        self.sigma_data = float(sigma_data)
        self.emb_dim = int(emb_dim)

    def embed(self, c_noise):
        """Sinusoidal embedding ``[cos(f_k c), sin(f_k c)]`` with frequencies ``f_k`` geometric in [1, 64]."""
        half = self.emb_dim // 2
        freqs = jnp.exp(jnp.linspace(0.0, math.log(64.0), half)).astype(c_noise.dtype)
        return jnp.concatenate([jnp.cos(freqs * c_noise), jnp.sin(freqs * c_noise)])

    def __call__(self, x, sigma):
        """``c_skip x + c_out F(c_in x, emb(log(sigma)/4))`` (Karras et al. 2022)."""
        dt = self.mlp.layers[0].weight.dtype
        x = jnp.asarray(x, dt)
        s = jnp.asarray(sigma, dt)
        sd = self.sigma_data
        norm = jnp.sqrt(s * s + sd * sd)
        h = jnp.concatenate([x / norm, self.embed(jnp.log(s) / 4.0)])
        return (sd * sd / (norm * norm)) * x + (s * sd / norm) * self.mlp(h)


class TrainState(NamedTuple):
    """Training state: ``step`` (number of optimiser steps taken, int32), the model, the optimiser state and the EMA model."""

    step: jax.Array
    model: MLPDenoiser
    opt_state: optax.OptState
    ema: MLPDenoiser


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping followed by Adam (Kingma & Ba 2015)."""
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.learning_rate))


def init_train_state(key, config: TrainConfig) -> TrainState:
    """A fresh state: the network of ``config.model`` with weights from ``key``, EMA = weights, step 0."""
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("init_train_state: dtype 'float64' needs jax_enable_x64")
    if config.model == "shortcut":
        model = _shortcut.ShortcutMLP(key, config.dim, config.width, config.depth, config.emb_dim, config.sigma_data,
                                      config.shortcut_steps, dtype=dtype)
        params = eqx.filter(model, eqx.is_inexact_array)
        return TrainState(jnp.asarray(0, jnp.int32), model, make_optimizer(config).init(params), model)
    if config.model == "emd":
        k1, k2 = jax.random.split(key)
        nets = [MLPDenoiser(k, config.dim, config.width, config.depth, config.emb_dim, config.sigma_data, dtype=dtype)
                for k in (k1, k2)]
        model = _distill.EMDModel(nets[0], nets[1], float(config.emd_gen_sigma))
        params = eqx.filter(model, eqx.is_inexact_array)
        return TrainState(jnp.asarray(0, jnp.int32), model, make_optimizer(config).init(params), model)
    if config.model == "denoiser":
        cls = MLPDenoiser
    else:
        cls = MLPDifferenceEnergy if config.model == "energy_difference" else MLPScalarEnergy
    model = cls(key, config.dim, config.width, config.depth, config.emb_dim, config.sigma_data, dtype=dtype)
    params = eqx.filter(model, eqx.is_inexact_array)
    return TrainState(jnp.asarray(0, jnp.int32), model, make_optimizer(config).init(params), model)


def _point_loss_and_sigma(model, key, x0, config: TrainConfig):
    """:func:`point_loss` and the noise level ``sigma`` it drew (the VE level; ``t/(1-t)`` for flow matching)."""
    if config.loss in ("shortcut",) + DISTILL_LOSSES:
        raise ValueError(f"point_loss: loss {config.loss!r} is computed per batch (shortcut: split batch; "
                         "sfd/emd: a teacher); use batch_loss")
    k1, k2 = jax.random.split(key)
    dt = x0.dtype
    eps = jax.random.normal(k2, x0.shape, dt)
    if config.loss == "dsm":
        s = jnp.exp(config.p_mean + config.p_std * jax.random.normal(k1, (), dt))
        sd2 = config.sigma_data**2
        w = (s * s + sd2) / (s * s * sd2)
    else:
        t = jax.random.uniform(k1, (), dt, minval=config.t_min, maxval=config.t_max)
        s = t / (1.0 - t)
        w = 1.0 / (t * t)
    return w * jnp.mean((model(x0 + s * eps, s) - x0) ** 2), s


def point_loss(model, key, x0, config: TrainConfig):
    """(Not for ``loss="shortcut"``, whose batch is split: :func:`samplax.diffusion.shortcut.batch_losses`.) One point's loss (``config.loss``): ``lambda(s)|D(x0 + s eps, s) - x0|^2`` (DSM) or ``|D - x0|^2 / t^2`` (FM), averaged over coordinates."""
    return _point_loss_and_sigma(model, key, x0, config)[0]


def _batch_loss_and_nonfinite(model, key, x0, config: TrainConfig, teacher=None):
    """:func:`batch_loss` and, as auxiliary output, ``(points with a non-finite loss, the sigma of the first
    such point (NaN if none), data points with non-finite coordinates)``: tracked inside the compiled step.
    For the distillation losses ``x0`` is only a placeholder of the batch shape (they draw their own noise)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x0.shape[0]))
    if config.loss == "shortcut":  # the batch is split between two targets (shortcut.batch_losses)
        losses, sigmas = _shortcut.batch_losses(model, keys, x0, config.shortcut_steps, config.shortcut_fraction)
    elif config.loss == "sfd":
        grid = _distill.sfd_grid(config.sfd_steps, config.sfd_sigma_max, config.sfd_sigma_end)
        losses, sigmas = _distill.sfd_batch_losses(model, teacher, keys, grid, config.sfd_teacher_steps,
                                                   x0.shape[-1], x0.dtype)
    elif config.loss == "emd":
        losses, sigmas = jax.vmap(lambda k: _distill.emd_point_loss(
            model, teacher, k, config.emd_langevin_steps, config.emd_step_eps, config.emd_step_z,
            config.emd_sigma_min, config.emd_sigma_max, config.p_mean, config.p_std, config.sigma_data,
            config.emd_noise_cancellation))(keys)
    else:
        losses, sigmas = jax.vmap(_point_loss_and_sigma, (None, 0, 0, None))(model, keys, x0, config)
    bad = ~jnp.isfinite(losses)
    first = jnp.argmax(bad)
    aux = (jnp.sum(bad).astype(jnp.int32), jnp.where(bad[first], sigmas[first], jnp.nan),
           jnp.sum(~jnp.all(jnp.isfinite(x0), axis=-1)).astype(jnp.int32))
    return jnp.mean(losses), aux


def batch_loss(model, key, x0, config: TrainConfig, teacher=None):
    """Mean of :func:`point_loss` over a batch ``x0`` ``[B, dim]``; point i uses ``fold_in(key, i)``. The
    distillation losses (``"sfd"``, ``"emd"``) need ``teacher`` and use ``x0`` only for its shape."""
    if config.loss in DISTILL_LOSSES:
        _distill.check_teacher(teacher, "batch_loss")
    return _batch_loss_and_nonfinite(model, key, x0, config, teacher)[0]


class NonFiniteLossError(ValueError, FloatingPointError):
    """Training met a non-finite loss (a ValueError, and a FloatingPointError as before)."""


def _one_step(key, state: TrainState, config: TrainConfig, data_fn: Optional[Callable], teacher=None):
    k_data, k_loss = jax.random.split(jax.random.fold_in(key, state.step))
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    if data_fn is None:  # a distillation loss: data-free
        x0 = jnp.zeros((config.batch_size, config.dim), dtype)
    else:
        x0 = jnp.asarray(data_fn(k_data, config.batch_size), dtype)
    params, static = eqx.partition(state.model, eqx.is_inexact_array)
    (loss, aux), grads = jax.value_and_grad(
        lambda p: _batch_loss_and_nonfinite(eqx.combine(p, static), k_loss, x0, config, teacher),
        has_aux=True)(params)
    updates, opt_state = make_optimizer(config).update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    k = state.step.astype(dtype)
    decay = jnp.minimum(config.ema_decay, (1.0 + k) / (10.0 + k))
    ema_p = eqx.filter(state.ema, eqx.is_inexact_array)
    ema_p = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema_p, params)
    return TrainState(state.step + 1, eqx.combine(params, static), opt_state, eqx.combine(ema_p, static)), (loss, aux)


@eqx.filter_jit
def _run_chunk(key, state, num_steps: int, config: TrainConfig, data_fn: Callable, teacher=None):
    dyn, static = eqx.partition(state, eqx.is_array)

    def body(d, _):
        st, out = _one_step(key, eqx.combine(d, static), config, data_fn, teacher)
        return eqx.filter(st, eqx.is_array), out

    dyn, (losses, nonfinite) = jax.lax.scan(body, dyn, None, length=num_steps)
    return eqx.combine(dyn, static), losses, nonfinite


_EXECUTABLES = ExecutableCache(16)  # compiled chunks (per chunk length, config, data function, state shapes)


def train(key, config: TrainConfig, data_fn: Optional[Callable], num_steps: int, state: Optional[TrainState] = None,
          chunk: int = 500, callback: Optional[Callable] = None, return_cost: bool = False, teacher=None):
    """Run ``num_steps`` optimiser steps (from ``state``, or from a fresh state drawn from ``key``).

    Step ``k`` uses ``fold_in(key, k)`` for its batch (``data_fn(key, batch_size) -> [B, dim]``)
    and noise, so resuming a saved state with the same ``key`` continues the run exactly.
    Steps run in jitted ``lax.scan`` chunks of ``chunk`` steps; ``callback(state, losses)``
    is called after each chunk (e.g. for progress).

    The distillation losses (``config.loss`` ``"sfd"`` or ``"emd"``, :mod:`samplax.diffusion.distill`) need
    ``teacher``, a denoiser ``teacher(x, sigma)`` for one point (an equinox module such as
    :func:`samplax.diffusion.ring8` is traced, a plain function is static), and no data: ``data_fn`` may be
    ``None``. To fine-tune a trained network (SFD) pass its state as ``state``.

    Returns:
      ``(state, losses)`` with ``losses`` a numpy array of the ``num_steps`` batch losses;
      with ``return_cost=True``, ``(state, losses, cost)`` with ``cost`` the shared cost record
      (:class:`samplax.core.cost.Cost`) of this call: ``num_training_steps`` (``num_steps``),
      ``num_model_evals`` (``num_steps * batch_size`` network forward passes, each with its
      backward pass; the count the checkpoint metadata and CLI use; for ``loss="shortcut"``
      ``num_steps *`` :func:`~samplax.diffusion.shortcut.evals_per_batch`, 3 passes per self-consistency
      point of which 2 without backward pass, 1 per flow-matching point), ``compile_seconds``
      (tracing and compiling the chunk programs; 0.0 when they came from the cache),
      ``sampling_seconds`` (running the steps until ready, callbacks excluded),
      ``num_compilations`` (0, 1 or 2: one per new chunk length) and ``num_devices`` (1); for the
      distillation losses also ``num_teacher_evals`` (teacher denoiser calls, counted apart from the student's
      network passes in ``num_model_evals``; :func:`teacher_evals_per_step`).
    """
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"train: num_steps must be an int >= 0, got {num_steps!r}")
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"train: chunk must be a positive int, got {chunk!r}")
    if config.loss in DISTILL_LOSSES:
        _distill.check_teacher(teacher, "train")
    elif teacher is not None:
        raise ValueError(f"train: teacher is for the distillation losses {DISTILL_LOSSES}, got loss={config.loss!r}")
    elif data_fn is None:
        raise ValueError(f"train: data_fn must be given for loss={config.loss!r} (only {DISTILL_LOSSES} are "
                         "data-free)")
    if state is None:
        state = init_train_state(jax.random.fold_in(key, 2**31 - 1), config)  # not a step index
    losses = []
    done = 0
    clock = Clock()
    if num_steps > 0 and data_fn is not None:
        _check_data_fn(key, config, data_fn)
    while done < num_steps:
        n = min(int(chunk), int(num_steps) - done)
        state, ls, nonfinite = clock.call(_run_chunk, (key, state, n, config, data_fn, teacher), _EXECUTABLES)
        ls = np.asarray(ls)
        losses.append(ls)
        done += n
        if not np.all(np.isfinite(ls)):
            _raise_nonfinite(int(state.step) - n, ls, *(np.asarray(a) for a in nonfinite), config.batch_size)
        if callback is not None:
            callback(state, ls)
    losses = np.concatenate(losses) if losses else np.zeros(0)
    if not return_cost:
        return state, losses
    seconds = dict(compile_seconds=clock.compile_seconds, sampling_seconds=clock.run_seconds,
                   num_compilations=clock.num_compilations) if clock.timed else {}
    more = ({"num_teacher_evals": int(num_steps) * teacher_evals_per_step(config)}
            if config.loss in DISTILL_LOSSES else {})
    cost = make_cost(num_model_evals=int(num_steps) * evals_per_step(config), num_devices=1, **seconds,
                     num_training_steps=int(num_steps), **more)
    return state, losses, cost


def evals_per_step(config: TrainConfig) -> int:
    """Network forward passes of one training step: ``batch_size``, or for ``loss="shortcut"``
    :func:`samplax.diffusion.shortcut.evals_per_batch` (the self-consistency targets cost 2 more passes), for
    ``"sfd"`` ``batch_size * sfd_steps`` and for ``"emd"`` ``batch_size * (2 K + 2)`` (teacher calls apart:
    :func:`teacher_evals_per_step`)."""
    if config.loss == "shortcut":
        return _shortcut.evals_per_batch(config.batch_size, config.shortcut_fraction)
    if config.loss == "sfd":
        return config.batch_size * _distill.sfd_costs(config.sfd_steps, config.sfd_teacher_steps)[0]
    if config.loss == "emd":
        return config.batch_size * _distill.emd_costs(config.emd_langevin_steps)[0]
    return config.batch_size


def teacher_evals_per_step(config: TrainConfig) -> int:
    """Teacher denoiser calls of one training step (0 for the non-distillation losses): ``batch_size`` times
    ``2 M N + 1`` for ``"sfd"`` and ``K`` for ``"emd"`` (:func:`samplax.diffusion.distill.sfd_costs`,
    :func:`~samplax.diffusion.distill.emd_costs`)."""
    if config.loss == "sfd":
        return config.batch_size * _distill.sfd_costs(config.sfd_steps, config.sfd_teacher_steps)[1]
    if config.loss == "emd":
        return config.batch_size * _distill.emd_costs(config.emd_langevin_steps)[1]
    return 0


def _check_data_fn(key, config: TrainConfig, data_fn: Callable) -> None:
    """``data_fn(key, batch_size)`` must give ``[batch_size, dim]`` (checked with ``jax.eval_shape``, nothing runs)."""
    try:
        out = jax.eval_shape(lambda k: data_fn(k, config.batch_size), jax.random.fold_in(key, 0))
    except Exception as e:  # noqa: BLE001 - re-raised with the argument named
        raise ValueError(f"train: data_fn(key, batch_size) failed: {type(e).__name__}: {e}") from None
    want = (config.batch_size, config.dim)
    if getattr(out, "shape", None) != want:
        raise ValueError(f"train: data_fn(key, batch_size) must return a batch of shape (batch_size, dim) = {want} "
                         f"(config.batch_size, config.dim), got {getattr(out, 'shape', type(out).__name__)}")


def _raise_nonfinite(step0, losses, n_bad, sigma_bad, n_bad_data, batch_size):
    """The error for the first step of a chunk whose loss is non-finite (where, at which sigma, how many points)."""
    i = int(np.argmin(np.isfinite(losses)))
    step = step0 + i
    if n_bad_data[i] > 0:
        why = (f"data_fn returned {int(n_bad_data[i])} of {batch_size} points with non-finite coordinates "
               "at that step")
    elif n_bad[i] > 0:
        why = (f"{int(n_bad[i])} of the batch's {batch_size} point losses are non-finite (the denoiser's output at "
               f"noise level sigma {float(sigma_bad[i]):.4g} for the first of them)"
               + ("; every point: the weights may have become non-finite in the update before"
                  if n_bad[i] == batch_size and step > 0 else ""))
    else:
        why = "every point loss is finite but their mean overflows"
    raise NonFiniteLossError(f"train: non-finite loss at step {step}: {why}. Lower learning_rate or grad_clip, "
                             "check the data, or use float64")


# ---------------------------------------------------------------- checkpoints
STATE_FILE = "state.eqx"
CONFIG_FILE = "config.json"


def save_checkpoint(directory: str, state: TrainState, config: TrainConfig, metadata: Optional[dict] = None) -> None:
    """Write ``state`` (equinox leaf serialisation) and ``config`` + ``metadata`` (JSON) to ``directory``.

    Files are written to temporaries and renamed, so an interrupted save leaves the previous checkpoint intact.
    """
    os.makedirs(directory, exist_ok=True)
    meta = dict(metadata or {})
    step = int(state.step)
    meta.update(step=step, num_model_evals=step * evals_per_step(config))
    if config.loss in DISTILL_LOSSES:
        meta.update(num_teacher_evals=step * teacher_evals_per_step(config))
    tmp_state = os.path.join(directory, STATE_FILE + ".tmp")
    eqx.tree_serialise_leaves(tmp_state, state)
    tmp_cfg = os.path.join(directory, CONFIG_FILE + ".tmp")
    with open(tmp_cfg, "w") as f:
        json.dump({"config": dataclasses.asdict(config), "metadata": meta}, f, indent=2)
    os.replace(tmp_state, os.path.join(directory, STATE_FILE))
    os.replace(tmp_cfg, os.path.join(directory, CONFIG_FILE))


def load_checkpoint(directory: str):
    """Read a checkpoint written by :func:`save_checkpoint`; returns ``(state, config, metadata)``."""
    cfg_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(cfg_path) or not os.path.isfile(os.path.join(directory, STATE_FILE)):
        raise FileNotFoundError(f"load_checkpoint: {directory!r} has no {CONFIG_FILE} and {STATE_FILE}")
    with open(cfg_path) as f:
        blob = json.load(f)
    config = TrainConfig(**blob["config"])
    skeleton = init_train_state(jax.random.key(0), config)
    state = eqx.tree_deserialise_leaves(os.path.join(directory, STATE_FILE), skeleton)
    return state, config, blob.get("metadata", {})


def load_denoiser(directory: str, ema: bool = True) -> MLPDenoiser:
    """The trained denoiser of a checkpoint (its EMA weights by default)."""
    state, _, _ = load_checkpoint(directory)
    return state.ema if ema else state.model
