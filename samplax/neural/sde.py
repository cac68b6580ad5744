"""One path-measure core for learned diffusion samplers: a controlled SDE on a time grid.

The sampler is a Markov chain on a grid ``t_0 = 0 < ... < t_K``:

* proposal ``Q``: ``x_0 ~ q_0`` (the reference's start), then the controlled forward transitions
  ``q(x_{k+1} | x_k) = N(a_k x_k + b_k f_theta(x_k, t_k), s_k^2 I)`` with a learned drift ``f_theta``
  (:class:`DriftNet`);
* target path ``P``: ``x_K ~ pi`` (the unnormalized target ``pi~ = Z pi``), then back in time with
  the *reference process's* backward transitions ``p(x_k | x_{k+1}) = N(c_k x_{k+1}, r_k^2 I)``.

The Radon-Nikodym derivative of the two, the log importance weight of a path, is

``log w = log pi~(x_K) + sum_k log p(x_k | x_{k+1}) - log q_0(x_0) - sum_k log q(x_{k+1} | x_k)``,

and ``E_Q[w] = Z`` for every drift: ``log Z`` is estimated by ``log mean w`` (:func:`estimates`, with
the standard error of the delta method, the ELBO ``mean log w`` and the ESS), and a better drift
only lowers the variance.  With ``f = 0`` the proposal is the reference itself and ``w`` is
``pi~(x_K)`` over the reference's marginal at ``t_K``.

Two references (:class:`Reference`):

* :func:`pis_reference`: Path Integral Sampler (Zhang & Chen 2022, ICLR): Brownian motion
  ``dx = sigma dW`` from a point mass at 0 on ``[0, 1]``; Euler-Maruyama ``a = 1``,
  ``b = sigma^2 h``, ``s = sigma sqrt(h)``; its backward transitions are Brownian bridges,
  ``c = t_k / t_{k+1}``, ``r^2 = sigma^2 h t_k / t_{k+1}`` (the step back to ``t_0 = 0`` is the point
  mass, which cancels against ``q_0``).
* :func:`dds_reference`: Denoising Diffusion Sampler (Vargas, Grathwohl & Doucet 2023, ICLR): the
  VP / Ornstein-Uhlenbeck process started at its stationary law ``N(0, sigma^2 I)``, with the
  exponential-integrator discretization ``a = sqrt(1 - alpha_k)``,
  ``b = 2 sigma^2 (1 - sqrt(1 - alpha_k))``, ``s = sigma sqrt(alpha_k)``; the process is stationary and
  reversible, so its backward transitions equal its forward ones (``c = sqrt(1 - alpha_k)``,
  ``r = s``).  ``alpha_k`` follow the cosine schedule (Nichol & Dhariwal 2021) of the noising process
  that the sampler runs backwards.
* :func:`ve_reference`: the variance-exploding noising process run backwards from ``N(0, sigma_max^2 I)``
  (iDEM, :mod:`samplax.neural.idem`): ``a = c = 1``, ``b = s^2 = r^2 = sigma_k^2 - sigma_{k+1}^2``; ``f_theta`` is
  a score network.

* :func:`cmcd_reference`: Controlled Monte Carlo Diffusion (Vargas, Padhy, Blessing & Nusken 2024, ICLR):
  the geometric annealing path ``pi_k ∝ N(0, sigma^2 I)^(1 - beta_k) pi~^beta_k``, ``beta_k = k / K``, with
  Langevin transitions controlled in both directions: forward
  ``N(x_k + delta (grad log pi_k(x_k) + f_theta(x_k, t_k)), 2 delta I)`` and backward
  ``N(x_{k+1} + delta (grad log pi_{k+1}(x_{k+1}) - f_theta(x_{k+1}, t_{k+1})), 2 delta I)``,
  ``delta = sigma^2 / K``, from ``q_0 = N(0, sigma^2 I)``.  Here the backward transitions depend on the
  drift and on the target's gradient at ``x_{k+1}`` (``K + 1`` gradients per path); with ``f = 0`` the
  weight is that of annealed importance sampling with unadjusted Langevin kernels.

The drift is ``sigma^2 f_theta`` in PIS's Euler step and ``f_theta`` enters DDS's step as a score does,
so ``f_theta`` plays the part of a score in both.  ``f_theta(x, t) = NN(x, emb(t)) + g(emb(t)) *
clip(grad log pi~(x))`` when ``langevin`` (the Langevin-preconditioned network of both papers); the
gradient is taken at ``stop_gradient(x)`` (no second derivatives of the target in training) and clipped
to ``+-score_clip`` (``Reference.score_clip``, default ``SCORE_CLIP``; the option ``score_clip``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

#: Coordinates of the target's gradient fed to the drift are clipped to ``[-SCORE_CLIP, SCORE_CLIP]`` by default
#: (the option ``score_clip``).  100, as gfn-diffusion's ``lgv_clip`` (Sendera et al. 2024): with 1e4, PIS and DDS
#: on Funnel-10 took steps of ``b * g(t) * 1e4`` and stopped with an infinite loss (benchmarks/learned_samplers.md).
SCORE_CLIP = 100.0
#: Cosine schedule offset (Nichol & Dhariwal 2021) and the largest ``alpha_k`` (DDS).
COSINE_OFFSET = 0.008
ALPHA_MAX = 0.9999


class Reference(NamedTuple):
    """A reference process on a grid, and the controlled forward transitions built on it (see the module).

    Arrays ``[K]`` (host numpy; constants of the compiled program): ``t`` (the network's time input of
    step ``k``), ``h`` (step lengths), ``a``, ``b``, ``s`` (forward: mean ``a x + b f``, std ``s``),
    ``c``, ``r`` (backward: mean ``c x_{k+1}``, std ``r``), ``backward_mask`` (1 where the backward
    transition has a density; 0 for a point mass that cancels against ``q_0``).
    ``prior_std``: ``q_0 = N(0, prior_std^2 I)``, or the point mass at 0 when it is 0.
    """

    name: str
    t: np.ndarray
    h: np.ndarray
    a: np.ndarray
    b: np.ndarray
    s: np.ndarray
    c: np.ndarray
    r: np.ndarray
    backward_mask: np.ndarray
    prior_std: float
    #: CMCD (:func:`cmcd_reference`): ``beta [K + 1]`` of the annealing path and the Langevin step ``delta``;
    #: the forward and backward transitions then follow its controlled Langevin form instead of
    #: ``a, b, s, c, r``.  None for PIS and DDS.
    beta: np.ndarray | None = None
    delta: float = 0.0
    #: coordinates of the target's gradient that the transitions use are clipped to ``[-score_clip, score_clip]``
    score_clip: float = SCORE_CLIP

    @property
    def annealed(self) -> bool:
        """Whether the transitions follow the annealing path (CMCD)."""
        return self.beta is not None

    @property
    def num_steps(self) -> int:
        return int(self.t.shape[0])


def pis_reference(num_steps: int, sigma: float = 1.0, T: float = 1.0) -> Reference:
    """PIS (Zhang & Chen 2022): Brownian motion ``sigma W`` from 0, Euler-Maruyama on a uniform grid of ``[0, T]``."""
    K = int(num_steps)
    h = np.full(K, T / K)
    t = np.arange(K) * (T / K)
    t_next = t + h
    ratio = t / t_next
    return Reference("pis", t / T, h, np.ones(K), sigma**2 * h, sigma * np.sqrt(h), ratio,
                     np.sqrt(sigma**2 * h * ratio), (t > 0).astype(np.float64), 0.0)


def cosine_alphas(num_steps: int) -> np.ndarray:
    """``alpha_k = 1 - abar(u_k) / abar(u_{k+1})`` for sampler step ``k`` from noising time ``u_k = 1 - k/K`` to
    ``u_{k+1}``, with ``abar(u) = cos^2((u + e) / (1 + e) pi / 2)`` (Nichol & Dhariwal 2021), clipped to
    ``[1e-6, ALPHA_MAX]``."""
    K = int(num_steps)
    u = 1.0 - np.arange(K + 1) / K

    def abar(v):
        return np.cos((v + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    return np.clip(1.0 - abar(u[:-1]) / abar(u[1:]), 1e-6, ALPHA_MAX)


def dds_reference(num_steps: int, sigma: float = 1.0) -> Reference:
    """DDS (Vargas et al. 2023): the stationary OU process ``N(0, sigma^2 I)``, exponential-integrator steps."""
    K = int(num_steps)
    alpha = cosine_alphas(K)
    keep = np.sqrt(1.0 - alpha)
    s = sigma * np.sqrt(alpha)
    return Reference("dds", np.arange(K) / K, np.full(K, 1.0 / K), keep, 2 * sigma**2 * (1 - keep), s, keep, s,
                     np.ones(K), float(sigma))


#: DIS's default VP schedule: ``beta(u) = (BETA_MIN + u (BETA_MAX - BETA_MIN)) / 2`` (the linear VP SDE of Song et al.
#: 2021, written in the ``dY = -beta Y du + sigma sqrt(2 beta) dW`` form of Berner, Richter & Ullrich).
DIS_BETA_MIN = 0.1
DIS_BETA_MAX = 20.0


def dis_beta(u, beta_min: float = DIS_BETA_MIN, beta_max: float = DIS_BETA_MAX):
    """DIS's noise rate ``beta(u) = (beta_min + u (beta_max - beta_min)) / 2`` at noising time ``u`` in ``[0, 1]``."""
    return 0.5 * (beta_min + np.asarray(u, np.float64) * (beta_max - beta_min))


def dis_reference(num_steps: int, sigma: float = 1.0, beta_min: float = DIS_BETA_MIN,
                  beta_max: float = DIS_BETA_MAX) -> Reference:
    """DIS, the time-reversed diffusion sampler (Berner, Richter & Ullrich 2022/2024, "An optimal control
    perspective on diffusion-based generative modeling", TMLR).

    The noising process is the VP SDE ``dY_u = -beta(u) Y_u du + sigma sqrt(2 beta(u)) dW_u`` on ``[0, 1]``
    (:func:`dis_beta`: linear ``beta``), the sampler its time reversal ``X_t = Y_{1-t}``,
    ``dX_t = beta(1-t) (X_t + 2 sigma^2 s_theta(X_t, t)) dt + sigma sqrt(2 beta(1-t)) dW_t``, with a learned score
    ``s_theta ~ grad log p_{Y, 1-t}``, from the noising process's (approximate) end law ``q_0 = N(0, sigma^2 I)``.
    The score is written ``s_theta = -x / sigma^2 + f_theta`` (the reference's own score plus the learned
    correction ``f_theta``, so that ``f = 0``, the zero-initialized network, is the reference run backward), i.e.
    ``dX = beta (-X + 2 sigma^2 f_theta) dt + sigma sqrt(2 beta) dW``.  Both directions are Euler-Maruyama steps on
    the uniform grid ``t_k = k / K``, ``h = 1 / K``, with ``beta`` taken at the step's midpoint,
    ``beta_k = beta(1 - t_k - h / 2)``, in both: forward (sampler) ``a = 1 - beta_k h``, ``b = 2 sigma^2 beta_k h``,
    ``s = sigma sqrt(2 beta_k h)``; backward (the noising process's Euler step over the same interval)
    ``c = 1 - beta_k h``, ``r = s``.  (Each direction at its own left end, ``beta(1 - t_k)`` forward and
    ``beta(1 - t_{k+1})`` backward, gives the two directions different noise variances, a path-space KL that no
    drift removes: on a 2-D Gaussian with ``K = 16`` the trained ELBO stayed 8 to 16 nats below ``log Z``.)
    ``beta_k h < 1`` is required (``num_steps`` above about ``beta_max / 2``).

    What differs from DDS (:func:`dds_reference`), which discretizes the same time reversal of an OU / VP
    process: DDS takes the *exact* OU transitions (the exponential integrator) on the cosine schedule
    (``a = c = sqrt(1 - alpha_k)``, ``s^2 = r^2 = sigma^2 alpha_k``, so its discrete reference is exactly
    stationary at ``N(0, sigma^2 I)``) and the learned part enters as ``b = 2 sigma^2 (1 - sqrt(1 - alpha_k))``;
    DIS takes Euler-Maruyama steps (``a = 1 - beta_k h``, ``s^2 = 2 sigma^2 beta_k h``, ``b = 2 sigma^2 beta_k h``)
    on the linear VP schedule (Song et al. 2021), whose discrete reference is stationary only up to
    ``O(beta h)`` (at ``N(0, sigma^2 / (1 - beta_k h / 2))`` per step; the weights stay exact: they use the
    discrete transitions).  DIS's loss is the reparameterized reverse KL (the default of the method ``dis``;
    log-variance also applies).
    """
    K = int(num_steps)
    h = np.full(K, 1.0 / K)
    t = np.arange(K) / K
    beta = dis_beta(1.0 - t - h / 2, beta_min, beta_max)
    if np.max(beta * h) >= 1.0:
        raise ValueError(f"dis_reference: num_steps={K} is too small for the VP schedule beta_max={beta_max}: the "
                         f"Euler-Maruyama step beta h reaches {np.max(beta * h):.3g} >= 1 (the step's mean would "
                         f"flip sign); use num_steps > {int(np.floor(np.max(beta)))}")
    a = 1.0 - beta * h
    s = sigma * np.sqrt(2 * beta * h)
    return Reference("dis", t, h, a, 2 * sigma**2 * beta * h, s, a, s, np.ones(K), float(sigma))


def cmcd_reference(num_steps: int, sigma: float = 1.0) -> Reference:
    """CMCD (Vargas et al. 2024): the geometric path from ``N(0, sigma^2 I)`` to the target, ``beta_k = k / K``,
    controlled Langevin steps ``delta = sigma^2 / K`` (see the module)."""
    K = int(num_steps)
    delta = sigma**2 / K
    s = np.full(K, math.sqrt(2 * delta))
    return Reference("cmcd", np.arange(K) / K, np.full(K, 1.0 / K), np.ones(K), np.full(K, delta), s, np.ones(K), s,
                     np.ones(K), float(sigma), beta=np.arange(K + 1) / K, delta=float(delta))


def geometric_sigmas(num_steps: int, sigma_min: float, sigma_max: float) -> np.ndarray:
    """``sigma_k = sigma_min^(k/K) sigma_max^(1 - k/K)``, ``k = 0 .. K``: the geometric VE schedule
    ``sigma(u) = sigma_min^(1-u) sigma_max^u`` at the noising times ``u_k = 1 - k/K`` (descending)."""
    K = int(num_steps)
    u = 1.0 - np.arange(K + 1) / K
    return sigma_min ** (1.0 - u) * sigma_max ** u


def ve_reference(num_steps: int, sigma_min: float, sigma_max: float) -> Reference:
    """The variance-exploding (VE) noising process ``x_u = x_0 + sigma(u) eps`` with the geometric schedule of
    :func:`geometric_sigmas` (Song et al. 2021; the schedule of iDEM, Akhound-Sadegh et al. 2024), run backwards
    from ``q_0 = N(0, sigma_max^2 I)``: sampler step ``k`` goes from noise ``sigma_k`` to ``sigma_{k+1}``
    (``beta_k = sigma_k^2 - sigma_{k+1}^2``).  Controlled forward step (Euler-Maruyama of the reverse VE SDE with
    a score ``f``): ``a = 1``, ``b = beta_k``, ``s = sqrt(beta_k)``; the backward transition is the noising step
    itself, ``N(x_{k+1}, beta_k I)``: ``c = 1``, ``r = s``.  ``t`` is the noising time ``u_k``."""
    K = int(num_steps)
    sig = geometric_sigmas(K, sigma_min, sigma_max)
    beta = sig[:-1] ** 2 - sig[1:] ** 2
    s = np.sqrt(beta)
    return Reference("ve", 1.0 - np.arange(K) / K, np.full(K, 1.0 / K), np.ones(K), beta, s, np.ones(K), s,
                     np.ones(K), float(sigma_max))


def annealed_score(ref: Reference, x, beta, score):
    """``grad log pi_beta(x) = (1 - beta) grad log N(x; 0, sigma^2 I) + beta score`` (CMCD's path)."""
    return (1.0 - beta) * (-x / ref.prior_std**2) + beta * score


class DriftNet(eqx.Module):
    """The learned drift ``f_theta(x, t)`` (see the module): an MLP on ``[x, emb(t)]`` (SiLU), plus with
    ``langevin`` an MLP ``g(emb(t))`` times the clipped target gradient; and ``log_z``, the learned log
    normalizing constant of the trajectory-balance loss (unused by the others); with ``flow`` an MLP on
    ``[x, emb(t)]`` for the log-flow of sub-trajectory balance (:meth:`log_flow`).  The last layers start
    at zero, so training starts from the reference process."""

    net: eqx.nn.MLP
    lgv: eqx.nn.MLP | None
    log_z: jax.Array
    flow: eqx.nn.MLP | None
    emb_dim: int = eqx.field(static=True)

    def __init__(self, key, dim: int, width: int = 64, depth: int = 2, emb_dim: int = 16, langevin: bool = True,
                 dtype=None, flow: bool = False):
        k1, k2 = jax.random.split(key)
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.emb_dim = int(emb_dim)

        def zero_last(mlp):
            last = mlp.layers[-1]
            last = eqx.tree_at(lambda layer: (layer.weight, layer.bias), last,
                               (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
            return eqx.tree_at(lambda m: m.layers[-1], mlp, last)

        self.net = zero_last(eqx.nn.MLP(dim + emb_dim, dim, width, depth, activation=jax.nn.silu, key=k1,
                                        dtype=dtype))
        self.lgv = (zero_last(eqx.nn.MLP(emb_dim, dim, width, 1, activation=jax.nn.silu, key=k2, dtype=dtype))
                    if langevin else None)
        self.log_z = jnp.zeros((), dtype)
        # the log-flow network of sub-trajectory balance (its own key: the drift's parameters are those without it)
        self.flow = (zero_last(eqx.nn.MLP(dim + emb_dim, 1, width, depth, activation=jax.nn.silu,
                                          key=jax.random.fold_in(key, 3), dtype=dtype)) if flow else None)

    def log_flow(self, x, t):
        """The learned correction ``NN_phi(x, emb(t))`` of the log-flow (sub-trajectory balance, DGFS); 0 at
        initialization."""
        return self.flow(jnp.concatenate([x, self.embed(t)]))[0]

    def embed(self, t):
        """Sinusoidal time features ``[cos(w_j t), sin(w_j t)]``, ``w_j`` geometric from 1 to 100 (Vaswani et al. 2017)."""
        half = self.emb_dim // 2
        dt = self.net.layers[0].weight.dtype
        w = jnp.exp(jnp.linspace(0.0, math.log(100.0), half)).astype(dt)
        t = jnp.asarray(t, dt)
        return jnp.concatenate([jnp.cos(w * t), jnp.sin(w * t)])

    def __call__(self, x, t, score):
        """``f_theta(x, t)`` for one point; ``score`` is the clipped target gradient (ignored without ``langevin``)."""
        e = self.embed(t)
        out = self.net(jnp.concatenate([x, e]))
        if self.lgv is not None:
            out = out + self.lgv(e) * score
        return out


def normal_logpdf(x, mean, std):
    """``log N(x; mean, std^2 I)`` summed over the last axis (``std`` a scalar)."""
    d = x.shape[-1]
    return -0.5 * jnp.sum(((x - mean) / std) ** 2, axis=-1) - d * jnp.log(std) - 0.5 * d * math.log(2 * math.pi)


class Path(NamedTuple):
    """One simulated path: ``xs [K+1, d]``; ``scores [K+1, d]``, the clipped target gradients the transitions
    used (at ``x_0 .. x_{K-1}`` with ``langevin`` or CMCD, at ``x_K`` for CMCD; zeros elsewhere); ``log_pi``
    (``log pi~(x_K)``), ``log_b`` (``sum_k log p(x_k | x_{k+1})``, the backward transitions), ``log_q0`` and
    ``log_q`` (the sampling policy's density: ``q_0`` and the sum of its forward transitions); ``log_pis``
    (optional: ``log pi~`` at every point of the path)."""

    xs: jax.Array
    scores: jax.Array
    log_pi: jax.Array
    log_b: jax.Array
    log_q0: jax.Array
    log_q: jax.Array
    #: ``log pi~(x_k)`` at ``x_0 .. x_K`` (``[K+1]``), only for paths simulated ``with_log_pis`` (sub-trajectory
    #: balance's intermediate targets); None otherwise.
    log_pis: jax.Array | None = None


def clipped_score(logdensity_fn, x, clip: float = SCORE_CLIP):
    """``clip(grad log pi~(stop_gradient(x)), -clip, clip)`` with NaN coordinates set to 0 (one log-density and one
    gradient evaluation).  A NaN gradient (e.g. a pair distance's at coincident particles: PIS starts every
    path at 0) would make the whole path NaN; the drift may use any function of the path, so the weights stay
    exact when it sees 0 there instead."""
    g = jax.grad(logdensity_fn)(jax.lax.stop_gradient(x))
    return jax.lax.stop_gradient(jnp.clip(jnp.where(jnp.isnan(g), 0.0, g), -clip, clip))


def value_and_clipped_score(logdensity_fn, x, clip: float = SCORE_CLIP):
    """``(log pi~(x), clipped_score(x))`` from one value-and-gradient evaluation (both without gradient in ``x``)."""
    lp, g = jax.value_and_grad(logdensity_fn)(jax.lax.stop_gradient(x))
    return jax.lax.stop_gradient(lp), jax.lax.stop_gradient(jnp.clip(jnp.where(jnp.isnan(g), 0.0, g), -clip, clip))


def _point_log_pi_and_score(logdensity_fn, x, ref: Reference, needs_score: bool):
    """``log pi~(x)`` and the score a transition uses at ``x`` (zeros when it uses none): one evaluation."""
    if needs_score:
        return value_and_clipped_score(logdensity_fn, x, ref.score_clip)
    return jax.lax.stop_gradient(logdensity_fn(jax.lax.stop_gradient(x))), jnp.zeros_like(x)


def prior_sample(ref: Reference, key, dim: int, dtype):
    """``x_0 ~ q_0`` and ``log q_0(x_0)`` (0 for the point mass)."""
    if ref.prior_std == 0:
        return jnp.zeros((dim,), dtype), jnp.zeros((), dtype)
    x0 = ref.prior_std * jax.random.normal(key, (dim,), dtype)
    return x0, normal_logpdf(x0, jnp.zeros_like(x0), ref.prior_std)


def _steps(ref: Reference, dtype):
    """Per-step constants ``[K]``: ``t_k, t_{k+1}, h, a, b, s, c, r, mask, beta_k, beta_{k+1}``."""
    K = ref.num_steps
    beta = ref.beta if ref.annealed else np.zeros(K + 1)
    t_next = np.append(ref.t[1:], 1.0)
    return tuple(jnp.asarray(v, dtype) for v in (ref.t, t_next, ref.h, ref.a, ref.b, ref.s, ref.c, ref.r,
                                                 ref.backward_mask, beta[:-1], beta[1:]))


def forward_mean(model, ref: Reference, x, t, a, b, beta, score):
    """The controlled forward transition's mean: ``a x + b f(x, t)`` (PIS, DDS), or
    ``x + delta (grad log pi_beta(x) + f(x, t))`` (CMCD, ``b = delta``)."""
    if ref.annealed:
        return x + b * (annealed_score(ref, x, beta, score) + model(x, t, score))
    return a * x + b * model(x, t, score)


def backward_mean(model, ref: Reference, x_next, t_next, c, beta_next, score_next):
    """The backward transition's mean: ``c x_{k+1}`` (the reference's), or
    ``x_{k+1} + delta (grad log pi_beta(x_{k+1}) - f(x_{k+1}, t_{k+1}))`` (CMCD)."""
    if ref.annealed:
        return x_next + ref.delta * (annealed_score(ref, x_next, beta_next, score_next)
                                     - model(x_next, t_next, score_next))
    return c * x_next


def _log_b(model, ref: Reference, xs, scores, consts):
    """``sum_k log p(x_k | x_{k+1})`` of a path (masked steps, point masses, left out)."""
    _, t_next, _, _, _, _, c, r, m, _, beta_next = consts
    mean = jax.vmap(lambda xn, tn, cc, bn, sn: backward_mean(model, ref, xn, tn, cc, bn, sn))(
        xs[1:], t_next, c, beta_next, scores[1:])
    r_safe = jnp.where(m > 0, r, 1.0)
    return jnp.sum(m * jax.vmap(normal_logpdf)(xs[:-1], mean, r_safe))


def simulate(model: DriftNet, ref: Reference, logdensity_fn, key, dim: int, *, langevin: bool,
             exploration: float = 0.0, differentiable: bool = False, with_log_pis: bool = False) -> Path:
    """Simulate one path of the controlled SDE (see the module).

    ``exploration``: the sampling policy's noise variance is ``s_k^2 + exploration^2 h_k`` (off-policy paths
    for the log-variance and trajectory-balance losses; ``log_q`` is then the density of that policy).
    ``differentiable``: the path is a reparameterized function of the drift's parameters and
    ``log pi~(x_K)`` is differentiated (the KL loss: one more log-density and gradient evaluation at
    ``x_K``); otherwise ``log pi~(x_K)`` is evaluated at ``stop_gradient(x_K)``.
    Target evaluations: ``K`` scores with ``langevin`` or CMCD (each one log-density and one gradient), for
    CMCD one more at ``x_K`` (which gives ``log pi~(x_K)`` too), and ``log pi~(x_K)``.
    ``with_log_pis``: also ``Path.log_pis``, ``log pi~`` at every point (from the same value-and-gradient
    evaluations where the transitions take the score; otherwise ``K`` more log-density evaluations, at
    ``x_0 .. x_{K-1}``).  The path itself is the same with or without it.
    """
    if with_log_pis:
        return _simulate_with_log_pis(model, ref, logdensity_fn, key, dim, langevin=langevin,
                                      exploration=exploration, differentiable=differentiable)
    dtype = model.log_z.dtype
    k0, kn = jax.random.split(key)
    x0, log_q0 = prior_sample(ref, k0, dim, dtype)
    consts = _steps(ref, dtype)
    noise = jax.random.normal(kn, (ref.num_steps, dim), dtype)
    needs_score = langevin or ref.annealed

    def one(carry, inp):
        x, log_q = carry
        t, _, h, a, b, s, _, _, _, beta, _ = inp[:-1]
        eps = inp[-1]
        score = clipped_score(logdensity_fn, x, ref.score_clip) if needs_score else jnp.zeros_like(x)
        mean = forward_mean(model, ref, x, t, a, b, beta, score)
        std = jnp.sqrt(s * s + (exploration ** 2) * h) if exploration else s
        x_next = mean + std * eps
        return (x_next, log_q + normal_logpdf(x_next, mean, std)), (x_next, score)

    (xK, log_q), (xs, scores) = jax.lax.scan(one, (x0, jnp.zeros((), dtype)), consts + (noise,))
    xs = jnp.concatenate([x0[None], xs])
    if ref.annealed:
        lp_K, g_K = jax.value_and_grad(logdensity_fn)(jax.lax.stop_gradient(xK))
        g_K = jnp.where(jnp.isnan(g_K), 0.0, g_K)
        score_K = jax.lax.stop_gradient(jnp.clip(g_K, -ref.score_clip, ref.score_clip))
        log_pi = logdensity_fn(xK) if differentiable else jax.lax.stop_gradient(lp_K)
    else:
        score_K = jnp.zeros_like(xK)
        log_pi = logdensity_fn(xK if differentiable else jax.lax.stop_gradient(xK))
    scores = jnp.concatenate([scores, score_K[None]])
    return Path(xs, scores, log_pi, _log_b(model, ref, xs, scores, consts), log_q0, log_q)


def _simulate_with_log_pis(model: DriftNet, ref: Reference, logdensity_fn, key, dim: int, *, langevin: bool,
                           exploration: float, differentiable: bool) -> Path:
    """:func:`simulate` that also keeps ``log pi~`` at every point (``Path.log_pis``)."""
    dtype = model.log_z.dtype
    k0, kn = jax.random.split(key)
    x0, log_q0 = prior_sample(ref, k0, dim, dtype)
    consts = _steps(ref, dtype)
    noise = jax.random.normal(kn, (ref.num_steps, dim), dtype)
    needs_score = langevin or ref.annealed

    def one(carry, inp):
        x, log_q = carry
        t, _, h, a, b, s, _, _, _, beta, _ = inp[:-1]
        eps = inp[-1]
        lp, score = _point_log_pi_and_score(logdensity_fn, x, ref, needs_score)
        mean = forward_mean(model, ref, x, t, a, b, beta, score)
        std = jnp.sqrt(s * s + (exploration ** 2) * h) if exploration else s
        x_next = mean + std * eps
        return (x_next, log_q + normal_logpdf(x_next, mean, std)), (x_next, score, lp)

    (xK, log_q), (xs, scores, lps) = jax.lax.scan(one, (x0, jnp.zeros((), dtype)), consts + (noise,))
    xs = jnp.concatenate([x0[None], xs])
    if ref.annealed:
        lp_K, score_K = value_and_clipped_score(logdensity_fn, xK, ref.score_clip)
        log_pi = logdensity_fn(xK) if differentiable else lp_K
    else:
        score_K = jnp.zeros_like(xK)
        log_pi = logdensity_fn(xK if differentiable else jax.lax.stop_gradient(xK))
    scores = jnp.concatenate([scores, score_K[None]])
    log_pis = jnp.concatenate([lps, jax.lax.stop_gradient(log_pi)[None]])
    return Path(xs, scores, log_pi, _log_b(model, ref, xs, scores, consts), log_q0, log_q, log_pis)


def reverse_simulate(model: DriftNet, ref: Reference, logdensity_fn, key, x_K, *, langevin: bool,
                     with_log_pis: bool = False) -> Path:
    """One path of the *target* path measure ``P``: ``x_K`` given (an exact draw of ``pi``), then back in time
    with the backward transitions ``p(x_k | x_{k+1})`` (the reference's for PIS / DDS, the model's controlled
    ones for CMCD); the forward density ``log q`` of the same path is that of the drift ``model``.

    ``log_weight`` of the returned path is ``log P~ - log Q`` at a path drawn from ``P``, whose mean over
    paths is the EUBO, ``E_P[log w] = log Z + KL(P || Q) >= log Z`` (Blessing, Jia, Berner, Nusken &
    Neumann 2024, "Beyond ELBOs", eq. for the EUBO of diffusion samplers).  Target evaluations: the scores at
    ``x_0 .. x_{K-1}`` with ``langevin`` or CMCD, CMCD's at ``x_K``, and ``log pi~(x_K)``.
    ``with_log_pis``: also ``Path.log_pis`` (as in :func:`simulate`; without scores, ``K`` more log-density
    evaluations at ``x_0 .. x_{K-1}``); the path is the same.
    """
    dtype = model.log_z.dtype
    x_K = jnp.asarray(x_K, dtype)
    consts = _steps(ref, dtype)
    noise = jax.random.normal(key, (ref.num_steps,) + x_K.shape, dtype)
    needs_score = langevin or ref.annealed

    def score_at(x):
        if with_log_pis:
            return _point_log_pi_and_score(logdensity_fn, x, ref, needs_score)
        return clipped_score(logdensity_fn, x, ref.score_clip) if needs_score else jnp.zeros_like(x)

    score_K = clipped_score(logdensity_fn, x_K, ref.score_clip) if ref.annealed else jnp.zeros_like(x_K)

    def back(carry, inp):
        x_next, score_next = carry
        _, t_next, _, _, _, _, c, r, m, _, beta_next = inp[:-1]
        eps = inp[-1]
        mean = backward_mean(model, ref, x_next, t_next, c, beta_next, score_next)
        x = mean + jnp.where(m > 0, r, 0.0) * eps  # a masked step is the point mass at its mean
        if with_log_pis:
            lp, score = score_at(x)
            return (x, score), (x, score, lp)
        score = score_at(x)
        return (x, score), (x, score)

    _, outs = jax.lax.scan(back, (x_K, score_K), consts + (noise,), reverse=True)
    xs, scores = outs[0], outs[1]
    xs = jnp.concatenate([xs, x_K[None]])
    scores = jnp.concatenate([scores, score_K[None]])
    if ref.prior_std == 0:
        log_q0 = jnp.zeros((), dtype)
    else:
        log_q0 = normal_logpdf(xs[0], jnp.zeros_like(xs[0]), ref.prior_std)
    log_pi = logdensity_fn(x_K)
    log_pis = jnp.concatenate([outs[2], jax.lax.stop_gradient(log_pi)[None]]) if with_log_pis else None
    path = Path(xs, scores, log_pi, _log_b(model, ref, xs, scores, consts), log_q0,
                jnp.zeros((), dtype), log_pis)
    return path._replace(log_q=path_log_q(model, ref, path))


def path_log_q(model: DriftNet, ref: Reference, path: Path):
    """``sum_k log q_theta(x_{k+1} | x_k)`` of the drift ``model`` on a given path (its stored scores): the
    proposal's log-density for the off-policy losses, differentiable in the parameters."""
    dtype = model.log_z.dtype
    t, _, _, a, b, s, _, _, _, beta, _ = _steps(ref, dtype)
    mean = jax.vmap(lambda x, tt, aa, bb, be, sc: forward_mean(model, ref, x, tt, aa, bb, be, sc))(
        path.xs[:-1], t, a, b, beta, path.scores[:-1])
    return jnp.sum(jax.vmap(normal_logpdf)(path.xs[1:], mean, s))


def step_log_q(model: DriftNet, ref: Reference, path: Path):
    """``[log q_theta(x_{k+1} | x_k)]_k`` (``[K]``): the drift ``model``'s forward transitions on a given path (its
    stored scores), differentiable in the parameters (sub-trajectory balance; :func:`path_log_q` is their sum)."""
    dtype = model.log_z.dtype
    t, _, _, a, b, s, _, _, _, beta, _ = _steps(ref, dtype)
    mean = jax.vmap(lambda x, tt, aa, bb, be, sc: forward_mean(model, ref, x, tt, aa, bb, be, sc))(
        path.xs[:-1], t, a, b, beta, path.scores[:-1])
    return jax.vmap(normal_logpdf)(path.xs[1:], mean, s)


def step_log_b(model: DriftNet, ref: Reference, path: Path):
    """``[log p(x_k | x_{k+1})]_k`` (``[K]``; 0 at a masked step, a point mass that cancels against ``q_0``):
    the backward transitions on a given path (the reference's, or CMCD's controlled ones under ``model``)."""
    _, t_next, _, _, _, _, c, r, m, _, beta_next = _steps(ref, model.log_z.dtype)
    mean = jax.vmap(lambda xn, tn, cc, bn, sn: backward_mean(model, ref, xn, tn, cc, bn, sn))(
        path.xs[1:], t_next, c, beta_next, path.scores[1:])
    r_safe = jnp.where(m > 0, r, 1.0)
    return m * jax.vmap(normal_logpdf)(path.xs[:-1], mean, r_safe)


def path_log_b(model: DriftNet, ref: Reference, path: Path):
    """``sum_k log p(x_k | x_{k+1})`` of a given path: the stored value for a fixed reference (PIS, DDS),
    recomputed under ``model`` (differentiable in the parameters) when the backward transitions are
    controlled too (CMCD)."""
    if not ref.annealed:
        return path.log_b
    return _log_b(model, ref, path.xs, path.scores, _steps(ref, model.log_z.dtype))


def log_weight(path: Path):
    """The path's log importance weight ``log P~(path) - log Q(path)`` (``E_Q[w] = Z``)."""
    return path.log_pi + path.log_b - path.log_q0 - path.log_q


def logmeanexp(a, axis=None):
    """``log mean exp(a)`` (stable; ``-inf`` entries are zero weights)."""
    a = jnp.asarray(a)
    n = a.size if axis is None else a.shape[axis]
    return jax.scipy.special.logsumexp(a, axis=axis) - jnp.log(n)


def estimates(log_w) -> dict:
    """Importance-sampling estimates from log weights (host numpy; non-finite weights count as zero weight).

    ``log_Z = log mean w``; ``log_Z_se``: delta method, ``se(log Zhat) = sd(w / Zhat) / sqrt(n)`` with
    ``sd`` from the normalized weights ``wbar``: ``sqrt(sum (n wbar_i - 1)^2 / (n (n - 1)))``;
    ``elbo``: ``mean log w`` over the finite weights (a lower bound on ``log Z`` in expectation);
    ``ess``: ``1 / sum wbar_i^2`` (Kong 1992), and ``ess_fraction = ess / n``; ``num_nonfinite``.
    """
    lw = np.asarray(log_w, np.float64).reshape(-1)
    n = lw.size
    bad = ~np.isfinite(lw) & ~(lw == -np.inf)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    if not np.any(np.isfinite(lw)):
        nan = float("nan")
        return {"log_Z": nan, "log_Z_se": nan, "elbo": nan, "ess": 0.0, "ess_fraction": 0.0,
                "num_nonfinite": int(bad.sum())}
    m = lw.max()
    w = np.exp(lw - m)
    total = w.sum()
    wbar = w / total
    log_z = float(m + np.log(total) - np.log(n))
    se = float(np.sqrt(np.sum((n * wbar - 1.0) ** 2) / (n * (n - 1)))) if n > 1 else float("inf")
    ess = float(1.0 / np.sum(wbar**2))
    return {"log_Z": log_z, "log_Z_se": se, "elbo": float(np.mean(lw[np.isfinite(lw)])), "ess": ess,
            "ess_fraction": ess / n, "num_nonfinite": int(bad.sum())}


def weighted_output(x, log_w, what: str, why: str = "the target's log-density is NaN or +inf") -> tuple:
    """``(est, extra, warnings)`` of a trained sampler's weighted draws ``x`` ``[chains, n, d]`` with log weights
    ``log_w``: :func:`estimates`, the ``extra`` entries every trained method reports (``elbo``, ``ess``,
    ``ess_fraction``, ``proposal_samples``, ``proposal_log_weights``, ``num_nonfinite``) and the ``nonfinite``
    warning when some weights are NaN or +inf (``what``: e.g. "sampled paths of pis"; ``why``: the cause)."""
    est = estimates(log_w)
    extra = {"elbo": est["elbo"], "ess": est["ess"], "ess_fraction": est["ess_fraction"], "proposal_samples": x,
             "proposal_log_weights": log_w, "num_nonfinite": est["num_nonfinite"]}
    warnings = []
    if est["num_nonfinite"]:
        warnings.append({"code": "nonfinite", "value": est["num_nonfinite"],
                         "message": f"{est['num_nonfinite']} of the {np.size(log_w)} {what} have a NaN or +inf log "
                                    f"weight ({why}); they have zero weight"})
    return est, extra, warnings


def systematic_resample(key, log_w, n: int):
    """``n`` indices drawn by systematic resampling (Kitagawa 1996) with weights ``exp(log_w)``; non-finite
    weights are zero, and uniform weights are used when none is finite."""
    lw = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    lw = jnp.where(jnp.any(jnp.isfinite(lw)), lw, jnp.zeros_like(lw))
    w = jax.nn.softmax(lw)
    cdf = jnp.cumsum(w)
    u = (jax.random.uniform(key, (), w.dtype) + jnp.arange(n, dtype=w.dtype)) / n
    return jnp.clip(jnp.searchsorted(cdf, u * cdf[-1]), 0, log_w.shape[0] - 1)
