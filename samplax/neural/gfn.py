"""GFlowNet-style training pieces for the path-measure core: a replay buffer with local search, and
sub-trajectory balance with a learned log-flow.

* **Replay buffer** (Sendera, Kim, Mittal, Lemos, Scimeca, Rector-Brooks, Adam, Bengio & Malkin 2024,
  "Improved off-policy training of diffusion samplers", NeurIPS): a ring of ``size`` terminal states
  ``x`` with their ``log pi~(x)`` (:class:`Buffer`, fixed-shape arrays in the training state, so a
  checkpoint restores it exactly).  Each training step inserts its forward paths' end points, draws
  states from the buffer with **rank-based prioritization** (Tripp, Daxberger & Hernandez-Lobato 2020, as
  Sendera et al.): the entry of rank ``r`` (0 = the highest ``log pi~``) among the ``n`` filled ones is drawn
  with probability ``prop. 1 / (k n + r)``, ``k = RANK_WEIGHT``; optionally improves them by **local search**
  (:func:`mala`: Metropolis-adjusted Langevin steps toward the target, whose step size adapts between steps
  toward the acceptance rate 0.574), inserts the results, and starts backward paths from them with the
  reference's backward transitions (:func:`samplax.neural.sde.reverse_simulate`): the off-policy losses
  (log-variance, trajectory balance, sub-trajectory balance) take these paths next to the forward ones.
  Entries whose ``log pi~`` is not finite are kept out of the draws (the ring stores them as invalid, with
  finite placeholders, so the training state stays finite).
* **Sub-trajectory balance** (Madan, Rector-Brooks, Korablyov, Bengio, Jain, Nica, Bosc, Bengio & Malkin 2023,
  "Learning GFlowNets from partial episodes"; for diffusion samplers DGFS: Zhang, Chen, Liu, Courville &
  Bengio 2024, "Diffusion generative flow samplers", ICLR): with a log-flow ``log F_k(x)`` at every grid
  point, each sub-path ``m < n`` has the residual
  ``delta_mn = log F_m(x_m) + sum_{k=m}^{n-1} [log q_theta(x_{k+1} | x_k) - log p(x_k | x_{k+1})] - log F_n(x_n)``,
  and the loss is ``sum_{m<n} lambda^(n-m) delta_mn^2 / sum_{m<n} lambda^(n-m)`` (mean over paths).
  The flow's ends are fixed: ``log F_0(x_0) = log Z_theta + log q_0(x_0)`` (the learned ``log Z``; for
  PIS's point mass ``q_0`` that term is 0) and ``log F_K = log pi~``; in between DGFS's parameterization
  ``log F_k(x) = NN_phi(x, t_k) + w_k log pi~(x) + (1 - w_k) log N(x; 0, v_k I)``: a network corrects the
  geometric interpolation between the reference's marginal at ``t_k`` (``v_k = sum_{j<k} s_j^2`` for
  Brownian motion from 0, ``sigma^2`` for a reference started at ``N(0, sigma^2 I)``) and the target, with
  ``w_k = t_k`` (CMCD: ``beta_k``).  ``(m, n) = (0, K)`` alone is trajectory balance.  In the anchor,
  ``log pi~`` is floored at :data:`ANCHOR_LOG_PI_FLOOR` (NaN counts as below it): the parameterization only needs
  a finite function of ``x``, and early states of a path can sit where the target is ``-inf`` (LJ-13's particles
  start on top of each other), which made the residuals ``inf - inf``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplax.neural.sde import Path, Reference, normal_logpdf, step_log_b, step_log_q

#: ``k`` of the rank-based priority ``1 / (k n + rank)`` (Tripp et al. 2020; Sendera et al. 2024 use 0.01).
RANK_WEIGHT = 0.01
#: The acceptance rate the local search's step size adapts toward (the MALA optimum, Roberts & Rosenthal 1998).
TARGET_ACCEPTANCE = 0.574
#: Factor of one step-size adaptation (``eps *= ADAPT_FACTOR`` after a local search whose acceptance rate was
#: above the target, ``/=`` otherwise) and its bounds.
ADAPT_FACTOR = 1.1
STEP_SIZE_BOUNDS = (1e-8, 1e3)
#: Per-step factor of the step-size adaptation during a long local search's burn-in (:func:`mala_chain`).
BURN_IN_ADAPT_FACTOR = 1.02
#: The floor of ``log pi~`` in the log-flow's anchor (see the module): far below any target's mass, finite.
ANCHOR_LOG_PI_FLOOR = -1e6


class Buffer(NamedTuple):
    """A replay buffer of terminal states (fixed shapes; see the module): ``x [size, d]``, ``log_pi [size]``
    (0 where invalid), ``valid [size]`` (int32: 1 where the slot holds a state with a finite ``log pi~``),
    ``next`` (the ring's insertion slot), ``step_size`` (the local search's current MALA step size)."""

    x: jax.Array
    log_pi: jax.Array
    valid: jax.Array
    next: jax.Array
    step_size: jax.Array


def init_buffer(size: int, dim: int, step_size: float, dtype) -> Buffer:
    """An empty buffer of ``size`` slots."""
    return Buffer(jnp.zeros((size, dim), dtype), jnp.zeros((size,), dtype), jnp.zeros((size,), jnp.int32),
                  jnp.zeros((), jnp.int32), jnp.asarray(step_size, dtype))


def buffer_insert(buf: Buffer, x, log_pi) -> Buffer:
    """Insert ``x [n, d]`` with ``log_pi [n]`` at the ring's next ``n`` slots (``n <= size``); states with a
    non-finite ``log pi~`` or coordinates are stored as invalid (zeros)."""
    size, n = buf.x.shape[0], x.shape[0]
    idx = (buf.next + jnp.arange(n)) % size
    ok = jnp.isfinite(log_pi) & jnp.all(jnp.isfinite(x), axis=-1)
    x = jnp.where(ok[:, None], x, 0.0).astype(buf.x.dtype)
    lp = jnp.where(ok, log_pi, 0.0).astype(buf.log_pi.dtype)
    return buf._replace(x=buf.x.at[idx].set(x), log_pi=buf.log_pi.at[idx].set(lp),
                        valid=buf.valid.at[idx].set(ok.astype(jnp.int32)), next=(buf.next + n) % size)


def rank_priorities(buf: Buffer):
    """Log sampling weights of the slots: ``-log(k n + rank)`` over the ``n`` valid entries (rank 0 = the highest
    ``log pi~``; ties by slot), ``-inf`` for the invalid ones."""
    valid = buf.valid > 0
    n = jnp.sum(valid)
    key = jnp.where(valid, -buf.log_pi, jnp.inf)  # sorted ascending: best first, invalid last
    rank = jnp.argsort(jnp.argsort(key, stable=True), stable=True)
    w = -jnp.log(RANK_WEIGHT * n + rank.astype(buf.log_pi.dtype))
    return jnp.where(valid, w, -jnp.inf)


def buffer_sample(key, buf: Buffer, n: int):
    """``n`` slot indices drawn with replacement by rank-based priority (:func:`rank_priorities`)."""
    return jax.random.categorical(key, rank_priorities(buf), shape=(n,))


def mala(key, logdensity_fn, x, step_size, num_steps: int, clip: float = 1e2):
    """``num_steps`` Metropolis-adjusted Langevin steps (Roberts & Tweedie 1996) from each row of ``x [m, d]``:
    proposal ``y = x + eps g(x) + sqrt(2 eps) xi``, ``g`` the target's gradient with each coordinate clipped to
    ``[-clip, clip]`` (NaN -> 0; a fixed function of the point, so the correction stays exact), accepted with
    probability ``min(1, pi~(y) N(x; y + eps g(y), 2 eps) / (pi~(x) N(y; x + eps g(x), 2 eps)))``; a proposal with
    a non-finite log-density is rejected.  ``pi`` is invariant for any fixed ``eps``.

    Returns ``(x, log_pi, acceptance_rate)``.  Target evaluations: ``num_steps + 1`` value-and-gradients per row
    (the start point, then each proposal).
    """

    vg_b = _clipped_value_and_grad(logdensity_fn, clip)
    eps = jnp.asarray(step_size, x.dtype)
    sd = jnp.sqrt(2 * eps)
    lp, g = vg_b(x)

    def one(carry, k):
        x, lp, g, acc = carry
        x, lp, g, ok = _mala_step(vg_b, eps, sd, x, lp, g, k)
        return (x, lp, g, acc + jnp.mean(ok.astype(x.dtype))), None

    keys = jax.random.split(key, num_steps)
    (x, lp, _, acc), _ = jax.lax.scan(one, (x, lp, g, jnp.zeros((), x.dtype)), keys)
    return x, lp, acc / max(int(num_steps), 1)


def _clipped_value_and_grad(logdensity_fn, clip):
    def vg(z):
        lp, g = jax.value_and_grad(logdensity_fn)(z)
        g = jnp.clip(jnp.where(jnp.isnan(g), 0.0, g), -clip, clip)
        return jnp.where(jnp.isnan(lp), -jnp.inf, lp), g

    return jax.vmap(vg)


def _mala_step(vg_b, eps, sd, x, lp, g, k):
    """One MALA step of every row (see :func:`mala`; ``sd = sqrt(2 eps)``): ``(x, log_pi, grad, accepted [m])``."""
    y = x + eps * g + sd * jax.random.normal(k, x.shape, x.dtype)
    lp_y, g_y = vg_b(y)
    log_fwd = normal_logpdf(y, x + eps * g, sd)
    log_bwd = normal_logpdf(x, y + eps * g_y, sd)
    log_a = lp_y - lp + log_bwd - log_fwd
    ku = jax.random.fold_in(k, 1)
    ok = jnp.isfinite(lp_y) & (jnp.log(jax.random.uniform(ku, lp.shape, x.dtype)) < log_a)
    x = jnp.where(ok[:, None], y, x)
    g = jnp.where(ok[:, None], g_y, g)
    lp = jnp.where(ok, lp_y, lp)
    return x, lp, g, ok


def mala_chain(key, logdensity_fn, x, step_size, num_steps: int, burn_in: int, clip: float = 1e2):
    """A long local search (the schedule of Sendera et al.'s code): ``num_steps`` MALA steps (:func:`mala`'s
    kernel) from each row of ``x [m, d]``; during the first ``burn_in`` steps the step size adapts after every
    step (``* BURN_IN_ADAPT_FACTOR`` when the rows' acceptance rate is above :data:`TARGET_ACCEPTANCE`, ``/``
    below), then stays fixed, and every state of the ``num_steps - burn_in`` later steps is returned (the chains'
    draws, ``pi`` invariant).

    Returns ``(xs [(num_steps - burn_in) * m, d], log_pis, step_size after the burn-in, acceptance rate after
    the burn-in)``.  Target evaluations: ``num_steps + 1`` value-and-gradients per row.
    """
    vg_b = _clipped_value_and_grad(logdensity_fn, clip)
    eps = jnp.asarray(step_size, x.dtype)
    lp, g = vg_b(x)
    keys = jax.random.split(key, num_steps)

    def adapt(carry, k):
        x, lp, g, eps = carry
        x, lp, g, ok = _mala_step(vg_b, eps, jnp.sqrt(2 * eps), x, lp, g, k)
        up = jnp.mean(ok.astype(x.dtype)) > TARGET_ACCEPTANCE
        eps = jnp.clip(jnp.where(up, eps * BURN_IN_ADAPT_FACTOR, eps / BURN_IN_ADAPT_FACTOR), *STEP_SIZE_BOUNDS)
        return (x, lp, g, eps), None

    (x, lp, g, eps), _ = jax.lax.scan(adapt, (x, lp, g, eps), keys[:burn_in])

    sd = jnp.sqrt(2 * eps)

    def draw(carry, k):
        x, lp, g = carry
        x, lp, g, ok = _mala_step(vg_b, eps, sd, x, lp, g, k)
        return (x, lp, g), (x, lp, jnp.mean(ok.astype(x.dtype)))

    _, (xs, lps, acc) = jax.lax.scan(draw, (x, lp, g), keys[burn_in:])
    d = x.shape[-1]
    return xs.reshape(-1, d), lps.reshape(-1), eps, jnp.mean(acc)


def adapt_step_size(step_size, acceptance):
    """The next local search's step size: ``* ADAPT_FACTOR`` above :data:`TARGET_ACCEPTANCE`, ``/`` below."""
    new = jnp.where(acceptance > TARGET_ACCEPTANCE, step_size * ADAPT_FACTOR, step_size / ADAPT_FACTOR)
    return jnp.clip(new, *STEP_SIZE_BOUNDS)


def flow_anchor(ref: Reference) -> tuple:
    """DGFS's interpolation at the grid points ``k = 0 .. K`` (host numpy): weights ``w_k`` of ``log pi~`` and the
    reference's marginal standard deviations ``sqrt(v_k)`` (see the module; ``v_0`` of PIS's point mass is
    unused: ``log F_0`` is the learned ``log Z``)."""
    K = ref.num_steps
    if ref.annealed:
        w = np.asarray(ref.beta, np.float64)
    else:
        w = np.append(np.asarray(ref.t, np.float64), 1.0)
    if ref.prior_std > 0:
        std = np.full(K + 1, float(ref.prior_std))
    else:
        v = np.concatenate([[0.0], np.cumsum(np.asarray(ref.s, np.float64) ** 2)])
        std = np.sqrt(np.maximum(v, 1e-12))
    return w, std


def log_flows(model, ref: Reference, path: Path):
    """``log F_k(x_k)``, ``k = 0 .. K``, of one path (``Path.log_pis`` needed): ``log Z_theta + log q_0(x_0)``,
    ``NN_phi(x_k, t_k) + w_k log pi~(x_k) + (1 - w_k) log N(x_k; 0, v_k I)`` in between, ``log pi~(x_K)``."""
    dtype = model.log_z.dtype
    w, std = flow_anchor(ref)
    K = ref.num_steps
    t = jnp.asarray(np.append(np.asarray(ref.t, np.float64), 1.0), dtype)
    w, std = jnp.asarray(w, dtype), jnp.asarray(std, dtype)
    lp = jnp.where(jnp.isnan(path.log_pis), ANCHOR_LOG_PI_FLOOR, jnp.maximum(path.log_pis, ANCHOR_LOG_PI_FLOOR))
    anchor = w * lp + (1 - w) * jax.vmap(lambda x, sd: normal_logpdf(x, jnp.zeros_like(x), sd))(
        path.xs, std)
    nn = jax.vmap(model.log_flow)(path.xs, t)
    inner = (nn + anchor)[1:K]
    return jnp.concatenate([(model.log_z + path.log_q0)[None], inner, path.log_pi[None]])


def subtb_weights(num_steps: int, lam: float) -> np.ndarray:
    """``W [K+1, K+1]``: ``lambda^(n-m) / sum_{m'<n'} lambda^(n'-m')`` for ``m < n``, 0 elsewhere (host numpy)."""
    i = np.arange(num_steps + 1)
    diff = i[None, :] - i[:, None]
    logw = np.where(diff > 0, diff * np.log(lam), -np.inf)
    logw = logw - np.logaddexp.reduce(logw[diff > 0])
    return np.exp(logw)


def subtb_residuals(model, ref: Reference, path: Path):
    """``G_k = log F_k(x_k) - sum_{j<k} [log q_theta(x_{j+1} | x_j) - log p(x_j | x_{j+1})]`` of one path, so that
    ``delta_mn = G_m - G_n`` (see the module)."""
    d = step_log_q(model, ref, path) - step_log_b(model, ref, path)
    cum = jnp.concatenate([jnp.zeros((1,), d.dtype), jnp.cumsum(d)])
    return log_flows(model, ref, path) - cum


def subtb_loss(model, ref: Reference, paths: Path, lam: float):
    """Sub-trajectory balance: the mean over ``paths`` of ``sum_{m<n} W_mn (G_m - G_n)^2`` (:func:`subtb_weights`,
    :func:`subtb_residuals`)."""
    W = jnp.asarray(subtb_weights(ref.num_steps, lam), model.log_z.dtype)
    G = jax.vmap(lambda p: subtb_residuals(model, ref, p))(paths)
    delta = G[:, :, None] - G[:, None, :]
    return jnp.mean(jnp.sum(W * delta**2, axis=(1, 2)))
