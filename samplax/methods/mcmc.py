"""Registration of rwm, mala, hmc and nuts: registered kernels with Stan-style windowed warm-up."""
from __future__ import annotations

from samplax.adaptation.windowed import window_adapter
from samplax.core.options import boolean, one_of, pos_int, pos_number, pos_number_or_none, prob
from samplax.mcmc import integrators
from samplax.mcmc.registry import get_kernel
from samplax.methods import Algorithm, MethodSpec, Option, register_method


def _common_options(target_accept):
    return {
        "target_accept": Option(target_accept, "target acceptance statistic for dual averaging", prob,
                                "a number in (0, 1)"),
        "dense_mass": Option(False, "adapt a dense (instead of diagonal) inverse mass matrix", boolean, "True/False"),
        "adapt_mass_matrix": Option(True, "adapt the inverse mass matrix in Stan's slow windows", boolean, "True/False"),
        "adapt_step_size": Option(True, "adapt the step size by dual averaging", boolean, "True/False"),
        "step_size": Option(None, "initial step size (None: Stan's heuristic)", pos_number_or_none,
                            "a positive number or None"),
        "pooled_adaptation": Option(False, "share step size and mass matrix across chains", boolean, "True/False"),
    }


def _adapter(logdensity_fn, params_cls, dim, num_warmup, num_chains, o, find_initial=True):
    return window_adapter(
        logdensity_fn, params_cls, dim, num_warmup, target_accept=o["target_accept"],
        dense=o["dense_mass"], pooled=o["pooled_adaptation"], adapt_step_size=o["adapt_step_size"],
        adapt_mass_matrix=o["adapt_mass_matrix"], initial_step_size=o["step_size"],
        find_initial_step_size=find_initial, num_chains=num_chains)


def _basic_stats(state, info, params):
    return {
        "acceptance_rate": info.acceptance_rate,
        "step_size": params.step_size,
        "lp": state.logdensity,
        "nonfinite": info.is_nonfinite,
    }


def _hmc_stats(state, info, params):
    out = _basic_stats(state, info, params)
    out.update(diverging=info.is_divergent, energy=info.energy, n_steps=info.num_integration_steps)
    return out


def _nuts_stats(state, info, params):
    out = _hmc_stats(state, info, params)
    out.update(tree_depth=info.tree_depth)
    return out


def windowed_builder(kernel: str, stats, structural=(), find_initial_step_size=True, default_step_size=None):
    """``build`` of the chain method that runs the registered kernel ``kernel`` (params
    ``(step_size, inverse_mass_matrix)``) with Stan's windowed warm-up.

    ``structural``: the method options passed to the kernel's ``build_kernel`` by name;
    ``default_step_size(dim)``: the initial step size when the option ``step_size`` is None
    (None: Stan's heuristic when ``find_initial_step_size``).
    """
    spec = get_kernel(kernel)

    def build(logdensity_fn, dim, num_warmup, num_chains, **o):
        def init(key, position):
            return spec.init(key, position, logdensity_fn)

        if o["step_size"] is None and default_step_size is not None:
            o = dict(o, step_size=default_step_size(dim))
        step = spec.build_kernel(logdensity_fn, **{k: o[k] for k in structural})
        return Algorithm(init, step, _adapter(logdensity_fn, spec.params_cls, dim, num_warmup, num_chains, o,
                                              find_initial_step_size), stats)

    return build


# RWM starts at 2.38 / sqrt(d) without the heuristic.  (The kernel spec's 2.38 * d**-0.5, used by the SMC
# mutations, differs from it in the last bit for some d; kept apart so that seeded draws do not change.)
_build_rwm = windowed_builder("rwm", _basic_stats, find_initial_step_size=False,
                              default_step_size=lambda dim: 2.38 / dim**0.5)
_build_mala = windowed_builder("mala", _basic_stats)
_build_hmc = windowed_builder("hmc", _hmc_stats, ("num_integration_steps", "integrator"))
_build_nuts = windowed_builder("nuts", _nuts_stats, ("max_tree_depth", "divergence_threshold", "integrator"))


def _kernel_method(name, build, description, options):
    """The chain method ``name`` of the registered kernel ``name`` (gradient use and the default
    acceptance target from its :class:`~samplax.mcmc.registry.KernelSpec`)."""
    spec = get_kernel(name)
    return register_method(MethodSpec(name, build, description, {**_common_options(spec.target_accept), **options},
                                      gradient_based=spec.gradient_based))


_kernel_method("rwm", _build_rwm, "Random-walk Metropolis with adapted Gaussian proposal (Metropolis 1953)", {})
_kernel_method("mala", _build_mala, "Metropolis-adjusted Langevin, preconditioned (Roberts & Tweedie 1996)", {})
_kernel_method("hmc", _build_hmc, "Hamiltonian Monte Carlo, static trajectory (Neal 2011)", {
    "num_integration_steps": Option(16, "leapfrog steps per transition", pos_int, "an int >= 1"),
    "integrator": Option("velocity_verlet", "symplectic integrator", one_of(integrators.INTEGRATORS),
                         f"one of {sorted(integrators.INTEGRATORS)}")})
_kernel_method("nuts", _build_nuts, "No-U-Turn Sampler, multinomial (Hoffman & Gelman 2014; Betancourt 2017)", {
    "max_tree_depth": Option(10, "maximum tree depth (2^depth leapfrog steps)",
                             lambda v: pos_int(v) and v <= 30, "an int in [1, 30]"),
    "divergence_threshold": Option(1000.0, "energy error that counts as a divergence",
                                   pos_number, "a positive number"),
    "integrator": Option("velocity_verlet", "symplectic integrator", one_of(integrators.INTEGRATORS),
                         f"one of {sorted(integrators.INTEGRATORS)}")})
