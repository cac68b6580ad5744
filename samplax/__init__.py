"""samplax: samples, expectations and log Z from energies, log-densities, scores and denoisers."""
from samplax.core import (  # noqa: F401
    GroundTruth, Kernel, PointState, Target, from_energy, from_logdensity,
)
from samplax import targets  # noqa: F401

__version__ = "0.1.0"
