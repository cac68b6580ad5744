"""Store 2000 reference draws each of DW-4 and LJ-13 in ``samplax/data/particle_reference_draws.npz``.

Input: ``/work/shared/external/particles/{dw4,lj13}.npz`` (the public DEM repository's reference samples,
Akhound-Sadegh et al., ICML 2024; MD/MCMC, mean-free).  The first 2000 of the ``samples_test`` split
(float32), the reference of the energy-W2 and distance-W2 columns of the learned benchmark
(:mod:`samplax.bench.learned`).  Prints the file's SHA-256 for ``samplax/data/CHECKSUMS.txt``.

Usage::

    python benchmarks/make_particle_draws.py [/path/to/particles]
"""
import hashlib
import pathlib
import sys

import numpy as np

SRC = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/external/particles")
OUT = pathlib.Path(__file__).resolve().parents[1] / "samplax" / "data" / "particle_reference_draws.npz"
N = 2000

if __name__ == "__main__":
    arrays = {name: np.load(SRC / f"{name}.npz")["samples_test"][:N].astype(np.float32) for name in ("dw4", "lj13")}
    np.savez_compressed(OUT, **arrays)
    print(hashlib.sha256(OUT.read_bytes()).hexdigest(), OUT.name)
