"""The kernel registry: every single-chain MCMC kernel of :mod:`samplax.mcmc`, declared as data.

A kernel module ends with one line, ``register_kernel(KernelSpec(...))``: its
``init``, ``build_kernel``, params type, public factory and the facts other
parts need to use it without a table of their own (gradient-based or not,
exact or biased, whether its params are the tunable ``(step_size,
inverse_mass_matrix)`` pair, the default acceptance targets and the scale-free
initial step size), and, in :class:`ChainMethod`, the chain method of the same
name: its description, options, per-step stats and the kind of warm-up adapter.
``samplax.mcmc`` builds its public factories from this registry;
``samplax.sample(target, "<name>")`` runs the declared chain method (the method
registry reads the kernel registry: nothing else to register); the SMC mutations
and parallel tempering accept any registered kernel that leaves the target
invariant and takes the tunable pair (:func:`samplax.smc.mutation.kernel_names`).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional

from samplax.registry import Registry


@dataclasses.dataclass(frozen=True)
class ChainMethod:
    """The chain method of a kernel (``samplax.sample(target, "<kernel name>")``), declared as data
    in the kernel's own module.

    Attributes:
      description: one line for ``samplax list methods`` (what it is, the paper).
      stats: ``stats(state, info, params) -> dict`` of per-step arrays the Result keeps
        (``lp`` and ``nonfinite`` at least; ``acceptance_rate``, ``step_size``, ``diverging``,
        ``energy``, ``n_steps``, ``tree_depth`` where they exist).
      adapter: the kind of warm-up (a name of :data:`samplax.adaptation.kinds.ADAPTER_KINDS`):
        ``"windowed"`` (Stan's windows: dual averaging and a diagonal/dense metric; params
        ``params_cls(step_size, inverse_mass_matrix)``), ``"windowed_flag"`` (the same with a
        warm-up flag: ``make_params(p, in_warmup, dim, options)``), ``"moments"`` (centre and
        scales of a whitening: ``make_params(center, scale, options)``), ``"mclmc"``
        (Robnik et al.'s energy-variance tuning).  The kind declares its own options
        (e.g. ``target_accept``), with this kernel's defaults.
      options: further options (name -> :class:`~samplax.core.method.Option`); those named
        like an argument of ``build_kernel`` are passed to it (structural: they recompile).
      make_params: the params from the adapter's output (see ``adapter``); None: the
        adapter's params are the kernel's.
      bias: for a kernel that is not exact, the reason (a ``biased`` warning on every run).
      min_dim: the smallest target dimension it accepts (a clear error below).
      default_step_size: ``default_step_size(dim) -> float``: the initial step size when the
        option ``step_size`` is None, instead of the kind's own heuristic.
      settings: further facts for the adapter kind (e.g. ``{"find_initial_step_size": False}``).
    """

    description: str
    stats: Callable
    adapter: str = "windowed"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    make_params: Optional[Callable] = None
    bias: Optional[str] = None
    min_dim: int = 1
    default_step_size: Optional[Callable[[int], float]] = None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


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
      method: the chain method of the same name (:class:`ChainMethod`); None: the kernel is
        only a building block (``samplax.mcmc.<name>``, SMC mutations, a method registered
        by hand).
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
    method: Optional[ChainMethod] = None

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
