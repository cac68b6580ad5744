"""Targets shared by the learned samplers' tests."""
import jax
import jax.numpy as jnp
import numpy as np

import samplax
from samplax.targets.gaussian import Gaussian


def gaussian_target():
    """``N(m, diag(v))`` in 2-D, off-centre and anisotropic (exact log Z = log sqrt(det 2 pi C))."""
    mean = jnp.asarray([0.8, -0.5])
    chol = jnp.diag(jnp.asarray([0.7, 1.2]))
    return Gaussian(mean=mean, chol=chol, label="gauss2", chol_inv=jnp.linalg.inv(chol))


class NoGradient(samplax.Target):
    """A Gaussian log-density computed on the host (``pure_callback``): JAX cannot differentiate it."""

    def logdensity(self, x):
        def host(v):
            return np.asarray(-0.5 * np.sum(np.asarray(v) ** 2), np.asarray(v).dtype)

        return jax.pure_callback(host, jax.ShapeDtypeStruct((), x.dtype), x, vmap_method="sequential")

    @property
    def event_shape(self):
        return (2,)
