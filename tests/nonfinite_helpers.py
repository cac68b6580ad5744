"""Targets with NaN regions whose non-finite evaluations are recounted on the host (tests of the population
methods' non-finite counts, ``samplax.core.nonfinite``)."""
import math

import jax
import jax.numpy as jnp
import numpy as np

import samplax

STRIPE = (0.5, 1.5)  # NaN where STRIPE[0] <= x[0] < STRIPE[1]


def _phi(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cdf(z):
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def truncated_x0_moments(lo=STRIPE[0], hi=STRIPE[1]):
    """Mass, mean and second moment of ``N(0, 1)`` with ``[lo, hi)`` removed (the density with NaN there read as 0)."""
    p_in = _cdf(hi) - _cdf(lo)
    m1_in = _phi(lo) - _phi(hi)                           # int_S x phi
    m2_in = (lo * _phi(lo) - hi * _phi(hi)) + p_in        # int_S x^2 phi
    mass = 1.0 - p_in
    return mass, -m1_in / mass, (1.0 - m2_in) / mass


def nan_stripe_gaussian(dim=2, region=None, name="nan_stripe", base=None, counted=True, bad=float("nan")):
    """Standard Gaussian (unnormalized, ``log Z = dim/2 log 2 pi``; or ``base(x)``) that is ``bad`` (NaN or +inf)
    where ``region(x)`` (default: the stripe on ``x[0]``); returns ``(target, counter)`` with ``counter["nan"]`` the
    NaN or +inf log-densities computed, counted on the host (a whole vmapped batch per callback, as the conformance suite's counting target).
    The counting is not differentiable: ``counted=False`` (no counter) for gradient-based methods."""
    if base is None:
        def base(x):
            return -0.5 * jnp.sum(x * x)
    counter = {"nan": 0, "evals": 0}
    if region is None:
        def region(x):
            return (x[0] >= STRIPE[0]) & (x[0] < STRIPE[1])

    def host(v):
        v = np.asarray(v)
        counter["nan"] += int(np.sum(np.isnan(v) | (v == np.inf)))
        counter["evals"] += int(v.size)

    @jax.custom_batching.custom_vmap
    def tick(v):
        jax.debug.callback(host, v)
        return jnp.zeros((), v.dtype)

    @tick.def_vmap
    def tick_vmap(axis_size, in_batched, v):
        return tick(v), False

    def logdensity(x):
        v = jnp.where(region(x), bad, base(x))
        return v + tick(v) if counted else v

    return samplax.from_logdensity(logdensity, dim, name=name), counter


def nonfinite_warning(result):
    """The ``nonfinite`` run warning of ``result`` (exactly one)."""
    found = [w for w in result.warnings if w["code"] == "nonfinite"]
    assert len(found) == 1, result.warnings
    return found[0]
