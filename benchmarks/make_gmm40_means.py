"""Generate ``samplax/data/gmm40_means.json``: the GMM-40 component means.

Recipe (fab-jax's GMM target, Midgley et al., "Flow annealed importance
sampling bootstrap", ICLR 2023): ``means = jax.random.uniform(
jax.random.PRNGKey(0), (40, dim), float32, minval=-1, maxval=1) * 40``
(legacy threefry key, single precision), for dim = 2 and dim = 50.  The values
are stored so that the target never changes with JAX's random-number
implementation; this script only documents where they came from.

Usage::

    JAX_PLATFORMS=cpu python benchmarks/make_gmm40_means.py
"""
import json
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "samplax" / "data" / "gmm40_means.json"


def means(dim: int) -> np.ndarray:
    u = jax.random.uniform(jax.random.PRNGKey(0), shape=(40, dim), dtype=jnp.float32,
                           minval=-1.0, maxval=1.0)
    return np.asarray(u * jnp.float32(40.0), dtype=np.float32).astype(np.float64)


def main():
    assert not jax.config.jax_enable_x64, "generate in JAX's default single precision"
    out = {
        "description": "GMM-40 means: jax.random.uniform(jax.random.PRNGKey(0), (40, dim), float32, "
                       "-1, 1) * 40 (fab-jax GMM recipe), stored as float64 copies of the float32 values",
        "jax_version": jax.__version__,
        "means_dim2": means(2).tolist(),
        "means_dim50": means(50).tolist(),
    }
    OUT.write_text(json.dumps(out) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
