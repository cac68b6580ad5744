"""Molecular (particle-system) targets: DW-4 (double-well pair potential) and LJ-13 (Lennard-Jones cluster).

A point is the flat vector of ``n`` particle positions in ``D`` dimensions,
``x = (x_1, ..., x_n)``, ``x_i in R^D`` (shape ``[n * D]``), and
``logdensity(x) = -E(x)`` (temperature 1, unnormalized).  Both energies are
invariant under translations, rotations and permutations; the density is
normalizable only on the mean-free subspace ``sum_i x_i = 0`` (dimension
``(n - 1) D``), where the reference samples live: samplers should work there
(project out the centre of mass).  ``log Z`` is not known.

``dw4`` (Köhler, Klein & Noé, "Equivariant flows", ICML 2020; DEM, Akhound-Sadegh
et al., ICML 2024): n = 4, D = 2, with ``d_ij = ||x_i - x_j||``::

    E(x) = sum_{i<j} [ a (d_ij - d0)^4 + b (d_ij - d0)^2 ],   a = 0.9, b = -4, d0 = 4
         (= 1/2 sum_{i != j} [...]).

``lj13`` (Köhler et al. 2020; DEM): n = 13, D = 3, eps = r_m = 1, harmonic
confinement c = 1 to the centre of mass ``xbar``::

    E(x) = k eps sum_{i<j} [ (r_m / d_ij)^12 - 2 (r_m / d_ij)^6 ] + (c / 2) sum_i ||x_i - xbar||^2

with ``k = 2`` for ``pairs="ordered"`` (the default: each pair counted twice, i.e.
the sum over ordered pairs ``i != j`` — the energy the public DEM reference samples
follow; their virial check ``E[-x . grad log p] = 36`` holds only for it) and
``k = 1`` for ``pairs="unique"`` (the physical i<j sum).

Ground truth (``kind="reference_draws"``): by rotation/permutation symmetry every
coordinate has mean exactly 0 and the same std ``sqrt(E||x||^2 / (n D))``; that std
is estimated from the public DEM reference samples (MD/MCMC; test + validation
splits, 20000 draws) and stored in ``samplax/data/molecular_reference.json`` by
``benchmarks/make_molecular_reference.py``.  Per-coordinate moments of those draws
are not used: they are not rotation-equilibrated.  The DW-4 reference is
approximate (its virial check gives 5.49 +- 0.12 against the exact 6).  For
``lj13`` with ``pairs="unique"`` there is
no reference and ``ground_truth()`` is None.
"""
from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import GroundTruth, Target
from samplax.targets import register
from samplax.targets._data import data_path


def _pair_distances(x, n, dim):
    """Distances ``d_ij`` for ``i < j`` (``n (n - 1) / 2`` values) of a flat configuration."""
    p = jnp.reshape(x, (n, dim))
    i, j = np.triu_indices(n, 1)
    return jnp.sqrt(jnp.sum((p[i] - p[j]) ** 2, axis=-1))


def _reference(key: str):
    with open(data_path("molecular_reference.json")) as f:
        return json.load(f)[key]


def _truth(key):
    ref = _reference(key)
    return GroundTruth(
        kind="reference_draws", source=ref["source"], version=ref["version"],
        mean=np.asarray(ref["mean"]), std=np.asarray(ref["std"]),
        mean_se=np.asarray(ref["mean_se"]), std_se=np.asarray(ref["std_se"]),
        log_Z=None, log_Z_se=0.0, names=tuple(ref["names"]),
    )


class DoubleWellParticles(Target):
    """DW-n: ``E = sum_{i<j} a (d_ij - d0)^4 + b (d_ij - d0)^2`` (see :mod:`samplax.targets.molecular`)."""

    a: jax.Array
    b: jax.Array
    d0: jax.Array
    n_particles: int = eqx.field(static=True, default=4)
    spatial_dim: int = eqx.field(static=True, default=2)

    def logdensity(self, x):
        r = _pair_distances(x, self.n_particles, self.spatial_dim) - self.d0
        return -jnp.sum(self.a * r**4 + self.b * r**2)

    @property
    def event_shape(self):
        return (self.n_particles * self.spatial_dim,)

    @property
    def name(self):
        return "dw4"

    def ground_truth(self):
        return _truth("dw4")

    def provenance(self):
        return {"source": "Köhler, Klein & Noé (2020), Equivariant flows, ICML; DEM (Akhound-Sadegh et al. 2024)",
                "variant": f"dw{self.n_particles}: a={float(self.a)!r}, b={float(self.b)!r}, d0={float(self.d0)!r}, "
                           "sum over i<j, temperature 1, mean-free reference",
                "version": "1"}


class LennardJones(Target):
    """LJ-n with harmonic confinement (see :mod:`samplax.targets.molecular`); ``pairs`` picks k = 2 or 1."""

    eps: jax.Array
    rm: jax.Array
    c: jax.Array
    n_particles: int = eqx.field(static=True, default=13)
    spatial_dim: int = eqx.field(static=True, default=3)
    pairs: str = eqx.field(static=True, default="ordered")

    def logdensity(self, x):
        n, dim = self.n_particles, self.spatial_dim
        s6 = (self.rm / _pair_distances(x, n, dim)) ** 6
        k = 2.0 if self.pairs == "ordered" else 1.0
        lj = k * self.eps * jnp.sum(s6 * s6 - 2.0 * s6)
        p = jnp.reshape(x, (n, dim))
        harm = 0.5 * self.c * jnp.sum((p - jnp.mean(p, axis=0)) ** 2)
        return -(lj + harm)

    @property
    def event_shape(self):
        return (self.n_particles * self.spatial_dim,)

    @property
    def name(self):
        return f"lj{self.n_particles}"

    def ground_truth(self):
        if self.n_particles == 13 and self.pairs == "ordered":
            return _truth("lj13")
        return None

    def initial_point(self, key):
        """A jittered cubic lattice with spacing ``r_m`` (no overlapping particles), centred."""
        n, dim = self.n_particles, self.spatial_dim
        side = int(np.ceil(n ** (1.0 / dim)))
        grid = np.stack(np.meshgrid(*[np.arange(side)] * dim, indexing="ij"), -1).reshape(-1, dim)[:n]
        p = jnp.asarray(grid, dtype=jnp.result_type(self.rm)) * self.rm
        p = p + 0.05 * self.rm * jax.random.normal(key, p.shape, dtype=p.dtype)
        return jnp.reshape(p - jnp.mean(p, axis=0), (-1,))

    def provenance(self):
        return {"source": "Köhler, Klein & Noé (2020), Equivariant flows, ICML; DEM (Akhound-Sadegh et al. 2024)",
                "variant": f"lj{self.n_particles}: eps={float(self.eps)!r}, r_m={float(self.rm)!r}, "
                           f"harmonic c={float(self.c)!r}, pairs={self.pairs} "
                           f"({'2x the i<j sum' if self.pairs == 'ordered' else 'i<j sum'})",
                "version": "1"}


@register("dw4")
def dw4():
    """DW-4: four particles in 2-D, double-well pair potential a = 0.9, b = -4, d0 = 4."""
    f = lambda v: jnp.asarray(v, dtype=float)  # noqa: E731
    return DoubleWellParticles(a=f(0.9), b=f(-4.0), d0=f(4.0), n_particles=4, spatial_dim=2)


@register("lj13")
def lj13(pairs: str = "ordered"):
    """LJ-13: 13 particles in 3-D, eps = r_m = 1, harmonic c = 1; ``pairs`` "ordered" (default) or "unique"."""
    if pairs not in ("ordered", "unique"):
        raise ValueError(f"lj13: pairs must be 'ordered' (reference convention) or 'unique', got {pairs!r}")
    f = lambda v: jnp.asarray(v, dtype=float)  # noqa: E731
    return LennardJones(eps=f(1.0), rm=f(1.0), c=f(1.0), n_particles=13, spatial_dim=3, pairs=pairs)
