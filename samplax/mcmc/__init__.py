"""MCMC kernels sharing one :class:`~samplax.core.types.PointState`.

Per algorithm module: ``XParams``, ``XInfo``, ``init``, ``build_kernel``
(structural) and a lowercase factory returning a
:class:`~samplax.core.types.Kernel`.  ``samplax.mcmc.nuts`` is both: calling it
builds a kernel, and its attributes are the module's (``samplax.mcmc.nuts.build_kernel``).
"""
import importlib

from samplax.mcmc import integrators, metrics  # noqa: F401


class _Algorithm:
    """A factory that also exposes its algorithm module's low-level API."""

    def __init__(self, module_name: str, factory_name: str):
        self._module = importlib.import_module(module_name)
        self._factory = getattr(self._module, factory_name)
        self.__doc__ = self._factory.__doc__
        self.__name__ = factory_name

    def __call__(self, *args, **kwargs):
        return self._factory(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __repr__(self):
        return f"<samplax.mcmc.{self.__name__}>"


rwm = _Algorithm("samplax.mcmc.rwm", "rwm")
mala = _Algorithm("samplax.mcmc.mala", "mala")
hmc = _Algorithm("samplax.mcmc.hmc", "hmc")
nuts = _Algorithm("samplax.mcmc.nuts", "nuts")

__all__ = ["rwm", "mala", "hmc", "nuts", "integrators", "metrics"]

# slice samplers and the Langevin family (appended; see samplax/methods/mcmc_extra.py)
gpss = _Algorithm("samplax.mcmc.gpss", "gpss")
elliptical_slice = _Algorithm("samplax.mcmc.elliptical_slice", "elliptical_slice")
hit_and_run_slice = _Algorithm("samplax.mcmc.slice", "hit_and_run_slice")
__all__ += ["gpss", "elliptical_slice", "hit_and_run_slice"]
ula = _Algorithm("samplax.mcmc.langevin", "ula")
randomized_midpoint_overdamped = _Algorithm("samplax.mcmc.langevin", "randomized_midpoint_overdamped")
kinetic_langevin = _Algorithm("samplax.mcmc.kinetic_langevin", "kinetic_langevin")
randomized_midpoint = _Algorithm("samplax.mcmc.randomized_midpoint", "randomized_midpoint")
__all__ += ["ula", "randomized_midpoint_overdamped", "kinetic_langevin", "randomized_midpoint"]
mclmc = _Algorithm("samplax.mcmc.mclmc", "mclmc")
adjusted_mclmc = _Algorithm("samplax.mcmc.mclmc", "adjusted_mclmc")
__all__ += ["mclmc", "adjusted_mclmc"]
myula = _Algorithm("samplax.mcmc.proximal", "myula")
bregman_myula = _Algorithm("samplax.mcmc.proximal", "bregman_myula")
__all__ += ["myula", "bregman_myula"]
