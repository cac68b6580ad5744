"""Checksummed access to the data files shipped in ``samplax/data/``.

Every data file has a line ``<sha256>  <filename>`` in
``samplax/data/CHECKSUMS.txt`` (the format of ``sha256sum``).  :func:`data_path`
verifies the file's SHA-256 against that line before returning its path, so
a changed or corrupted file is an error, never a silently different target.
Nothing is ever downloaded at run time.
"""
from __future__ import annotations

import functools
import hashlib
import pathlib

DATA_DIR = pathlib.Path(__file__).resolve().parents[1] / "data"
CHECKSUMS = DATA_DIR / "CHECKSUMS.txt"


@functools.lru_cache(maxsize=None)
def _recorded() -> dict:
    """Parse ``CHECKSUMS.txt`` into ``{filename: sha256}``."""
    out = {}
    for line in CHECKSUMS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, fname = line.split(maxsplit=1)
        out[fname.lstrip("*")] = digest.lower()
    return out


def sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def data_path(name: str) -> pathlib.Path:
    """Path of ``samplax/data/<name>`` after checking its SHA-256 against ``CHECKSUMS.txt``.

    Raises:
      FileNotFoundError: the file is missing.
      KeyError: the file has no recorded checksum.
      ValueError: the file's checksum differs from the recorded one.
    """
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"samplax data file {name!r} not found at {path}")
    recorded = _recorded()
    if name not in recorded:
        raise KeyError(f"samplax data file {name!r} has no checksum in {CHECKSUMS}")
    actual = sha256(path)
    if actual != recorded[name]:
        raise ValueError(
            f"samplax data file {name!r} is corrupted or changed: sha256 {actual} "
            f"!= recorded {recorded[name]} (see {CHECKSUMS})"
        )
    return path
