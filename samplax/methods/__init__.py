"""The method registry: every name that ``samplax.sample(target, method=NAME)`` accepts.

A registered entry is a :class:`MethodSpec`; its ``build`` returns an
:class:`Algorithm`, the single-chain kernel plus a warm-up
:class:`~samplax.adaptation.windowed.Adapter` over the batch of chains, which
the driver runs inside one compiled program.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

from samplax.registry import Registry

METHODS = Registry("method")


class Algorithm(NamedTuple):
    """What the driver runs.

    Attributes:
      init: ``init(key, position) -> state`` for one chain (flat position).
      step: ``step(key, state, params) -> (state, info)`` for one chain.
      adapter: warm-up over all chains (``init``, ``update``, ``params``).
      stats: ``stats(state, info, params) -> dict`` of per-draw scalars for one
        chain, with ArviZ ``sample_stats`` names.
      position: ``position(state) -> flat position``.
      logdensity: ``logdensity(state) -> scalar``.
    """

    init: Callable
    step: Callable
    adapter: Any
    stats: Callable
    position: Callable = lambda s: s.position
    logdensity: Callable = lambda s: s.logdensity


@dataclasses.dataclass(frozen=True)
class Option:
    default: Any
    doc: str
    check: Optional[Callable[[Any], bool]] = None
    requirement: str = ""


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered sampling method.

    ``build(logdensity_fn, dim, num_warmup, num_chains, **options) -> Algorithm``.
    ``options`` documents every keyword the method accepts (with defaults);
    unknown or invalid options are rejected with a clear error.
    """

    name: str
    build: Callable
    description: str
    options: dict
    family: str = "mcmc"
    gradient_based: bool = True
    #: For methods that are not single-chain kernels (SMC, ensembles, particle
    #: methods): ``runner(target, spec, *, seed, num_chains, num_warmup, num_samples,
    #: init, progress, **options) -> Result``.  ``build`` is then unused.
    runner: Optional[Callable] = None
    #: A registered target this method is made for (the conformance suite runs
    #: the method on it); None means any target (a standard Gaussian is used).
    example_target: Optional[str] = None
    #: Whether the method writes checkpoints (``sample(checkpoint_dir=...)``); None: inferred, see
    #: :attr:`supports_checkpoints`.
    checkpoints: Optional[bool] = None

    @property
    def supports_checkpoints(self) -> bool:
        """Whether ``sample(..., checkpoint_dir=..., thinning=...)`` works: chain methods run by the driver
        and runners that wrap it (they declare ``driver_options``), unless ``checkpoints=False`` (``auto``,
        whose warm-up decisions are made on the host).  Population methods (SMC, nested sampling,
        ensembles, particle flows) run as one compiled program and have no checkpoints."""
        import inspect

        if self.checkpoints is not None:
            return self.checkpoints
        return self.runner is None or "driver_options" in inspect.signature(self.runner).parameters

    def resolve_options(self, given: dict) -> dict:
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise TypeError(
                f"method {self.name!r} got unknown option(s) {unknown}; "
                f"it accepts {sorted(self.options)}"
            )
        out = {}
        for k, opt in self.options.items():
            v = given.get(k, opt.default)
            if k in given and opt.check is not None and not opt.check(v):
                raise ValueError(f"method {self.name!r}: option {k}={v!r} is invalid: {opt.requirement}")
            out[k] = v
        return out


def register_method(spec: MethodSpec) -> MethodSpec:
    METHODS.register(spec.name)(spec)
    return spec


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)


def method_names() -> list:
    """Every name that ``method=`` accepts."""
    return METHODS.names()


from samplax.methods import mcmc  # noqa: E402,F401  (registers rwm, mala, hmc, nuts)
from samplax.methods import mcmc_extra  # noqa: E402,F401  (gpss, slice samplers, Langevin family)
from samplax.methods import smc  # noqa: E402,F401  (registers smc, waste_free_smc, ais, population_annealing, ...)
from samplax.methods import particles  # noqa: E402,F401  (ensembles, SVGD, walk-jump, RDMC, ...)
from samplax.methods import auto  # noqa: E402,F401  (registers auto, nuts_fisher, nuts_lowrank, chees_hmc)
