"""Base class for posteriordb posteriors written in JAX.

A posteriordb posterior is a Stan model plus a data set (Magnusson, Bürkner,
Vehtari, "posteriordb: testing, benchmarking and developing Bayesian inference
algorithms", 2022; https://github.com/stan-dev/posteriordb).  Samplers work on
R^d, so :meth:`PosteriorDBTarget.logdensity` takes one point of Stan's
*unconstrained* space and returns

    log p(z) = log p_model(T(z)) + log |det J_T(z)|

(up to an additive constant), where ``T`` is Stan's constraining transform
(:mod:`~samplax.targets.posteriordb.bijectors`).  :meth:`constrain` maps ``z``
to the quantities the posteriordb reference draws report, in the order of
their ``names`` (transformed parameters such as eight schools' ``theta``
included), and :meth:`ground_truth` returns the reference-draw summary.
"""
from __future__ import annotations

from typing import Dict, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import GroundTruth, Target
from samplax.targets.posteriordb import _bundle
from samplax.targets.posteriordb.bijectors import Param, pack, unconstrained_dim, unpack


class PosteriorDBTarget(Target):
    """A posteriordb posterior on Stan's unconstrained space (log-Jacobian included).

    Subclasses hold the data as array fields and define ``layout`` (the
    parameter blocks in Stan's declaration order, each with its bijector) and
    ``model_logdensity(params)`` (the Stan ``model`` block on the constrained
    parameters, constants optional).  Models with transformed parameters in
    the reference draws also override ``reported`` and ``params_from_reported``.
    """

    posterior: str = eqx.field(static=True)
    stan_model: str = eqx.field(static=True)

    # --- to define in subclasses -------------------------------------------
    @property
    def layout(self) -> Tuple[Param, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def model_logdensity(self, params: Dict[str, jax.Array]) -> jax.Array:  # pragma: no cover
        raise NotImplementedError

    def reported(self, params: Dict[str, jax.Array]) -> jax.Array:
        """Reported quantities from constrained parameters (default: all blocks in order)."""
        return jnp.concatenate([jnp.reshape(params[p.name], (-1,)) for p in self.layout])

    def params_from_reported(self, q: jax.Array) -> Dict[str, jax.Array]:
        """Inverse of :meth:`reported` (default: split ``q`` by block sizes)."""
        out, start = {}, 0
        for p in self.layout:
            out[p.name] = q[start:start + p.size]
            start += p.size
        return out

    # --- generic machinery -------------------------------------------------
    @property
    def event_shape(self):
        return (unconstrained_dim(self.layout),)

    @property
    def name(self):
        return f"pdb:{self.posterior}"

    def _check_point(self, x, fn: str) -> jax.Array:
        x = jnp.asarray(x)
        if x.shape != self.event_shape:
            raise ValueError(
                f"{self.name}.{fn}: x must be one unconstrained point of shape {self.event_shape} "
                f"(vmap outside for batches), got shape {x.shape}"
            )
        return x

    def unpack(self, x: jax.Array):
        """``(params, log_jacobian)``: constrained parameter blocks of one unconstrained point."""
        return unpack(self.layout, self._check_point(x, "unpack"))

    def logdensity(self, x):
        """Stan's ``log_prob`` with Jacobian: model log-density at ``T(x)`` plus ``log|det J_T(x)|``."""
        params, logj = self.unpack(x)
        return self.model_logdensity(params) + logj

    def constrain(self, x):
        """Reported quantities (order of the reference draws' ``names``) of one unconstrained point."""
        params, _ = self.unpack(x)
        return self.reported(params)

    def unconstrain(self, q):
        """Inverse of :meth:`constrain`: reported quantities -> unconstrained point."""
        q = jnp.asarray(q)
        n = len(self.quantity_names())
        if q.shape != (n,):
            raise ValueError(
                f"{self.name}.unconstrain: q must be one vector of the {n} reported quantities "
                f"{self.quantity_names()[:4]}..., got shape {q.shape}"
            )
        return pack(self.layout, self.params_from_reported(q))

    def ground_truth(self):
        s = _bundle.load_summary(self.posterior)
        return GroundTruth(
            kind="reference_draws",
            source=f"posteriordb {self.posterior} reference draws",
            version=f"posteriordb-reference-{s['summary_version']}-sha256:{s['reference_draws_sha256'][:12]}",
            mean=np.asarray(s["mean"], dtype=np.float64),
            std=np.asarray(s["std"], dtype=np.float64),
            mean_se=np.asarray(s["mean_se"], dtype=np.float64),
            std_se=np.asarray(s["std_se"], dtype=np.float64),
            names=tuple(s["names"]),
        )

    def provenance(self):
        return {
            "source": "posteriordb (https://github.com/stan-dev/posteriordb)",
            "posterior": self.posterior,
            "stan_model": f"posterior_database/models/stan/{self.stan_model}.stan",
            "space": "Stan unconstrained parameterisation, log-Jacobian included",
            "data": f"samplax/data/posteriordb/{self.posterior}/data.json (sha256 in CHECKSUMS.txt)",
            "version": "1",
        }


def as_float(v) -> jax.Array:
    """Data value as a float array of the default JAX float dtype."""
    return jnp.asarray(np.asarray(v, dtype=np.float64), dtype=jnp.result_type(float))
