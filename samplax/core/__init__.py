"""Core protocols shared by every samplax family: targets, kernels, keys, results."""
from samplax.core.types import PointState, Kernel
from samplax.core.target import Target, FunctionTarget, GroundTruth, from_logdensity, from_energy
from samplax.core.random import chain_step_key

__all__ = [
    "PointState", "Kernel", "Target", "FunctionTarget", "GroundTruth",
    "from_logdensity", "from_energy", "chain_step_key",
]
