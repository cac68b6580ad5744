"""Flow perturbation: importance weights of a continuous normalizing flow without its Jacobian (Peng & Gao 2024,
"Flow Perturbation to Accelerate Unbiased Sampling of Boltzmann distribution", arXiv 2407.10666; Peng & Gao 2026,
"Flow Perturbation++: Multi-Step Unbiased Jacobian Estimation for High-Dimensional Boltzmann Sampling",
arXiv 2601.21177), on the VE probability-flow ODE of a score ``s(x, u)`` (registered method ``flow_perturbation``).

**The flow.**  With the geometric schedule ``sigma(u) = sigma_min^(1-u) sigma_max^u``, ``u in [0, 1]`` (the
convention of :mod:`samplax.neural.idem`: a score network ``s(x, u)`` of the noised target ``pi * N(0, sigma(u)^2
I)``), the VE probability-flow ODE is

``dx/du = v(x, u) = -L sigma(u)^2 s(x, u)``,  ``L = log(sigma_max / sigma_min)``

(Song et al. 2021: ``dx/dt = -1/2 d(sigma^2)/dt grad log p_t``).  It is discretized with Heun's second-order
method on the uniform grid ``u_k = k / K`` (``K = num_steps``; 2 score evaluations per step):

``x' = x + h v(x, u_a)``,  ``x_b = x + h/2 (v(x, u_a) + v(x', u_b))``,  ``h = u_b - u_a``.

The *generative map* ``Phi_h`` runs it from ``u = 1`` to ``u = 0`` (:func:`generate`); the *noising map*
``G_h = G_K o ... o G_1`` runs the same steps from ``u = 0`` to ``u = 1`` (:func:`noise`; ``G_k`` one Heun step
from ``u_{k-1}`` to ``u_k``).  ``G = Phi^{-1}`` holds for the exact flows; the discrete maps are inverses only up to
the discretization: Heun is not a symmetric method, but a step and its reversal over the same nodes cancel the
leading local error term of an even-order method (``psi_{-h} o psi_h = id + C h^3 (1 + (-1)^3) + O(h^4)``), so
``G_h o Phi_h = id + O(h^3)``, one order better than Heun's global error ``O(h^2)`` (tested).

**The weight.**  The sampler draws ``x_T ~ N(0, sigma_max^2 I)`` and returns ``x_0 = Phi_h(x_T)``, whose density
is ``q(x_0) = N(x_T) / |det dPhi_h/dx_T|``; the importance weight is

``w = pi~(x_0) |det dPhi_h/dx_T| / N(x_T)``,  ``E[w] = Z``.

The Jacobian's log-determinant (``d`` forward-mode passes through the whole sampler) is replaced by one of
(``log_det``):

* ``"exact"``: ``log|det dPhi_h/dx_T|`` by ``jax.jacfwd`` (``d`` tangents; small ``d``).  The weight is exact for
  the discrete sampler: ``E[w] = Z`` for every ``K`` (a proper importance sampler).
* ``"perturbation"`` (Flow Perturbation): a direction ``u`` uniform on the unit sphere of the ``d``-dimensional
  tangent space, pushed through the noising map from ``x_0``: with ``a = |J_{G_h}(x_0) u|`` (one Jacobian-vector
  product, ``jax.jvp``), ``a^{-d}`` is an unbiased estimator of ``1/|det J_{G_h}(x_0)|`` by the identity

  ``E_u[|A u|^{-d}] = 1/|det A|``  (``u`` uniform on ``S^{d-1}``; :func:`stretch_log_inv_det`)

  (the volume of the ellipsoid ``A^{-1} B`` in polar coordinates).  The paper takes the directional derivative by
  central finite differences; here it is exact (forward mode).
* ``"stepwise"`` (Flow Perturbation++): an independent direction ``u_k`` for each noising step along the noising
  trajectory ``y_0 = x_0``, ``y_k = G_k(y_{k-1})``: ``prod_k |J_{G_k}(y_{k-1}) u_k|^{-d}`` is an unbiased estimator
  of ``prod_k 1/|det J_{G_k}(y_{k-1})| = 1/|det J_{G_h}(x_0)|`` (independent factors, each unbiased given the
  deterministic trajectory).  Each step's Jacobian is ``I + O(h)``, so each factor's relative variance is
  ``O(h^2)`` and the product's ``O(h) = O(1/K)``: it falls with the number of steps, where the single direction's
  does not.
* ``"hutchinson"``: ``log|det dx_0/dx_T| = int_1^0 div v(x(u), u) du`` along the generative trajectory with
  ``div v ~ eps^T (dv/dx) eps`` (one probe ``eps`` per path, Rademacher; FFJORD, Grathwohl et al. 2019), integrated
  by the same Heun steps.  The estimate is unbiased for the Heun quadrature of the ODE's log-determinant
  (which differs from ``log|det dPhi_h/dx_T|`` by ``O(h^2)``), so ``w``, its exponential, is not unbiased
  (Jensen): the baseline the papers compare with.

So ``"perturbation"`` and ``"stepwise"`` have ``E[w_hat | x_T] = pi~(x_0) / (N(x_T) |det J_{G_h}(x_0)|)``: they are
unbiased for the weight of the discrete noising map, which equals the proper weight of the sampler only up to
``|det J_{G_h}(x_0)| |det dPhi_h/dx_T| = det J_{G_h o Phi_h}(x_T) = 1 + O(h^3)``; ``log Z`` from them carries an
``O(h^3)`` bias (measured in docs/architecture.md).  The prior term is ``N(x_T)``, the density of the draw
the sampler made, as in the paper.  (``N(G_h(x_0))``, the density of the point the noising map returns to, would
make the weight that of the model ``G_h^{-1}(x_T)``, whose samples are not the ones drawn: also ``O(h^3)``; on
GMM-25 with the exact score its bias was of the same size, of either sign.)  Only ``"exact"`` (or a sampler whose
steps invert the noising steps exactly, by an implicit solve) makes a proper importance weight of the discrete
sampler; with the stochastic estimators the random weight has the right conditional mean up to the ``O(h^3)``
discretization (a pseudo-marginal / random-weight importance sampler).

**Not included: the first paper's optimized perturbation.**  It draws ``x_0 = Phi_h(x_T) + c_b eps`` with Gaussian
``eps`` and weights the extended space ``(x_T, eps)`` with the backward kernel ``N(x_T; G_h(x_0), c_f(x_0)^2 I)``
(``c_f`` a second, fitted network).  That weight is unbiased even for the discretized maps, but its variance is
finite only when every singular value of ``c_b J_{G_h} / c_f`` exceeds ``1/sqrt(2)`` (the Gaussian identity
``E exp(-z^T (M - I) z / 2) = det(M)^{-1/2}``), hence the fitted ``c_f``, and it grows like ``|G_h(Phi_h(x_T)) -
x_T|^2 / c_f^2`` with the ``O(h^3)`` round-trip error; the sphere estimators need neither, and the stepwise one's
variance falls with ``K``.

**Particle systems** (``particles = (n, D)``): everything lives on the centre-of-mass-free subspace of dimension
``d = (n - 1) D``: the prior draw, the directions (uniform on that subspace's unit sphere), the Hutchinson probes
(Gaussian on the subspace) and the ``"exact"`` determinant (of the Jacobian restricted to the subspace); the prior
density is with respect to the subspace's Lebesgue measure, as in :mod:`samplax.neural.idem`.

**Cost** (score-network passes per draw): generation ``2K``; ``"perturbation"`` / ``"stepwise"`` another ``2K``
Jacobian-vector products (each a forward pass with one tangent); ``"hutchinson"`` ``2K`` Jacobian-vector products in
place of the plain generation; ``"exact"`` ``2K`` passes with ``d`` tangents.  One target evaluation
(``log pi~(x_0)``) per draw; no target gradients.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.method import PopulationOutput, TrainingContext, TrainingPlan
from samplax.neural import idem
from samplax.neural.egnn import remove_mean
from samplax.neural.idem import IDEMConfig
from samplax.neural.sde import normal_logpdf, systematic_resample, weighted_output

#: The log-determinant estimators (see the module).
LOG_DETS = ("stepwise", "perturbation", "exact", "hutchinson")


class PFODE(NamedTuple):
    """The discretized VE probability-flow ODE (see the module): the geometric schedule's ``sigma_min``,
    ``sigma_max``, ``num_steps`` Heun steps on the uniform ``u``-grid, and ``particles = (n, D)`` for a particle
    system (None otherwise)."""

    sigma_min: float
    sigma_max: float
    num_steps: int
    particles: Optional[tuple] = None

    def sigma(self, u):
        """``sigma(u) = sigma_min^(1-u) sigma_max^u``."""
        return self.sigma_min ** (1.0 - u) * self.sigma_max ** u

    def tangent_dim(self, dim: int) -> int:
        """``d``: ``dim``, or ``(n - 1) D`` on the centre-of-mass-free subspace of a particle system."""
        return dim if self.particles is None else dim - int(self.particles[1])

    def project(self, v):
        """``v`` projected to the centre-of-mass-free subspace (the identity without particles)."""
        return v if self.particles is None else remove_mean(v, *self.particles)


def check_ode(ode: PFODE) -> None:
    """ValueError naming the field: ``num_steps >= 1`` and ``0 < sigma_min < sigma_max``."""
    if isinstance(ode.num_steps, bool) or not isinstance(ode.num_steps, (int, np.integer)) or ode.num_steps < 1:
        raise ValueError(f"flow perturbation: num_ode_steps={ode.num_steps!r} must be an int >= 1 (Heun steps of "
                         "the probability-flow ODE)")
    if not 0 < ode.sigma_min < ode.sigma_max:
        raise ValueError(f"flow perturbation: sigma_min={ode.sigma_min} and sigma_max={ode.sigma_max}: the noise "
                         "range needs 0 < sigma_min < sigma_max")


def velocity(score: Callable, ode: PFODE, x, u):
    """The probability-flow velocity ``v(x, u) = -L sigma(u)^2 s(x, u)``, ``L = log(sigma_max / sigma_min)``."""
    u = jnp.asarray(u, x.dtype)
    L = math.log(ode.sigma_max / ode.sigma_min)
    return ode.project(-L * ode.sigma(u) ** 2 * score(x, u))


def heun_step(score: Callable, ode: PFODE, x, u_a, u_b):
    """One Heun step of the PF-ODE from ``u_a`` to ``u_b`` (either direction; two score evaluations)."""
    h = u_b - u_a
    k1 = velocity(score, ode, x, u_a)
    k2 = velocity(score, ode, x + h * k1, u_b)
    return x + 0.5 * h * (k1 + k2)


def _grid(ode: PFODE, dtype, reverse: bool):
    u = jnp.arange(ode.num_steps + 1, dtype=dtype) / ode.num_steps
    u = u[::-1] if reverse else u
    return u[:-1], u[1:]


def generate(score: Callable, ode: PFODE, x_T):
    """The generative map ``x_0 = Phi_h(x_T)``: ``num_steps`` Heun steps from ``u = 1`` to ``u = 0``."""
    ua, ub = _grid(ode, x_T.dtype, reverse=True)

    def one(x, uu):
        return heun_step(score, ode, x, uu[0], uu[1]), None

    return jax.lax.scan(one, x_T, (ua, ub))[0]


def noise(score: Callable, ode: PFODE, x_0):
    """The noising map ``x_T' = G_h(x_0)``: the same Heun steps from ``u = 0`` to ``u = 1``."""
    ua, ub = _grid(ode, x_0.dtype, reverse=False)

    def one(x, uu):
        return heun_step(score, ode, x, uu[0], uu[1]), None

    return jax.lax.scan(one, x_0, (ua, ub))[0]


def sphere_direction(key, shape, dtype, particles: Optional[tuple] = None):
    """A direction uniform on the unit sphere of the tangent space: a normalized standard normal draw, projected
    to the centre-of-mass-free subspace first for ``particles = (n, D)``."""
    z = jax.random.normal(key, shape, dtype)
    if particles is not None:
        z = remove_mean(z, *particles)
    return z / jnp.sqrt(jnp.sum(z**2))


def stretch_log_inv_det(key, f: Callable, x, particles: Optional[tuple] = None):
    """Flow perturbation's stretch estimator: ``(f(x), ell)`` with ``ell = -d log|J_f(x) u|`` for a direction ``u``
    uniform on the unit sphere of the ``d``-dimensional tangent space (:func:`sphere_direction`; ``d = dim`` or
    ``(n - 1) D`` for ``particles = (n, D)``, where ``f`` must map the centre-of-mass-free subspace to itself).

    ``exp(ell) = |J_f(x) u|^{-d}`` is an unbiased estimator of ``1/|det J_f(x)|`` (the determinant restricted to
    the tangent space): ``E_u[|A u|^{-d}] = 1/|det A|`` for ``u`` uniform on ``S^{d-1}`` (polar coordinates of
    the ellipsoid ``A^{-1} B``; Peng & Gao 2024).  ``ell`` itself is not unbiased for ``-log|det J_f|``.  One
    Jacobian-vector product (``jax.jvp``: forward mode, exact; the paper takes central finite differences)."""
    x = jnp.asarray(x)
    u = sphere_direction(key, x.shape, x.dtype, particles)
    d = x.size if particles is None else x.size - int(particles[1])
    y, Ju = jax.jvp(f, (x,), (u,))
    return y, -0.5 * d * jnp.log(jnp.sum(Ju**2))


def _basis(dim: int, particles):
    """An orthonormal basis ``[dim, d]`` of the tangent space (the identity, or the centre-of-mass-free
    subspace's)."""
    if particles is None:
        return np.eye(dim)
    n, D = particles
    P = np.eye(dim) - np.kron(np.ones((n, n)) / n, np.eye(D))
    w, V = np.linalg.eigh(P)
    return V[:, w > 0.5]


def _exact_log_det(f: Callable, x, particles):
    """``(f(x), log|det J_f(x)|)`` restricted to the tangent space (``d`` forward-mode tangents)."""
    B = jnp.asarray(_basis(x.size, particles), x.dtype)
    y, JB = jax.vmap(lambda b: jax.jvp(f, (x,), (b,)), out_axes=(None, 1))(B.T)
    return y, jnp.linalg.slogdet(B.T @ JB)[1]


def _hutchinson_generate(key, score: Callable, ode: PFODE, x_T):
    """``(x_0, ell)``: the generative Heun steps with ``d ell/du = eps^T (dv/dx) eps`` integrated alongside."""
    if ode.particles is None:
        eps = jax.random.rademacher(key, x_T.shape, x_T.dtype)
    else:
        eps = ode.project(jax.random.normal(key, x_T.shape, x_T.dtype))
    ua, ub = _grid(ode, x_T.dtype, reverse=True)

    def vdiv(x, u):
        v, Jeps = jax.jvp(lambda y: velocity(score, ode, y, u), (x,), (eps,))
        return v, jnp.sum(eps * Jeps)

    def one(carry, uu):
        x, ell = carry
        h = uu[1] - uu[0]
        k1, e1 = vdiv(x, uu[0])
        k2, e2 = vdiv(x + h * k1, uu[1])
        return (x + 0.5 * h * (k1 + k2), ell + 0.5 * h * (e1 + e2)), None

    return jax.lax.scan(one, (x_T, jnp.zeros((), x_T.dtype)), (ua, ub))[0]


def log_det_estimate(key, score: Callable, ode: PFODE, x_T, log_det: str = "stepwise"):
    """``(x_0, ell)``: ``x_0 = Phi_h(x_T)`` and ``ell``, the ``log_det`` estimate of ``log|det dx_0/dx_T|`` (see the
    module: ``exp(ell)`` unbiased for ``1/|det J_{G_h}(x_0)|`` with "perturbation" / "stepwise", exact for the
    discrete sampler with "exact", ``ell`` unbiased for the ODE's log-determinant with "hutchinson")."""
    if log_det not in LOG_DETS:
        raise ValueError(f"flow perturbation: log_det={log_det!r} is not one of {list(LOG_DETS)}")
    check_ode(ode)
    if log_det == "hutchinson":
        return _hutchinson_generate(key, score, ode, x_T)
    if log_det == "exact":
        return _exact_log_det(lambda x: generate(score, ode, x), x_T, ode.particles)
    x_0 = generate(score, ode, x_T)
    if log_det == "perturbation":
        return x_0, stretch_log_inv_det(key, lambda x: noise(score, ode, x), x_0, ode.particles)[1]
    ua, ub = _grid(ode, x_T.dtype, reverse=False)
    keys = jax.random.split(key, ode.num_steps)

    def one(carry, inp):
        y, ell = carry
        k, a, b = inp
        y, e = stretch_log_inv_det(k, lambda z: heun_step(score, ode, z, a, b), y, ode.particles)
        return (y, ell + e), None

    return x_0, jax.lax.scan(one, (x_0, jnp.zeros((), x_T.dtype)), (keys, ua, ub))[0][1]


def prior_logpdf(ode: PFODE, x_T):
    """``log N(x_T; 0, sigma_max^2 I)`` on the tangent space (for a particle system, with respect to the
    centre-of-mass-free subspace's Lebesgue measure: ``(n - 1) D`` dimensions)."""
    lp = normal_logpdf(x_T, jnp.zeros_like(x_T), ode.sigma_max)
    if ode.particles is not None:
        lp = lp + ode.particles[1] * (math.log(ode.sigma_max) + 0.5 * math.log(2 * math.pi))
    return lp


def weighted_draw(key, score: Callable, logdensity_fn: Callable, ode: PFODE, dim: int, log_det: str = "stepwise",
                  dtype=None):
    """One draw of the flow-perturbation sampler (see the module): ``x_T ~ N(0, sigma_max^2 I)`` (on the tangent
    space), ``x_0 = Phi_h(x_T)``, and ``log w_hat = log pi~(x_0) - log N(x_T) + ell`` with ``ell`` from
    :func:`log_det_estimate`.  Returns ``{"x": x_0, "log_w": log w_hat, "log_pi": log pi~(x_0), "log_det": ell,
    "x_T": x_T}``; one target evaluation.  Keys: ``k_T, k_u = split(key)`` (prior draw, estimator)."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    k_T, k_u = jax.random.split(key)
    x_T = ode.project(ode.sigma_max * jax.random.normal(k_T, (dim,), dtype))
    x_0, ell = log_det_estimate(k_u, score, ode, x_T, log_det)
    log_pi = logdensity_fn(x_0)
    return {"x": x_0, "log_w": log_pi - prior_logpdf(ode, x_T) + ell, "log_pi": log_pi, "log_det": ell, "x_T": x_T}


def network_passes(ode: PFODE, log_det: str, dim: int) -> dict:
    """Score-network passes per draw of :func:`weighted_draw`: ``{"plain_passes": ..., "jvp_passes": ...,
    "tangents_per_jvp": ...}`` (a Jacobian-vector product is a forward-mode pass carrying ``tangents_per_jvp``
    tangents; see the module's cost paragraph)."""
    K2 = 2 * int(ode.num_steps)
    if log_det in ("perturbation", "stepwise"):
        return {"plain_passes": K2, "jvp_passes": K2, "tangents_per_jvp": 1}
    if log_det == "hutchinson":
        return {"plain_passes": 0, "jvp_passes": K2, "tangents_per_jvp": 1}
    return {"plain_passes": 0, "jvp_passes": K2, "tangents_per_jvp": ode.tangent_dim(dim)}


@dataclasses.dataclass(frozen=True)
class FlowPerturbationConfig:
    """What a ``flow_perturbation`` run is: the iDEM training (``idem``: an :class:`~samplax.neural.idem.IDEMConfig`,
    trained exactly as the method ``idem``), the log-determinant estimator ``log_det`` (:data:`LOG_DETS`) and the
    Heun steps ``num_ode_steps`` of the sampler's probability-flow ODE."""

    idem: IDEMConfig = IDEMConfig()
    log_det: str = "stepwise"
    num_ode_steps: int = 64


def check_config(target, cfg: FlowPerturbationConfig) -> None:
    """Clear errors naming the option: iDEM's (:func:`samplax.neural.idem.check_config`), ``log_det`` not one of
    :data:`LOG_DETS`, ``num_ode_steps < 1``."""
    if cfg.log_det not in LOG_DETS:
        raise ValueError(f"method 'flow_perturbation': option log_det={cfg.log_det!r} is not one of "
                         f"{list(LOG_DETS)}")
    n = cfg.num_ode_steps
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"method 'flow_perturbation': option num_ode_steps={n!r} must be an int >= 1 (Heun steps "
                         "of the probability-flow ODE)")
    idem.check_config(target, cfg.idem)


def make_plan(target, ctx: TrainingContext, cfg: FlowPerturbationConfig) -> TrainingPlan:
    """The engine's :class:`~samplax.core.method.TrainingPlan`: iDEM's training plan
    (:func:`samplax.neural.idem.make_plan`: the same initial state and steps, so the same trained network,
    checkpoints and resume) with sampling by the probability-flow ODE and flow-perturbation weights
    (:func:`weighted_draw`)."""
    check_config(target, cfg)
    icfg = cfg.idem.resolve(target)
    base = idem.make_plan(target, ctx, icfg)
    static = eqx.partition(idem.score_network(jax.random.key(0), target, icfg), eqx.is_array)[1]
    ode = PFODE(float(icfg.sigma_min), float(icfg.sigma_max), int(cfg.num_ode_steps), idem.particle_shape(target))
    dim, n, log_det = target.dim, ctx.num_samples, cfg.log_det
    passes = network_passes(ode, log_det, dim)

    def sample(key, state, tgt):
        logp = tgt.flat_logdensity()
        model = eqx.combine(state["params"], static)
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n))
        out = jax.vmap(lambda k: weighted_draw(k, model, logp, ode, dim, log_det))(keys)
        idx = systematic_resample(jax.random.fold_in(key, n), out["log_w"], n)
        return {"x": out["x"], "log_w": out["log_w"], "draws": out["x"][idx], "draws_lp": out["log_pi"][idx]}

    def finish(state, out):
        num_chains = out["x"].shape[0]
        est, extra, warnings = weighted_output(out["x"], out["log_w"], "draws of flow_perturbation",
                                               "the target's log-density or the log-determinant estimate")
        extra.update({"network": icfg.network, "sigma_max": icfg.sigma_max,
                      "log_det": log_det, "num_ode_steps": ode.num_steps,
                      "sampling_network_passes_per_draw": passes,
                      "buffer_count": int(np.asarray(state["count"]))})
        return PopulationOutput(samples=out["draws"], stats={"lp": out["draws_lp"]},
                                num_logdensity_evals=num_chains * n, num_grad_evals=0,
                                log_Z=est["log_Z"], log_Z_se=est["log_Z_se"],
                                log_weights=np.full((num_chains, n), -np.log(n)), extra=extra, warnings=warnings,
                                num_model_evals=num_chains * n * (passes["plain_passes"] + passes["jvp_passes"]))

    return base._replace(sample=sample, finish=finish)
