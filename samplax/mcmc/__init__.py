"""MCMC kernels sharing one :class:`~samplax.core.types.PointState`.

Per algorithm module: ``XParams``, ``XInfo``, ``init``, ``build_kernel``
(structural), a lowercase factory returning a
:class:`~samplax.core.types.Kernel`, and one ``register_kernel(KernelSpec(...))``
line at its bottom (:mod:`samplax.mcmc.registry`).  Every registered kernel is
a public name here: ``samplax.mcmc.nuts`` is both a factory (calling it builds a
kernel) and its module's API (``samplax.mcmc.nuts.build_kernel``).
"""
import importlib
import pkgutil
import sys

from samplax.mcmc import integrators, metrics  # noqa: F401
from samplax.mcmc.registry import KernelSpec, get_kernel, kernel_names, register_kernel  # noqa: F401


class _Algorithm:
    """A registered kernel's factory that also exposes its algorithm module's low-level API."""

    def __init__(self, spec: KernelSpec):
        self._module = sys.modules[spec.module]
        self._factory = spec.factory
        self.__doc__ = self._factory.__doc__
        self.__name__ = spec.name

    def __call__(self, *args, **kwargs):
        return self._factory(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __repr__(self):
        return f"<samplax.mcmc.{self.__name__}>"


# Import every module of the package: each kernel module registers its kernels.
for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["integrators", "metrics", "registry", "KernelSpec", "get_kernel", "kernel_names", "register_kernel"]
for _name in kernel_names():
    globals()[_name] = _Algorithm(get_kernel(_name))
    __all__.append(_name)
del _info, _name
