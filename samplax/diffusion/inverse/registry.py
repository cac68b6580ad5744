"""The registry of posterior samplers behind :func:`samplax.diffusion.inverse.sample`.

A method is data, :class:`InverseMethod`: its options (``samplax.core.method.Option`` with a check), a
host-side ``plan`` (noise levels, the float parameters that enter the compiled program as data, the
structural options that shape it, and the planned number of denoiser evaluations and VJPs) and a ``run``
traced once per structure. One file per method registers it with :func:`register`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional

import numpy as np

from samplax.core.method import Option


class Plan(NamedTuple):
    """What a method's ``plan`` returns (host side).

    Attributes:
      sigmas: the noise levels the program walks (numpy, float64; may be empty for a method without a grid).
      params: float parameters (numbers or numpy arrays) passed to the program as data (no recompilation).
      static: structural options ``((name, value), ...)`` (hashable) that the program is compiled for.
      model_evals: planned denoiser evaluations (one point each) of the whole call.
      model_vjps: planned vector-Jacobian products through the denoiser of the whole call.
      num_steps: the number of steps that the non-finite tracker numbers (for its messages).
      likelihood_grads: planned gradients of ``log p(y | x)`` that do not go through the denoiser.
      items: how many tracked items the program has (samples, or particles for a particle method).
      item: what an item is called in messages (``"sample"`` or ``"particle"``).
    """

    sigmas: np.ndarray
    params: Dict[str, Any]
    static: tuple
    model_evals: int
    model_vjps: int
    num_steps: int
    likelihood_grads: int = 0
    items: int = 0
    item: str = "sample"


class MethodOutput(NamedTuple):
    """What a method's compiled ``run`` returns: samples ``[num_samples, *shape]``, the denoiser evaluations and
    VJPs it counted (int32 scalars), the non-finite tracker of its items and a dict of extra arrays."""

    samples: Any
    model_evals: Any
    model_vjps: Any
    nonfinite: Any
    extras: Dict[str, Any]


class InverseMethod(NamedTuple):
    """A registered posterior sampler.

    Attributes:
      name: the ``method=`` name.
      summary: one line: what it is and the paper.
      options: ``{name: Option}`` (defaults, docs, checks).
      plan: ``plan(problem, nfe, sigma_max, num_samples, options) -> Plan`` (host; raises ValueError on bad input).
      run: ``run(denoiser, problem, key, sigmas, params, num_samples, shape, **static) -> MethodOutput`` (traced).
      exact: asymptotically exact (in particles and steps), e.g. SMC with a log-evidence estimate.
      linear_only: needs a :class:`~samplax.diffusion.inverse.problems.LinearGaussian` problem.
      bias: what the method's known bias is (documented, measured in the tests); empty for exact methods.
      finish: optional ``finish(extras: dict of numpy, plan) -> dict`` of host-side info entries.
      remedy: what to try when every draw's state went non-finite and the method's own update may be the cause
        (a guidance or Langevin step too large for a small sigma_y); empty: only the model is suspected.
      adapt_denoiser: optional ``adapt_denoiser(denoiser, options, shape) -> D(x, sigma)`` for a method whose
        model has another signature (``ambient_dps``: ``D(x, sigma, mask)``); it checks its options.
    """

    name: str
    summary: str
    options: Dict[str, Option]
    plan: Callable
    run: Callable
    exact: bool = False
    linear_only: bool = False
    bias: str = ""
    finish: Optional[Callable] = None
    adapt_denoiser: Optional[Callable] = None
    remedy: str = ""

    def resolve_options(self, given: dict) -> dict:
        """Defaults filled in; unknown names are a TypeError, invalid values a ValueError naming the option."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise TypeError(f"inverse.sample: method {self.name!r} got unknown option(s) {unknown}; "
                            f"it accepts {sorted(self.options)}")
        out = {}
        for k, opt in self.options.items():
            v = given.get(k, opt.default)
            if k in given and opt.check is not None and not opt.check(v):
                raise ValueError(f"inverse.sample: method {self.name!r}: option {k}={v!r} is invalid: {opt.requirement}")
            out[k] = v
        return out


_METHODS: Dict[str, InverseMethod] = {}


def register(method: InverseMethod) -> InverseMethod:
    """Add a method to the registry (a name can be registered once)."""
    if method.name in _METHODS:
        raise ValueError(f"inverse method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> InverseMethod:
    """The registered method ``name`` (ValueError listing the names otherwise)."""
    if name not in _METHODS:
        raise ValueError(f"inverse.sample: unknown method {name!r}; choose one of {method_names()}")
    return _METHODS[name]


def method_names() -> list:
    """The names accepted by ``method=`` in :func:`samplax.diffusion.inverse.sample`, sorted."""
    return sorted(_METHODS)
