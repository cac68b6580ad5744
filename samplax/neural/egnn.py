"""An E(n)-equivariant graph network (EGNN; Satorras, Hoogeboom & Welling 2021, ICML) for vector fields on
systems of ``n`` identical particles in ``D`` dimensions (a flat state ``x = (p_1, ..., p_n)``, ``p_i in R^D``).

Layer ``l`` (all pairs ``i != j``; node features ``h_i``, positions ``p_i``):

* messages ``m_ij = phi_e(h_i, h_j, |p_i - p_j|^2)``;
* positions ``p_i <- p_i + 1/(n-1) sum_j (p_i - p_j) / (|p_i - p_j| + 1) phi_x(m_ij)`` (the normalized
  difference, as in the E(n) flows of Satorras et al. 2021, keeps the update bounded);
* features ``h_i <- h_i + phi_h(h_i, sum_j m_ij)``.

The initial features are the same for every particle (the particles are identical): a linear map of the
conditioning vector (e.g. a time embedding).  The output is the displacement ``p^(L) - p^(0)`` projected to zero
mean over particles.  Every ``phi`` sees only distances and features, so the output is equivariant to rotations
and reflections (``f(x R) = f(x) R``), to permutations of the particles, and invariant to translations
(``f(x + c) = f(x)``), and it lies in the centre-of-mass-free subspace.  ``phi_x``'s last layer starts at zero,
so the network starts as the zero field.
"""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp


def remove_mean(x, n_particles: int, spatial_dim: int):
    """Project a flat particle state (or vector field) ``[n * D]`` to zero mean over particles (the
    centre-of-mass-free subspace)."""
    p = jnp.reshape(x, (n_particles, spatial_dim))
    return jnp.reshape(p - jnp.mean(p, axis=0, keepdims=True), x.shape)


def _zero_last(mlp: eqx.nn.MLP) -> eqx.nn.MLP:
    last = mlp.layers[-1]
    last = eqx.tree_at(lambda layer: (layer.weight, layer.bias), last,
                       (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
    return eqx.tree_at(lambda m: m.layers[-1], mlp, last)


class EGNN(eqx.Module):
    """The E(n)-equivariant network of the module: ``EGNN(key, n_particles, spatial_dim, cond_dim, width, depth)``
    has ``depth`` layers with features and messages of size ``width``; ``net(x, cond)`` maps a flat state ``[n D]``
    and a conditioning vector ``[cond_dim]`` to a zero-mean vector field ``[n D]``."""

    embed: eqx.nn.Linear
    edge: list
    coord: list
    node: list
    n_particles: int = eqx.field(static=True)
    spatial_dim: int = eqx.field(static=True)

    def __init__(self, key, n_particles: int, spatial_dim: int, cond_dim: int, width: int = 64, depth: int = 3,
                 dtype=None):
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.n_particles, self.spatial_dim = int(n_particles), int(spatial_dim)
        keys = jax.random.split(key, 3 * depth + 1)
        self.embed = eqx.nn.Linear(cond_dim, width, key=keys[0], dtype=dtype)
        silu = jax.nn.silu
        self.edge = [eqx.nn.MLP(2 * width + 1, width, width, 1, activation=silu, final_activation=silu,
                                key=keys[3 * i + 1], dtype=dtype) for i in range(depth)]
        self.coord = [_zero_last(eqx.nn.MLP(width, 1, width, 1, activation=silu, key=keys[3 * i + 2], dtype=dtype))
                      for i in range(depth)]
        self.node = [eqx.nn.MLP(2 * width, width, width, 1, activation=silu, key=keys[3 * i + 3], dtype=dtype)
                     for i in range(depth)]

    def __call__(self, x, cond):
        n, D = self.n_particles, self.spatial_dim
        p0 = jnp.reshape(x, (n, D))
        h = jnp.broadcast_to(self.embed(cond), (n, self.embed.out_features))
        off = ~jnp.eye(n, dtype=bool)
        p = p0
        for edge, coord, node in zip(self.edge, self.coord, self.node):
            diff = p[:, None, :] - p[None, :, :]  # [n, n, D]
            d2 = jnp.sum(diff**2, axis=-1)
            # the diagonal (i = j) is masked out; a safe value there keeps the square root's gradient finite
            dist = jnp.sqrt(jnp.where(off, d2, 1.0))
            hi = jnp.broadcast_to(h[:, None, :], (n, n, h.shape[-1]))
            hj = jnp.broadcast_to(h[None, :, :], (n, n, h.shape[-1]))
            m = jax.vmap(jax.vmap(edge))(jnp.concatenate([hi, hj, d2[..., None]], axis=-1))
            m = m * off[..., None]
            w = jax.vmap(jax.vmap(coord))(m)[..., 0] * off
            p = p + jnp.sum(diff / (dist + 1.0)[..., None] * w[..., None], axis=1) / max(n - 1, 1)
            h = h + jax.vmap(node)(jnp.concatenate([h, jnp.sum(m, axis=1)], axis=-1))
        out = p - p0
        return jnp.reshape(out - jnp.mean(out, axis=0, keepdims=True), x.shape)
