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


def solve_pf_ode(denoiser: Callable, x: jax.Array, sigma_start: float, sigma_stop: float, *,
                 rtol: float = 1e-10, atol: float = 1e-10, max_steps: int = 100_000,
                 sigma_floor: float = 1e-6) -> jax.Array:
    """Solve the PF-ODE for a batch ``x`` ``[B, ...]`` from ``sigma_start`` to ``sigma_stop``.

    ``sigma_stop = 0`` is reached by solving to ``sigma_floor`` and applying the denoiser there
    (the remaining error is ``O(sigma_floor^2 * |score|)``). Each sample is solved with its
    own step-size controller (vmapped), with diffrax's Dopri8 and a PID controller.
    """
    to_zero = float(sigma_stop) == 0.0
    stop = sigma_floor if to_zero else float(sigma_stop)

    def f(u, y, args):
        return y - denoiser(y, jnp.exp(u))

    term = diffrax.ODETerm(f)

    def one(y0):
        sol = diffrax.diffeqsolve(term, diffrax.Dopri8(), t0=jnp.log(sigma_start), t1=jnp.log(stop), dt0=-0.01,
                                  y0=y0, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                                  max_steps=max_steps)
        y = sol.ys[-1]
        return denoiser(y, jnp.asarray(stop, y.dtype)) if to_zero else y

    return jax.jit(jax.vmap(one))(x)
