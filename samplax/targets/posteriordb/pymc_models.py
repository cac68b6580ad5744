"""posteriordb posteriors written as PyMC models (needs ``samplax[pymc]``).

The same posteriors as :mod:`samplax.targets.posteriordb.numpyro_models`, each
a function of the Stan program's ``data`` block returning a ``pymc.Model``
whose free variables carry the Stan parameter names (covariates are
``pm.Data`` containers, observed values the data).  On PyMC's unconstrained
space (log transform for ``<lower=0>``, PyMC's ``ordered`` transform, which is
Stan's) the log-density equals the hand-written target's
(:mod:`samplax.targets.posteriordb.models`) up to a constant: Stan's implicit
flat priors are ``pm.Flat`` / ``pm.HalfFlat``; half-distributions through
``<lower=0>`` are PyMC's half distributions (a constant ``log 2`` apart).

``target(posterior_name, data=None)`` builds ``samplax.from_pymc(model)`` on the
bundled data (or ``data``, a dict like ``data.json``).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from samplax.targets.frameworks import from_pymc
from samplax.targets.posteriordb import _bundle


def eight_schools_noncentered(J, y, sigma):
    """``theta_trans ~ normal(0, 1)``, ``theta = mu + tau theta_trans``, ``y ~ normal(theta, sigma)``,
    ``mu ~ normal(0, 5)``, ``tau ~ cauchy(0, 5)`` on ``tau > 0``."""
    with pm.Model(coords={"school": np.arange(J)}) as model:
        sd = pm.Data("sigma", sigma, dims="school")
        theta_trans = pm.Normal("theta_trans", 0.0, 1.0, dims="school")
        mu = pm.Normal("mu", 0.0, 5.0)
        tau = pm.HalfCauchy("tau", 5.0)
        theta = pm.Deterministic("theta", mu + tau * theta_trans, dims="school")
        pm.Normal("y", theta, sd, observed=y, dims="school")
    return model


def kidscore_momhsiq(N, kid_score, mom_hs, mom_iq):
    """``kid_score ~ normal(beta1 + beta2 mom_hs + beta3 mom_iq, sigma)``, ``sigma ~ cauchy(0, 2.5)``."""
    with pm.Model() as model:
        hs, iq = pm.Data("mom_hs", mom_hs), pm.Data("mom_iq", mom_iq)
        beta = pm.Flat("beta", shape=3)
        sigma = pm.HalfCauchy("sigma", 2.5)
        pm.Normal("kid_score", beta[0] + beta[1] * hs + beta[2] * iq, sigma, observed=kid_score)
    return model


def kidscore_interaction(N, kid_score, mom_hs, mom_iq):
    """``kid_score ~ normal(beta1 + beta2 hs + beta3 iq + beta4 hs iq, sigma)``, ``sigma ~ cauchy(0, 2.5)``."""
    with pm.Model() as model:
        hs, iq = pm.Data("mom_hs", mom_hs), pm.Data("mom_iq", mom_iq)
        beta = pm.Flat("beta", shape=4)
        sigma = pm.HalfCauchy("sigma", 2.5)
        pm.Normal("kid_score", beta[0] + beta[1] * hs + beta[2] * iq + beta[3] * hs * iq, sigma,
                  observed=kid_score)
    return model


def logearn_interaction(N, earn, height, male):
    """``log(earn) ~ normal(beta1 + beta2 height + beta3 male + beta4 height male, sigma)``, flat priors."""
    with pm.Model() as model:
        h, m = pm.Data("height", height), pm.Data("male", male)
        beta = pm.Flat("beta", shape=4)
        sigma = pm.HalfFlat("sigma")
        pm.Normal("log_earn", beta[0] + beta[1] * h + beta[2] * m + beta[3] * h * m, sigma, observed=np.log(earn))
    return model


def logmesquite_logvas(N, weight, diam1, diam2, canopy_height, total_height, density, group):
    """``log(weight)`` on log canopy volume, area, shape, total height, density and group, flat priors."""
    with pm.Model() as model:
        d1, d2, ch = pm.Data("diam1", diam1), pm.Data("diam2", diam2), pm.Data("canopy_height", canopy_height)
        th, de, gr = pm.Data("total_height", total_height), pm.Data("density", density), pm.Data("group", group)
        cols = [pt.log(d1 * d2 * ch), pt.log(d1 * d2), pt.log(d1 / d2), pt.log(th), pt.log(de), gr]
        beta = pm.Flat("beta", shape=7)
        sigma = pm.HalfFlat("sigma")
        mean = beta[0] + sum(beta[i + 1] * c for i, c in enumerate(cols))
        pm.Normal("log_weight", mean, sigma, observed=np.log(weight))
    return model


def blr(N, D, X, y):
    """``y ~ normal(X beta, sigma)``, ``beta ~ normal(0, 10)``, ``sigma ~ normal(0, 10)`` on ``sigma > 0``."""
    with pm.Model() as model:
        Xd = pm.Data("X", X)
        beta = pm.Normal("beta", 0.0, 10.0, shape=D)
        sigma = pm.HalfNormal("sigma", 10.0)
        pm.Normal("y", pt.dot(Xd, beta), sigma, observed=y)
    return model


def arK(K, T, y):
    """AR(K): ``y[t] ~ normal(alpha + sum_k beta[k] y[t-k], sigma)`` for ``t > K``; ``alpha, beta ~
    normal(0, 10)``, ``sigma ~ cauchy(0, 2.5)`` on ``sigma > 0``."""
    with pm.Model() as model:
        series = pm.Data("y_series", y)
        alpha = pm.Normal("alpha", 0.0, 10.0)
        beta = pm.Normal("beta", 0.0, 10.0, shape=K)
        sigma = pm.HalfCauchy("sigma", 2.5)
        lags = pt.stack([series[K - j:T - j] for j in range(1, K + 1)], axis=1)
        pm.Normal("y", alpha + pt.dot(lags, beta), sigma, observed=np.asarray(y)[K:])
    return model


def diamonds(N, Y, K, X, prior_only):
    """brms: ``Y ~ normal(Intercept + Xc b, sigma)`` with the centred non-intercept columns ``Xc``;
    ``b ~ normal(0, 1)``, ``Intercept ~ student_t(3, 8, 10)``, ``sigma ~ student_t(3, 0, 10)`` on ``sigma > 0``."""
    if prior_only:
        raise ValueError("diamonds: prior_only=1 is not supported")
    with pm.Model() as model:
        Xd = pm.Data("X", X)
        Xc = Xd[:, 1:] - pt.mean(Xd[:, 1:], axis=0)
        b = pm.Normal("b", 0.0, 1.0, shape=K - 1)
        intercept = pm.StudentT("Intercept", nu=3.0, mu=8.0, sigma=10.0)
        sigma = pm.HalfStudentT("sigma", nu=3.0, sigma=10.0)
        pm.Normal("Y", intercept + pt.dot(Xc, b), sigma, observed=Y)
    return model


def gp_regr(N, x, y):
    """``y ~ multi_normal(0, alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + sigma I)``; ``rho ~ gamma(25, 4)``,
    ``alpha ~ normal(0, 2)``, ``sigma ~ normal(0, 1)``, all positive."""
    with pm.Model() as model:
        xd = pm.Data("x", x)
        rho = pm.Gamma("rho", alpha=25.0, beta=4.0)
        alpha = pm.HalfNormal("alpha", 2.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        d = xd[:, None] - xd[None, :]
        cov = alpha**2 * pt.exp(-0.5 * d * d / rho**2) + sigma * pt.eye(N)
        pm.MvNormal("y", mu=pt.zeros(N), cov=cov, observed=y)
    return model


def low_dim_gauss_mix(N, y):
    """``y ~ theta normal(mu1, sigma1) + (1 - theta) normal(mu2, sigma2)``, ``mu`` ordered with
    ``mu ~ normal(0, 2)``, ``sigma ~ normal(0, 2)`` positive, ``theta ~ beta(5, 5)``."""
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 2.0, shape=2, transform=pm.distributions.transforms.ordered,
                       initval=np.array([-1.0, 1.0]))
        sigma = pm.HalfNormal("sigma", 2.0, shape=2)
        theta = pm.Beta("theta", 5.0, 5.0)
        pm.NormalMixture("y", w=pt.stack([theta, 1.0 - theta]), mu=mu, sigma=sigma, observed=y)
    return model


#: posterior name -> function of the data returning a ``pymc.Model`` (Stan parameter names)
MODELS: Dict[str, Callable] = {
    "eight_schools-eight_schools_noncentered": eight_schools_noncentered,
    "kidiq-kidscore_momhsiq": kidscore_momhsiq,
    "kidiq-kidscore_interaction": kidscore_interaction,
    "earnings-logearn_interaction": logearn_interaction,
    "mesquite-logmesquite_logvas": logmesquite_logvas,
    "sblrc-blr": blr,
    "arK-arK": arK,
    "diamonds-diamonds": diamonds,
    "gp_pois_regr-gp_regr": gp_regr,
    "low_dim_gauss_mix-low_dim_gauss_mix": low_dim_gauss_mix,
}


def model(posterior_name: str, data: Optional[dict] = None) -> pm.Model:
    """The ``pymc.Model`` of the posteriordb posterior ``posterior_name`` (bundled data unless ``data``)."""
    if posterior_name not in MODELS:
        raise KeyError(f"pymc_models: no PyMC model for {posterior_name!r}; available: {sorted(MODELS)}")
    build = MODELS[posterior_name]
    return build(**_bundle.program_data(build, _bundle.load_data(posterior_name) if data is None else data))


def target(posterior_name: str, data: Optional[dict] = None):
    """``samplax.from_pymc`` of the posteriordb posterior ``posterior_name`` (bundled data unless ``data``)."""
    return from_pymc(model(posterior_name, data), name=f"pymc:{posterior_name}")
