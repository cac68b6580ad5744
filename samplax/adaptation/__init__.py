"""Warm-up adaptation: dual-averaging step size, Welford mass matrix, Stan windows."""
from samplax.adaptation.mass_matrix import WelfordState, welford_covariance, welford_init, welford_update  # noqa: F401
from samplax.adaptation.step_size import DualAveragingState, da_init, da_update  # noqa: F401
from samplax.adaptation.window import window_ends  # noqa: F401
