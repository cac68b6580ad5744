"""ChEES: many-chain adaptation of HMC's trajectory length (Hoffman, Radul & Sountsov, AISTATS 2021).

Kernel: jittered HMC.  Each transition integrates ``n = ceil(u T / e)`` leapfrog
steps (at least 1, at most ``max_num_steps``) with ``u`` in (0, 1] from the
base-2 Halton (van der Corput) sequence, shared by all chains at a given
iteration, so trajectory lengths never resonate with a periodic direction and
chains run in lockstep.

Adaptation, pooled over all chains (``per_chain=False``):

- step size: dual averaging (Hoffman & Gelman 2014, Alg. 5) on the *harmonic
  mean* over non-divergent chains of the acceptance probabilities, target
  0.651 (Beskos et al. 2013's optimum for HMC);
- trajectory length: Adam with ``beta1 = 0``, ``beta2 = 0.95`` and learning rate
  ``0.025`` *ascending* the Change in the Estimator of the Expected Square
  ``ChEES = E[(||x' - E x||^2 - ||x - E x||^2)^2] / 4``, in ``log T``.  Per chain
  ``c`` with start ``x_c``, proposal ``x'_c``, end momentum ``p'_c`` and
  acceptance probability ``a_c``, the pathwise gradient w.r.t. ``log T`` is

      g_c = u T (||x'_c - m'||^2_C - ||x_c - m||^2_C) ((x'_c - m') . p'_c),

  with ``m`` the mean of the starts, ``m'`` the ``a``-weighted mean of the
  proposals and ``||v||^2_C = v^T C^{-1} v`` (distances measured in the metric
  of the inverse mass matrix ``C``; ``(x' - m') . p'`` is invariant to it).  The
  step uses ``sum_c a_c g_c / sum_c a_c`` (divergent chains get weight 0), and
  each update of ``log T`` is clipped to ``+-0.35``.  The trajectory length kept
  after warm-up is ``exp`` of the running average of ``log T`` with weights
  ``t^{-1/2}``; the step size is the dual-averaging average.
- mass matrix (optional): at the end of each of Stan's slow windows, the
  diagonal Fisher estimate ``sqrt(Var x / Var grad)`` over every chain's draws
  and gradients of that window (:mod:`samplax.adaptation.fisher`), after which
  dual averaging restarts.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.adaptation.fisher import FisherState, fisher_diag_estimator
from samplax.adaptation.step_size import DualAveragingState, da_init, da_update, find_reasonable_step_size
from samplax.adaptation.windowed import Adapter, select, window_metric_update, window_schedule
from samplax.core.types import PointState, point_state
from samplax.mcmc import integrators, metrics

TARGET_ACCEPT = 0.651
LOG_UPDATE_CLIP = 0.35


class ChEESParams(NamedTuple):
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    trajectory_length: jax.Array
    jitter: jax.Array  # u in (0, 1]


class ChEESInfo(NamedTuple):
    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    is_nonfinite: jax.Array
    energy: jax.Array
    num_integration_steps: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array
    initial_position: jax.Array
    proposed_position: jax.Array
    proposed_momentum: jax.Array


def halton(index):
    """Base-2 Halton (van der Corput) number of ``index >= 0``: the bits of ``index`` mirrored after the point."""
    index = jnp.asarray(index, jnp.uint32)
    j = jnp.arange(32, dtype=jnp.uint32)
    bits = (jnp.right_shift(index, j) & 1).astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    return jnp.sum(bits * 2.0 ** (-(j.astype(bits.dtype) + 1.0)))


def init(key, position, logdensity_fn: Callable) -> PointState:
    del key
    return point_state(logdensity_fn, position)


def build_kernel(logdensity_fn: Callable, integrator="velocity_verlet", divergence_threshold: float = 1000.0,
                 max_num_steps: int = 1000) -> Callable:
    """``step(key, state, ChEESParams) -> (state, ChEESInfo)``: jittered HMC, ``ceil(u T / e)`` steps."""
    max_num_steps = int(max_num_steps)
    if max_num_steps < 1:
        raise ValueError(f"max_num_steps must be >= 1, got {max_num_steps}")
    integ = integrators.get_integrator(integrator)(logdensity_fn)
    grads_per_step = getattr(integ, "grads_per_step", 1)

    def step(key, state: PointState, params: ChEESParams):
        imm, eps = params.inverse_mass_matrix, params.step_size
        k_mom, k_acc = jax.random.split(key)
        n = jnp.ceil(params.jitter * params.trajectory_length / eps)
        n = jnp.clip(jnp.where(jnp.isfinite(n), n, 1.0), 1, max_num_steps).astype(jnp.int32)
        p0 = metrics.sample_momentum(k_mom, imm, state.position)
        s0 = integrators.IntegratorState(state.position, p0, state.logdensity, state.logdensity_grad)
        h0 = integrators.hamiltonian(s0, imm)
        s1 = jax.lax.fori_loop(0, n, lambda _, s: integ(s, eps, imm), s0)
        h1 = integrators.hamiltonian(s1, imm)
        finite = jnp.isfinite(s1.logdensity) & jnp.all(jnp.isfinite(s1.logdensity_grad)) & jnp.isfinite(h1)
        delta = jnp.where(finite, h0 - h1, -jnp.inf)
        accept_prob = jnp.minimum(1.0, jnp.exp(delta))
        accepted = jnp.log(jax.random.uniform(k_acc, dtype=p0.dtype)) < delta
        proposal = PointState(s1.position, s1.logdensity, s1.logdensity_grad)
        new_state = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), proposal, state)
        ng = n * grads_per_step
        return new_state, ChEESInfo(accept_prob, accepted, -delta > divergence_threshold, ~finite,
                                    jnp.where(accepted, h1, h0), n, ng, ng, state.position, s1.position, s1.momentum)

    return step


class ChEESState(NamedTuple):
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    trajectory_length: jax.Array
    da: DualAveragingState
    log_length: jax.Array
    log_length_avg: jax.Array
    adam_v: jax.Array
    t: jax.Array
    counter: jax.Array
    fisher: FisherState


def chees_gradient(initial, proposed, momentum, accept_prob, diverging, inverse_mass_matrix, jitter,
                   trajectory_length):
    """Weighted ChEES gradient w.r.t. ``log T`` over chains (see the module docstring); 0 if undefined."""
    w = jnp.where(diverging | ~jnp.isfinite(accept_prob) | ~jnp.all(jnp.isfinite(proposed), axis=-1),
                  0.0, accept_prob)
    proposed = jnp.where(jnp.isfinite(proposed), proposed, 0.0)
    momentum = jnp.where(jnp.isfinite(momentum), momentum, 0.0)
    m0 = jnp.mean(initial, axis=0)
    m1 = jnp.sum(w[:, None] * proposed, axis=0) / jnp.maximum(jnp.sum(w), 1e-300)
    d0, d1 = initial - m0, proposed - m1
    inv = 1.0 / inverse_mass_matrix
    sq0, sq1 = jnp.sum(d0**2 * inv, axis=-1), jnp.sum(d1**2 * inv, axis=-1)
    g = jitter * trajectory_length * (sq1 - sq0) * jnp.sum(d1 * momentum, axis=-1)
    out = jnp.sum(w * g) / (jnp.sum(w) + 1e-20)
    return jnp.where(jnp.isfinite(out), out, 0.0)


def chees_adapter(logdensity_fn: Callable, dim: int, num_warmup: int, num_chains: int, *,
                  target_accept: float = TARGET_ACCEPT, learning_rate: float = 0.025, beta2: float = 0.95,
                  adapt_mass_matrix: bool = True, initial_step_size=None, initial_trajectory_length=None,
                  max_num_steps: int = 1000) -> Adapter:
    """Pooled ChEES adapter of ``(step_size, inverse_mass_matrix, trajectory_length, jitter)`` (module docstring)."""
    schedule = window_schedule(num_warmup, adapt_mass_matrix)
    estimator = fisher_diag_estimator()
    nw = schedule.num_warmup

    def init_fn(keys, states):
        pos = states.position
        dtype = pos.dtype
        imm = estimator.initial(dim, dtype)
        if initial_step_size is None:
            eps, n = jax.vmap(lambda k, x: find_reasonable_step_size(k, logdensity_fn, x, imm, 1.0))(keys, pos)
            eps0 = jnp.median(eps)
        else:
            eps0, n = jnp.asarray(initial_step_size, dtype), jnp.zeros((keys.shape[0],), jnp.int32)
        t0 = eps0 if initial_trajectory_length is None else jnp.asarray(initial_trajectory_length, dtype)
        st = ChEESState(eps0, imm, t0, da_init(eps0), jnp.log(t0), jnp.log(t0), jnp.zeros((), dtype),
                        jnp.zeros((), dtype), jnp.asarray(0, jnp.int32), estimator.init(dim, dtype))
        return st, n

    def jitter_of(st):
        return halton(st.counter + 1)

    def params(st):
        p = ChEESParams(st.step_size, st.inverse_mass_matrix, st.trajectory_length, jitter_of(st))
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (num_chains,) + jnp.shape(a)), p)

    def update(st, i, states, infos):
        acc = jnp.where(jnp.isfinite(infos.acceptance_rate), infos.acceptance_rate, 0.0)
        ok = ~infos.is_divergent
        harmonic = jnp.sum(ok) / jnp.sum(jnp.where(ok, 1.0 / jnp.maximum(acc, 1e-10), 0.0))
        harmonic = jnp.where(jnp.isfinite(harmonic), harmonic, 0.0)
        da = da_update(st.da, harmonic, target_accept)
        eps = jnp.exp(da.log_step_size)
        g = chees_gradient(infos.initial_position, infos.proposed_position, infos.proposed_momentum, acc,
                           infos.is_divergent, st.inverse_mass_matrix, jitter_of(st), st.trajectory_length)
        t = st.t + 1.0
        v = beta2 * st.adam_v + (1.0 - beta2) * g**2
        v_hat = v / (1.0 - beta2**t)
        upd = jnp.clip(learning_rate * g / (jnp.sqrt(v_hat) + 1e-8), -LOG_UPDATE_CLIP, LOG_UPDATE_CLIP)
        log_len = st.log_length + jnp.where(jnp.isfinite(upd), upd, 0.0)
        wt = t ** -0.5
        log_avg = (1.0 - wt) * st.log_length_avg + wt * log_len
        fs, imm, da = window_metric_update(schedule, estimator, i, st.fisher, st.inverse_mass_matrix, da, eps,
                                           states.position, states.logdensity_grad)
        last = i == nw - 1
        eps = jnp.where(last, jnp.exp(da.log_step_size_avg), eps)
        length = jnp.where(last, jnp.exp(log_avg), jnp.exp(log_len))
        length = jnp.clip(length, eps, max_num_steps * eps)
        new = ChEESState(eps, imm, length, da, log_len, log_avg, v, t, st.counter + 1, fs)
        frozen = st._replace(counter=st.counter + 1)
        return select(i < nw, new, frozen)

    def sampling_update(st, i, states, infos):
        # after warm-up only the jitter sequence advances (identical to ``update`` there)
        del i, states, infos
        return st._replace(counter=st.counter + 1)

    return Adapter(init_fn, update, params, per_chain=False, sampling_update=sampling_update)
