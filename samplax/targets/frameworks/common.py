"""What the NumPyro and PyMC adapters share: the flat layout of named blocks, error messages."""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import jax.numpy as jnp

#: ``((name, shape), ...)``: named blocks, in order, of a flat vector
Layout = Tuple[Tuple[str, Tuple[int, ...]], ...]


def layout_size(layout: Layout) -> int:
    """Total number of scalars of the blocks."""
    return sum(math.prod(shape) for _, shape in layout)


def split_flat(layout: Layout, x) -> Dict[str, jnp.ndarray]:
    """``{name: block}``: the flat vector ``x`` cut into the blocks of ``layout`` (C order)."""
    out, start = {}, 0
    for name, shape in layout:
        n = math.prod(shape)
        out[name] = jnp.reshape(x[start:start + n], shape)
        start += n
    return out


def join_flat(layout: Layout, blocks: Dict[str, object], fn_name: str) -> jnp.ndarray:
    """Inverse of :func:`split_flat`: one flat vector from ``{name: block}`` (each block of its shape)."""
    missing = [n for n, _ in layout if n not in blocks]
    if missing:
        raise ValueError(f"{fn_name}: values are missing for {missing} (needs {[n for n, _ in layout]})")
    parts = []
    for name, shape in layout:
        v = jnp.asarray(blocks[name])
        if tuple(v.shape) != tuple(shape):
            raise ValueError(f"{fn_name}: the value of {name!r} must have shape {tuple(shape)}, got {tuple(v.shape)}")
        parts.append(jnp.reshape(v, (-1,)))
    dtype = jnp.result_type(float)
    return jnp.concatenate([p.astype(dtype) for p in parts]) if parts else jnp.zeros((0,), dtype)


def shape_tuple(shape: Sequence) -> Tuple[int, ...]:
    """A shape as a tuple of Python ints (hashable: part of a target's static structure)."""
    return tuple(int(s) for s in shape)


def short(e: BaseException, limit: int = 400) -> str:
    """``TypeName: message`` of an exception, its first lines cut to ``limit`` characters."""
    msg = str(e).strip()
    if len(msg) > limit:
        msg = msg[:limit] + " ..."
    return f"{type(e).__name__}: {msg}"


class HostOnly:
    """A host-side helper object carried by a target that takes no part in its identity: every
    ``HostOnly`` equals every other, so two targets that differ only here share compiled programs.
    What it holds is only used on the host (never inside a traced log-density)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, HostOnly)

    def __hash__(self):
        return hash(HostOnly)

    def __repr__(self):
        return "HostOnly(...)"


class LayoutNamed:
    """The ``event_shape`` (the flat size of the ``latent`` layout) and ``name`` (the ``label`` field) that the
    framework targets share; mixed into their ``Target`` classes."""

    @property
    def event_shape(self):
        return (layout_size(self.latent),)

    @property
    def name(self):
        return self.label
