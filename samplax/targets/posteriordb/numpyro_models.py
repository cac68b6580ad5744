"""posteriordb posteriors written as NumPyro models (needs ``samplax[numpyro]``).

Each function is the Stan program of posteriordb (``posterior_database/models/
stan/<model>.stan``) as a NumPyro model whose arguments are the program's
``data`` block (the keys of posteriordb's ``data.json``), with the Stan
parameter names as site names, so that on NumPyro's unconstrained space
(``biject_to``: ``exp`` for ``<lower=0>``, Stan's ordered transform for
``ordered``) the log-density equals the hand-written target's
(:mod:`samplax.targets.posteriordb.models`) up to a constant.  Stan's implicit
flat priors are ``ImproperUniform``; half-distributions through ``<lower=0>``
are NumPyro's half or truncated distributions (a constant ``log 2`` apart).

``target(posterior_name, data=None)`` builds ``samplax.from_numpyro(model,
**data)`` on the bundled data (or ``data``, a dict like ``data.json``).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from samplax.targets.frameworks import from_numpyro
from samplax.targets.posteriordb import _bundle


def _flat(shape=()):
    """Stan's implicit improper uniform prior on an unconstrained block of ``shape``."""
    return dist.ImproperUniform(constraints.real, (), tuple(shape))


def eight_schools_noncentered(J, y, sigma):
    """``theta_trans ~ normal(0, 1)``, ``theta = mu + tau theta_trans``, ``y ~ normal(theta, sigma)``,
    ``mu ~ normal(0, 5)``, ``tau ~ cauchy(0, 5)`` on ``tau > 0``."""
    with numpyro.plate("school", J):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    theta = numpyro.deterministic("theta", mu + tau * theta_trans)
    with numpyro.plate("school", J):
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def _linreg(columns, response, sigma_prior):
    """``response ~ normal(columns @ beta, sigma)``, flat ``beta``, ``sigma`` prior on ``sigma > 0``."""
    X = jnp.stack(columns, axis=-1)
    beta = numpyro.sample("beta", _flat((X.shape[1],)))
    sigma = numpyro.sample("sigma", sigma_prior)
    with numpyro.plate("obs", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=response)


def kidscore_momhsiq(N, kid_score, mom_hs, mom_iq):
    """``kid_score ~ normal(beta1 + beta2 mom_hs + beta3 mom_iq, sigma)``, ``sigma ~ cauchy(0, 2.5)``."""
    _linreg([jnp.ones(N), mom_hs, mom_iq], kid_score, dist.HalfCauchy(2.5))


def kidscore_interaction(N, kid_score, mom_hs, mom_iq):
    """``kid_score ~ normal(beta1 + beta2 hs + beta3 iq + beta4 hs iq, sigma)``, ``sigma ~ cauchy(0, 2.5)``."""
    _linreg([jnp.ones(N), mom_hs, mom_iq, mom_hs * mom_iq], kid_score, dist.HalfCauchy(2.5))


def logearn_interaction(N, earn, height, male):
    """``log(earn) ~ normal(beta1 + beta2 height + beta3 male + beta4 height male, sigma)``, flat priors."""
    _linreg([jnp.ones(N), height, male, height * male], jnp.log(earn),
            dist.ImproperUniform(constraints.positive, (), ()))


def logmesquite_logvas(N, weight, diam1, diam2, canopy_height, total_height, density, group):
    """``log(weight)`` on log canopy volume, area, shape, total height, density and group, flat priors."""
    cols = [jnp.ones(N), jnp.log(diam1 * diam2 * canopy_height), jnp.log(diam1 * diam2), jnp.log(diam1 / diam2),
            jnp.log(total_height), jnp.log(density), group]
    _linreg(cols, jnp.log(weight), dist.ImproperUniform(constraints.positive, (), ()))


def blr(N, D, X, y):
    """``y ~ normal(X beta, sigma)``, ``beta ~ normal(0, 10)``, ``sigma ~ normal(0, 10)`` on ``sigma > 0``."""
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([D]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    with numpyro.plate("obs", N):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def arK(K, T, y):
    """AR(K): ``y[t] ~ normal(alpha + sum_k beta[k] y[t-k], sigma)`` for ``t > K``; ``alpha, beta ~
    normal(0, 10)``, ``sigma ~ cauchy(0, 2.5)`` on ``sigma > 0``."""
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    lags = jnp.stack([y[K - j:T - j] for j in range(1, K + 1)], axis=1)
    with numpyro.plate("time", T - K):
        numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma), obs=y[K:])


def diamonds(N, Y, K, X, prior_only):
    """brms: ``Y ~ normal(Intercept + Xc b, sigma)`` with the centred non-intercept columns ``Xc``;
    ``b ~ normal(0, 1)``, ``Intercept ~ student_t(3, 8, 10)``, ``sigma ~ student_t(3, 0, 10)`` on ``sigma > 0``."""
    if prior_only:
        raise ValueError("diamonds: prior_only=1 is not supported")
    Xc = X[:, 1:] - jnp.mean(X[:, 1:], axis=0)
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([K - 1]).to_event(1))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", dist.TruncatedDistribution(dist.StudentT(3.0, 0.0, 10.0), low=0.0))
    with numpyro.plate("obs", N):
        numpyro.sample("Y", dist.Normal(intercept + Xc @ b, sigma), obs=Y)


def gp_regr(N, x, y):
    """``y ~ multi_normal(0, alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + sigma I)``; ``rho ~ gamma(25, 4)``,
    ``alpha ~ normal(0, 2)``, ``sigma ~ normal(0, 1)``, all positive."""
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    d = x[:, None] - x[None, :]
    cov = alpha**2 * jnp.exp(-0.5 * d * d / rho**2) + sigma * jnp.eye(N)
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(N), covariance_matrix=cov), obs=y)


def low_dim_gauss_mix(N, y):
    """``y ~ theta normal(mu1, sigma1) + (1 - theta) normal(mu2, sigma2)``, ``mu`` ordered with
    ``mu ~ normal(0, 2)``, ``sigma ~ normal(0, 2)`` positive, ``theta ~ beta(5, 5)``."""
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", jnp.sum(dist.Normal(0.0, 2.0).log_prob(mu)))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    mixing = dist.Categorical(probs=jnp.stack([theta, 1.0 - theta]))
    with numpyro.plate("obs", N):
        numpyro.sample("y", dist.MixtureSameFamily(mixing, dist.Normal(mu, sigma)), obs=y)


#: posterior name -> NumPyro model (site names are the Stan program's parameter names)
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


def target(posterior_name: str, data: Optional[dict] = None):
    """``samplax.from_numpyro`` of the posteriordb posterior ``posterior_name`` (bundled data unless
    ``data`` is given)."""
    if posterior_name not in MODELS:
        raise KeyError(f"numpyro_models: no NumPyro model for {posterior_name!r}; available: {sorted(MODELS)}")
    model = MODELS[posterior_name]
    return from_numpyro(model, **_bundle.program_data(model, _bundle.load_data(posterior_name) if data is None else data))
