"""The method registry: every name that ``samplax.sample(target, method=NAME)`` accepts.

A registered entry is a :class:`~samplax.core.method.MethodSpec` (data: options,
structure, and either ``build`` for a chain method, ``population`` for a
population method, or ``runner`` for a controlled one); the run engine
(:mod:`samplax.run`) runs it.  Registering a method is one
``register_method(MethodSpec(...))`` line in its module.
"""
from __future__ import annotations

from samplax.core.method import (  # noqa: F401  (the method contract, re-exported for method modules)
    Adapter, Algorithm, MethodSpec, Option, PopulationContext, PopulationOutput, PopulationPlan, fixed_adapter,
)
from samplax.registry import Registry

METHODS = Registry("method")


def register_method(spec: MethodSpec) -> MethodSpec:
    METHODS.register(spec.name)(spec)
    return spec


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)


def method_names() -> list:
    """Every name that ``method=`` accepts."""
    return METHODS.names()


from samplax.methods import mcmc  # noqa: E402,F401  (registers rwm, mala, hmc, nuts)
from samplax.methods import slice  # noqa: E402,F401  (gpss, elliptical_slice, hit_and_run_slice)
from samplax.methods import langevin  # noqa: E402,F401  (ula, kinetic_langevin, randomized midpoint schemes)
from samplax.methods import mclmc  # noqa: E402,F401  (mclmc, adjusted_mclmc)
from samplax.methods import proximal  # noqa: E402,F401  (myula, bregman_myula)
from samplax.methods import smc  # noqa: E402,F401  (registers smc, waste_free_smc, ais, population_annealing, ...)
from samplax.methods import interacting  # noqa: E402,F401  (ensembles, SVGD, walk-jump, RDMC, ...)
from samplax.methods import auto  # noqa: E402,F401  (registers auto, nuts_fisher, nuts_lowrank, chees_hmc)
