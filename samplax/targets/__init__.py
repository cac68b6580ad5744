"""Standard targets with provenance and ground truth.

``samplax.targets.get(name, **params)`` builds a registered target;
``samplax.targets.names()`` lists them.  Each family lives in its own module
and registers its factories with :data:`TARGETS`.
"""
from __future__ import annotations

from samplax.registry import Registry

TARGETS = Registry("target")
register = TARGETS.register


def get(name: str, **params):
    """Build the registered target ``name`` with keyword parameters ``params``."""
    return TARGETS.get(name)(**params)


def names() -> list:
    """Names of all registered targets."""
    return TARGETS.names()


# Families register themselves on import (order does not matter).
from samplax.targets import gaussian  # noqa: E402,F401
from samplax.targets import banana  # noqa: E402,F401
from samplax.targets import funnel  # noqa: E402,F401
from samplax.targets import mixtures  # noqa: E402,F401
from samplax.targets import many_well  # noqa: E402,F401
from samplax.targets import logistic  # noqa: E402,F401
from samplax.targets import posteriordb  # noqa: E402,F401
from samplax.targets import composite  # noqa: E402,F401  (bayesian_lasso, box_gaussian)
from samplax.targets import molecular  # noqa: E402,F401
from samplax.targets import lgcp  # noqa: E402,F401
from samplax.targets import simplex  # noqa: E402,F401  (dirichlet)
