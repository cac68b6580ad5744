"""The method registry: every name that ``samplax.sample(target, method=NAME)`` accepts.

A registered entry is a :class:`~samplax.core.method.MethodSpec` (data: options,
structure, and either ``build`` for a chain method, ``population`` for a
population method, or ``runner`` for a controlled one); the run engine
(:mod:`samplax.run`) runs it.  Registering a method is one
``register_method(MethodSpec(...))`` line in its module; the chain method of a
kernel that declares one (:class:`~samplax.mcmc.registry.ChainMethod`) needs none:
it is read from the kernel registry (:mod:`samplax.methods.kernels`).
"""
from __future__ import annotations

from samplax.core.method import (  # noqa: F401  (the method contract, re-exported for method modules)
    Adapter, Algorithm, MethodSpec, Option, PopulationContext, PopulationOutput, PopulationPlan, fixed_adapter,
)
from samplax.registry import Registry

METHODS = Registry("method")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Register ``spec`` under ``spec.name`` (a duplicate name is an error)."""
    METHODS.register(spec.name)(spec)
    return spec


def _sync_kernel_methods() -> None:
    """Register the chain method of every registered kernel that declares one and is not registered yet
    (kernels registered after import, e.g. a user's, included)."""
    for name in kernel_names():
        kernel = get_kernel(name)
        if kernel.method is not None and name not in METHODS:
            register_method(kernel_method_spec(kernel))


def get_method(name: str) -> MethodSpec:
    """The registered method ``name`` (``KeyError`` naming the known methods otherwise)."""
    if name not in METHODS:
        _sync_kernel_methods()
    return METHODS.get(name)


def method_names() -> list:
    """Every name that ``method=`` accepts."""
    _sync_kernel_methods()
    return METHODS.names()


# chain methods declared by their kernels (rwm, mala, hmc, nuts, slice samplers, Langevin schemes, MCLMC)
from samplax.mcmc.registry import get_kernel, kernel_names  # noqa: E402
from samplax.methods.kernels import kernel_method_spec  # noqa: E402

_sync_kernel_methods()

from samplax.methods import proximal  # noqa: E402,F401  (myula, bregman_myula)
from samplax.methods import smc  # noqa: E402,F401  (registers smc, waste_free_smc, ais, population_annealing, ...)
from samplax.methods import interacting  # noqa: E402,F401  (ensembles, SVGD, walk-jump, RDMC, ...)
from samplax.methods import auto  # noqa: E402,F401  (registers auto, nuts_fisher, nuts_lowrank, chees_hmc)
from samplax.methods import neural  # noqa: E402,F401  (registers the learned diffusion samplers pis, dds)
from samplax.methods import gfn  # noqa: E402,F401  (registers tb, dgfs, dis)
from samplax.methods import idem  # noqa: E402,F401  (registers idem, iterated denoising energy matching)
from samplax.methods import flow_perturbation  # noqa: E402,F401  (registers flow_perturbation)
from samplax.methods import snf  # noqa: E402,F401  (registers the flow samplers snf, mixflow)
from samplax.methods import flows  # noqa: E402,F401  (registers the normalizing-flow samplers flow, fab, neutra)
