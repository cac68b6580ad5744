"""Composition operators on diffusion models: products, mixtures, negation, powers, classifier-free guidance, tilts.

Every composition is a path of densities over the noise level ``sigma`` built from the models' noised marginals
``q_{k, sigma}`` (VE convention ``x = x0 + sigma eps``):

* geometric (:class:`Composition`): ``pi_sigma(x) ∝ prod_k q_{k, sigma}(x)^{a_k} exp(-sum_j lambda_j(sigma) c_j(x))`` --
  ``product(m1, m2)``: ``a = (1, 1)`` (product of experts, Hinton 2002); ``power(m, beta)``: ``a = (beta,)``
  (annealing); ``cfg(cond, uncond, w)``: ``a = (w, 1 - w)`` (classifier-free guidance as the geometric mixture
  ``p(x|c)^w p(x)^(1-w)``, Ho & Salimans 2022); ``negation(m, n1, ...)``: ``a = (1, -weight, ...)`` ("m but not n",
  Du et al. 2023); ``tilt(m, cost, w)``: a cost ``c`` as an energy added along the path with
  ``lambda(sigma) = w / (1 + w sigma^2)`` (``w`` at sigma = 0);
  ``constrain(m, project)``: the cost ``|x - P(x)|^2 / 2`` with ``lambda = strength / sigma^2`` and the set
  ``{x: P(x) = x}`` as a hard support at the end (:func:`samplax.diffusion.sample_smc`);
* :class:`Mixture`: ``sum_k w_k q_{k, sigma}`` -- the noised marginal of a mixture is the mixture of the noised
  marginals, so this composition is itself an exact diffusion model (its score needs the models' energies).

Each composition is a samplax denoiser, ``D(x, sigma) = x + sigma^2 grad log pi_sigma(x) = x + sum_k a_k (D_k(x,
sigma) - x) - sigma^2 sum_j lambda_j grad c_j(x)``, so :func:`samplax.diffusion.sample` runs it *naively*: summed
scores, which follow the composed path only approximately, because ``prod_k q_{k, sigma}^{a_k}`` is not the
noised version of ``prod_k q_{k, 0}^{a_k}`` (the bias the tests measure). The MCMC correctors
(``sample(..., corrector=)``) and the Feynman–Kac corrector SMC (:func:`samplax.diffusion.sample_smc`) target the
composed path itself. Nested compositions are flattened (``product(power(m, 2), n)`` has ``a = (2, 1)``); the same
model object appearing twice is evaluated once.

Cost: ``cost_per_call["denoiser_evals"]`` is the number of model evaluations one call makes (one per distinct model;
a :class:`Mixture` counts its models); an energy-parameterized network's evaluation is a forward and a backward pass.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.energy import has_energy, is_normalized

SCHEDULES = ("noised", "inverse_sigma2")


def model_dim(model) -> Optional[int]:
    """The model's dimension when it says (an int attribute ``dim``), else None."""
    d = getattr(model, "dim", None)
    return int(d) if isinstance(d, (int, np.integer)) and not isinstance(d, bool) else None


def model_evals(model) -> int:
    """Model evaluations one call of ``model`` makes (its ``cost_per_call["denoiser_evals"]``, else 1)."""
    per = getattr(model, "cost_per_call", None)
    if isinstance(per, dict) and "denoiser_evals" in per:
        return int(per["denoiser_evals"])
    return 1


def leaf_terms(model, x, sigma):
    """``(log q_sigma(x) or NaN, u = sigma^2 grad log q_sigma(x))`` of one model at one point.

    ``u = D(x, sigma) - x`` for a denoiser; ``sigma^2 * score`` from ``energy_and_score`` for an energy model
    (then the log-density is ``-E``; NaN for a denoiser, which has none)."""
    if has_energy(model):
        e, s = model.energy_and_score(x, sigma)
        return -e, sigma**2 * s
    d = model(x, sigma)
    return jnp.full((), jnp.nan, x.dtype), d - x


def _dims_agree(who, models):
    dims = [model_dim(m) for m in models]
    known = [(i, d) for i, d in enumerate(dims) if d is not None]
    if len({d for _, d in known}) > 1:
        desc = ", ".join(f"model {i} has dim {d}" for i, d in known)
        raise ValueError(f"{who}: the models have different dimensions ({desc})")
    return known[0][1] if known else None


def _check_models(who, models):
    if not models:
        raise ValueError(f"{who}: needs at least one model")
    for i, m in enumerate(models):
        if not callable(m):
            raise ValueError(f"{who}: model {i} must be a diffusion model (a denoiser D(x, sigma) or an energy "
                             f"model), got {type(m).__name__}")


def _finite(who, name, v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} must be a finite number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{who}: {name} must be a finite number, got {v!r}")
    return f


class Composition(eqx.Module):
    """A geometric composition ``pi_sigma ∝ prod_k q_k^{a_k} exp(-sum_j lambda_j(sigma) c_j)`` (see the module docstring).

    Attributes:
      models: the distinct models (denoisers, energy models or :class:`Mixture`; never compositions).
      exponents: ``a_k`` ``[K]``.
      costs: cost functions ``c_j(x)`` of one point (scalar).
      cost_weights: ``[C]`` the costs' weights ``w_j``.
      cost_schedules: per cost ``"noised"`` (``lambda_j = w_j / (1 + w_j sigma^2)``) or ``"inverse_sigma2"``
        (``w_j / sigma^2``).
      supports: projections ``P`` whose sets ``{x: P(x) = x}`` the target is restricted to (hard constraints).
      kind: ``"product"``, ``"power"``, ``"cfg"``, ``"negation"``, ``"tilt"``, ``"constrain"`` or ``"geometric"``.
    """

    models: tuple
    exponents: jax.Array
    costs: tuple = ()
    cost_weights: jax.Array = None
    cost_schedules: tuple = eqx.field(static=True, default=())
    supports: tuple = ()
    kind: str = eqx.field(static=True, default="geometric")

    @property
    def dim(self) -> Optional[int]:
        """The models' common dimension (None when none of them says)."""
        return _dims_agree("Composition", self.models)

    @property
    def has_energy(self) -> bool:
        """Whether every model gives an energy (then the composition has the unnormalized ``log pi_sigma``)."""
        return all(has_energy(m) for m in self.models)

    @property
    def normalized(self) -> bool:
        """Whether every model is normalized (then ``log int pi`` is the log normalizer of the composed density)."""
        return all(is_normalized(m) for m in self.models)

    @property
    def exponent_sum(self) -> float:
        """``gamma = sum_k a_k``: at large sigma every ``q_k`` is close to ``N(0, sigma^2 I)``, so ``pi_sigma`` is
        close to ``N(0, sigma^2 / gamma I)``."""
        return float(np.sum(np.asarray(self.exponents)))

    @property
    def cost_per_call(self) -> dict:
        """Model evaluations per call (``denoiser_evals``), and cost evaluations (value and gradient) if any."""
        out = {"denoiser_evals": sum(model_evals(m) for m in self.models)}
        if self.costs:
            out["cost_evals"] = len(self.costs)
        return out

    def cost_lambdas(self, sigma):
        """``[C]`` the costs' weights ``lambda_j(sigma)`` at noise level ``sigma``."""
        w = jnp.asarray(self.cost_weights)
        out = [wj / (1.0 + wj * sigma**2) if s == "noised" else wj / sigma**2
               for wj, s in zip(w, self.cost_schedules)]
        return jnp.stack(out)

    def terms(self, x, sigma):
        """``(log pi_sigma(x) unnormalized (NaN without energies), u = sigma^2 grad log pi_sigma(x), fkc_rate)`` at
        one point, ``fkc_rate = (|sum_k a_k s_k|^2 - sum_k a_k |s_k|^2) / 2`` (the Feynman–Kac corrector potential
        rate per unit ``sigma^2``, Skreta et al. 2025; see :func:`samplax.diffusion.sample_smc`)."""
        a = self.exponents.astype(x.dtype)
        logq, us = zip(*(leaf_terms(m, x, sigma) for m in self.models))
        logq = jnp.stack(logq)
        us = jnp.stack(us)  # [K, *shape]
        u = jnp.tensordot(a, us, axes=1)
        logp = jnp.sum(a * logq)
        inv4 = 1.0 / sigma**4
        axes = tuple(range(1, us.ndim))
        rate = 0.5 * (jnp.sum(u * u) - jnp.sum(a * jnp.sum(us * us, axis=axes))) * inv4
        if self.costs:
            lam = self.cost_lambdas(sigma).astype(x.dtype)
            for j, c in enumerate(self.costs):
                cv, cg = jax.value_and_grad(c)(x)
                logp = logp - lam[j] * cv
                u = u - sigma**2 * lam[j] * cg
        return logp, u, rate

    def energy_and_score(self, x, sigma):
        """``(-log pi_sigma(x), grad log pi_sigma(x))`` (the energy is NaN unless every model has one)."""
        logp, u, _ = self.terms(x, sigma)
        return -logp, u / sigma**2

    def energy(self, x, sigma):
        """``-log pi_sigma(x)`` up to the normalizer (NaN unless every model has an energy)."""
        return self.energy_and_score(x, sigma)[0]

    def score(self, x, sigma):
        """``grad log pi_sigma(x) = sum_k a_k grad log q_k - sum_j lambda_j grad c_j``."""
        return self.terms(x, sigma)[1] / sigma**2

    def __call__(self, x, sigma):
        """The naive composed denoiser ``x + sum_k a_k (D_k(x, sigma) - x) - sigma^2 sum_j lambda_j grad c_j(x)``."""
        return x + self.terms(x, sigma)[1]

    def in_support(self, x):
        """Whether one point is in every hard support set (``P(x) = x`` exactly); True without supports."""
        ok = jnp.asarray(True)
        for p in self.supports:
            ok = ok & jnp.all(p(x) == x)
        return ok


class Mixture(eqx.Module):
    """``sum_k w_k q_{k, sigma}``: an exact diffusion model (the mixture of the models' noised marginals).

    ``log p_sigma = logsumexp_k (log w_k - E_k)``, score ``sum_k r_k s_k`` with responsibilities
    ``r_k ∝ w_k exp(-E_k)``; every model must give an energy (normalized ones for correct responsibilities:
    with unnormalized energies the mixture weights are off by the unknown constants)."""

    models: tuple
    log_weights: jax.Array

    @property
    def dim(self) -> Optional[int]:
        """The models' common dimension."""
        return _dims_agree("mixture", self.models)

    has_energy = True

    @property
    def normalized(self) -> bool:
        """Whether every model is normalized."""
        return all(is_normalized(m) for m in self.models)

    @property
    def cost_per_call(self) -> dict:
        """One evaluation per model."""
        return {"denoiser_evals": sum(model_evals(m) for m in self.models)}

    def energy_and_score(self, x, sigma):
        """``(-log sum_k w_k exp(-E_k), sum_k r_k s_k)``."""
        es, ss = zip(*(m.energy_and_score(x, sigma) for m in self.models))
        lp = self.log_weights.astype(x.dtype) - jnp.stack(es)
        r = jax.nn.softmax(lp)
        return -jax.nn.logsumexp(lp), jnp.tensordot(r, jnp.stack(ss), axes=1)

    def energy(self, x, sigma):
        """``-log p_sigma(x)``."""
        return self.energy_and_score(x, sigma)[0]

    def score(self, x, sigma):
        """``grad log p_sigma(x)``."""
        return self.energy_and_score(x, sigma)[1]

    def __call__(self, x, sigma):
        """The exact mixture denoiser ``x + sigma^2 score``."""
        return x + sigma**2 * self.score(x, sigma)


def _flatten(model, a: float, acc: dict, order: list, costs: list):
    if isinstance(model, Composition):
        for m, e in zip(model.models, np.asarray(model.exponents)):
            _flatten(m, a * float(e), acc, order, costs)
        for c, w, s in zip(model.costs, np.asarray(model.cost_weights), model.cost_schedules):
            costs.append((c, a * float(w), s))
        for p in model.supports:
            costs.append((p, None, "support"))
        return
    k = id(model)
    if k not in acc:
        acc[k] = [model, 0.0]
        order.append(k)
    acc[k][1] += a


def _compose(who, kind, parts, extra_costs=(), extra_supports=()):
    """A :class:`Composition` from ``[(model, exponent)]``: nested compositions flattened, repeated models merged."""
    acc, order, costs = {}, [], []
    for m, a in parts:
        _flatten(m, a, acc, order, costs)
    models = tuple(acc[k][0] for k in order)
    _check_models(who, models)
    dim = _dims_agree(who, models)
    exps = jnp.asarray([acc[k][1] for k in order], dtype=jnp.result_type(float))
    cost_list = [c for c in costs if c[2] != "support"] + list(extra_costs)
    supports = tuple(c[0] for c in costs if c[2] == "support") + tuple(extra_supports)
    for c, _, _ in extra_costs:
        _check_point_fn(who, "cost", c, dim, scalar=True)
    for p in extra_supports:
        _check_point_fn(who, "project", p, dim, scalar=False)
    return Composition(models, exps, tuple(c[0] for c in cost_list),
                       jnp.asarray([c[1] for c in cost_list], dtype=jnp.result_type(float)),
                       tuple(c[2] for c in cost_list), supports, kind)


def _check_point_fn(who, name, fn, dim, scalar):
    if not callable(fn):
        raise ValueError(f"{who}: {name} must be a function of one point, got {type(fn).__name__}")
    if dim is None:
        return
    point = jax.ShapeDtypeStruct((dim,), jnp.result_type(float))
    try:
        out = jax.eval_shape(fn, point)
    except Exception as e:  # noqa: BLE001 - re-raised naming the argument
        raise ValueError(f"{who}: {name} fails on one point of shape ({dim},): {type(e).__name__}: {e}") from None
    want = () if scalar else (dim,)
    if getattr(out, "shape", None) != want:
        raise ValueError(f"{who}: {name} must return {'a scalar' if scalar else f'a point of shape {want}'} for one "
                         f"point of shape ({dim},), got {getattr(out, 'shape', type(out).__name__)}")


def product(*models) -> Composition:
    """Product of experts ``prod_k q_k`` (Hinton 2002) along the noise path: exponents all 1.

    Naive sampling adds the scores; the product of the noised marginals is not the noised product, which the
    correctors and :func:`samplax.diffusion.sample_smc` account for. Needs at least two models of one dimension."""
    if len(models) < 2:
        raise ValueError(f"product: needs at least two models, got {len(models)}")
    return _compose("product", "product", [(m, 1.0) for m in models])


def power(model, beta) -> Composition:
    """``q_sigma^beta`` (annealing / temperature ``1/beta``); ``beta`` a finite number > 0."""
    b = _finite("power", "beta", beta)
    if not b > 0:
        raise ValueError(f"power: beta must be > 0, got {beta!r}")
    return _compose("power", "power", [(model, b)])


def cfg(cond, uncond, w) -> Composition:
    """Classifier-free guidance as the geometric mixture ``q(x|c)^w q(x)^(1-w)`` (Ho & Salimans 2022).

    Naively it is the usual CFG denoiser ``D_u + w (D_c - D_u)``; ``w`` a finite number (``w = 1``: the conditional
    model)."""
    wf = _finite("cfg", "w", w)
    return _compose("cfg", "cfg", [(cond, wf), (uncond, 1.0 - wf)])


def negation(model, *negatives, weight=0.5) -> Composition:
    """"``model`` but not ``negatives``": ``q ∏_j n_j^{-weight}`` (Du et al. 2023; Liu et al. 2022).

    ``weight`` a finite number > 0. The density is normalizable only when the model's tails are lighter than the
    negatives' (``1 - weight * len(negatives) > 0`` is needed for :func:`samplax.diffusion.sample_smc`)."""
    if not negatives:
        raise ValueError("negation: needs at least one model to negate")
    wf = _finite("negation", "weight", weight)
    if not wf > 0:
        raise ValueError(f"negation: weight must be > 0, got {weight!r}")
    return _compose("negation", "negation", [(model, 1.0)] + [(n, -wf) for n in negatives])


def mixture(*models, weights=None) -> Mixture:
    """``sum_k w_k q_k``: exact (the mixture of the noised marginals is the noised mixture). Every model must give an
    energy (:mod:`samplax.diffusion.energy`); ``weights`` positive (default equal), normalized here."""
    _check_models("mixture", models)
    if len(models) < 2:
        raise ValueError(f"mixture: needs at least two models, got {len(models)}")
    for i, m in enumerate(models):
        if isinstance(m, Composition):
            raise ValueError(f"mixture: model {i} is a composition ({m.kind}); a mixture of compositions is not a "
                             "diffusion model")
        if not has_energy(m):
            raise ValueError(f"mixture: model {i} ({type(m).__name__}) gives no energy; the responsibilities of a "
                             "mixture need energy-parameterized models (samplax.diffusion.energy)")
    _dims_agree("mixture", models)
    w = np.ones(len(models)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(models),) or not np.all(np.isfinite(w)) or not np.all(w > 0):
        raise ValueError(f"mixture: weights must be {len(models)} positive finite numbers, got {weights!r}")
    return Mixture(tuple(models), jnp.asarray(np.log(w / w.sum()), dtype=jnp.result_type(float)))


def tilt(model, cost: Callable, weight=1.0) -> Composition:
    """``q_sigma(x) exp(-lambda(sigma) cost(x))``: a differentiable cost of one point as an energy added along the path
    (cost-guided sampling), ending at ``q_0(x) exp(-weight * cost(x))``.

    ``lambda(sigma) = weight / (1 + weight sigma^2)``: for the quadratic cost ``|x - a|^2 / 2`` the factor is the
    Gaussian ``N(a, 1 / weight)`` noised to ``N(a, 1 / weight + sigma^2)``, so the tilt is a product with one more
    diffusion model, and ``sigma^2 lambda <= 1`` keeps the composed denoiser bounded at large noise (a constant weight
    would not: ``D = x - sigma^2 weight grad c`` explodes). Costs of other curvature than 1 behave like a Gaussian
    expert of that curvature. ``weight`` a finite number >= 0."""
    wf = _finite("tilt", "weight", weight)
    if wf < 0:
        raise ValueError(f"tilt: weight must be >= 0, got {weight!r}")
    return _compose("tilt", "tilt", [(model, 1.0)], extra_costs=[(cost, wf, "noised")])


class _Distance2(eqx.Module):
    project: Callable

    def __call__(self, x):
        r = x - self.project(x)
        return 0.5 * jnp.sum(r * r)


def constrain(model, project: Callable, strength=1.0) -> Composition:
    """``q_sigma`` restricted to the convex set ``C = {x: project(x) = x}`` given by its Euclidean projection.

    Along the path the set enters softly, ``exp(-(strength / sigma^2) |x - P(x)|^2 / 2)`` (points at distance
    ``sigma`` outside lose a factor ``exp(-strength / 2)``), and :func:`samplax.diffusion.sample_smc` restricts the
    final particles to ``C`` exactly. ``strength`` a finite number > 0."""
    sf = _finite("constrain", "strength", strength)
    if not sf > 0:
        raise ValueError(f"constrain: strength must be > 0, got {strength!r}")
    dim = model_dim(model)
    _check_point_fn("constrain", "project", project, dim, scalar=False)
    return _compose("constrain", "constrain", [(model, 1.0)], extra_costs=[(_Distance2(project), sf, "inverse_sigma2")],
                    extra_supports=[project])


class BoxProjection(eqx.Module):
    """Euclidean projection onto the box ``[lo, hi]`` (coordinate-wise clipping)."""

    lo: jax.Array
    hi: jax.Array

    def __call__(self, x):
        return jnp.clip(x, self.lo.astype(x.dtype), self.hi.astype(x.dtype))


class BallProjection(eqx.Module):
    """Euclidean projection onto the ball ``|x - center| <= radius``."""

    center: jax.Array
    radius: jax.Array

    def __call__(self, x):
        c = self.center.astype(x.dtype)
        r = x - c
        n = jnp.sqrt(jnp.sum(r * r))
        rad = self.radius.astype(x.dtype)
        return jnp.where(n > rad, c + r * (rad / jnp.where(n > 0, n, 1.0)), x)


def box(lo, hi) -> BoxProjection:
    """The projection onto the box ``[lo, hi]`` (arrays or scalars, ``lo < hi``)."""
    lo_a, hi_a = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if not (np.all(np.isfinite(lo_a)) and np.all(np.isfinite(hi_a)) and np.all(lo_a < hi_a)):
        raise ValueError(f"box: need finite lo < hi, got lo={lo!r}, hi={hi!r}")
    return BoxProjection(jnp.asarray(lo_a, jnp.result_type(float)), jnp.asarray(hi_a, jnp.result_type(float)))


def ball(center, radius) -> BallProjection:
    """The projection onto the ball of ``radius > 0`` around ``center``."""
    c = np.asarray(center, np.float64)
    r = _finite("ball", "radius", radius)
    if not (r > 0 and np.all(np.isfinite(c))):
        raise ValueError(f"ball: need a finite center and radius > 0, got center={center!r}, radius={radius!r}")
    return BallProjection(jnp.asarray(c, jnp.result_type(float)), jnp.asarray(r, jnp.result_type(float)))
