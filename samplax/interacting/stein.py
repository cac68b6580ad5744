"""Stein variational gradient descent (SVGD) and mirrored SVGD on the probability simplex.

SVGD (Liu & Wang 2016, "Stein Variational Gradient Descent: A General Purpose
Bayesian Inference Algorithm", NeurIPS): ``N`` particles move along

    phi(x_i) = (1/N) sum_j [ k(x_j, x_i) grad log p(x_j) + grad_{x_j} k(x_j, x_i) ],

the steepest direction decreasing KL(q || p) in the unit ball of the RKHS of
``k``.  Kernel: RBF ``k(x, y) = exp(-||x - y||^2 / h)`` with the median
heuristic ``h = med^2 / log(N + 1)`` (``med`` the median pairwise distance,
recomputed every iteration), as in the authors' reference implementation.

Step rule (our choice, stated): the particles are updated with Adam
(Kingma & Ba 2015; beta1 = 0.9, beta2 = 0.999, eps = 1e-8) applied to ``-phi``,
with learning rate decayed by a cosine schedule from ``step_size`` (default
0.1) to ``step_size / 100`` over the ``num_warmup`` iterations.  The decay
lets the deterministic particle system settle on its fixed point; the fixed
point, not the optimiser, determines the result.

Known finite-particle bias (inherent, not a bug; measured with fixed seeds,
independent populations, converged fixed points with RMS ``|phi|`` below 1e-4):
SVGD with the median-heuristic RBF kernel has a deterministic fixed point whose
spread is too small at any finite ``N`` -- the "variance collapse" of Ba et al.
2021 ("Understanding the Variance Collapse of SVGD in High Dimensions", ICLR
2022), already visible at moderate dimension.  On the 5-D correlated Gaussian of
the tests (sds 0.5 ... 2, correlation 0.6^|i-j|) the relative sd error per
coordinate is

    N =  50: -12% ... -23%      N = 200: -7% ... -11%
    N = 100:  -9% ... -16%      N = 400: -5% ...  -8%      N = 800: -3.6% ... -5.2%

(the same with 2000 iterations or a 5x smaller learning rate, so it is the fixed
point, not the optimiser), shrinking roughly like ``N^{-1/2}``: measured in
standard errors of ``N`` i.i.d. draws it does not shrink (about 4-6 of them with
8 populations), so no default run length removes it.  Means are exact to well under one standard error.  In
2-D the error is 1-2% at N = 100-300.  Runs therefore carry a ``biased``
warning.  A wider kernel reduces the collapse (bandwidth x5 at N = 200: -1% ...
-3%) but is not the published rule (and a kernel much wider than the spacing
of separated modes cannot resolve them), so it is not the default.

Mirrored SVGD (Shi, Liu & Mackey 2022, "Sampling with Mirror Stein Operators",
ICLR) for targets on the simplex ``{theta in R^K : theta_i > 0, sum theta = 1}``
with the entropic mirror map ``psi(theta) = sum_{i<=K} theta_i log theta_i``
on the first ``K - 1`` coordinates.  The dual variable is
``eta_i = log(theta_i / theta_K)`` (``i < K``), and the update is

    eta_i <- eta_i + eps * (1/N) sum_j [ k(theta_j, theta_i) H_j^{-1} grad log p(theta_j)
                                          + div_{theta_j}( k(theta_j, theta_i) H_j^{-1} ) ],

``H = grad^2 psi``.  Because ``div(H^{-1}) = -H^{-1} grad log det H`` for any
Hessian ``H`` (third derivatives of ``psi`` are symmetric), this equals SVGD in
the dual space on the push-forward density ``p_H(eta) = p(theta(eta)) prod_{i<=K} theta_i``
(``prod theta_i`` is the Jacobian determinant of the additive-logistic map)
with the *primal* kernel ``k(theta(eta), theta(eta'))``; we compute it that way
with automatic differentiation (RBF kernel on ``theta`` with the median
heuristic; same Adam step rule, applied in the dual space).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from samplax.interacting._common import pairwise_sq_dists


def median_pairwise_sq(sq: jax.Array, iters: int = 60) -> jax.Array:
    """Median of the off-diagonal entries of a squared-distance matrix ``sq`` [N, N], N >= 2.

    Computed by bisection on the value (``iters`` halvings of ``[0, max]``):
    ``O(iters N^2)`` comparisons, much faster than sorting ``N^2`` numbers on CPU.
    Returns the smallest bracket end ``m`` with at least half of the pairs ``<= m``.
    """
    n = sq.shape[0]
    off = ~jnp.eye(n, dtype=bool)
    half = (n * (n - 1)) // 2

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        enough = jnp.sum((sq <= mid) & off) >= half
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    lo, hi = jax.lax.fori_loop(0, iters, body, (jnp.zeros((), sq.dtype), jnp.max(sq)))
    return hi


def median_bandwidth(x: jax.Array) -> jax.Array:
    """``h = med^2 / log(N + 1)`` for the kernel ``exp(-||x - y||^2 / h)`` (Liu & Wang 2016).

    ``med`` is the median distance over pairs ``i != j`` (1 when N = 1 or all points coincide).
    """
    n = x.shape[0]
    if n < 2:
        return jnp.ones((), x.dtype)
    med2 = median_pairwise_sq(pairwise_sq_dists(x, x))
    med2 = jnp.where(med2 > 0, med2, 1.0)
    return jax.lax.stop_gradient(med2 / jnp.log(n + 1.0))


def svgd_direction(x: jax.Array, scores: jax.Array, h: jax.Array) -> jax.Array:
    """The SVGD update direction ``phi(x_i)`` for particles ``x`` [N, d] with scores [N, d].

    With ``K_ij = exp(-||x_i - x_j||^2 / h)``,
    ``phi_i = (1/N) [ sum_j K_ij s_j + (2/h) (x_i sum_j K_ij - sum_j K_ij x_j) ]``.
    """
    n = x.shape[0]
    K = jnp.exp(-pairwise_sq_dists(x, x) / h)
    repulsion = (2.0 / h) * (x * jnp.sum(K, axis=1, keepdims=True) - K @ x)
    return (K @ scores + repulsion) / n


def _optimizer(step_size, num_steps):
    sched = optax.cosine_decay_schedule(step_size, max(num_steps, 1), alpha=0.01)
    return optax.adam(sched)


def make_svgd_chain(logdensity_of_target, num_steps: int, step_size: float):
    """``run_chain(key, x0 [N, d], target) -> (particles [N, d], stats)`` for SVGD (see module doc)."""

    def run_chain(key, x0, target):
        del key  # SVGD is deterministic given the initial particles
        lp_fn = logdensity_of_target(target)
        grad_fn = jax.vmap(jax.grad(lp_fn))
        opt = _optimizer(step_size, num_steps)

        def step(carry, _):
            x, st = carry
            phi = svgd_direction(x, grad_fn(x), median_bandwidth(x))
            upd, st = opt.update(-phi, st, x)
            return (optax.apply_updates(x, upd), st), None

        (x, _), _ = jax.lax.scan(step, (x0, opt.init(x0)), None, length=num_steps)
        lp = jax.vmap(lp_fn)(x)
        return x, {"lp": lp, "nonfinite": (~jnp.isfinite(lp)).astype(jnp.int32)}

    return run_chain


SVGD_BIAS_MESSAGE = (
    "SVGD's finite-particle fixed point underestimates the spread of the target (variance collapse, "
    "Ba et al. 2021): on a 5-D Gaussian the sds come out about 7-11% too small with 200 particles and "
    "5-8% with 400, shrinking only like num_samples^(-1/2); means are accurate. Use more particles "
    "(num_samples) to reduce it, or an exact MCMC method for calibrated uncertainties")


def svgd_cost(num_particles: int, num_steps: int) -> dict:
    """Per chain: ``N`` gradients per step (each a forward pass, one log-density evaluation, and a
    backward pass) and ``N`` log-densities at the end (stats).  The initial particles' search is
    counted by the run engine."""
    return {"num_logdensity_evals": num_particles * (num_steps + 1), "num_grad_evals": num_particles * num_steps}


# --------------------------------------------------------------------------- simplex / mirror map
def simplex_from_dual(eta: jax.Array) -> jax.Array:
    """``theta = softmax([eta, 0])``: the inverse entropic mirror map, ``R^{K-1} -> simplex in R^K``."""
    return jax.nn.softmax(jnp.concatenate([eta, jnp.zeros(eta.shape[:-1] + (1,), eta.dtype)], axis=-1), axis=-1)


def dual_from_simplex(theta: jax.Array) -> jax.Array:
    """``eta_i = log(theta_i / theta_K)``, ``i < K``: the entropic mirror map ``grad psi``."""
    return jnp.log(theta[..., :-1]) - jnp.log(theta[..., -1:])


def dual_logdensity(lp_simplex):
    """``log p_H(eta) = log p(theta(eta)) + sum_{i<=K} log theta_i(eta)`` (density of eta = grad psi(theta))."""

    def f(eta):
        logth = jax.nn.log_softmax(jnp.concatenate([eta, jnp.zeros((1,), eta.dtype)]))
        return lp_simplex(jnp.exp(logth)) + jnp.sum(logth)

    return f


def make_mirrored_svgd_chain(logdensity_of_target, num_steps: int, step_size: float):
    """``run_chain(key, theta0 [N, K], target) -> (theta [N, K], stats)`` for mirrored SVGD (module doc)."""

    def run_chain(key, theta0, target):
        del key
        lp_fn = logdensity_of_target(target)
        score_dual = jax.vmap(jax.grad(dual_logdensity(lp_fn)))
        opt = _optimizer(step_size, num_steps)

        def direction(eta):
            theta = simplex_from_dual(eta)
            h = median_bandwidth(theta)
            s = score_dual(eta)
            n = eta.shape[0]

            def k_row(eta_j, theta_i):  # k(theta(eta_j), theta_i)
                th = simplex_from_dual(eta_j)
                return jnp.exp(-jnp.sum((th - theta_i) ** 2) / h)

            K = jnp.exp(-pairwise_sq_dists(theta, theta) / h)  # K[j, i]
            # grad wrt eta_j of k(theta(eta_j), theta_i): [j, i, K-1]
            gk = jax.vmap(lambda ej: jax.vmap(lambda ti: jax.grad(k_row)(ej, ti))(theta))(eta)
            return (K.T @ s + jnp.sum(gk, axis=0)) / n

        def step(carry, _):
            eta, st = carry
            upd, st = opt.update(-direction(eta), st, eta)
            return (optax.apply_updates(eta, upd), st), None

        eta0 = dual_from_simplex(theta0)
        (eta, _), _ = jax.lax.scan(step, (eta0, opt.init(eta0)), None, length=num_steps)
        theta = simplex_from_dual(eta)
        lp = jax.vmap(lp_fn)(theta)
        return theta, {"lp": lp, "nonfinite": (~jnp.isfinite(lp)).astype(jnp.int32)}

    return run_chain
