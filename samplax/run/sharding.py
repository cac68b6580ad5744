"""Sharding a batch of chains, runs or particles over devices (``jax.sharding``, a 1-D mesh).

The batch axis (chains of a chain method, independent runs of a population
method) is split over a 1-D mesh ``("batch",)``; every device runs the same
per-chain code on its slice with ``jax.shard_map``, so draws equal a
single-device run with the same seed.  Multi-host runs: call
``jax.distributed.initialize()`` on every host before ``samplax.sample``;
``jax.devices()`` then lists every host's devices and the same mesh spans them.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


def resolve_devices(devices, num_units: int, *, what: str = "chains") -> Optional[Sequence]:
    """The devices to shard ``num_units`` equal units (blocks of chains, runs) over, or ``None`` for one device.

    ``devices``: ``None`` (default: every device of the default backend when the units divide evenly
    over them, else one device), an int ``n`` (the first ``n`` devices; the units must divide evenly),
    or a sequence of devices.
    """
    if devices is None:
        all_devices = jax.devices()
        if len(all_devices) > 1 and num_units % len(all_devices) == 0:
            return list(all_devices)
        return None
    if isinstance(devices, bool):
        raise TypeError(f"sample: devices must be None, an int >= 1 or a list of devices, got {devices!r}")
    if isinstance(devices, (int, np.integer)):
        n = int(devices)
        available = jax.devices()
        if not 1 <= n <= len(available):
            raise ValueError(f"sample: devices={n} must be in [1, {len(available)}] (the devices available)")
        chosen = list(available[:n])
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("sample: devices must not be empty")
    if len(chosen) == 1:
        return None
    if num_units % len(chosen):
        raise ValueError(f"sample: {num_units} {what} cannot be split evenly over {len(chosen)} devices; "
                         f"choose num_chains (and chain blocks) divisible by the number of devices")
    return chosen


def make_mesh(devices: Sequence) -> Mesh:
    """A 1-D mesh over ``devices`` with the axis name :data:`AXIS`."""
    return Mesh(np.asarray(devices), (AXIS,))


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Split array axis ``axis`` over the mesh; the other axes are replicated."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis + [AXIS])))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def spec(axis: Optional[int]) -> PartitionSpec:
    """``PartitionSpec`` splitting ``axis`` over the mesh (``None``: replicated)."""
    return PartitionSpec() if axis is None else PartitionSpec(*([None] * axis + [AXIS]))


def shard_batch(fn, mesh: Mesh, in_axes: tuple, out_axes):
    """``jax.shard_map`` of ``fn`` over the mesh: argument ``j`` split along ``in_axes[j]`` (``None``:
    replicated); every output leaf split along ``out_axes`` (an int for all leaves, or a pytree of
    ints matching the output)."""
    in_specs = tuple(spec(a) for a in in_axes)
    if isinstance(out_axes, int):
        out_specs = spec(out_axes)
    else:
        out_specs = jax.tree.map(spec, out_axes)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def put(tree, mesh: Mesh, axis: Optional[int] = 0):
    """Place every leaf of ``tree`` on the mesh, split along ``axis`` (``None``: replicated)."""
    sh = replicated(mesh) if axis is None else batch_sharding(mesh, axis)
    return jax.tree.map(lambda a: jax.device_put(a, sh), tree)
