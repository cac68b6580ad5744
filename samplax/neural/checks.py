"""Checks shared by the learned samplers' option validation."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def require_gradient(name: str, target, why: str, remedy: str = "") -> None:
    """Raise a ``ValueError`` naming the method when JAX cannot differentiate ``target``'s log-density.

    ``why`` says what of the method needs the gradient (e.g. "loss='kl' differentiates log pi(x_T)"), ``remedy``
    (optional) what to do instead.  The gradient is traced abstractly (``jax.eval_shape``) at the origin: nothing
    is evaluated.
    """
    lp = target.flat_logdensity()
    try:
        jax.eval_shape(jax.grad(lp), jnp.zeros((target.dim,), jnp.result_type(float)))
    except Exception as e:  # noqa: BLE001 - any failure to trace the gradient
        first = str(e).splitlines()[0] if str(e) else ""
        label = getattr(target, "name", target)
        raise ValueError(f"method {name!r}: the target {label!r} has no gradient JAX can compute "
                         f"({type(e).__name__}: {first}), but {why}" + (f"; {remedy}" if remedy else "")) from None
