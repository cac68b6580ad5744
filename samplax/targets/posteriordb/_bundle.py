"""Bundled posteriordb files: location, sha256 checks, reference summaries.

Each bundled posterior lives in ``samplax/data/posteriordb/<posterior_name>/``
with the model's ``data.json`` (a verbatim copy of posteriordb's file) and
``reference_summary.json`` (names, mean, std, MCSE of the mean and an
estimated standard error of the std, computed from posteriordb's reference
draws by :func:`summarize_reference_draws`).  ``CHECKSUMS.txt`` lists the
sha256 of every bundled file; a file is verified every time it is read.

:func:`build_bundle` regenerates the folder from a posteriordb checkout
(developer tool; never called at run time, nothing is downloaded).
"""
from __future__ import annotations

import functools
import inspect
import hashlib
import json
import pathlib
import shutil
from typing import Dict, Iterable, Optional

import numpy as np

DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "posteriordb"
CHECKSUM_FILE = "CHECKSUMS.txt"
SUMMARY_VERSION = "1"


def sha256_file(path) -> str:
    """Hex sha256 digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _checksums(data_dir: str) -> Dict[str, str]:
    path = pathlib.Path(data_dir) / CHECKSUM_FILE
    if not path.exists():
        raise FileNotFoundError(f"posteriordb: checksum list {path} is missing")
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, rel = line.split(maxsplit=1)
        out[rel] = digest
    return out


def _verified_bytes(data_dir: str, rel: str) -> bytes:
    sums = _checksums(data_dir)
    if rel not in sums:
        raise KeyError(f"posteriordb: {rel!r} is not listed in {CHECKSUM_FILE}")
    path = pathlib.Path(data_dir) / rel
    if not path.exists():
        raise FileNotFoundError(f"posteriordb: bundled file {path} is missing")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sums[rel]:
        raise ValueError(
            f"posteriordb: checksum mismatch for {path}: sha256 {digest}, expected {sums[rel]} "
            f"(listed in {CHECKSUM_FILE}); the bundled file was modified or corrupted"
        )
    return raw


def bundled_names(data_dir=DATA_DIR) -> list:
    """Posterior names that have a bundled ``data.json``."""
    return sorted({rel.split("/")[0] for rel in _checksums(str(data_dir)) if rel.endswith("/data.json")})


def load_json(posterior_name: str, filename: str, data_dir=DATA_DIR) -> dict:
    """Read a bundled JSON file after verifying its sha256."""
    return json.loads(_verified_bytes(str(data_dir), f"{posterior_name}/{filename}"))


def load_data(posterior_name: str, data_dir=DATA_DIR) -> dict:
    """The posterior's ``data.json`` (checksum-verified)."""
    return load_json(posterior_name, "data.json", data_dir)


def load_summary(posterior_name: str, data_dir=DATA_DIR) -> dict:
    """The posterior's ``reference_summary.json`` (checksum-verified)."""
    return load_json(posterior_name, "reference_summary.json", data_dir)


def summarize_reference_draws(npz_path) -> dict:
    """Compact summary of posteriordb reference draws ``[chains, draws, p]``.

    ``mean``/``std`` (ddof=1) over all draws; ``mean_se`` is the file's
    ``mcse_mean_between_chains`` (std of the chain means / sqrt(chains));
    ``std_se`` is the same between-chain estimate for the std: the standard
    deviation (ddof=1) of the per-chain stds divided by sqrt(chains).
    """
    ref = np.load(npz_path, allow_pickle=False)
    draws = np.asarray(ref["draws"], dtype=np.float64)
    if draws.ndim != 3:
        raise ValueError(f"summarize_reference_draws: draws must be [chains, draws, p], got {draws.shape}")
    n_chains, n_draws, p = draws.shape
    flat = draws.reshape(-1, p)
    chain_std = draws.std(axis=1, ddof=1)
    return {
        "names": [str(s) for s in ref["names"]],
        "mean": flat.mean(axis=0).tolist(),
        "std": flat.std(axis=0, ddof=1).tolist(),
        "mean_se": np.asarray(ref["mcse_mean_between_chains"], dtype=np.float64).tolist(),
        "std_se": (chain_std.std(axis=0, ddof=1) / np.sqrt(n_chains)).tolist(),
        "n_chains": int(n_chains),
        "n_draws_per_chain": int(n_draws),
        "reference_draws_sha256": sha256_file(npz_path),
        "summary_version": SUMMARY_VERSION,
    }


def build_bundle(source_dir, names: Iterable[str], data_dir=DATA_DIR) -> None:
    """Copy ``data.json`` and write ``reference_summary.json`` for ``names``; rewrite CHECKSUMS.txt.

    ``source_dir`` is a folder of posteriordb posteriors (each with
    ``data.json`` and ``reference_draws.npz``).  Developer tool only.
    """
    source_dir = pathlib.Path(source_dir)
    data_dir = pathlib.Path(data_dir)
    for name in names:
        src = source_dir / name
        dst = data_dir / name
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "data.json", dst / "data.json")
        summary = summarize_reference_draws(src / "reference_draws.npz")
        (dst / "reference_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["# sha256  path (relative to this folder); verified when loaded"]
    for path in sorted(data_dir.glob("*/*.json")):
        rel = path.relative_to(data_dir).as_posix()
        lines.append(f"{sha256_file(path)}  {rel}")
    (data_dir / CHECKSUM_FILE).write_text("\n".join(lines) + "\n")
    _checksums.cache_clear()


def shared_posteriordb_dir(start: Optional[pathlib.Path] = None) -> Optional[pathlib.Path]:
    """``<repo>/../shared/external/posteriordb`` if it exists (tests and tools only)."""
    repo = pathlib.Path(start) if start is not None else DATA_DIR.parents[2]
    path = repo.parent / "shared" / "external" / "posteriordb"
    return path if path.is_dir() else None


def program_data(model, data: dict) -> dict:
    """The keyword arguments of a model function (named like the Stan program's data) from a posteriordb
    ``data.json`` dict: arrays as float64 numpy arrays (data), integers as Python ints (sizes: the model's
    structure), only the keys the function takes."""
    out = {}
    for key in inspect.signature(model).parameters:
        if key not in data:
            raise ValueError(f"{model.__name__}: the data have no {key!r} (keys: {sorted(data)})")
        v = data[key]
        if isinstance(v, (list, tuple, np.ndarray)):
            out[key] = np.asarray(v, dtype=np.float64)
        elif isinstance(v, (bool, int, np.integer)):
            out[key] = int(v)
        else:
            out[key] = float(v)
    return out
