"""Run configurations, their hash, and atomic checkpoints that resume bit for bit."""
from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.result import atomic_savez


class CheckpointMismatchError(ValueError):
    """The checkpoint in ``checkpoint_dir`` was written by a run with a different configuration."""


def config_hash(config: dict) -> str:
    """A short hash of a run configuration (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def target_id(target) -> dict:
    """Name, event shape, provenance and a hash of the target's arrays (the data)."""
    prov = target.provenance() if hasattr(target, "provenance") else {}
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(target) if hasattr(leaf, "shape")]
    h = hashlib.sha256()
    for leaf in leaves:
        h.update(np.ascontiguousarray(leaf).tobytes())
    return {"name": target.name, "event_shape": list(target.event_shape),
            "provenance": {k: str(v) for k, v in prov.items()}, "data_sha256": h.hexdigest()[:16]}


def array_digest(a) -> str:
    """A short hash of an array's float64 bytes (e.g. a user's ``init``)."""
    return hashlib.sha256(np.asarray(a, np.float64).tobytes()).hexdigest()[:16]


def save_checkpoint(path, config_hash_, carry, draws, stats_store, next_chunk, totals, seconds, warmup=None):
    """Write the loop carry, the draws and stats so far, and the counters, atomically (with the kept
    warm-up draws and stats ``warmup = (draws, stats)`` of a ``keep_warmup`` run)."""
    leaves = jax.tree.leaves(carry)
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["draws"] = draws
    for k, v in stats_store.items():
        arrays[f"stat__{k}"] = v
    if warmup is not None:
        arrays["warmup_draws"] = warmup[0]
        for k, v in warmup[1].items():
            arrays[f"wstat__{k}"] = v
    arrays["meta"] = np.frombuffer(json.dumps({
        "hash": config_hash_, "next_chunk": next_chunk, "totals": totals, "seconds": seconds,
        "num_leaves": len(leaves)}).encode(), dtype=np.uint8)
    atomic_savez(path, arrays)


def config_differences(stored: dict, current: dict, prefix: str = "") -> list:
    """The fields where two run configurations differ, as ``"options.target_accept: 0.95 in the
    checkpoint, 0.8 now"`` (nested dicts by dotted path; values compared as JSON)."""
    stored = json.loads(json.dumps(stored, default=str))
    current = json.loads(json.dumps(current, default=str))
    out = []
    for k in sorted(set(stored) | set(current), key=str):
        a, b = stored.get(k, "<absent>"), current.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} in the checkpoint, {b!r} now")
    return out


def _stored_config(path):
    """The configuration saved next to a checkpoint (``checkpoint_config.json``), if readable."""
    try:
        with open(os.path.join(os.path.dirname(path), "checkpoint_config.json")) as f:
            return json.load(f).get("config")
    except (OSError, ValueError, AttributeError):
        return None


def load_checkpoint(path, config_hash_, carry_template, config=None):
    """Read a checkpoint written by :func:`save_checkpoint` for the same configuration (else
    :class:`CheckpointMismatchError`, naming the fields that differ when ``config`` is given and
    the checkpoint's ``checkpoint_config.json`` is readable)."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays["meta"]).decode())
    except Exception as e:  # noqa: BLE001
        raise CheckpointMismatchError(f"sample: checkpoint {path} is unreadable or corrupt ({e}); "
                                      "delete it to start over") from e
    if meta.get("hash") != config_hash_:
        stored = _stored_config(path)
        diffs = config_differences(stored, config) if isinstance(stored, dict) and config is not None else []
        what = "; ".join(diffs) if diffs else f"hash {meta.get('hash')} != {config_hash_}"
        raise CheckpointMismatchError(
            f"sample: checkpoint in {os.path.dirname(path)} was written by a run with a different "
            f"configuration ({what}); refusing to resume. "
            "Use another checkpoint_dir or delete the old checkpoint.")
    template_leaves, treedef = jax.tree.flatten(carry_template)
    if meta["num_leaves"] != len(template_leaves):
        raise CheckpointMismatchError(f"sample: checkpoint {path} does not match this sampler's state")
    leaves = []
    for i, t in enumerate(template_leaves):
        a = arrays[f"leaf_{i}"]
        if a.shape != t.shape or a.dtype != np.asarray(t).dtype:
            raise CheckpointMismatchError(f"sample: checkpoint {path} leaf {i} has shape/dtype "
                                          f"{a.shape}/{a.dtype}, expected {t.shape}/{np.asarray(t).dtype}")
        leaves.append(jnp.asarray(a) if not jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key) else t)
    carry = jax.tree.unflatten(treedef, leaves)
    stats = {k[len("stat__"):]: v for k, v in arrays.items() if k.startswith("stat__")}
    return carry, arrays["draws"], stats, int(meta["next_chunk"]), meta["totals"], float(meta["seconds"])


def load_warmup(path):
    """``(draws, stats)``: the kept warm-up draws of a checkpoint written by a ``keep_warmup`` run (its
    configuration hash, checked by :func:`load_checkpoint`, says it kept them)."""
    with np.load(path) as z:
        if "warmup_draws" not in z.files:
            raise CheckpointMismatchError(f"sample: checkpoint {path} holds no warm-up draws")
        return z["warmup_draws"], {k[len("wstat__"):]: z[k] for k in z.files if k.startswith("wstat__")}
