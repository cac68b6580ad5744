"""Pieces that kernel modules share when they declare their chain method
(:class:`~samplax.mcmc.registry.ChainMethod`): the standard per-step stats and the
options and messages several kernels use."""
from __future__ import annotations

from samplax.core.method import Option
from samplax.core.options import one_of, pos_float, prob
from samplax.mcmc import integrators


def basic_stats(state, info, params):
    """Acceptance statistic, step size, log-density and the non-finite flag of one step."""
    return {
        "acceptance_rate": info.acceptance_rate,
        "step_size": params.step_size,
        "lp": state.logdensity,
        "nonfinite": info.is_nonfinite,
    }


def hmc_stats(state, info, params):
    """:func:`basic_stats` plus divergences, the energy and the integration steps of a trajectory."""
    out = basic_stats(state, info, params)
    out.update(diverging=info.is_divergent, energy=info.energy, n_steps=info.num_integration_steps)
    return out


def energy_stats(state, info, params):
    """:func:`basic_stats` plus the energy (kinetic Langevin schemes)."""
    out = basic_stats(state, info, params)
    out["energy"] = info.energy
    return out


def integrator_option() -> Option:
    """The ``integrator`` option of the Hamiltonian kernels."""
    return Option("velocity_verlet", "symplectic integrator", one_of(integrators.INTEGRATORS),
                  f"one of {sorted(integrators.INTEGRATORS)}")


def surrogate_target_accept(target_accept: float, doc: str) -> Option:
    """The ``target_accept`` option of an unadjusted kernel (``doc`` says what the surrogate statistic is)."""
    return Option(target_accept, doc, prob, "a number in (0, 1)")


#: ``target_accept`` of the unadjusted Langevin schemes whose surrogate is a Metropolis acceptance probability.
SURROGATE = ("target acceptance statistic for dual averaging (a surrogate: the Metropolis acceptance "
             "probability the move would have had; the move is always taken)")

#: Why the unadjusted Langevin schemes are biased (their ``biased`` run warning).
LANGEVIN_BIAS = ("its stationary distribution is not the target at any finite step size (the bias shrinks "
                 "with the step size); lower target_accept or pass a smaller step_size to reduce it")

#: The friction option of the kinetic (underdamped) Langevin schemes.
FRICTION = Option(1.0, "friction gamma (in units of the adapted metric's time scale)", pos_float, "a positive number")
