"""Diffusion ODE/SDE solvers (init/step, counted denoiser calls) and their registry."""
from __future__ import annotations

from functools import partial

from samplax.diffusion.solvers.base import (
    NonFinite, Solver, StepContext, mark_nonfinite, no_nonfinite, nonfinite_rows, run_solver,
)
from samplax.diffusion.solvers.ode import (
    IIA_BASES, bespoke, conjugate, dc_solver, ddim, dpm_solver_v3, deis, dpm_solver, dpmpp, eps_scaled, euler, ghvb, heun, iia_corrected, ipndm,
    unipc, USF_PREDICTIONS, USF_VARIANTS, usf,
)
from samplax.diffusion.solvers.sde import ddpm, er_sde, euler_maruyama, restart, sde_dpmpp_2m

SOLVERS = {
    "euler": euler,
    "ddim": ddim,
    "conjugate": conjugate,
    "heun": heun,
    "dpm_solver_1": partial(dpm_solver, order=1),
    "dpm_solver_2": partial(dpm_solver, order=2),
    "dpm_solver_3": partial(dpm_solver, order=3),
    "dpmpp_2m": partial(dpmpp, order=2),
    "dpmpp_3m": partial(dpmpp, order=3),
    "unipc_bh1": partial(unipc, variant="bh1", corrector=True),
    "unipc_bh2": partial(unipc, variant="bh2", corrector=True),
    "unip_bh1": partial(unipc, variant="bh1", corrector=False),
    "unip_bh2": partial(unipc, variant="bh2", corrector=False),
    "deis": deis,
    "ipndm": ipndm,
    "bespoke": bespoke,
    "dc_solver": dc_solver,
    "usf": usf,
    "dpm_solver_v3": dpm_solver_v3,
    "hb": partial(ghvb, order=1),
    "ghvb": ghvb,
    "euler_maruyama": euler_maruyama,
    "ddpm": ddpm,
    "sde_dpmpp_2m": sde_dpmpp_2m,
    "restart": restart,
    "er_sde": er_sde,
}


def eps_scaling(base: str = "dpmpp_2m", scale: float = 1.005, slope: float = 0.0, **base_options) -> Solver:
    """Epsilon scaling on the registered solver ``base`` (its options in ``base_options``): see
    :func:`samplax.diffusion.solvers.ode.eps_scaled`."""
    if base not in SOLVERS or base == "eps_scaling":
        raise ValueError(f"eps_scaling: base must be one of {sorted(set(SOLVERS) - {'eps_scaling'})}, got {base!r}")
    return eps_scaled(get_solver(base, **base_options), scale, slope)


SOLVERS["eps_scaling"] = eps_scaling


def iia(base: str = "ddim", coefficients=None, num_terms=None, nodes=None, **base_options) -> Solver:
    """Improved integration approximation on the registered one-call solver ``base`` (one of
    :data:`~samplax.diffusion.solvers.ode.IIA_BASES`; its options in ``base_options``) with per-step
    ``coefficients`` (``None``: ``base`` itself): see :func:`samplax.diffusion.solvers.ode.iia_corrected`; fitted
    by :func:`samplax.diffusion.fit_iia`."""
    if base not in IIA_BASES:
        raise ValueError(f"iia: base must be one of {IIA_BASES}, got {base!r}")
    return iia_corrected(get_solver(base, **base_options), coefficients, num_terms, nodes)


SOLVERS["iia"] = iia


def solver_names() -> list:
    """Names accepted by ``solver=`` in :func:`samplax.diffusion.sample` (plus ``"auto"``)."""
    return sorted(SOLVERS) + ["auto"]


def get_solver(name: str, **options) -> Solver:
    """Build the named solver; ``options`` go to its factory (e.g. ``order=3`` for ``unipc_bh2``)."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {solver_names()}")
    try:
        s = SOLVERS[name](**options)
    except TypeError as e:
        raise ValueError(f"solver {name!r}: invalid solver_options {options}: {e}") from None
    return s._replace(name=name)


__all__ = ["Solver", "StepContext", "run_solver", "NonFinite", "no_nonfinite", "mark_nonfinite", "nonfinite_rows", "SOLVERS", "solver_names", "get_solver",
           "euler", "ddim", "conjugate", "heun", "dpm_solver", "dpmpp", "unipc", "deis", "ipndm", "ghvb", "eps_scaling", "eps_scaled", "bespoke",
           "iia", "iia_corrected", "IIA_BASES", "dc_solver", "usf", "USF_PREDICTIONS", "USF_VARIANTS", "dpm_solver_v3",
           "euler_maruyama", "ddpm", "sde_dpmpp_2m", "restart", "er_sde"]
