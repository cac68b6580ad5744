"""The No-U-Turn Sampler with multinomial sampling (Hoffman & Gelman 2014; Betancourt 2017).

Each transition draws a momentum and doubles a trajectory in random directions
until the generalized U-turn criterion holds on any balanced sub-tree, the tree
reaches ``max_tree_depth``, or a divergence occurs.  Within a new sub-tree the
proposal is drawn multinomially (weights ``exp(-H)``); the sub-tree's proposal
replaces the current one with probability ``min(1, W_new / W_old)`` (biased
progressive sampling).  Sub-trees are built iteratively (no recursion): the
U-turn checks of all balanced sub-trees ending at leaf ``n`` use checkpoints
stored at indices given by the binary expansion of ``n`` (as in the iterative
NUTS of Phan, Pradhan & Jankowiak 2019, NumPyro).  Every merge of two halves
(inside a sub-tree and at the top level) also runs Stan's two extra checks
(Stan 2.26, after Betancourt's "sub-tree U-turn" fix): the left half plus the
first leaf of the right half, and the last leaf of the left half plus the right
half.  Without them, nearly periodic trajectories (e.g. a 100-d standard normal
at step size 0.42) miss their U-turns and run ~8x longer.  The Metropolis acceptance
statistic for step-size adaptation is the mean of ``min(1, exp(H0 - H))`` over
all new leaves, as in Stan.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.nonfinite import is_broken_proposal
from samplax.core.types import Kernel, PointState, point_state
from samplax.mcmc import integrators, metrics
from samplax.mcmc.hmc import HMCParams as NUTSParams
from samplax.core.method import Option
from samplax.core.options import pos_int, pos_number
from samplax.mcmc import declare
from samplax.mcmc.registry import ChainMethod, KernelSpec, register_kernel

__all__ = ["NUTSParams", "NUTSInfo", "init", "build_kernel", "nuts"]


class NUTSInfo(NamedTuple):
    acceptance_rate: jax.Array
    is_divergent: jax.Array
    is_nonfinite: jax.Array
    is_turning: jax.Array
    energy: jax.Array
    tree_depth: jax.Array
    num_integration_steps: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array


class _Leaf(NamedTuple):
    position: jax.Array
    momentum: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class _Proposal(NamedTuple):
    state: PointState
    energy: jax.Array


class _SubTree(NamedTuple):
    last: _Leaf
    first_momentum: jax.Array
    proposal: _Proposal
    log_weight: jax.Array
    momentum_sum: jax.Array
    turning: jax.Array
    diverging: jax.Array
    nonfinite: jax.Array
    sum_accept: jax.Array
    num_leaves: jax.Array


class _Tree(NamedTuple):
    left: _Leaf
    right: _Leaf
    proposal: _Proposal
    log_weight: jax.Array
    momentum_sum: jax.Array
    depth: jax.Array
    turning: jax.Array
    diverging: jax.Array
    nonfinite: jax.Array
    sum_accept: jax.Array
    num_leaves: jax.Array


def init(key, position, logdensity_fn: Callable) -> PointState:
    del key
    return point_state(logdensity_fn, position)


def _select(pred, a, b):
    return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


def _popcount(n):
    return jax.lax.population_count(n)


def _trailing_ones(n):
    # number of trailing 1 bits of n = popcount(n ^ (n + 1)) - 1
    return _popcount(n ^ (n + 1)) - 1


def build_kernel(logdensity_fn: Callable, max_tree_depth: int = 10,
                 divergence_threshold: float = 1000.0, integrator="velocity_verlet") -> Callable:
    """``step(key, state, params) -> (state, NUTSInfo)``; ``max_tree_depth`` is structural."""
    max_tree_depth = int(max_tree_depth)
    if not 1 <= max_tree_depth <= 30:
        raise ValueError(f"max_tree_depth must be in [1, 30], got {max_tree_depth}")
    integ = integrators.get_integrator(integrator)(logdensity_fn)
    grads_per_step = getattr(integ, "grads_per_step", 1)

    def build_subtree(key, start: _Leaf, eps_signed, depth, h0, imm):
        d = start.position.shape[0]
        dtype = start.position.dtype
        ckpt_p = jnp.zeros((max_tree_depth, d), dtype)
        ckpt_rho = jnp.zeros((max_tree_depth, d), dtype)
        # momentum of the leaf before each checkpoint's leaf (the last leaf of the left half
        # whose right half starts at that checkpoint), for Stan's extra checks
        ckpt_prev = jnp.zeros((max_tree_depth, d), dtype)
        num_total = jnp.left_shift(jnp.asarray(1, jnp.int32), depth)
        init_prop = _Proposal(PointState(start.position, start.logdensity, start.logdensity_grad),
                              jnp.asarray(jnp.inf, dtype))
        carry0 = (start, init_prop, jnp.asarray(-jnp.inf, dtype), jnp.zeros((d,), dtype),
                  jnp.asarray(False), jnp.asarray(False), jnp.asarray(False),
                  jnp.zeros((), dtype), jnp.asarray(0, jnp.int32), ckpt_p, ckpt_rho, ckpt_prev)

        def cond(c):
            n, turning, diverging = c[8], c[4], c[5]
            return (n < num_total) & ~turning & ~diverging

        def body(c):
            leaf, prop, log_w, rho, turning, diverging, nonfinite, sum_acc, n, cp, cr, cq = c
            s = integ(integrators.IntegratorState(*leaf), eps_signed, imm)
            new_leaf = _Leaf(*s)
            h = integrators.hamiltonian(s, imm)
            finite_grad = jnp.all(jnp.isfinite(s.logdensity_grad))
            h = jnp.where(finite_grad, h, jnp.inf)
            delta = h - h0
            is_nonfinite = ~jnp.isfinite(h)
            diverging = is_nonfinite | (delta > divergence_threshold)
            w_leaf = -delta  # log weight relative to the initial point
            w_leaf = jnp.where(jnp.isfinite(w_leaf), w_leaf, -jnp.inf)
            sum_acc = sum_acc + jnp.where(is_nonfinite, 0.0, jnp.minimum(1.0, jnp.exp(-delta)))
            new_log_w = jnp.logaddexp(log_w, w_leaf)
            u = jax.random.uniform(jax.random.fold_in(key, n), dtype=dtype)
            take = jnp.log(u) < (w_leaf - new_log_w)
            prop = _select(take, _Proposal(PointState(s.position, s.logdensity, s.logdensity_grad), h), prop)
            rho = rho + s.momentum
            # Checkpoints: leaf n even starts new balanced sub-trees; leaf n odd ends some.
            idx_max = _popcount(jnp.right_shift(n, 1))
            is_even = (n % 2) == 0
            cp = jnp.where(is_even, cp.at[idx_max].set(s.momentum), cp)
            cr = jnp.where(is_even, cr.at[idx_max].set(rho), cr)
            cq = jnp.where(is_even, cq.at[idx_max].set(leaf.momentum), cq)
            idx_min = idx_max - _trailing_ones(n) + 1

            # All checkpoint checks at once (one fused vector op instead of a loop):
            # sub-tree k spans leaves from checkpoint k to n.
            ks = jnp.arange(max_tree_depth)
            active = (~is_even) & (ks >= idx_min) & (ks <= idx_max)
            check = jax.vmap(metrics.is_turning, in_axes=(None, 0, 0, 0))
            p_n = jnp.broadcast_to(s.momentum, cp.shape)
            turns = check(imm, cp, p_n, rho - cr + cp)
            # Stan's extra checks for sub-tree k (k < idx_max): its right half starts at
            # checkpoint k + 1.  (a) left half + first leaf of the right half; (b) last leaf
            # of the left half + right half.
            cp1, cr1, cq1 = jnp.roll(cp, -1, 0), jnp.roll(cr, -1, 0), jnp.roll(cq, -1, 0)
            turns_a = check(imm, cp, cp1, cr1 - cr + cp)
            turns_b = check(imm, cq1, p_n, rho - (cr1 - cp1) + cq1)
            extra = active & (ks < idx_max)
            turning = jnp.any(active & turns) | jnp.any(extra & (turns_a | turns_b))
            broken = is_broken_proposal(s.position, s.logdensity, s.logdensity_grad)
            return (new_leaf, prop, new_log_w, rho, turning, diverging, nonfinite | broken,
                    sum_acc, n + 1, cp, cr, cq)

        out = jax.lax.while_loop(cond, body, carry0)
        leaf, prop, log_w, rho, turning, diverging, nonfinite, sum_acc, n, cp, _, _ = out
        return _SubTree(leaf, cp[0], prop, log_w, rho, turning, diverging, nonfinite, sum_acc, n)

    def step(key, state: PointState, params: NUTSParams):
        eps, imm = params.step_size, params.inverse_mass_matrix
        k_mom, k_tree = jax.random.split(key)
        p0 = metrics.sample_momentum(k_mom, imm, state.position)
        leaf0 = _Leaf(state.position, p0, state.logdensity, state.logdensity_grad)
        h0 = integrators.hamiltonian(integrators.IntegratorState(*leaf0), imm)
        dtype = p0.dtype
        tree0 = _Tree(leaf0, leaf0, _Proposal(state, h0), jnp.zeros((), dtype), p0,
                      jnp.asarray(0, jnp.int32), jnp.asarray(False), jnp.asarray(False),
                      jnp.asarray(False), jnp.zeros((), dtype), jnp.asarray(0, jnp.int32))

        def cond(t: _Tree):
            return (t.depth < max_tree_depth) & ~t.turning & ~t.diverging

        def body(t: _Tree):
            k = jax.random.fold_in(k_tree, t.depth)
            k_dir, k_sub, k_acc = jax.random.split(k, 3)
            go_right = jax.random.bernoulli(k_dir)
            start = _select(go_right, t.right, t.left)
            eps_signed = jnp.where(go_right, eps, -eps)
            sub = build_subtree(k_sub, start, eps_signed, t.depth, h0, imm)
            ok = ~sub.turning & ~sub.diverging
            accept_prob = jnp.exp(jnp.minimum(0.0, sub.log_weight - t.log_weight))
            take = ok & (jax.random.uniform(k_acc, dtype=dtype) < accept_prob)
            proposal = _select(take, sub.proposal, t.proposal)
            left = _select(go_right, t.left, sub.last)
            right = _select(go_right, sub.last, t.right)
            rho = t.momentum_sum + sub.momentum_sum
            turning_all = metrics.is_turning(imm, left.momentum, right.momentum, rho)
            # Stan's extra checks across the merge: the old tree plus the sub-tree's first leaf,
            # and the old tree's near end plus the sub-tree (the criterion is symmetric in its ends).
            far = _select(go_right, t.left, t.right).momentum
            turning_all = (turning_all
                           | metrics.is_turning(imm, far, sub.first_momentum,
                                                t.momentum_sum + sub.first_momentum)
                           | metrics.is_turning(imm, start.momentum, sub.last.momentum,
                                                start.momentum + sub.momentum_sum))
            return _Tree(left, right, proposal, jnp.logaddexp(t.log_weight, sub.log_weight), rho,
                         t.depth + 1, sub.turning | (ok & turning_all), sub.diverging,
                         t.nonfinite | sub.nonfinite, t.sum_accept + sub.sum_accept,
                         t.num_leaves + sub.num_leaves)

        t = jax.lax.while_loop(cond, body, tree0)
        n_leaves = jnp.maximum(t.num_leaves, 1)
        n_grads = t.num_leaves * grads_per_step
        info = NUTSInfo(t.sum_accept / n_leaves, t.diverging, t.nonfinite, t.turning,
                        t.proposal.energy, t.depth, t.num_leaves, n_grads, n_grads)
        return t.proposal.state, info

    return step


def nuts(logdensity_fn: Callable, step_size, inverse_mass_matrix=None, max_tree_depth: int = 10) -> Kernel:
    """NUTS kernel with fixed step size and inverse mass matrix."""
    step_fn = build_kernel(logdensity_fn, max_tree_depth)

    def init_fn(key, position):
        return init(key, position, logdensity_fn)

    def step(key, state):
        imm = inverse_mass_matrix if inverse_mass_matrix is not None else jnp.ones_like(state.position)
        return step_fn(key, state, NUTSParams(jnp.asarray(step_size), jnp.asarray(imm)))

    return Kernel(init_fn, step)


def _nuts_stats(state, info, params):
    out = declare.hmc_stats(state, info, params)
    out.update(tree_depth=info.tree_depth)
    return out


register_kernel(KernelSpec("nuts", init, build_kernel, NUTSParams, nuts, gradient_based=True, invariant=True,
                           tunable=True, target_accept=0.8, initial_step_size=lambda d: d ** -0.25,
                           method=ChainMethod(
                               "No-U-Turn Sampler, multinomial (Hoffman & Gelman 2014; Betancourt 2017)", _nuts_stats,
                               options={"max_tree_depth": Option(10, "maximum tree depth (2^depth leapfrog steps)",
                                                                 lambda v: pos_int(v) and v <= 30, "an int in [1, 30]"),
                                        "divergence_threshold": Option(1000.0, "energy error that counts as a divergence",
                                                                       pos_number, "a positive number"),
                                        "integrator": declare.integrator_option()})))
