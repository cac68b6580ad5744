"""2-D toy data sets for training small denoisers, generated in JAX (no downloads).

Each generator is ``sample(key, n) -> [n, 2]`` and is batch-size invariant: point i
depends only on ``jax.random.fold_in(key, i)``. All sets are centred and have
coordinates of order 1 (standard deviation 0.5-0.9 per coordinate).

* ``moons`` -- two interleaving half circles (as scikit-learn's ``make_moons``):
  ``(cos u, sin u)`` and ``(1 - cos u, 1/2 - sin u)`` with ``u ~ U(0, pi)``, shifted by
  ``(-1/2, -1/4)``, plus isotropic N(0, 0.05^2) noise.
* ``rings`` -- two concentric circles of radii 1/2 and 1 (each with probability 1/2),
  uniform angle, plus isotropic N(0, 0.04^2) noise.
* ``checkerboard`` -- uniform on the 8 black cells of a 4 x 4 checkerboard on
  ``[-1, 1]^2`` (the FFJORD toy set, Grathwohl et al. 2019, scaled by 1/2).
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import jax
import jax.numpy as jnp


def _per_point(one: Callable) -> Callable:
    def sample(key, n):
        return jax.vmap(lambda i: one(jax.random.fold_in(key, i)))(jnp.arange(int(n)))
    return sample


def _moon(key):
    k1, k2, k3 = jax.random.split(key, 3)
    u = jax.random.uniform(k1, (), minval=0.0, maxval=math.pi)
    upper = jax.random.bernoulli(k2)
    p = jnp.where(upper, jnp.stack([jnp.cos(u), jnp.sin(u)]), jnp.stack([1.0 - jnp.cos(u), 0.5 - jnp.sin(u)]))
    return p - jnp.array([0.5, 0.25]) + 0.05 * jax.random.normal(k3, (2,))


def _ring(key):
    k1, k2, k3 = jax.random.split(key, 3)
    r = jnp.where(jax.random.bernoulli(k1), 1.0, 0.5)
    a = jax.random.uniform(k2, (), minval=0.0, maxval=2 * math.pi)
    return r * jnp.stack([jnp.cos(a), jnp.sin(a)]) + 0.04 * jax.random.normal(k3, (2,))


def _checker(key):
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jax.random.uniform(k1, (), minval=-2.0, maxval=2.0)
    x2 = jax.random.uniform(k2, ()) - 2.0 * jax.random.bernoulli(k3).astype(x1.dtype)
    x2 = x2 + jnp.mod(jnp.floor(x1), 2.0)
    return 0.5 * jnp.stack([x1, x2])


DATASETS: Dict[str, Callable] = {"moons": _per_point(_moon), "rings": _per_point(_ring),
                                 "checkerboard": _per_point(_checker)}


def get_dataset(name: str) -> Callable:
    """The sampler ``sample(key, n) -> [n, 2]`` of a named toy set (``moons``, ``rings``, ``checkerboard``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]
