"""MCMC mutations for tempered SMC, tuned from the particle population.

At temperature ``beta`` the mutation runs ``num_mcmc_steps`` steps of an
MCMC kernel from the kernel registry (:mod:`samplax.mcmc.registry`) that leaves
``pi_beta`` invariant, on every particle (vmap).  Any registered kernel that
declares itself ``invariant`` and ``tunable`` (params ``(step_size,
inverse_mass_matrix)``) with an acceptance target and a scale-free initial step
size works (:func:`kernel_names`: ``hmc``, ``mala``, ``nuts``, ``rwm``); the
structural option ``num_integration_steps`` goes to kernels whose
``build_kernel`` takes it.  Tuning (Buchholz, Chopin &
Jacob 2021, "Adaptive tuning of HMC within SMC"; Chopin & Papaspiliopoulos 2020,
sec. 17.2):

- inverse mass matrix: the weighted per-coordinate variance of the particles
  at the new temperature (before the move);
- step size: after each MCMC step, ``log e <- log e + (a_bar - a*)`` where
  ``a_bar`` is the mean acceptance probability over particles and ``a*`` the
  target acceptance (a Robbins–Monro step with constant gain; the parameters
  depend on the population only, so every step is ``pi_beta``-invariant).

Particles cache the reference and target log-densities (and gradients for
gradient kernels) so reweighting never re-evaluates the target; after the
moves the target is evaluated once per particle to refresh the cache (counted).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.nonfinite import count_nonfinite
from samplax.core.types import PointState
from samplax.mcmc.registry import KERNELS, KernelSpec, get_kernel
from samplax.smc.paths import GaussianReference, geometric_logdensity

PLATEAU_BLOCK = 5
PLATEAU_RATIO = 0.9
REQUIREMENT = "a registered kernel that leaves the target invariant and takes (step_size, inverse_mass_matrix) params"


class Particles(NamedTuple):
    """Particle positions with cached log-densities (leading axis ``N``).

    ``grad_ref``/``grad_tgt`` are zeros for gradient-free kernels.
    """

    position: jax.Array
    lp_ref: jax.Array
    lp_tgt: jax.Array
    grad_ref: jax.Array
    grad_tgt: jax.Array


class MutationInfo(NamedTuple):
    """Mean acceptance over particles and steps, the adapted log step size, evaluation counts, the number of moves
    made and the number of non-finite evaluations (proposals the kernel flagged ``is_nonfinite``, and NaN/+inf
    log-densities or non-finite gradients at the refreshed particles; :mod:`samplax.core.nonfinite`)."""

    acceptance_rate: jax.Array
    log_step_size: jax.Array
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array
    num_moves: jax.Array
    num_nonfinite: jax.Array


def kernel_problem(kernel) -> str | None:
    """Why the kernel named ``kernel`` cannot mutate particles (None when it can)."""
    if not isinstance(kernel, str) or kernel not in KERNELS:
        return f"{kernel!r} is not a registered kernel"
    spec = get_kernel(kernel)
    if not spec.invariant:
        return (f"kernel {kernel!r} does not leave the target invariant (unadjusted: its stationary "
                "distribution is not the target at any finite step size)")
    if not spec.tunable:
        return f"kernel {kernel!r} does not take (step_size, inverse_mass_matrix) params"
    if spec.composite:
        return f"kernel {kernel!r} needs a composite target (smooth part and prox)"
    if spec.target_accept is None and spec.population_target_accept is None:
        return f"kernel {kernel!r} declares no acceptance target"
    if spec.initial_step_size is None:
        return f"kernel {kernel!r} declares no initial step size"
    return None


def kernel_names() -> tuple:
    """The registered kernels that can mutate particles (and move PT replicas), sorted."""
    return tuple(n for n in KERNELS.names() if kernel_problem(n) is None)


def mutation_kernel(kernel: str) -> KernelSpec:
    """The registered kernel ``kernel`` if it can mutate particles; ``ValueError`` saying why not otherwise."""
    problem = kernel_problem(kernel)
    if problem is not None:
        raise ValueError(f"{problem}; the kernel must be {REQUIREMENT}: one of {list(kernel_names())}")
    return get_kernel(kernel)


def is_gradient_based(kernel: str) -> bool:
    return mutation_kernel(kernel).gradient_based


def initial_step_size(kernel: str, dim: int) -> float:
    """Scale-free starting step size (the mass matrix carries the scale), from the kernel's spec: HMC and NUTS
    ``d^-1/4``, MALA ``d^-1/3``, RWM ``2.38 d^-1/2``."""
    return mutation_kernel(kernel).initial_step_size(dim)


def default_target_accept(kernel: str) -> float:
    """Acceptance target of the population-tuned step size: the spec's ``population_target_accept``
    (else its ``target_accept``): HMC 0.65, MALA 0.57, RWM 0.3, NUTS 0.8."""
    spec = mutation_kernel(kernel)
    return spec.population_target_accept if spec.population_target_accept is not None else spec.target_accept


def structural_options(spec: KernelSpec, **options) -> dict:
    """The ``options`` that ``spec.build_kernel`` takes (by name); the others do not apply to it."""
    return {k: v for k, v in options.items() if k in spec.structural}


def known_state(spec: KernelSpec, position, logdensity, logdensity_grad):
    """The kernel's state at points whose log-density (and gradient) are known: no evaluation."""
    if spec.state_from_point is not None:
        return spec.state_from_point(position, logdensity, logdensity_grad)
    return PointState(position, logdensity, logdensity_grad)


def params_axes(spec: KernelSpec):
    """``vmap`` axes of the params: a step size per particle (axis 0), one shared inverse mass matrix."""
    n_extra = len(spec.params_cls._fields) - 2
    return spec.params_cls(0, None, *([None] * n_extra))


def evaluate(logdensity_fn: Callable, reference: GaussianReference, positions: jax.Array,
             gradient: bool) -> Particles:
    """Evaluate (and differentiate, if ``gradient``) reference and target at ``positions [N, d]``."""
    if gradient:
        lt, gt = jax.vmap(jax.value_and_grad(logdensity_fn))(positions)
        lr, gr = jax.vmap(jax.value_and_grad(reference.logdensity))(positions)
    else:
        lt = jax.vmap(logdensity_fn)(positions)
        lr = jax.vmap(reference.logdensity)(positions)
        gt = gr = jnp.zeros_like(positions)
    return Particles(positions, lr, lt, gr, gt)


def weighted_variance(positions: jax.Array, log_weights: jax.Array, floor: float = 1e-10) -> jax.Array:
    """Per-coordinate variance of ``positions`` under normalized weights ``exp(log_weights)``, floored."""
    w = jnp.exp(log_weights - jax.scipy.special.logsumexp(log_weights))
    mean = jnp.sum(w[:, None] * positions, axis=0)
    var = jnp.sum(w[:, None] * (positions - mean) ** 2, axis=0)
    return jnp.maximum(jnp.where(jnp.isfinite(var), var, 1.0), floor)


def _spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman rank correlation of two ``[N]`` vectors (non-finite values rank last; 0 if either is constant)."""
    def ranks(v):
        v = jnp.where(jnp.isfinite(v), v, jnp.inf)
        r = jnp.argsort(jnp.argsort(v)).astype(a.dtype)
        return r - jnp.mean(r)
    ra, rb = ranks(a), ranks(b)
    den = jnp.sqrt(jnp.sum(ra**2) * jnp.sum(rb**2))
    return jnp.where(den > 0, jnp.sum(ra * rb) / jnp.where(den > 0, den, 1.0), 0.0)


def build_mutation(logdensity_fn: Callable, reference: GaussianReference, kernel: str = "hmc",
                   num_mcmc_steps: int = 5, num_integration_steps: int = 10, target_accept: float | None = None,
                   adapt_step_size: bool = True, keep_path: bool = False, max_mcmc_steps: int | None = None,
                   correlation_threshold: float | None = None, step_size_spread: float = 0.0):
    """Return ``mutate(key, particles, beta, log_step_size, inverse_mass_matrix) -> (particles, MutationInfo)``.

    With ``keep_path=True`` (waste-free SMC, Dau & Chopin 2022) the ``M`` input
    particles each run ``num_mcmc_steps - 1`` steps and *every* visited state is
    returned, ``M * num_mcmc_steps`` particles in ancestor-major order.

    Adaptive number of moves (``correlation_threshold`` not None, standard SMC
    only): after the first ``num_mcmc_steps`` moves, keep moving until the
    Spearman rank correlation across particles between the log-likelihood
    ratio ``ell = log p - log q`` at the start of the mutation and now falls
    below ``correlation_threshold``, or ``max_mcmc_steps`` moves were made.
    ``ell`` is the statistic the next reweighting (and so ``log Z``) depends
    on.  This is the rule of PyMC's SMC kernels and of Drovandi &
    Pettitt (2011) / South, Pettitt & Drovandi (2019) with ``ell`` as the
    summary.  The correlation need not go to zero: in a mixture whose modes the
    kernel cannot cross, ``ell`` differs between modes (the reference density
    does), so the correlation has a floor set by the mode labels.  The moves
    therefore also stop when the correlation *stalls*: when, over a block of
    ``PLATEAU_BLOCK`` moves, it fell by less than a factor ``PLATEAU_RATIO``.
    The decision depends on the population only, so each move stays
    ``pi_beta``-invariant.

    Step-size spread (``step_size_spread = s > 0``): each particle uses, at
    each move, ``e exp(s (2u - 1))``, ``u ~ U(0, 1)`` independent of the state
    (so the move is still ``pi_beta``-invariant), a log-uniform spread over
    ``[e / exp(s), e exp(s)]``: on multi-scale targets (funnels) the particles
    in narrow regions get moves that the population-tuned ``e`` would reject.
    """
    spec = mutation_kernel(kernel)
    gradient = spec.gradient_based
    a_star = default_target_accept(kernel) if target_accept is None else float(target_accept)
    params_cls = spec.params_cls
    structural = structural_options(spec, num_integration_steps=num_integration_steps)
    num_moves = num_mcmc_steps - 1 if keep_path else num_mcmc_steps
    adaptive_moves = correlation_threshold is not None and not keep_path
    if adaptive_moves:
        max_moves = max(int(max_mcmc_steps or num_moves), num_moves)
    spread = float(step_size_spread)

    def mutate(key, particles: Particles, beta, log_step_size, inverse_mass_matrix):
        def lp_beta(x):
            return geometric_logdensity(beta, reference.logdensity(x), logdensity_fn(x))

        step = spec.build_kernel(lp_beta, **structural)
        n = particles.position.shape[0]
        dtype = particles.position.dtype
        lp0 = geometric_logdensity(beta, particles.lp_ref, particles.lp_tgt)
        if gradient:
            g0 = (jnp.where(beta < 1, 1 - beta, 0.0) * particles.grad_ref
                  + jnp.where(beta > 0, beta, 0.0) * particles.grad_tgt)
        else:
            g0 = particles.grad_tgt  # zeros: gradient-free kernels never read it
        state = known_state(spec, particles.position, lp0, g0)
        vstep = jax.vmap(step, in_axes=(0, 0, params_axes(spec)))

        def move(st, log_eps, k):
            k_eps, k_step = jax.random.split(k)
            eps = jnp.exp(log_eps) * jnp.ones((n,), dtype)
            if spread > 0:
                eps = eps * jnp.exp(spread * jax.random.uniform(k_eps, (n,), dtype, -1.0, 1.0))
            st, info = vstep(jax.random.split(k_step, n), st, params_cls(eps, inverse_mass_matrix))
            acc = jnp.mean(jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0))
            if adapt_step_size:
                log_eps = log_eps + (acc - a_star)
            return (st, log_eps, acc, jnp.sum(info.num_logdensity_evals), jnp.sum(info.num_grad_evals),
                    jnp.sum(info.is_nonfinite, dtype=jnp.int32))

        def one_step(carry, k):
            st, log_eps = carry
            st, log_eps, acc, n_lp, n_grad, n_bad = move(st, log_eps, k)
            return (st, log_eps), (st.position, acc, n_lp, n_grad, n_bad)

        if adaptive_moves:
            ell0 = particles.lp_tgt - particles.lp_ref

            def ell_of(st):
                lq = jax.vmap(reference.logdensity)(st.position)
                return jnp.where(beta > 0, (st.logdensity - lq) / jnp.where(beta > 0, beta, 1.0), 0.0)

            def w_cond(c):
                st, _, i, corr, corr_ref, stalled, *_ = c
                more = (corr >= correlation_threshold) & ~stalled
                return (i < max_moves) & ((i < num_moves) | more)

            def w_body(c):
                st, log_eps, i, _, corr_ref, _, acc_sum, n_lp, n_grad, n_bad = c
                st, log_eps, acc, dl, dg, db = move(st, log_eps, jax.random.fold_in(key, i))
                corr = _spearman(ell0, ell_of(st))
                # every PLATEAU_BLOCK moves: stalled if the correlation fell by less than PLATEAU_RATIO
                check = (i + 1) % PLATEAU_BLOCK == 0
                stalled = check & (i + 1 >= num_moves) & (corr > PLATEAU_RATIO * corr_ref)
                corr_ref = jnp.where(check, corr, corr_ref)
                return (st, log_eps, i + 1, corr, corr_ref, stalled, acc_sum + acc, n_lp + dl.astype(jnp.int32),
                        n_grad + dg.astype(jnp.int32), n_bad + db)

            z = jnp.zeros((), jnp.int32)
            one_ = jnp.asarray(1.0, dtype)
            state, log_eps, n_moves, _, _, _, acc_sum, n_lp, n_grad, n_bad = jax.lax.while_loop(
                w_cond, w_body, (state, log_step_size, z, one_, one_, jnp.asarray(False),
                                 jnp.zeros((), dtype), z, z, z))
            accs = acc_sum / jnp.maximum(n_moves, 1)
        else:
            (state, log_eps), (path, accs, n_lp, n_grad, n_bad) = jax.lax.scan(
                one_step, (state, log_step_size), jax.random.split(key, num_moves))
            n_moves = jnp.asarray(num_moves, jnp.int32)
        if keep_path:
            # [M, P, d] in ancestor-major order: start point then the moves.
            positions = jnp.concatenate([particles.position[:, None], jnp.swapaxes(path, 0, 1)], axis=1)
            positions = positions.reshape(-1, positions.shape[-1])
        else:
            positions = state.position
        new = evaluate(logdensity_fn, reference, positions, gradient)
        m = positions.shape[0]
        n_lp = jnp.sum(n_lp) + m
        n_grad = jnp.sum(n_grad) + (m if gradient else 0)
        n_bad = jnp.sum(n_bad, dtype=jnp.int32) + count_nonfinite(new.lp_tgt, new.grad_tgt if gradient else None)
        acc = jnp.mean(accs) if num_moves > 0 else jnp.asarray(1.0, positions.dtype)
        return new, MutationInfo(acc, log_eps, n_lp.astype(jnp.int32), n_grad.astype(jnp.int32), n_moves, n_bad)

    return mutate
