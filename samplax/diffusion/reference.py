"""High-accuracy reference solves of the probability-flow ODE with diffrax.

In ``u = log sigma`` the VE probability-flow ODE is ``dx/du = x - D(x, e^u)``
(Karras et al. 2022, eq. 4 with ``sigma(t) = t``); it is smooth on a log scale, so
an adaptive Runge-Kutta solve (Tsitouras 5(4) / Dormand-Prince, diffrax, Kidger 2021)
at tight tolerances is a ground truth for solver-convergence tests and benchmarks.
"""
from __future__ import annotations

from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.checks import check_denoiser, nonfinite_ode_report

_DEFAULT_NORM = diffrax.PIDController(rtol=1.0, atol=1.0).norm  # diffrax's default error norm (RMS)


def solve_pf_ode(denoiser: Callable, x: jax.Array, sigma_start: float, sigma_stop: float, *,
                 rtol: float = 1e-10, atol: float = 1e-10, max_steps: int = 100_000,
                 sigma_floor: float = 1e-6, return_steps: bool = False, save_sigmas=None):
    """Solve the PF-ODE for a batch ``x`` ``[B, ...]`` from ``sigma_start`` to ``sigma_stop``.

    ``sigma_stop = 0`` is reached by solving to ``sigma_floor`` and applying the denoiser there
    (the remaining error is ``O(sigma_floor^2 * |score|)``). Each sample is solved with its
    own step-size controller (vmapped), with diffrax's Dopri8 and a PID controller.

    A sample whose denoiser output becomes non-finite stops there (its row of the result is NaN;
    the state carries a flag integrated from "the output was non-finite", which ends the solve
    through a ``diffrax.Event`` instead of rejecting steps until ``max_steps``); the call then warns
    (which sample, at which sigma) or, when every sample is non-finite, raises a ValueError.

    With ``return_steps=True`` it returns ``(y, steps)``, ``steps`` ``[B]`` the Dopri8 steps (accepted and
    rejected) of each sample's solve.

    With ``save_sigmas`` (a strictly decreasing sequence within ``[sigma_stop, sigma_start]``) ``y`` is the
    trajectory at those noise levels, ``[S, B, ...]``, from the same single solve (a last entry 0 is the
    denoised endpoint); the reference states of a whole grid.
    """
    check_denoiser(denoiser, x.shape[1:], x.dtype, "solve_pf_ode", "x")
    to_zero = float(sigma_stop) == 0.0
    stop = sigma_floor if to_zero else float(sigma_stop)
    save = None
    if save_sigmas is not None:
        save = np.asarray(save_sigmas, dtype=np.float64)
        if save.ndim != 1 or save.size < 1 or not np.all(np.isfinite(save)) or np.any(np.diff(save) >= 0):
            raise ValueError(f"solve_pf_ode: save_sigmas must be a strictly decreasing 1-D sequence, got {save_sigmas!r}")
        if save[0] > float(sigma_start) or save[-1] < float(sigma_stop):
            raise ValueError(f"solve_pf_ode: save_sigmas must lie within [sigma_stop, sigma_start] = "
                             f"[{float(sigma_stop)}, {float(sigma_start)}], got {save.tolist()}")
        if save[-1] < stop and save[-1] != 0.0:
            raise ValueError(f"solve_pf_ode: save_sigmas below sigma_floor={sigma_floor} other than a final 0: "
                             f"{save.tolist()}")
        save_ts = jnp.asarray(np.log(np.maximum(save, stop)), x.dtype)

    def f(u, state, args):
        y, _ = state
        dy = y - denoiser(y, jnp.exp(u))
        ok = jnp.all(jnp.isfinite(dy))
        return jnp.where(ok, dy, 0.0), jnp.where(ok, 0.0, 1.0).astype(y.dtype)

    term = diffrax.ODETerm(f)
    controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=lambda st: _DEFAULT_NORM(st[0]))

    saveat = diffrax.SaveAt(t1=True) if save is None else diffrax.SaveAt(ts=save_ts, t1=True)

    def one(y0):
        sol = diffrax.diffeqsolve(term, diffrax.Dopri8(), t0=jnp.log(sigma_start), t1=jnp.log(stop), dt0=-0.01,
                                  y0=(y0, jnp.zeros((), y0.dtype)), stepsize_controller=controller, saveat=saveat,
                                  max_steps=max_steps, event=diffrax.Event(lambda t, y, args, **kw: y[1] != 0))
        y, flag = sol.ys[0][-1], sol.ys[1][-1]  # t1 (or where the event stopped the solve)
        sigma_end = jnp.exp(sol.ts[-1])
        if to_zero:
            y = denoiser(y, jnp.asarray(stop, y.dtype))
            flag = jnp.where(jnp.all(jnp.isfinite(y)), flag, 1.0)
        bad = flag != 0  # the flag integrates backwards in time here (t runs from log sigma_start down)
        if save is not None:
            path = sol.ys[0][:-1]
            if to_zero and save[-1] == 0.0:
                path = path.at[-1].set(y)
            y = path
        return jnp.where(bad, jnp.nan, y), bad, sigma_end, sol.stats["num_steps"]

    y, bad, sigma_end, steps = jax.jit(jax.vmap(one))(x)
    if save is not None:
        y = jnp.moveaxis(y, 1, 0)
    if not isinstance(bad, jax.core.Tracer):
        nonfinite_ode_report("solve_pf_ode", np.asarray(bad), np.asarray(sigma_end), np.asarray(steps),
                             float(sigma_start), float(sigma_stop), what="sample")
    return (y, steps) if return_steps else y
