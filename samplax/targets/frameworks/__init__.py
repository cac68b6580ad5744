"""Models written in other probabilistic programming frameworks, as samplax targets.

* :func:`from_numpyro` — a NumPyro model (``numpyro.sample`` sites) on NumPyro's
  unconstrained space (:mod:`.numpyro_adapter`);
* :func:`from_pymc` — a ``pymc.Model`` on PyMC's unconstrained value variables,
  compiled to JAX (:mod:`.pymc_adapter`).

Both targets keep the model's data as arrays (new data of the same shapes
compile nothing new) and return named constrained variables from
``constrain``, so ``Result.posterior``, ``summary()`` and ``to_arviz()`` use
the model's names.  NumPyro and PyMC are optional (``pip install
'samplax[numpyro]'`` / ``'samplax[pymc]'``) and imported only when called.
"""
from samplax.targets.frameworks.numpyro_adapter import NumPyroTarget, from_numpyro
from samplax.targets.frameworks.pymc_adapter import PyMCTarget, from_pymc

__all__ = ["NumPyroTarget", "PyMCTarget", "from_numpyro", "from_pymc"]
