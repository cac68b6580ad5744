"""Distillation of a diffusion teacher into few-step samplers: SFD and EM distillation.

Both are data-free: they read the teacher only through its denoiser ``teacher(x, sigma) = E[x0 | x]`` (VE
convention, one point), e.g. an exact Gaussian mixture (:func:`samplax.diffusion.ring8`) or a trained network.
Both train through the one trainer loop, :func:`samplax.diffusion.train.train`, as loss options
(``TrainConfig(loss="sfd")``, ``TrainConfig(loss="emd", model="emd")``) with ``teacher=`` passed to ``train``;
the trainer counts student network passes (``num_model_evals``) and teacher calls (``num_teacher_evals``) apart.

SFD -- "Simple and Fast Distillation of Diffusion Models" (Z. Zhou, D. Chen, C. Wang, C. Chen, S. Lyu,
NeurIPS 2024, arXiv:2409.19681).

The student is an ordinary denoiser network sampled with DDIM (one call per interval) on a coarse grid
``sigma_0 = sigma_max > sigma_1 > ... > sigma_{N-1} > sigma_N = 0`` fixed for its step count ``N`` (the
Karras/EDM grid with ``rho = 7`` from ``sfd_sigma_max`` to ``sfd_sigma_end``, then the final DDIM step into
``sigma = 0``, which is the denoiser output): :func:`sfd_grid`. Fine-tuning only touches these ``N`` noise
levels (the paper's point: train only where the student is sampled). For a noise ``x_T = sigma_max eps`` the
teacher's trajectory ``x^T_n`` is computed on the same coarse grid by a multi-step solver (here EDM's Heun,
``sfd_teacher_steps`` steps per interval, geometric in sigma; the last interval runs to ``2e-3`` and ends with
the teacher's denoiser: :func:`teacher_flow`), and the student's trajectory ``x^S_n`` starts at the same
noise and takes one DDIM step per interval, ``x^S_{n+1} = D_S(x^S_n, s_n) + (s_{n+1}/s_n)(x^S_n -
D_S(x^S_n, s_n))``. The loss (:func:`sfd_point_loss`) is ``(1/N) sum_n mean |x^S_{n+1} - x^T_{n+1}|^2`` with
the student's input ``x^S_n`` stop-gradiented: each step is trained from where the student itself is, towards
the teacher's trajectory (the paper's "global" view: the student corrects the error accumulated in its own
earlier steps). Simplifications against the paper: an L2 loss (the paper's image experiments use LPIPS/L2),
no analytical first step (AFS), no step-conditioned variable-NFE model (SFD-v): one student per step count;
with an exact-mixture teacher there are no teacher weights to start from, so the student is initialised by
plain DSM training (pass the DSM state to ``train(..., state=...)``) or from scratch.
The teacher's accuracy bounds the student's: the rms distance of the Heun trajectory's endpoint to the exact
PF-ODE endpoint (``solve_pf_ode``, 256 noises) for ``sfd_teacher_steps`` M = 8 / 32 per interval was 0.10 /
0.0028 (ring8) and 0.27 / 0.034 (grid25) for a one-step student, 0.014 / 0.0007 and 0.097 / 0.0022 for two steps;
a one-step grid25 student fine-tuned on the M = 8 teacher reached energy distance 0.017, on the M = 32 one
0.0016. The default is M = 32.
Sample it with :func:`sample_sfd` (= :func:`samplax.diffusion.sample` with ``solver="ddim"`` on
:func:`sfd_grid`).

EMD -- "EM Distillation for One-step Diffusion Models" (S. Xie, Z. Xiao, D. P. Kingma, T. Hou, Y. N. Wu,
K. Murphy, T. Salimans, B. Poole, R. Gao, NeurIPS 2024, arXiv:2405.16852).

A one-step generator ``g(z) = G(sigma_g z, sigma_g)`` (``G`` a denoiser network read at the fixed level
``sigma_g = emd_gen_sigma``, as the paper initialises the generator from a denoiser) is fitted by maximum
likelihood to the teacher's noised marginals ``p_s``, with the generator's noised joint
``p(x_s, z) = N(z; 0, I) N(x_s; g(z), s^2 I)``. EM: the gradient of ``log p_theta(x_s)`` is the posterior
expectation of ``grad log p_theta(x_s, z)``, so

* E-step (:func:`emd_estep`): draw ``(x_s, z)`` from ``p_s(x_s) p_theta(z | x_s)`` by Langevin dynamics
  initialised from the generator, ``z_0 ~ N(0, I)``, ``x_s = g(z_0) + s eps_0``. Reparameterized sampling:
  the chain moves ``(eps, z)`` with ``x_s = g(z) + s eps``, on
  ``log rho(eps, z) = log p_s(x_s) - log q_s(x_s) - |eps|^2/2 - |z|^2/2``, whose gradients are
  ``grad_eps = s (score_T - score_S)(x_s) - eps`` and ``grad_z = J_g(z)^T (score_T - score_S)(x_s) - z``
  (``score_T - score_S = (D_T - D_S)(x_s, s) / s^2``; ``q_s``'s score ``score_S`` is that of a second
  denoiser network ``D_S`` trained by DSM on generator samples, the paper's learned student score). Each of
  ``emd_langevin_steps`` (K) steps is ``eps <- eps + h_e grad_eps + sqrt(2 h_e) n``,
  ``z <- z + h_z grad_z + sqrt(2 h_z) n'``.
* Noise cancellation: the Gaussian noise of the chain (the initial ``eps_0`` and every injected
  ``sqrt(2 h_e) n``) is tracked and subtracted, ``eps~ = eps_K - eps_0 - sum sqrt(2 h_e) n_k`` (the sum of the
  drift terms ``h_e grad_eps``): that noise is zero-mean, so for short chains dropping it removes most of the
  M-step gradient's variance (measured on the linear-Gaussian case of the tests: standard error 0.0006 instead
  of 0.008 at K = 1, right direction for K <= 16). It is not unbiased for long chains, where the injected
  noise has become correlated with ``z_K`` (same case, K = 300: the direction flips);
  ``emd_noise_cancellation=False`` uses ``eps_K`` itself, unbiased once the chain has mixed.
* M-step: ``grad log N(x_s; g(z_K), s^2 I) = (x_s - g(z_K)) / s^2 . dg/dtheta``, taken as the regression of
  ``g(z_K)`` on the (noise-cancelled) E-step sample, ``|g(z_K) - sg[g(z_K) + s eps~]|^2``
  (:func:`emd_point_loss`). With K = 1 and noise cancellation the target shift is
  ``s eps~ = h_e s^2 (score_T - score_S)(x_s) - h_e s eps_0``: the variational-score-distillation direction plus
  zero-mean noise (the paper's link to mode-seeking KL methods).
* The student-score network ``D_S`` is trained in the same step by EDM-weighted DSM on stop-gradiented
  generator samples (one optimiser over both networks; the stop-gradients keep the two losses apart).

Simplified against the paper: one E-step per M-step with a short chain, a log-uniform noise level
``s`` in ``[emd_sigma_min, emd_sigma_max]`` with unit weight, the regression form of the M-step with
weight 1, no teacher-weight initialisation for an exact-mixture teacher (start both networks from a DSM
denoiser with :func:`emd_state_from_denoiser`, or from scratch). Sample it with :func:`sample_emd`
(one generator pass; EMD distils a one-step generator).

Costs per training point: SFD ``N`` student passes (each with a backward pass) and ``2 M N + 1`` teacher calls
(``M = sfd_teacher_steps``); EMD ``2 K + 2`` student passes (K generator and K student-score passes in the chain,
each generator pass also back-propagated to ``z``; one generator pass in the M-step, one student-score pass in its
DSM loss) and ``K`` teacher calls.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import Cost, make_cost
from samplax.diffusion.grids import karras_grid

#: The teacher's last positive noise level when it integrates an interval into ``sigma = 0`` (EDM's sigma_min).
TEACHER_SIGMA_MIN = 2e-3


def _positive_int(v, name: str) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


# ---------------------------------------------------------------------------------------------------------- SFD
def sfd_grid(num_steps: int, sigma_max: float = 80.0, sigma_end: float = 0.5) -> np.ndarray:
    """The coarse grid ``[sigma_0, ..., sigma_{N-1}, 0]`` (``N + 1`` entries) an ``N``-step SFD student is trained
    and sampled on: ``[sigma_max, 0]`` for ``N = 1``, else the Karras grid (``rho = 7``) of ``N`` nodes from
    ``sigma_max`` to ``sigma_end`` followed by 0 (the final DDIM step into 0 is the denoiser's output)."""
    n = _positive_int(num_steps, "sfd_grid: num_steps")
    if not (0.0 < float(sigma_end) < float(sigma_max)):
        raise ValueError(f"sfd_grid: need 0 < sigma_end < sigma_max, got sigma_end={sigma_end!r}, "
                         f"sigma_max={sigma_max!r}")
    nodes = np.array([float(sigma_max)]) if n == 1 else np.asarray(karras_grid(n - 1, float(sigma_max),
                                                                               float(sigma_end)), np.float64)
    return np.concatenate([nodes, [0.0]])


def teacher_flow(teacher: Callable, x, sigma_from, sigma_to, num_steps: int):
    """The teacher's PF-ODE solution from ``sigma_from`` to ``sigma_to`` (``sigma_to`` may be 0) for one point.

    ``num_steps`` steps of EDM's Heun method (Karras et al. 2022, Algorithm 1) on the ODE
    ``dx/dsigma = (x - D(x, sigma))/sigma``, on nodes geometric in sigma; into ``sigma_to = 0`` the nodes run to
    :data:`TEACHER_SIGMA_MIN` and the result is ``D(x, TEACHER_SIGMA_MIN)``. Second order in the step; teacher
    calls: ``2 num_steps``, plus 1 into ``sigma = 0`` (:func:`teacher_calls_per_interval`). ``sigma_to`` must be
    a Python number (whether it is 0 picks the branch); ``sigma_from`` may be traced."""
    m = _positive_int(num_steps, "teacher_flow: num_steps")
    to_zero = float(sigma_to) == 0.0
    end = TEACHER_SIGMA_MIN if to_zero else float(sigma_to)
    dt = x.dtype
    lo, hi = jnp.log(jnp.asarray(end, dt)), jnp.log(jnp.asarray(sigma_from, dt))
    sig = jnp.exp(hi + (lo - hi) * jnp.arange(m + 1, dtype=dt) / m)

    def den(y, s):  # in the state's dtype (an exact mixture may hold float64 parameters)
        return jnp.asarray(teacher(y, s), dt)

    def heun(x, pair):
        s, s2 = pair
        d = (x - den(x, s)) / s
        xe = x + (s2 - s) * d
        d2 = (xe - den(xe, s2)) / s2
        return x + 0.5 * (s2 - s) * (d + d2), None

    x, _ = jax.lax.scan(heun, x, (sig[:-1], sig[1:]))
    return den(x, jnp.asarray(end, dt)) if to_zero else x


def teacher_calls_per_interval(num_steps: int, to_zero: bool) -> int:
    """Teacher calls of one :func:`teacher_flow`: ``2 num_steps`` (+1 for the final denoise into 0)."""
    return 2 * int(num_steps) + (1 if to_zero else 0)


def ddim_step(denoised, x, sigma, sigma_next):
    """DDIM in the VE convention (Song et al. 2021): ``D + (sigma_next/sigma)(x - D)`` (into 0 it is ``D``)."""
    return denoised + (sigma_next / sigma) * (x - denoised)


def sfd_point_loss(student: Callable, teacher_map: Callable, x_init, grid):
    """SFD's trajectory loss for one starting noise ``x_init`` at ``grid[0]`` (module docstring).

    ``grid`` is :func:`sfd_grid` (Python floats/numpy: static), ``student(x, sigma)`` the student denoiser,
    ``teacher_map(x, sigma_from, sigma_to)`` the teacher's solution over one interval (the trainer uses
    :func:`teacher_flow`). Returns ``(1/N) sum_n mean |x^S_{n+1} - sg[x^T_{n+1}]|^2`` with the student's input
    ``x^S_n`` stop-gradiented (one student step per interval, from its own trajectory)."""
    g = [float(v) for v in np.asarray(grid)]
    n = len(g) - 1
    xs = xt = x_init
    total = 0.0
    for i in range(n):
        xt = jax.lax.stop_gradient(teacher_map(xt, g[i], g[i + 1]))
        xin = jax.lax.stop_gradient(xs)
        xs = ddim_step(student(xin, g[i]), xin, g[i], g[i + 1])
        total = total + jnp.mean((xs - xt) ** 2)
    return total / n


def sfd_batch_losses(student: Callable, teacher: Callable, keys, grid, teacher_steps: int, dim: int, dtype):
    """Per-point SFD losses ``[B]`` (point i's noise ``grid[0] * N(0, I)`` from ``keys[i]``) with the teacher map
    :func:`teacher_flow` of ``teacher_steps`` Heun steps per interval; also returns the noise level
    ``grid[0]`` per point (for the trainer's non-finite report)."""
    s0 = float(np.asarray(grid)[0])

    def one(k):
        x = s0 * jax.random.normal(k, (dim,), dtype)
        return sfd_point_loss(student, lambda y, a, b: teacher_flow(teacher, y, a, b, teacher_steps), x, grid)

    losses = jax.vmap(one)(keys)
    return losses, jnp.full(losses.shape, s0, losses.dtype)


def sfd_costs(num_steps: int, teacher_steps: int):
    """``(student passes, teacher calls)`` per training point: ``N`` and ``2 M N + 1``."""
    n, m = int(num_steps), int(teacher_steps)
    return n, (n - 1) * teacher_calls_per_interval(m, False) + teacher_calls_per_interval(m, True)


class SFDInfo(NamedTuple):
    """Diagnostics of :func:`sample_sfd`: ``num_model_evals`` (student calls per sample, = ``num_steps``),
    ``sigmas`` (the grid walked, :func:`sfd_grid`) and ``cost`` (:class:`samplax.core.cost.Cost`)."""

    num_model_evals: int
    sigmas: np.ndarray
    cost: Cost


@eqx.filter_jit
def _one_step(student, key, batch: int, dim: int, sigma_max):
    dt = student.mlp.layers[0].weight.dtype
    x = sigma_max * jax.random.normal(key, (batch, dim), dt)
    return jax.vmap(student, (0, None))(x, jnp.asarray(sigma_max, dt))


def sample_sfd(student: Callable, *, key, batch: int, num_steps: int, sigma_max: float = 80.0,
               sigma_end: float = 0.5):
    """Draw ``batch`` points from an SFD student in ``num_steps`` denoiser calls each: DDIM on :func:`sfd_grid`
    (the grid the student was trained on: pass the ``TrainConfig``'s ``sfd_sigma_max`` and ``sfd_sigma_end``).

    For ``num_steps >= 2`` this is :func:`samplax.diffusion.sample` with ``solver="ddim"``, ``grid="karras"``
    (``rho = 7``), ``nfe=num_steps`` and the final denoise (the DDIM step into 0); for one step it is
    ``D(sigma_max eps, sigma_max)`` with ``eps ~ N(0, I)`` from ``key`` (``sample`` needs two calls for DDIM).
    The student is a :class:`~samplax.diffusion.train.MLPDenoiser` (its data dimension is read from its MLP).
    Returns ``(samples [batch, dim], SFDInfo)``."""
    from samplax.diffusion.sampling import sample  # local: sampling imports the solver table

    n = _positive_int(num_steps, "sample_sfd: num_steps")
    b = _positive_int(batch, "sample_sfd: batch")
    grid = sfd_grid(n, sigma_max, sigma_end)  # checks the levels
    mlp = getattr(student, "mlp", None)
    if mlp is None or not hasattr(student, "emb_dim"):
        raise ValueError(f"sample_sfd: student must be an MLP denoiser (MLPDenoiser), got {type(student).__name__}")
    dim = int(mlp.layers[0].weight.shape[1] - student.emb_dim)
    if n == 1:
        x = _one_step(student, key, b, dim, float(sigma_max))
        return x, SFDInfo(1, grid, make_cost(num_model_evals=1, num_devices=1))
    x, info = sample(student, key=key, shape=(b, dim), sigma_max=float(sigma_max), nfe=n, solver="ddim",
                     grid="karras", sigma_end=float(sigma_end), grid_options={"rho": 7.0})
    return x, SFDInfo(n, np.asarray(info.sigmas), info.cost)


# ---------------------------------------------------------------------------------------------------------- EMD
class EMDModel(eqx.Module):
    """EM-distillation networks: the generator's denoiser ``G`` (``g(z) = G(sigma_g z, sigma_g)``) and the
    student-score denoiser ``D_S`` (trained by DSM on generator samples). Both are denoiser modules
    ``net(x, sigma)`` for one point."""

    generator: eqx.Module
    score: eqx.Module
    gen_sigma: float = eqx.field(static=True)

    def generate(self, z):
        """``g(z) = G(sigma_g z, sigma_g)`` for one latent ``z`` ``[dim]``."""
        return self.generator(self.gen_sigma * z, self.gen_sigma)


class EStepResult(NamedTuple):
    """The end of :func:`emd_estep`'s chain: latent ``z``, reparameterized noise ``eps``, the noise-cancelled
    ``eps_cancelled`` (``eps - eps_0 - sum of injected noise``) and the state ``x = g(z) + sigma eps``."""

    z: jax.Array
    eps: jax.Array
    eps_cancelled: jax.Array
    x: jax.Array


def emd_estep(key, generate: Callable, teacher: Callable, student_score: Callable, sigma, z0, eps0,
              num_steps: int, step_eps, step_z) -> EStepResult:
    """EMD's E-step for one point: ``num_steps`` reparameterized Langevin steps on ``(eps, z)`` targeting
    ``log rho = log p_sigma(g(z) + sigma eps) - log q_sigma(g(z) + sigma eps) - |eps|^2/2 - |z|^2/2`` with
    ``grad log p_sigma - grad log q_sigma = (teacher - student_score)(x, sigma) / sigma^2`` (module docstring).

    ``generate(z)`` is the generator, ``teacher`` and ``student_score`` denoisers ``(x, sigma)``; the chain
    starts at ``(eps0, z0)``, step ``k``'s noise comes from ``fold_in(key, k)``. With ``student_score`` the
    generator's own exact noised denoiser the target is ``p_sigma(x) p(z | x)`` in these coordinates."""
    k_steps = _positive_int(num_steps, "emd_estep: num_steps")
    dt = z0.dtype

    def body(carry, k):
        z, eps, noise = carry
        gz, vjp = jax.vjp(generate, z)
        x = gz + sigma * eps
        diff = (jnp.asarray(teacher(x, sigma), dt) - jnp.asarray(student_score(x, sigma), dt)) / (sigma * sigma)
        grad_eps = sigma * diff - eps
        grad_z = vjp(diff)[0] - z
        n1, n2 = jax.random.split(jax.random.fold_in(key, k))
        ne = jnp.sqrt(2.0 * step_eps) * jax.random.normal(n1, eps.shape, dt)
        eps = eps + step_eps * grad_eps + ne
        z = z + step_z * grad_z + jnp.sqrt(2.0 * step_z) * jax.random.normal(n2, z.shape, dt)
        return (z, eps, noise + ne), None

    (z, eps, noise), _ = jax.lax.scan(body, (z0, eps0, jnp.zeros_like(eps0)), jnp.arange(k_steps))
    return EStepResult(z, eps, eps - eps0 - noise, generate(z) + sigma * eps)


def emd_point_loss(model: EMDModel, teacher: Callable, key, num_steps: int, step_eps, step_z, sigma_min,
                   sigma_max, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5,
                   noise_cancellation: bool = True):
    """One point's EMD loss (module docstring): M-step regression ``mean |g(z_K) - sg[g(z_K) + s eps~]|^2`` after
    the E-step (:func:`emd_estep`, networks stop-gradiented), plus the student-score network's EDM-weighted DSM
    loss ``lambda(s') mean |D_S(x0 + s' n, s') - x0|^2`` on the stop-gradiented generator sample
    ``x0 = g(z_0)``, ``ln s' ~ N(p_mean, p_std^2)``. ``s`` is log-uniform in ``[sigma_min, sigma_max]``;
    ``eps~`` is the noise-cancelled ``eps`` of the chain, or ``eps_K`` with ``noise_cancellation=False``.
    Returns ``(loss, s)``."""
    kz, ke, ks, kc, kd, kn = jax.random.split(key, 6)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    frozen = eqx.combine(jax.lax.stop_gradient(params), static)
    dt = jax.tree_util.tree_leaves(params)[0].dtype
    dim = model.generator.mlp.layers[-1].weight.shape[0]
    z0 = jax.random.normal(kz, (dim,), dt)
    eps0 = jax.random.normal(ke, (dim,), dt)
    lo, hi = jnp.log(jnp.asarray(sigma_min, dt)), jnp.log(jnp.asarray(sigma_max, dt))
    s = jnp.exp(lo + (hi - lo) * jax.random.uniform(ks, (), dt))
    est = emd_estep(kc, frozen.generate, teacher, frozen.score, s, z0, eps0, num_steps, step_eps, step_z)
    gz = model.generate(est.z)
    target = jax.lax.stop_gradient(gz + s * (est.eps_cancelled if noise_cancellation else est.eps))
    loss_m = jnp.mean((gz - target) ** 2)
    x0 = frozen.generate(z0)
    sd = jnp.exp(p_mean + p_std * jax.random.normal(kd, (), dt))
    lam = (sd * sd + sigma_data**2) / (sd * sd * sigma_data**2)
    loss_s = lam * jnp.mean((model.score(x0 + sd * jax.random.normal(kn, (dim,), dt), sd) - x0) ** 2)
    return loss_m + loss_s, s


def emd_costs(num_langevin_steps: int):
    """``(student passes, teacher calls)`` per training point: ``2 K + 2`` and ``K``."""
    k = int(num_langevin_steps)
    return 2 * k + 2, k


class EMDInfo(NamedTuple):
    """Diagnostics of :func:`sample_emd`: ``num_model_evals`` (generator passes per sample, 1) and ``cost``."""

    num_model_evals: int
    cost: Cost


@eqx.filter_jit
def _generate(model, key, batch: int):
    dt = model.generator.mlp.layers[0].weight.dtype
    dim = model.generator.mlp.layers[-1].weight.shape[0]
    z = jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(key, b), (dim,), dt))(jnp.arange(batch))
    return jax.vmap(model.generate)(z)


def sample_emd(model: EMDModel, *, key, batch: int, num_steps: int = 1):
    """Draw ``batch`` points from an EMD generator: ``g(z)``, ``z ~ N(0, I)`` (sample b's latent from
    ``fold_in(key, b)``), one generator pass each (Xie et al. 2024). ``num_steps`` must be 1: EMD distils a
    one-step generator (it has no multi-step schedule). Returns ``(samples [batch, dim], EMDInfo)``."""
    if not isinstance(model, EMDModel):
        raise ValueError(f"sample_emd: model must be an EMDModel, got {type(model).__name__}")
    b = _positive_int(batch, "sample_emd: batch")
    if num_steps != 1 or isinstance(num_steps, bool):
        raise ValueError(f"sample_emd: num_steps must be 1 (an EMD generator is one-step), got {num_steps!r}")
    return _generate(model, key, b), EMDInfo(1, make_cost(num_model_evals=1, num_devices=1))


def emd_state_from_denoiser(denoiser: eqx.Module, config, score: Optional[eqx.Module] = None):
    """A fresh EMD :class:`~samplax.diffusion.train.TrainState` whose generator network and student-score network
    both start as copies of ``denoiser`` (e.g. a DSM-trained ``MLPDenoiser`` of the same ``config`` shape; the
    paper initialises both from the teacher), or the score from ``score``; step 0, fresh optimiser state."""
    from samplax.diffusion import train as tr  # local: train imports this module

    if config.model != "emd":
        raise ValueError(f"emd_state_from_denoiser: config.model must be 'emd', got {config.model!r}")
    model = EMDModel(denoiser, denoiser if score is None else score, float(config.emd_gen_sigma))
    params = eqx.filter(model, eqx.is_inexact_array)
    return tr.TrainState(jnp.asarray(0, jnp.int32), model, tr.make_optimizer(config).init(params), model)


def check_teacher(teacher, who: str = "train") -> None:
    """``teacher`` must be a callable denoiser ``teacher(x, sigma)``."""
    if teacher is None or not callable(teacher):
        raise ValueError(f"{who}: teacher must be a denoiser teacher(x, sigma) (e.g. diffusion.ring8()) for the "
                         f"distillation losses, got {type(teacher).__name__}")


__all__ = ["sfd_grid", "teacher_flow", "teacher_calls_per_interval", "ddim_step", "sfd_point_loss",
           "sfd_batch_losses", "sfd_costs", "SFDInfo", "sample_sfd", "EMDModel", "EStepResult", "emd_estep", "emd_point_loss",
           "emd_costs", "EMDInfo", "sample_emd", "emd_state_from_denoiser", "check_teacher", "TEACHER_SIGMA_MIN"]
