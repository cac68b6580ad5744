"""The kernel registry: every single-chain MCMC kernel of :mod:`samplax.mcmc`, declared as data.

A kernel module ends with one line, ``register_kernel(KernelSpec(...))``: its
``init``, ``build_kernel``, params type, public factory and the facts other
parts need to use it without a table of their own (gradient-based or not,
exact or biased, whether its params are the tunable ``(step_size,
inverse_mass_matrix)`` pair, the default acceptance targets and the scale-free
initial step size).  ``samplax.mcmc`` builds its public factories from this
registry; the SMC mutations and parallel tempering accept any registered kernel
that leaves the target invariant and takes the tunable pair
(:func:`samplax.smc.mutation.kernel_names`).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Optional

from samplax.registry import Registry


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A registered MCMC kernel (one chain).

    Attributes:
      name: the public name (``samplax.mcmc.<name>``; the chain method of the same name uses it).
      init: ``init(key, position, logdensity_fn, ...) -> state`` (key first, always).
      build_kernel: ``build_kernel(logdensity_fn, **structural) -> step`` with
        ``step(key, state, params) -> (state, info)``; ``info`` has ``acceptance_rate``,
        ``is_nonfinite``, ``num_logdensity_evals`` and ``num_grad_evals``.  Structural
        arguments (closed over: changing them recompiles) are the keyword arguments after
        ``logdensity_fn`` (:attr:`structural`); numbers that may change arrive in ``params``.
      params_cls: the type of ``params`` (a NamedTuple of arrays).
      factory: ``factory(logdensity_fn, ...) -> Kernel(init, step)`` with fixed parameters:
        the public ``samplax.mcmc.<name>``.
      gradient_based: whether the kernel evaluates the gradient of the log-density.
      invariant: whether every step leaves the target exactly invariant (Metropolis-adjusted or
        exact slice moves).  Unadjusted discretizations (ULA, MCLMC, kinetic Langevin, MYULA)
        are not: their stationary law is only close to the target.
      tunable: whether ``params_cls(step_size, inverse_mass_matrix)`` is a valid params value
        (further fields, if any, have defaults): the step size and a diagonal or dense inverse
        mass matrix are all a warm-up or a population needs to tune.
      target_accept: default acceptance target of step-size adaptation in a chain's warm-up
        (dual averaging); None if the kernel has no such target.
      population_target_accept: default acceptance target when the step size is tuned from a
        population (SMC mutations, parallel tempering; a Robbins-Monro step on the mean
        acceptance); None: ``target_accept``.
      initial_step_size: ``initial_step_size(dim) -> float``: a starting step size in units of
        the adapted metric (scale free, so it depends on the dimension only); None if none.
      state_from_point: ``state_from_point(position, logdensity, logdensity_grad) -> state``
        for a point whose values are already known (``logdensity_grad`` is None for a
        gradient-free kernel); None: :class:`~samplax.core.types.PointState`.
      composite: ``init``/``build_kernel`` take the smooth part of a
        :class:`~samplax.core.composite.CompositeTarget` (and its prox among the structural
        arguments) instead of a plain log-density.
    """

    name: str
    init: Callable
    build_kernel: Callable
    params_cls: type
    factory: Callable
    gradient_based: bool
    invariant: bool
    tunable: bool = False
    target_accept: Optional[float] = None
    population_target_accept: Optional[float] = None
    initial_step_size: Optional[Callable[[int], float]] = None
    state_from_point: Optional[Callable] = None
    composite: bool = False

    @property
    def structural(self) -> tuple:
        """Names of ``build_kernel``'s structural arguments (those after ``logdensity_fn``)."""
        return tuple(inspect.signature(self.build_kernel).parameters)[1:]

    @property
    def module(self) -> str:
        """The module that defines the kernel (its factory's module)."""
        return self.factory.__module__


KERNELS = Registry("kernel")


def register_kernel(spec: KernelSpec) -> KernelSpec:
    """Register ``spec`` under ``spec.name`` (a duplicate name is an error)."""
    if not isinstance(spec, KernelSpec):
        raise TypeError(f"register_kernel: expected a KernelSpec, got {type(spec).__name__}")
    KERNELS.register(spec.name)(spec)
    return spec


def get_kernel(name: str) -> KernelSpec:
    """The registered kernel ``name`` (``KeyError`` naming the known kernels otherwise)."""
    return KERNELS.get(name)


def kernel_names() -> list:
    """Every registered kernel's name, sorted."""
    return KERNELS.names()
