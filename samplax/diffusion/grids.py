"""Step grids: ``n + 1`` decreasing VE noise levels from ``sigma_max`` to ``sigma_end > 0``.

A grid is structure (its length is fixed at build time); its values are an
array passed to the jitted sampler, so changing ``sigma_max`` never retraces.
Whether the sampler then takes a final step to ``sigma = 0`` is decided by
:func:`samplax.diffusion.sample` (``final_step=``), not by the grid.

Grids (``lambda = -log sigma`` is half the log-SNR):

* ``"logsnr"`` -- uniform in ``lambda`` (DPM-Solver, Lu et al. 2022).
* ``"karras"`` -- ``sigma_i = (smax^(1/rho) + i/n (send^(1/rho) - smax^(1/rho)))^rho``, rho = 7
  (Karras et al. 2022).
* ``"time"`` -- uniform in the time of a schedule (default :class:`VPLinear`), as DDIM's
  "trailing/linspace" spacing does for a VP model (Song et al. 2021).
* ``"polynomial"`` -- ``t_i = (tmax^(1/k) + i/n (tmin^(1/k) - tmax^(1/k)))^k`` in schedule time,
  k = 2 ("quadratic" DEIS grid, Zhang & Chen 2023).
* ``"beta"`` -- schedule times at the quantiles of Beta(0.6, 0.6) (Lee et al. 2024,
  "Beta sampling is all you need").
* ``"given"`` -- the nodes passed as ``grid_options={"nodes": ...}`` (checked against ``n``, ``sigma_max`` and
  ``sigma_end``), e.g. the grid of :func:`samplax.diffusion.search_schedule`.
* ``"optimized"`` -- tuned for a given model, solver and NFE: the log-sigma step lengths
  (and the last positive node) that minimise the mean endpoint error against an exact
  PF-ODE solve on a tuning batch, by Adam through the solver (in the spirit of Align Your
  Steps, Sabour et al. 2024); cached per (model, solver, NFE, ...). See
  :mod:`samplax.diffusion.optimize_grid`. Through :func:`samplax.diffusion.sample` the
  model and solver are supplied automatically.
"""
from __future__ import annotations

from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.schedules import Schedule, VPLinear

_GRIDS: Dict[str, Callable] = {}


def _register(name):
    def deco(fn):
        if name in _GRIDS:
            raise ValueError(f"grid {name!r} already registered")
        _GRIDS[name] = fn
        return fn
    return deco


def grid_names() -> list:
    """Names accepted by ``grid=`` in :func:`make_grid` and :func:`samplax.diffusion.sample`."""
    return sorted(_GRIDS) + ["optimized"]


@_register("logsnr")
def logsnr_grid(n, sigma_max, sigma_end):
    """Uniform in ``log sigma`` (i.e. in log-SNR): geometric noise levels."""
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_end), n + 1))


@_register("karras")
def karras_grid(n, sigma_max, sigma_end, rho: float = 7.0):
    """Karras et al. (2022) eq. 5: uniform in ``sigma^(1/rho)``."""
    a, b = sigma_max ** (1.0 / rho), sigma_end ** (1.0 / rho)
    return (a + np.linspace(0.0, 1.0, n + 1) * (b - a)) ** rho


def _times(schedule: Schedule, sigma_max, sigma_end):
    t_hi = float(schedule.t_from_sigma_ve(jnp.asarray(sigma_max, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)))
    t_lo = float(schedule.t_from_sigma_ve(jnp.asarray(sigma_end)))
    return t_hi, t_lo


def _sigmas_at(schedule: Schedule, t, sigma_max, sigma_end):
    s = np.array(schedule.sigma_ve(jnp.asarray(t)), dtype=np.float64)
    s[0], s[-1] = sigma_max, sigma_end  # remove round-off at the endpoints
    return s


@_register("time")
def time_grid(n, sigma_max, sigma_end, schedule: Schedule | None = None):
    """Uniform in the schedule's time ``t`` (default schedule: :class:`VPLinear`)."""
    schedule = schedule or VPLinear()
    t_hi, t_lo = _times(schedule, sigma_max, sigma_end)
    return _sigmas_at(schedule, np.linspace(t_hi, t_lo, n + 1), sigma_max, sigma_end)


@_register("polynomial")
def polynomial_grid(n, sigma_max, sigma_end, schedule: Schedule | None = None, power: float = 2.0):
    """Uniform in ``t^(1/power)`` of the schedule's time (power 2 = DEIS's quadratic grid)."""
    schedule = schedule or VPLinear()
    t_hi, t_lo = _times(schedule, sigma_max, sigma_end)
    a, b = t_hi ** (1.0 / power), t_lo ** (1.0 / power)
    return _sigmas_at(schedule, (a + np.linspace(0.0, 1.0, n + 1) * (b - a)) ** power, sigma_max, sigma_end)


def _beta_ppf(q, a, b):
    """Quantiles of Beta(a, b) by bisection on ``jax.scipy.special.betainc`` (60 halvings)."""
    q = np.asarray(q, dtype=np.float64)
    lo, hi = np.zeros_like(q), np.ones_like(q)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        f = np.asarray(jax.scipy.special.betainc(a, b, jnp.asarray(mid)))
        lo = np.where(f < q, mid, lo)
        hi = np.where(f < q, hi, mid)
    return 0.5 * (lo + hi)


@_register("beta")
def beta_grid(n, sigma_max, sigma_end, schedule: Schedule | None = None, a: float = 0.6, b: float = 0.6):
    """Schedule times at Beta(a, b) quantiles of a uniform grid (Lee et al. 2024): denser at both ends."""
    schedule = schedule or VPLinear()
    t_hi, t_lo = _times(schedule, sigma_max, sigma_end)
    u = _beta_ppf(np.linspace(0.0, 1.0, n + 1), a, b)
    u[0], u[-1] = 0.0, 1.0
    return _sigmas_at(schedule, t_hi + u * (t_lo - t_hi), sigma_max, sigma_end)


@_register("given")
def given_grid(n, sigma_max, sigma_end, nodes=None):
    """The nodes given in ``nodes`` (e.g. a grid searched by :func:`samplax.diffusion.search_schedule`): ``n + 1``
    strictly decreasing values from ``sigma_max`` to ``sigma_end`` (checked, relative tolerance 1e-9)."""
    if nodes is None:
        raise ValueError("make_grid: grid 'given' needs the option nodes (n + 1 decreasing noise levels)")
    a = np.asarray(nodes, dtype=np.float64)
    if a.ndim != 1 or a.size != n + 1:
        raise ValueError(f"make_grid: grid 'given' needs n + 1 = {n + 1} nodes for this call, got shape {a.shape}")
    if not (np.isclose(a[0], sigma_max, rtol=1e-9, atol=0.0) and np.isclose(a[-1], sigma_end, rtol=1e-9, atol=0.0)):
        raise ValueError(f"make_grid: grid 'given' runs from {a[0]} to {a[-1]}, but the call's sigma_max and sigma_end "
                         f"are {sigma_max} and {sigma_end}")
    return np.concatenate([[sigma_max], a[1:-1], [sigma_end]])


def make_grid(name: str, n: int, sigma_max: float, sigma_end: float, **options) -> np.ndarray:
    """``n + 1`` decreasing noise levels from ``sigma_max`` to ``sigma_end`` on the named grid.

    Args:
      name: one of :func:`grid_names` (``"optimized"`` needs ``model=`` and goes
        through :func:`samplax.diffusion.optimize_grid.optimized_grid`).
      n: number of intervals (>= 1).
      sigma_max, sigma_end: first and last noise level, ``sigma_max > sigma_end > 0``.
      options: grid-specific options (``rho``, ``schedule``, ``power``, ``a``, ``b``).
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"make_grid: n must be an int >= 1, got {n!r}")
    sigma_max, sigma_end = float(sigma_max), float(sigma_end)
    if not (np.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"make_grid: sigma_max must be positive and finite, got {sigma_max}")
    if not (0 < sigma_end < sigma_max):
        raise ValueError(f"make_grid: need 0 < sigma_end < sigma_max, got sigma_end={sigma_end}, sigma_max={sigma_max}")
    if name == "optimized":
        missing = [k for k in ("model", "solver", "nfe", "event_shape") if k not in options]
        if missing:
            raise ValueError(f"make_grid: grid 'optimized' needs the options {missing} "
                             "(or use sample(..., grid='optimized'), which supplies them)")
        from samplax.diffusion.optimize_grid import optimized_grid
        options = dict(options)
        return optimized_grid(options.pop("model"), n=int(n), sigma_max=sigma_max, sigma_end=sigma_end, **options)
    if name not in _GRIDS:
        raise ValueError(f"make_grid: unknown grid {name!r}; choose one of {grid_names()}")
    s = np.asarray(_GRIDS[name](int(n), sigma_max, sigma_end, **options), dtype=np.float64)
    if not np.all(np.diff(s) < 0):
        raise ValueError(f"make_grid: grid {name!r} is not strictly decreasing for these arguments")
    return s
