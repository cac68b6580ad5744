"""samplax: samples, expectations and log Z from energies, log-densities, scores and denoisers.

Quick start::

    import jax.numpy as jnp
    import samplax

    target = samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), event_shape=3)
    result = samplax.sample(target, method="nuts", seed=0)
    print(result.summary())
"""
from samplax.core import (  # noqa: F401
    GroundTruth, Kernel, PointState, Target, from_energy, from_logdensity,
)
from samplax.core.result import Result  # noqa: F401
from samplax import targets  # noqa: F401
from samplax.targets.frameworks import from_numpyro, from_pymc  # noqa: F401  (NumPyro / PyMC models)
from samplax import mcmc  # noqa: F401
from samplax import diffusion  # noqa: F401
from samplax import run  # noqa: F401  (the run engine)
from samplax.methods import method_names  # noqa: F401
from samplax.api import sample  # noqa: F401
from samplax.core.caches import clear_caches  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "sample", "method_names", "clear_caches", "from_logdensity", "from_energy", "from_numpyro", "from_pymc",
    "targets", "mcmc", "diffusion",
    "Target", "GroundTruth", "Result", "Kernel", "PointState",
]
