"""Log-likelihood of points under a diffusion model via the probability-flow ODE.

With ``u = log sigma`` the VE probability-flow ODE is ``dy/du = f(y, u) = y - D(y, e^u)``
(Karras et al. 2022, eq. 4). Along its solution the instantaneous change of variables
(Chen et al. 2018, "Neural ODEs"; Song et al. 2021, "Score-based generative modeling
through SDEs", App. D.2) gives ``d/du log p_u(y(u)) = -div f = -(d - tr dD/dy)``, so for a
point ``x`` at noise level ``sigma_min``

``log p_{sigma_min}(x) = log p_{sigma_max}(y(u_max)) + int_{u_min}^{u_max} (d - tr dD/dy(y(u), e^u)) du``,

solved forward in ``u`` from ``y(u_min) = x`` with diffrax's adaptive Tsitouras 5(4)
method and a PID step-size controller (Kidger 2021). The divergence is

* ``"exact"``: the trace of the Jacobian (``jax.jacfwd``; ``d`` tangents per evaluation),
* ``"hutchinson"``: ``v^T (dD/dy) v`` with Rademacher probes ``v`` held fixed along the
  trajectory (Hutchinson 1989; Grathwohl et al. 2019, FFJORD). The estimate of
  ``log p`` is unbiased; ``num_probes`` independent probes are integrated together
  and averaged (their spread gives a standard error),
* ``"auto"``: exact up to ``exact_max_dim`` dimensions, Hutchinson above.

The prior term defaults to ``log N(y; 0, sigma_max^2 I)``, exact only as
``sigma_max -> inf``: its error is about ``y . E[x] / sigma_max^2 = O(|E x| / sigma_max)``
(``y`` is of size ``sigma_max``) plus ``O(tr Cov x / sigma_max^2)``; pass
``prior_logpdf`` for the exact marginal when it is known. The result is the density of
the noised marginal ``p_{sigma_min}``; as ``sigma_min -> 0`` it tends to the data density.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import make_cost
from samplax.diffusion._compiled import Clock
from samplax.diffusion.checks import check_denoiser, nonfinite_ode_report


METHODS = ("auto", "exact", "hutchinson")
_DEFAULT_NORM = diffrax.PIDController(rtol=1.0, atol=1.0).norm  # diffrax's default error norm (RMS)


def _solve_one(denoiser, x, probes, u0, u1, exact, prior_logpdf, rtol, atol, max_steps):
    """One point's solve; returns ``(log p, ODE steps, non-finite flag, sigma where the solve stopped)``.

    The state carries a third component, the integral of "the model output (or its divergence) was
    non-finite" over ``u``: a non-finite right-hand side is replaced by zero (so the controller does not
    stall rejecting steps until ``max_steps``) and the flag becoming nonzero ends the solve
    (``diffrax.Event``) at the end of the step where it first happened. The flag is left out of the
    error norm, so a finite model takes exactly the steps it took without it.
    """
    shape = x.shape
    d = int(np.prod(shape))

    def den(y_flat, sigma):
        return denoiser(y_flat.reshape(shape), sigma).reshape(-1)

    def rhs(u, state, args):
        y, _, _ = state
        sigma = jnp.exp(u)
        if exact:
            dy = y - den(y, sigma)
            tr = jnp.trace(jax.jacfwd(lambda z: den(z, sigma))(y))
            dint = jnp.full((probes.shape[0],), d - tr, y.dtype)
        else:
            out, jvps = jax.vmap(lambda v: jax.jvp(lambda z: den(z, sigma), (y,), (v,)))(probes)
            dy, dint = y - out[0], d - jnp.sum(probes * jvps, axis=-1)
        ok = jnp.all(jnp.isfinite(dy)) & jnp.all(jnp.isfinite(dint))
        return (jnp.where(ok, dy, 0.0), jnp.where(ok, dint, 0.0), jnp.where(ok, 0.0, 1.0).astype(y.dtype))

    y0 = (x.reshape(-1), jnp.zeros((probes.shape[0],), x.dtype), jnp.zeros((), x.dtype))
    controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=lambda st: _DEFAULT_NORM((st[0], st[1])))
    sol = diffrax.diffeqsolve(diffrax.ODETerm(rhs), diffrax.Tsit5(), t0=u0, t1=u1, dt0=None, y0=y0,
                              stepsize_controller=controller, max_steps=max_steps,
                              event=diffrax.Event(lambda t, y, args, **kw: y[2] != 0))
    y1, integral, flag = sol.ys[0][-1], sol.ys[1][-1], sol.ys[2][-1]
    logp = prior_logpdf(y1.reshape(shape)) + integral
    bad = flag != 0
    return jnp.where(bad, jnp.nan, logp), sol.stats["num_steps"], bad, jnp.exp(sol.ts[-1])


def log_likelihood(denoiser: Callable, x: jax.Array, *, key: jax.Array, sigma_max: float, sigma_min: float = 1e-3,
                   method: str = "auto", num_probes: int = 1, exact_max_dim: int = 16, rtol: float = 1e-6,
                   atol: float = 1e-6, max_steps: int = 10_000, prior_logpdf: Optional[Callable] = None):
    """``log p_{sigma_min}(x_b)`` for a batch ``x`` ``[B, *event_shape]`` under the model ``denoiser`` (module docstring).

    Args:
      denoiser: ``D(x, sigma)`` for one point (VE convention).
      x: batch of points.
      key: typed key for the Hutchinson probes (probe k of point b from ``fold_in(fold_in(key, b), k)``).
      sigma_max: where the ODE ends and the prior is evaluated.
      sigma_min: the noise level whose marginal density is evaluated at ``x`` (> 0).
      method: ``"auto"``, ``"exact"`` or ``"hutchinson"``.
      num_probes: Hutchinson probes per point (integrated in one solve and averaged).
      exact_max_dim: largest dimension for which ``"auto"`` uses the exact trace.
      rtol, atol, max_steps: diffrax PID-controller tolerances and step limit.
      prior_logpdf: ``log p_{sigma_max}(y)`` for one point (default ``log N(0, sigma_max^2 I)``).

    Returns:
      ``(logp, info)``: ``logp`` ``[B]`` (the probe average for Hutchinson) and a dict with
      ``method``, ``per_probe`` ``[B, K]``, ``stderr`` ``[B]`` (probe standard error; 0 when exact),
      ``num_steps`` ``[B]`` (ODE steps attempted) and ``num_model_evals`` ``[B]`` (about
      ``6 num_steps + 1`` right-hand sides for Tsit5, each a denoiser call with its Jacobian trace or
      ``num_probes`` Jacobian-vector products), ``nonfinite`` ``[B]`` (the model's output or divergence
      was non-finite along the point's ODE: its solve stopped there and its ``logp`` is NaN),
      ``nonfinite_sigma`` ``[B]`` (the noise level at the end of the ODE step where that happened; NaN
      elsewhere), ``warnings`` (a ``"nonfinite_samples"`` warning saying how many points and where;
      a ValueError instead when every point is non-finite) and ``cost``, the shared cost record
      (:class:`samplax.core.cost.Cost`): ``num_model_evals`` the largest per-point count above
      (int; the points run together in one vmapped solve), ``num_model_evals_total`` their sum,
      ``compile_seconds`` (tracing and compiling the solve), ``sampling_seconds`` (running it,
      until ready), ``num_compilations`` (1: the solve is compiled afresh on every call) and
      ``num_devices`` (1). Inside a JAX transformation (``x`` or ``key`` a tracer) only
      ``num_devices`` is recorded.
    """
    if method not in METHODS:
        raise ValueError(f"log_likelihood: method must be one of {METHODS}, got {method!r}")
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"log_likelihood: x must be a batch [B, *event_shape], got shape {x.shape}")
    sigma_max, sigma_min = float(sigma_max), float(sigma_min)
    if not (0.0 < sigma_min < sigma_max and np.isfinite(sigma_max)):
        raise ValueError(f"log_likelihood: need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, "
                         f"sigma_max={sigma_max}")
    if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        bad = np.flatnonzero(~np.all(np.isfinite(np.asarray(x).reshape(x.shape[0], -1)), axis=1))
        raise ValueError(f"log_likelihood: x has non-finite values in {bad.size} of its {x.shape[0]} points "
                         f"(first: index {int(bad[0])})")
    check_denoiser(denoiser, x.shape[1:], x.dtype, "log_likelihood", "x")
    if not isinstance(num_probes, (int, np.integer)) or num_probes < 1:
        raise ValueError(f"log_likelihood: num_probes must be a positive int, got {num_probes!r}")
    d = int(np.prod(x.shape[1:]))
    exact = method == "exact" or (method == "auto" and d <= exact_max_dim)
    k = 1 if exact else int(num_probes)
    if prior_logpdf is None:
        def prior_logpdf(y):
            return -0.5 * jnp.sum(y * y) / sigma_max**2 - 0.5 * d * math.log(2 * math.pi * sigma_max**2)

    keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(x.shape[0]))

    def one(kb, xb):
        probes = jax.vmap(lambda j: jax.random.rademacher(jax.random.fold_in(kb, j), (d,), xb.dtype))(jnp.arange(k))
        return _solve_one(denoiser, xb, probes, math.log(sigma_min), math.log(sigma_max), exact, prior_logpdf,
                          rtol, atol, max_steps)

    clock = Clock()
    per_probe, steps, bad, sigma_stop = clock.call(jax.jit(jax.vmap(one)), (keys, x))
    logp = jnp.mean(per_probe, axis=1)
    stderr = jnp.std(per_probe, axis=1, ddof=1) / math.sqrt(k) if k > 1 else jnp.zeros_like(logp)
    info = {"method": "exact" if exact else "hutchinson", "per_probe": per_probe, "stderr": stderr,
            "num_steps": steps, "num_model_evals": 6 * steps + 1, "nonfinite": bad,
            "nonfinite_sigma": jnp.where(bad, sigma_stop, jnp.nan), "warnings": []}
    if not isinstance(bad, jax.core.Tracer):
        info["warnings"] = nonfinite_ode_report("log_likelihood", np.asarray(bad), np.asarray(sigma_stop),
                                                np.asarray(steps), sigma_min, sigma_max)
    if clock.timed:
        evals = np.asarray(info["num_model_evals"])
        info["cost"] = make_cost(num_model_evals=int(evals.max()), num_model_evals_total=int(evals.sum()),
                                 compile_seconds=clock.compile_seconds, sampling_seconds=clock.run_seconds,
                                 num_compilations=clock.num_compilations, num_devices=1)
    else:
        info["cost"] = make_cost(num_devices=1)
    return logp, info
