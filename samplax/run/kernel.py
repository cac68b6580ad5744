"""A user's own :class:`~samplax.core.types.Kernel` as a chain method, so the engine runs it like any other."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from samplax.core.method import Algorithm, MethodSpec, fixed_adapter
from samplax.core.types import Kernel

#: Info fields copied into the per-draw stats (ArviZ ``sample_stats`` names on the right).
_STAT_FIELDS = (("acceptance_rate", "acceptance_rate"), ("is_divergent", "diverging"), ("energy", "energy"),
                ("num_integration_steps", "n_steps"), ("tree_depth", "tree_depth"), ("step_size", "step_size"))


class _NoParams(NamedTuple):
    pass


def kernel_method(kernel: Kernel, event_shape: tuple, *, gradient_based: bool = True,
                  name: str = "kernel") -> MethodSpec:
    """A chain :class:`~samplax.core.method.MethodSpec` that runs ``kernel`` with no adaptation.

    ``kernel.init(key, position)`` receives a point of ``event_shape`` and ``kernel.step(key, state)``
    returns ``(state, info)``; the state must have ``.position`` (and, if present, ``.logdensity`` is
    reported as ``lp``).  Evaluation counts are read from ``info.num_logdensity_evals`` /
    ``info.num_grad_evals`` when the info has them (samplax kernels do); otherwise the cost record
    says they are unknown.
    """
    if not isinstance(kernel, tuple) or not (callable(getattr(kernel, "init", None))
                                             and callable(getattr(kernel, "step", None))):
        raise TypeError("sample: kernel must be a samplax.Kernel(init, step) (or any object with callable "
                        f"init(key, position) and step(key, state)), got {type(kernel).__name__}")
    shape = tuple(event_shape)
    counts_known = kernel_reports_counts(kernel, shape)

    def build(logdensity_fn, dim, num_warmup, num_chains, **options):
        del logdensity_fn, num_warmup, options

        def init(key, position):
            state = kernel.init(key, jnp.reshape(position, shape))
            if not hasattr(state, "position"):
                raise TypeError("sample: kernel.init must return a state with a .position field "
                                f"(such as samplax.PointState), got {type(state).__name__}")
            return state

        def step(key, state, params):
            del params
            new, info = kernel.step(key, state)
            return new, CountedInfo(info, jnp.asarray(getattr(info, "num_logdensity_evals", 0), jnp.int32),
                                    jnp.asarray(getattr(info, "num_grad_evals", 0), jnp.int32))

        def stats(state, info, params):
            del params
            out = {}
            if hasattr(state, "logdensity"):
                out["lp"] = jnp.asarray(state.logdensity)
            for field, stat in _STAT_FIELDS:
                if hasattr(info.inner, field):
                    out[stat] = jnp.asarray(getattr(info.inner, field))
            return out

        def position(state):
            return jnp.reshape(state.position, (dim,))

        return Algorithm(init, step, fixed_adapter(_NoParams, num_chains), stats, position=position,
                         logdensity=lambda s: getattr(s, "logdensity", jnp.nan))

    description = "a user-supplied Kernel(init, step), run without adaptation"
    if not counts_known:
        description += "; its info has no num_logdensity_evals / num_grad_evals, so its cost is unknown"
    return MethodSpec(name, build, description, {}, family="user", gradient_based=gradient_based)


class CountedInfo(NamedTuple):
    """The user's info with the engine's count fields (0 where the info has none)."""

    inner: Any
    num_logdensity_evals: jax.Array
    num_grad_evals: jax.Array


def kernel_reports_counts(kernel: Kernel, event_shape: tuple) -> bool:
    """Whether ``kernel.step``'s info has ``num_logdensity_evals`` and ``num_grad_evals`` (checked by
    ``jax.eval_shape`` on one point: nothing is computed)."""
    key = jax.random.key(0)
    x = jnp.zeros(event_shape, jnp.result_type(float))
    state = jax.eval_shape(kernel.init, key, x)
    _, info = jax.eval_shape(kernel.step, key, state)
    return hasattr(info, "num_logdensity_evals") and hasattr(info, "num_grad_evals")
