"""MixFlows (Xu, Chen & Campbell 2023, AISTATS, "MixFlows: principled variational inference via mixed flows"):
the Hamiltonian family with deterministic momentum refreshment.

State ``s = (x, rho, u)``: position ``x in R^d``, momentum ``rho in R^d`` with the standard Laplace marginal
``m(rho) = prod_i exp(-|rho_i|) / 2`` (CDF ``F``), and a pseudo-time ``u in [0, 1)``.  The augmented target is
``pi~(x) m(rho) 1[0 <= u < 1]`` (same ``Z``), the reference ``q_0(x) m(rho) 1[0 <= u < 1]`` with
``q_0 = N(0, base_std^2 I)``.  One application of the map is ``T = R o H``:

* ``H``: ``L`` leapfrog steps of the *uncorrected* Hamiltonian dynamics (no accept/reject) with step ``eps``,
  ``rho += eps/2 grad log pi~(x); x += eps sign(rho); rho += eps/2 grad log pi~(x)`` (``sign(rho)`` is the
  velocity of the Laplace kinetic energy ``|rho|``); volume preserving, inverted by ``-eps``;
* ``R``: the deterministic refreshment ``rho_i <- F^{-1}((F(rho_i) + z(x_i, u)) mod 1)`` with
  ``z(x, u) = (sin(2 x + u) + 1) / 2``, then the pseudo-time shift ``u <- (u + xi) mod 1``,
  ``xi = pi / 16``; it preserves ``m`` (a uniform shift on ``[0, 1)``) and its Jacobian determinant is
  ``prod_i m(rho_i) / m(rho_i')``.

The MixFlow is the mixture ``q_N = (1/N) sum_{n=0}^{N-1} T^n_# q_0``; its density is exact (the backward
recursion of the paper):

``q_N(s) = (1/N) sum_{n=0}^{N-1} q_0(T^{-n} s) J_n(s)``, ``J_n(s) = prod_{j=1}^{n} |det dT^{-1}(T^{-(j-1)} s)|``,

where an inverse step's Jacobian is ``prod_i m(rho_i) / m(rho_i^{refreshed back})``.  An IID draw takes
``n ~ Uniform{0..N-1}``, ``s_0 ~ q_0`` and ``s = T^n s_0``; its density needs the orbit ``T^{-j} s``,
``j < N``, which is ``s_n, s_{n-1}, .., s_0`` (stored on the way up) followed by ``T^{-1} s_0, ..,
T^{-(N-1-n)} s_0``: ``N - 1`` applications of ``T`` or ``T^{-1}`` per draw in all.  The importance weight
``w = pi~(x) m(rho) / q_N(s)`` has ``E[w] = Z``; ``log Z = log mean w``, its standard error, the ELBO
``mean log w`` and the ESS follow (:func:`samplax.neural.sde.estimates`).

Training is the paper's tuning of the step size for the ELBO, done here without gradients: step ``i`` of
the budget evaluates the ELBO of the ``i``-th of a geometric grid of step sizes over
``[step_size / 8, step_size * 8]`` on ``batch_size`` draws (common random numbers for all candidates);
sampling uses the candidate with the largest ELBO (a candidate with a non-finite weight is not chosen).
Cost: each draw, in training or sampling, evaluates ``log pi~`` and its gradient ``(N - 1) L + 1`` times
(the gradient of a leapfrog's end point is carried to the next).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.method import PopulationOutput, TrainingContext, TrainingPlan
from samplax.neural.sde import normal_logpdf, systematic_resample, weighted_output
from samplax.neural.checks import require_gradient

#: The pseudo-time shift (an irrational rotation of the circle).
TIME_SHIFT = math.pi / 16
#: The tuning grid spans ``[step_size / GRID_SPAN, step_size * GRID_SPAN]``.
GRID_SPAN = 8.0


@dataclasses.dataclass(frozen=True)
class MixFlowConfig:
    """The options of the method ``mixflow``."""

    flow_length: int = 20
    leapfrog_steps: int = 5
    step_size: float = 0.1
    base_std: float = 1.0
    training_evals: int = 100_000
    batch_size: int = 64

    def evals_per_path(self, training: bool = True) -> tuple:
        """``(log-density, gradient)`` evaluations of one draw: ``(N - 1) L + 1`` of each."""
        del training
        n = (self.flow_length - 1) * self.leapfrog_steps + 1
        return n, n

    def num_training_steps(self) -> int:
        return int(self.training_evals) // (self.batch_size * self.evals_per_path()[0])


def laplace_logpdf(rho):
    """``sum_i log m(rho_i)``, ``m`` the standard Laplace density."""
    return jnp.sum(-jnp.abs(rho) - math.log(2.0), axis=-1)


def laplace_cdf(rho):
    return 0.5 - 0.5 * jnp.sign(rho) * jnp.expm1(-jnp.abs(rho))


def laplace_icdf(p):
    return jnp.sign(0.5 - p) * jnp.log1p(-2.0 * jnp.abs(p - 0.5))


def _z(x, u):
    return 0.5 * (jnp.sin(2.0 * x + u) + 1.0)


def refresh(x, rho, u):
    """``R``: ``rho_i <- F^{-1}((F(rho_i) + z(x_i, u)) mod 1)``, then ``u <- (u + xi) mod 1``."""
    rho = laplace_icdf(jnp.mod(laplace_cdf(rho) + _z(x, u), 1.0))
    return rho, jnp.mod(u + TIME_SHIFT, 1.0)


def refresh_inverse(x, rho, u):
    """``R^{-1}``: ``u <- (u - xi) mod 1``, then ``rho_i <- F^{-1}((F(rho_i) - z(x_i, u)) mod 1)``."""
    u = jnp.mod(u - TIME_SHIFT, 1.0)
    return laplace_icdf(jnp.mod(laplace_cdf(rho) - _z(x, u), 1.0)), u


def leapfrog(value_and_grad, x, rho, lp, g, eps, num_steps: int):
    """``num_steps`` leapfrog steps of step ``eps`` (negative: the inverse) from ``x`` with ``(lp, g)``, the
    log-density and gradient at ``x``; returns ``(x, rho, lp, g)`` at the end (``num_steps`` evaluations)."""
    def one(carry, _):
        x, rho, lp, g = carry
        rho = rho + 0.5 * eps * g
        x = x + eps * jnp.sign(rho)
        lp, g = value_and_grad(x)
        rho = rho + 0.5 * eps * g
        return (x, rho, lp, g), None

    return jax.lax.scan(one, (x, rho, lp, g), None, length=num_steps)[0]


def log_reference(x, rho, base_std):
    """``log q_0(x) + log m(rho)`` (the pseudo-time is uniform: density 1)."""
    return normal_logpdf(x, jnp.zeros_like(x), base_std) + laplace_logpdf(rho)


def log_density(logdensity_fn, cfg: MixFlowConfig, eps, x, rho, u):
    """``log q_N(s)`` at ``s = (x, rho, u)`` by the backward recursion: ``N - 1`` inverse steps (see the module).
    A direct implementation of the definition, for checks; sampling obtains the same value along the draw's
    orbit (:func:`draw`)."""
    vg = jax.value_and_grad(logdensity_fn)
    lp, g = vg(x)

    def back(carry, _):
        x, rho, u, lp, g, logj = carry
        rho_b = rho
        rho, u = refresh_inverse(x, rho, u)
        logj = logj + laplace_logpdf(rho_b) - laplace_logpdf(rho)
        x, rho, lp, g = leapfrog(vg, x, rho, lp, g, -eps, cfg.leapfrog_steps)
        return (x, rho, u, lp, g, logj), log_reference(x, rho, cfg.base_std) + logj

    init = (x, rho, u, lp, g, jnp.zeros((), x.dtype))
    _, terms = jax.lax.scan(back, init, None, length=cfg.flow_length - 1)
    terms = jnp.concatenate([log_reference(x, rho, cfg.base_std)[None], terms])
    return jax.scipy.special.logsumexp(terms) - math.log(cfg.flow_length)


def draw(logdensity_fn, cfg: MixFlowConfig, eps, key, dim: int, dtype):
    """One IID draw ``s = T^n s_0`` of ``q_N`` and ``log pi~(x) + log m(rho) - log q_N(s)``, its log weight.

    One scan of ``N - 1`` steps: steps ``j < n`` apply ``T`` from ``s_0`` upwards, the others ``T^{-1}`` from
    ``s_0`` downwards; every visited orbit point ``s_j`` contributes ``log q_0(s_j) - c_j`` with the running
    log-Jacobian potential ``c`` (``c_0 = 0``; ``c_{j+1} - c_j`` the log-determinant of ``T^{-1}`` at
    ``s_{j+1}``), and ``log q_N(s_n) = c_n + logsumexp_j(log q_0(s_j) - c_j) - log N``.
    Returns ``(x, log_pi, log_w, n, (x, rho, u))``: the draw's position, ``log pi~(x)``, its log weight, its
    number of applications of ``T`` and its full state."""
    kx, kr, ku, kn = jax.random.split(key, 4)
    N = cfg.flow_length
    x0 = cfg.base_std * jax.random.normal(kx, (dim,), dtype)
    rho0 = jax.random.laplace(kr, (dim,), dtype)
    u0 = jax.random.uniform(ku, (), dtype)
    n = jax.random.randint(kn, (), 0, N)
    vg = jax.value_and_grad(logdensity_fn)
    lp0, g0 = vg(x0)
    zero = jnp.zeros((), dtype)
    s0 = (x0, rho0, u0, lp0, g0, zero)
    a0 = log_reference(x0, rho0, cfg.base_std)

    def one(carry, j):
        cur, final = carry
        fwd = j < n
        x, rho, u, lp, g, c = jax.tree.map(lambda a, b: jnp.where(j == n, a, b), s0, cur)
        rho_i, u_i = refresh_inverse(x, rho, u)
        rho_pre = jnp.where(fwd, rho, rho_i)
        u_pre = jnp.where(fwd, u, u_i)
        c = jnp.where(fwd, c, c - (laplace_logpdf(rho) - laplace_logpdf(rho_i)))
        x, rho_a, lp, g = leapfrog(vg, x, rho_pre, lp, g, jnp.where(fwd, eps, -eps), cfg.leapfrog_steps)
        rho_r, u_r = refresh(x, rho_a, u_pre)
        rho_new = jnp.where(fwd, rho_r, rho_a)
        u_new = jnp.where(fwd, u_r, u_pre)
        c = jnp.where(fwd, c + laplace_logpdf(rho_new) - laplace_logpdf(rho_a), c)
        new = (x, rho_new, u_new, lp, g, c)
        final = jax.tree.map(lambda a, b: jnp.where(j == n - 1, a, b), new, final)
        return (new, final), log_reference(x, rho_new, cfg.base_std) - c

    (_, final), a = jax.lax.scan(one, (s0, s0), jnp.arange(N - 1))
    a = jnp.concatenate([a0[None], a])
    x, rho, _, lp, _, c = final
    log_q = c + jax.scipy.special.logsumexp(a) - math.log(N)
    return x, lp, lp + laplace_logpdf(rho) - log_q, n, (x, rho, final[2])


def check_config(name: str, target, cfg: MixFlowConfig) -> None:
    """Clear errors (naming the option) for a budget too small for one tuning step and a target without
    gradients (the leapfrog steps follow ``grad log pi``)."""
    if cfg.num_training_steps() < 1:
        lp = cfg.batch_size * cfg.evals_per_path()[0]
        raise ValueError(
            f"method {name!r}: option training_evals={cfg.training_evals} is too small for one tuning step, which "
            f"evaluates the target {lp} times (batch_size={cfg.batch_size} draws x {cfg.evals_per_path()[0]} "
            f"evaluations per draw with flow_length={cfg.flow_length}, leapfrog_steps={cfg.leapfrog_steps}); give "
            f"training_evals >= {lp} or a smaller batch_size / flow_length")
    require_gradient(name, target, "the leapfrog steps of the Hamiltonian map follow grad log pi")


def step_grid(cfg: MixFlowConfig) -> np.ndarray:
    """The candidate step sizes of tuning: geometric over ``[step_size / 8, step_size * 8]`` (one per step;
    ``step_size`` alone for one step)."""
    k = cfg.num_training_steps()
    if k == 1:
        return np.asarray([cfg.step_size], np.float64)
    return cfg.step_size * np.geomspace(1.0 / GRID_SPAN, GRID_SPAN, k)


def make_plan(name: str, target, ctx: TrainingContext, cfg: MixFlowConfig) -> TrainingPlan:
    """The engine's :class:`~samplax.core.method.TrainingPlan` for a MixFlow: the state is the tuning's
    ``{"i", "best_log_step", "best_elbo", "found", "crn"}`` (``crn``: the key data of the draws every candidate
    uses)."""
    check_config(name, target, cfg)
    dim = target.dim
    dtype = jnp.result_type(float)
    grid = np.log(step_grid(cfg))
    lp_path, grad_path = cfg.evals_per_path()

    def init(key):
        # best_elbo starts at the lowest finite number (the engine stops at a non-finite state): a candidate
        # whose weights are not all finite scores -inf and never replaces it; "found" says whether one did
        return {"i": jnp.zeros((), jnp.int32), "best_log_step": jnp.asarray(grid[0], dtype),
                "best_elbo": jnp.asarray(jnp.finfo(dtype).min, dtype), "found": jnp.zeros((), jnp.bool_),
                "crn": jax.random.key_data(key)}

    def step(key, state, tgt):
        del key  # common random numbers: every candidate sees the same draws
        logp = tgt.flat_logdensity()
        log_eps = jnp.asarray(grid, dtype)[jnp.minimum(state["i"], len(grid) - 1)]
        crn = jax.random.wrap_key_data(state["crn"])
        keys = jax.vmap(lambda j: jax.random.fold_in(crn, j))(jnp.arange(cfg.batch_size))
        _, _, log_w, _, _ = jax.vmap(lambda k: draw(logp, cfg, jnp.exp(log_eps), k, dim, dtype))(keys)
        finite = jnp.isfinite(log_w)
        elbo = jnp.sum(jnp.where(finite, log_w, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
        score = jnp.where(jnp.all(finite), elbo, -jnp.inf)
        better = score > state["best_elbo"]
        new = {"i": state["i"] + 1, "best_log_step": jnp.where(better, log_eps, state["best_log_step"]),
               "best_elbo": jnp.where(better, score, state["best_elbo"]), "found": state["found"] | better,
               "crn": state["crn"]}
        lw = jnp.where(finite, log_w, -jnp.inf)
        metrics = {"loss": -elbo, "elbo": elbo, "step_size": jnp.exp(log_eps),
                   "log_Z": jax.scipy.special.logsumexp(lw) - jnp.log(cfg.batch_size),
                   "num_logdensity_evals": jnp.asarray(cfg.batch_size * lp_path, jnp.int32),
                   "num_grad_evals": jnp.asarray(cfg.batch_size * grad_path, jnp.int32)}
        return new, metrics

    n = ctx.num_samples

    def sample(key, state, tgt):
        logp = tgt.flat_logdensity()
        eps = jnp.exp(state["best_log_step"])
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n))
        x, lp, log_w, steps, _ = jax.vmap(lambda k: draw(logp, cfg, eps, k, dim, dtype))(keys)
        idx = systematic_resample(jax.random.fold_in(key, n), log_w, n)
        return {"x": x, "log_w": log_w, "draws": x[idx], "draws_lp": lp[idx], "n": steps}

    def finish(state, out):
        num_chains = out["x"].shape[0]
        est, extra, warnings = weighted_output(out["x"], out["log_w"], f"draws of {name}",
                                               "the target or its gradient is not finite on the orbit")
        extra.update({"step_size": float(np.exp(state["best_log_step"])),
                      "tuned_elbo": float(state["best_elbo"]) if bool(state["found"]) else float("-inf")})
        if not bool(state["found"]):
            warnings.append({"code": "tuning", "value": float("nan"),
                             "message": f"{name}: every candidate step size gave a non-finite weight in tuning; "
                                        f"sampling used step_size={float(np.exp(state['best_log_step'])):.4g}"})
        total = num_chains * n
        lp_s, grad_s = cfg.evals_per_path(training=False)
        return PopulationOutput(samples=out["draws"], stats={"lp": out["draws_lp"]},
                                num_logdensity_evals=total * lp_s, num_grad_evals=total * grad_s,
                                log_Z=est["log_Z"], log_Z_se=est["log_Z_se"],
                                log_weights=np.full((num_chains, n), -np.log(n)), extra=extra, warnings=warnings)

    return TrainingPlan(init=init, step=step, num_steps=cfg.num_training_steps(), sample=sample, finish=finish)
