"""Bayesian logistic regression targets: German credit.

``german_credit`` — the posterior of a Bayesian logistic regression on the UCI
"Statlog (German Credit Data)" numeric file ``german.data-numeric``
(Dua & Graff, UCI ML Repository; shipped as ``samplax/data/german.data-numeric``,
checksummed), the inference-gym ``GermanCreditNumericLogisticRegression``
setup (Dillon et al. / inference_gym; Hoffman & Gelman's NUTS paper uses the
same data):

* 1000 rows; columns 0..23 are covariates, column 24 the label in {1, 2},
  mapped to ``y = label - 1`` in {0, 1};
* each covariate standardized: ``(x - mean) / std`` with the population std
  (ddof = 0); a column of ones (intercept) is appended last, so ``X`` is
  ``[1000, 25]`` and ``w`` has 25 coefficients (``w[24]`` is the intercept);
* prior ``w ~ N(0, I_25)`` (kept: some code drops it, and then the target is
  a likelihood, not a posterior);
* ``logdensity(w) = sum_n [y_n z_n - log(1 + e^{z_n})] - ||w||^2 / 2 - (25/2) log 2 pi``,
  ``z = X w`` (prior normalized, so ``log Z`` is the log marginal likelihood, unknown).

Ground truth: posterior mean and std of ``w`` from a long NumPyro NUTS run
(8 chains x 20000 draws after 2000 warm-up, seed 20261129; max R-hat 1.0001,
min bulk ESS 1.4e5), with ArviZ MCSEs, stored in
``samplax/data/german_credit_reference.json`` and produced by
``benchmarks/make_reference_german_credit.py`` (an independent implementation).
"""
from __future__ import annotations

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import GroundTruth, Target
from samplax.targets import register
from samplax.targets._data import data_path

_LOG_2PI = math.log(2.0 * math.pi)


class LogisticRegression(Target):
    """Bayesian logistic regression ``y_n ~ Bernoulli(sigmoid(x_n . w))``, ``w ~ N(0, prior_scale^2 I)``.

    ``logdensity(w) = sum_n [y_n z_n - softplus(z_n)] + sum_j log N(w_j; 0, prior_scale^2)``
    with ``z = X w``.  ``X`` ``[N, p]``, ``y`` ``[N]`` and ``prior_scale`` are
    array fields (new data never retraces).
    """

    X: jax.Array
    y: jax.Array
    prior_scale: jax.Array
    label: str = eqx.field(static=True, default="logistic_regression")
    reference: str = eqx.field(static=True, default="")  # data file with the reference moments

    def logdensity(self, w):
        z = self.X @ w
        loglik = jnp.sum(self.y * z - jax.nn.softplus(z))
        s = self.prior_scale
        p = w.shape[0]
        logprior = -0.5 * jnp.sum((w / s) ** 2) - p * jnp.log(s) - 0.5 * p * _LOG_2PI
        return loglik + logprior

    @property
    def event_shape(self):
        return (self.X.shape[1],)

    @property
    def name(self):
        return self.label

    def ground_truth(self):
        if not self.reference:
            return None
        with open(data_path(self.reference)) as f:
            ref = json.load(f)
        return GroundTruth(
            kind="long_run",
            source=f"{ref['settings']['sampler']}: {ref['settings']['num_chains']} chains x "
                   f"{ref['settings']['num_samples']} draws, seed {ref['settings']['seed']}, "
                   f"max R-hat {ref['max_rhat']:.5f}; script {ref['script']}",
            version=ref["version"],
            mean=np.asarray(ref["mean"]), std=np.asarray(ref["std"]),
            mean_se=np.asarray(ref["mcse_mean"]), std_se=np.asarray(ref["mcse_std"]),
            log_Z=None, log_Z_se=0.0, names=tuple(ref["names"]),
        )

    def provenance(self):
        return {
            "source": "UCI Statlog (German Credit Data), german.data-numeric; "
                      "inference_gym GermanCreditNumericLogisticRegression",
            "variant": "24 covariates standardized (ddof=0) + intercept last, labels {1,2}->{0,1}, "
                       "N(0,1) prior on all 25 coefficients",
            "version": "1",
            "data_file": "samplax/data/german.data-numeric",
        }


def german_credit_data() -> tuple:
    """``(X [1000, 25], y [1000])`` as defined in :mod:`samplax.targets.logistic` (checksum verified)."""
    raw = np.loadtxt(data_path("german.data-numeric"))
    if raw.shape != (1000, 25):
        raise ValueError(f"german.data-numeric: expected shape (1000, 25), got {raw.shape}")
    x = raw[:, :-1]
    labels = raw[:, -1]
    if not np.all(np.isin(labels, (1.0, 2.0))):
        raise ValueError("german.data-numeric: labels in the last column must be 1 or 2")
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    return x, labels - 1.0


@register("german_credit")
def german_credit():
    """Bayesian logistic regression posterior on German credit (25-d, N(0,1) prior; see module doc)."""
    x, y = german_credit_data()
    return LogisticRegression(X=jnp.asarray(x, dtype=float), y=jnp.asarray(y, dtype=float),
                              prior_scale=jnp.asarray(1.0, dtype=float), label="german_credit",
                              reference="german_credit_reference.json")
