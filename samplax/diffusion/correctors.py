"""MCMC correctors inside diffusion sampling: ULA, MALA, HMC and underdamped Langevin at each noise level.

After each predictor step of :func:`samplax.diffusion.sample` (``corrector=``) lands at noise level ``sigma``, the
corrector runs ``num_steps`` MCMC steps on the model's density at that level, ``pi_sigma`` (for a composition, the
composed density: Song et al. 2021's predictor–corrector sampling; Du et al. 2023 for compositions; for CFG this
is Langevin on the sharpened marginal). The Langevin step is ``h = step_size * sigma^2 / gamma`` (``pi_sigma`` has
width of order ``sigma / sqrt(gamma)`` at large noise, ``gamma = sum_k a_k`` for a composition, 1 for a model); HMC and underdamped Langevin use ``eps = sqrt(2 h)``
(one leapfrog step with a full momentum refresh is the Langevin step ``h``).

* ``ula``: ``x' = x + h s(x) + sqrt(2 h) z`` (unadjusted; biased at order ``h``; any denoiser).
* ``mala``: the ULA proposal accepted with probability ``min(1, pi(y) q(x | y) / (pi(x) q(y | x)))``,
  ``q(y | x) = N(y; x + h s(x), 2 h I)`` (Roberts & Tweedie 1996): the proposal density is evaluated with the
  score at the point the move starts from, in both directions (:func:`mala_log_acceptance`). Needs energies.
* ``hmc``: ``leapfrog_steps`` leapfrog steps of size ``eps`` with unit mass, Metropolis accept on
  ``H = E + |p|^2 / 2`` (Duane et al. 1987; Neal 2011). Needs energies.
* ``underdamped``: OBABO kinetic Langevin with friction ``gamma`` (``c = exp(-gamma eps)``), unadjusted, fresh
  velocities at each noise level (Bussi & Parrinello 2007; Leimkuhler & Matthews 2013). Any denoiser.

Exact invariance (MALA, HMC) holds for the density at the level where the corrector runs; a composed density's
energy is ``-sum_k a_k log q_k`` (unnormalized), which is all the accept step needs.

Evaluations per level (each a call of the model on the batch): ``ula``: ``num_steps``; ``mala``:
``num_steps + 1``; ``hmc``: ``num_steps * leapfrog_steps + 1``; ``underdamped``: ``num_steps + 1``.
Randomness: the ``m``-th normal draw of corrector step ``j`` at predictor step ``i`` for sample ``b`` comes from
``fold_in(fold_in(fold_in(key, b), i), 1000 + 4 j + m)`` (batch-size invariant, apart from the solver's own draws).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.energy import has_energy

KINDS = ("ula", "mala", "hmc", "underdamped")
NEEDS_ENERGY = ("mala", "hmc")
NOISE_OFFSET = 1000


class Corrector(NamedTuple):
    """A corrector configuration (built by :func:`corrector`); hashable, part of the compiled program's key."""

    kind: str
    num_steps: int = 1
    step_size: float = 0.1
    leapfrog_steps: int = 3
    friction: float = 1.0

    @property
    def needs_energy(self) -> bool:
        """MALA and HMC need the model's energy for the accept step."""
        return self.kind in NEEDS_ENERGY

    def evals_per_level(self) -> int:
        """Model evaluations (batched calls) one noise level costs."""
        if self.kind == "ula":
            return self.num_steps
        if self.kind == "hmc":
            return self.num_steps * self.leapfrog_steps + 1
        return self.num_steps + 1


def corrector(kind: str = "mala", *, num_steps: int = 1, step_size: float = 0.1, leapfrog_steps: int = 3,
              friction: float = 1.0) -> Corrector:
    """A corrector for ``sample(..., corrector=)``: ``kind`` one of ``ula``, ``mala``, ``hmc``, ``underdamped``;
    ``num_steps`` MCMC steps per noise level; ``step_size`` the Langevin step ``h`` in units of ``sigma^2``;
    ``leapfrog_steps`` (HMC); ``friction`` ``gamma`` (underdamped). See the module docstring for the updates."""
    if kind not in KINDS:
        raise ValueError(f"corrector: kind must be one of {KINDS}, got {kind!r}")
    for name, v in (("num_steps", num_steps), ("leapfrog_steps", leapfrog_steps)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"corrector: {name} must be an int >= 1, got {v!r}")
    for name, v in (("step_size", step_size), ("friction", friction)):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"corrector: {name} must be a positive finite number, got {v!r}") from None
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"corrector: {name} must be a positive finite number, got {v!r}")
    return Corrector(kind, int(num_steps), float(step_size), int(leapfrog_steps), float(friction))


def as_corrector(value, who: str):
    """``None``, a kind name (default settings) or a :class:`Corrector` -> ``Corrector`` or None."""
    if value is None or isinstance(value, Corrector):
        return value
    if isinstance(value, str):
        if value not in KINDS:
            raise ValueError(f"{who}: corrector must be None, one of {KINDS} or a diffusion.corrector(...), got "
                             f"{value!r}")
        return corrector(value)
    raise ValueError(f"{who}: corrector must be None, one of {KINDS} or a diffusion.corrector(...), got "
                     f"{type(value).__name__}")


def batched_evaluator(model, need_energy: bool) -> Callable:
    """``f(x[B, ...], sigma) -> (log pi_sigma [B] (NaN without energy), score [B, ...])`` for ``model``.

    A model with ``energy_and_score`` (energy models, compositions of them) gives both; a plain denoiser gives the
    score ``(D(x, sigma) - x) / sigma^2`` and NaN log-densities (``need_energy`` then raises a ValueError)."""
    if has_energy(model):
        def one(x, s):
            e, sc = model.energy_and_score(x, s)
            return -e, sc
    else:
        if need_energy:
            raise ValueError(f"the corrector needs the model's energy (MALA and HMC accept on it), and "
                             f"{type(model).__name__} gives only a denoiser; use an energy-parameterized model "
                             "(samplax.diffusion.energy) or a composition of them, or corrector 'ula'/'underdamped'")

        def one(x, s):
            return jnp.full((), jnp.nan, x.dtype), (model(x, s) - x) / s**2

    return lambda xb, s: jax.vmap(one, in_axes=(0, None))(xb, s)


def _sum(v):
    return jnp.sum(v, axis=tuple(range(1, v.ndim)))


def mala_proposal_logdensity(y, x, score_x, h):
    """``log q(y | x) = log N(y; x + h score(x), 2 h I)`` (normalized) for one point of any shape."""
    r = y - x - h * score_x
    return -jnp.sum(r * r) / (4.0 * h) - 0.5 * r.size * jnp.log(4.0 * jnp.pi * h)


def mala_log_acceptance(x, y, logp_x, logp_y, score_x, score_y, h):
    """``log [pi(y) q(x | y) / (pi(x) q(y | x))]`` of a MALA move ``x -> y`` (Roberts & Tweedie 1996).

    The reverse proposal ``q(x | y)`` uses the score at ``y`` (a common bug uses the score at ``x`` for both
    directions, which breaks detailed balance)."""
    return (logp_y - logp_x + mala_proposal_logdensity(x, y, score_y, h)
            - mala_proposal_logdensity(y, x, score_x, h))


def mala_transition_logdensity(x, y, logdensity: Callable, score: Callable, h):
    """``log K(x, y)`` of the MALA kernel for ``y != x`` (its absolutely continuous part):
    ``log q(y | x) + min(0, log alpha(x, y))``, from the same functions the corrector uses. For tests of detailed
    balance: ``pi(x) K(x, y) = pi(y) K(y, x)``."""
    la = mala_log_acceptance(x, y, logdensity(x), logdensity(y), score(x), score(y), h)
    return mala_proposal_logdensity(y, x, score(x), h) + jnp.minimum(0.0, la)


def _normals(keys, step, j, shape, dtype):
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, step), NOISE_OFFSET + j),
                                                shape, dtype))(keys)


def _uniforms(keys, step, j, dtype):
    return jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(jax.random.fold_in(k, step), NOISE_OFFSET + j),
                                                 (), dtype))(keys)


def _accept(log_alpha, u):
    ok = jnp.isfinite(log_alpha)
    return ok & (jnp.log(u) < jnp.where(ok, log_alpha, -jnp.inf))


def _where(mask, a, b):
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)


def run(c: Corrector, evaluate: Callable, x, sigma, keys, step, logp=None, score=None, scale=1.0):
    """Run the corrector ``c`` at noise level ``sigma`` on the batch ``x`` ``[B, ...]``.

    ``evaluate(x, sigma) -> (log pi [B], score [B, ...])`` (:func:`batched_evaluator`); ``logp``, ``score``: the
    values at ``x`` when known (then the initial evaluation is skipped). ``keys``: ``[B]`` per-sample keys; ``step``:
    the predictor step's index (for the noise); ``scale`` multiplies the step ``h = step_size * sigma^2`` (``1 / gamma``
    for a composition whose exponents sum to ``gamma``: its density at level sigma has width ``sigma / sqrt(gamma)``).
    Returns ``(x, logp, score, num_evals, acceptance)`` with
    ``acceptance`` ``[B]`` the per-sample mean acceptance (1 for the unadjusted kinds)."""
    h = c.step_size * scale * sigma**2
    dtype, shape = x.dtype, x.shape[1:]
    ne = 0
    if c.kind != "ula" and (logp is None or score is None):
        logp, score = evaluate(x, sigma)
        ne += 1
    ones = jnp.ones(x.shape[:1], dtype)

    if c.kind == "ula":
        def body(j, carry):
            xc = carry
            _, s = evaluate(xc, sigma)
            return xc + h * s + jnp.sqrt(2.0 * h) * _normals(keys, step, 4 * j, shape, dtype)

        x = jax.lax.fori_loop(0, c.num_steps, body, x)
        return x, None, None, ne + c.num_steps, ones

    if c.kind == "mala":
        def body(j, carry):
            xc, lp, s, acc = carry
            y = xc + h * s + jnp.sqrt(2.0 * h) * _normals(keys, step, 4 * j, shape, dtype)
            lpy, sy = evaluate(y, sigma)
            la = jax.vmap(mala_log_acceptance, in_axes=(0, 0, 0, 0, 0, 0, None))(xc, y, lp, lpy, s, sy, h)
            ok = _accept(la, _uniforms(keys, step, 4 * j + 1, dtype))
            return (_where(ok, y, xc), jnp.where(ok, lpy, lp), _where(ok, sy, s),
                    acc + jnp.minimum(1.0, jnp.exp(jnp.where(jnp.isfinite(la), la, -jnp.inf))))

        x, logp, score, acc = jax.lax.fori_loop(0, c.num_steps, body, (x, logp, score, jnp.zeros_like(ones)))
        return x, logp, score, ne + c.num_steps, acc / c.num_steps

    eps = jnp.sqrt(2.0 * h)
    if c.kind == "hmc":
        def leap(_, st):
            q, p, lp, s = st
            p = p + 0.5 * eps * s
            q = q + eps * p
            lp, s = evaluate(q, sigma)
            return q, p + 0.5 * eps * s, lp, s

        def body(j, carry):
            xc, lp, s, acc = carry
            p0 = _normals(keys, step, 4 * j, shape, dtype)
            q, p, lpq, sq = jax.lax.fori_loop(0, c.leapfrog_steps, leap, (xc, p0, lp, s))
            la = (lpq - 0.5 * _sum(p * p)) - (lp - 0.5 * _sum(p0 * p0))
            ok = _accept(la, _uniforms(keys, step, 4 * j + 1, dtype))
            return (_where(ok, q, xc), jnp.where(ok, lpq, lp), _where(ok, sq, s),
                    acc + jnp.minimum(1.0, jnp.exp(jnp.where(jnp.isfinite(la), la, -jnp.inf))))

        x, logp, score, acc = jax.lax.fori_loop(0, c.num_steps, body, (x, logp, score, jnp.zeros_like(ones)))
        return x, logp, score, ne + c.num_steps * c.leapfrog_steps, acc / c.num_steps

    # underdamped (OBABO), unadjusted
    cf = jnp.exp(-c.friction * eps)
    sd = jnp.sqrt(1.0 - cf * cf)

    def body(j, carry):
        xc, v, lp, s = carry
        v = cf * v + sd * _normals(keys, step, 4 * j + 1, shape, dtype)
        v = v + 0.5 * eps * s
        xc = xc + eps * v
        lp, s = evaluate(xc, sigma)
        v = v + 0.5 * eps * s
        v = cf * v + sd * _normals(keys, step, 4 * j + 2, shape, dtype)
        return xc, v, lp, s

    v0 = _normals(keys, step, 3, shape, dtype)  # index 3 is never used by the steps (4 j + 1, 4 j + 2)
    x, _, logp, score = jax.lax.fori_loop(0, c.num_steps, body, (x, v0, logp, score))
    return x, logp, score, ne + c.num_steps, ones
