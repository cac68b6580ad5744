"""posteriordb models re-written in JAX (one class per model family).

Each class mirrors one Stan program of posteriordb
(``posterior_database/models/stan/<model>.stan``); the docstrings state the
model.  Log-densities drop additive constants (as Stan's ``~`` does), so
compare them up to a constant.  Data are array fields: a new data set of the
same shapes never retraces.  Builders ``build_<model>(data)`` turn a
posteriordb ``data.json`` dict into a target (transformed data computed once,
as in Stan's ``transformed data`` block).
"""
from __future__ import annotations



import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.targets.posteriordb.base import PosteriorDBTarget, as_float
from samplax.targets.posteriordb.bijectors import (
    Interval, Lower, Ordered, Param, PositiveOrdered, Simplex,
)

# ---------------------------------------------------------------------------
# log-densities up to additive constants that depend only on fixed numbers


def normal_lpdf(x, mu, sigma):
    """``sum log N(x | mu, sigma)`` without ``-0.5 log(2 pi)`` per term."""
    z = (x - mu) / sigma
    return jnp.sum(-0.5 * z * z - jnp.log(sigma) * jnp.ones_like(z))


def cauchy_lpdf(x, mu, sigma):
    """``sum log Cauchy(x | mu, sigma)`` without ``-log(pi)`` per term."""
    z = (x - mu) / sigma
    return jnp.sum(-jnp.log1p(z * z) - jnp.log(sigma) * jnp.ones_like(z))


def student_t_lpdf(x, nu, mu, sigma):
    """``sum log t_nu(x | mu, sigma)`` without the Gamma-function normalizer."""
    z = (x - mu) / sigma
    return jnp.sum(-0.5 * (nu + 1.0) * jnp.log1p(z * z / nu) - jnp.log(sigma) * jnp.ones_like(z))


def gamma_lpdf(x, shape, rate):
    """``sum log Gamma(x | shape, rate)`` without ``shape log rate - lgamma(shape)``."""
    return jnp.sum((shape - 1.0) * jnp.log(x) - rate * x)


def beta_lpdf(x, a, b):
    """``sum log Beta(x | a, b)`` without ``-log B(a, b)``."""
    return jnp.sum((a - 1.0) * jnp.log(x) + (b - 1.0) * jnp.log1p(-x))


def _scalar(v):
    return jnp.reshape(v, ())


# ---------------------------------------------------------------------------
# Gaussian linear regression family


class LinearRegression(PosteriorDBTarget):
    """Gaussian linear regression ``y ~ normal(X beta, sigma)``, ``sigma > 0``.

    Covers posteriordb's ``kidscore_*``, ``logearn_*``, ``earn_*``,
    ``*mesquite*``, ``nes``, ``blr`` and ``kilpisjarvi`` programs, which
    differ only in the design matrix (built from the data as in each
    program's ``transformed data``) and the priors:

    * coefficients: independent ``normal(coef_loc, 1/sqrt(coef_prec))``;
      ``coef_prec = 0`` is Stan's implicit flat prior;
    * sigma: ``sigma_prior`` in ``{"flat", "cauchy", "normal"}`` with scale
      ``sigma_scale`` (half-distributions through ``<lower=0>``).

    Parameters ``beta`` (``P`` coefficients, reported in order) and ``sigma``.
    """

    X: jax.Array
    y: jax.Array
    coef_loc: jax.Array
    coef_prec: jax.Array
    sigma_scale: jax.Array
    sigma_prior: str = eqx.field(static=True)

    def __check_init__(self):
        if self.sigma_prior not in ("flat", "cauchy", "normal"):
            raise ValueError(
                f"LinearRegression: sigma_prior must be 'flat', 'cauchy' or 'normal', got {self.sigma_prior!r}"
            )
        n, p = self.X.shape
        if self.y.shape != (n,) or self.coef_loc.shape != (p,) or self.coef_prec.shape != (p,):
            raise ValueError(
                f"LinearRegression: X is {self.X.shape}, so y must be ({n},) and coef_loc, coef_prec ({p},); "
                f"got {self.y.shape}, {self.coef_loc.shape}, {self.coef_prec.shape}"
            )

    @property
    def layout(self):
        return (Param("beta", self.X.shape[1]), Param("sigma", 1, Lower(0.0)))

    def model_logdensity(self, params):
        beta, sigma = params["beta"], _scalar(params["sigma"])
        lp = normal_lpdf(self.y, self.X @ beta, sigma)
        lp = lp - 0.5 * jnp.sum(self.coef_prec * (beta - self.coef_loc) ** 2)
        if self.sigma_prior == "cauchy":
            lp = lp + cauchy_lpdf(sigma, 0.0, self.sigma_scale)
        elif self.sigma_prior == "normal":
            lp = lp + normal_lpdf(sigma, 0.0, self.sigma_scale)
        return lp


def _linreg(posterior, stan_model, columns, y, *, coef_loc=None, coef_sd=None,
            sigma_prior="flat", sigma_scale=1.0):
    X = np.column_stack([np.asarray(c, dtype=np.float64) * np.ones(len(y)) for c in columns])
    p = X.shape[1]
    loc = np.zeros(p) if coef_loc is None else np.asarray(coef_loc, dtype=np.float64)
    prec = np.zeros(p) if coef_sd is None else 1.0 / np.asarray(coef_sd, dtype=np.float64) ** 2
    return LinearRegression(
        posterior=posterior, stan_model=stan_model, X=as_float(X), y=as_float(y),
        coef_loc=as_float(loc), coef_prec=as_float(prec), sigma_scale=as_float(sigma_scale),
        sigma_prior=sigma_prior,
    )


def _a(data, key):
    return np.asarray(data[key], dtype=np.float64)


def build_kidscore_momhsiq(posterior, data):
    """``kid_score ~ normal(b1 + b2 mom_hs + b3 mom_iq, sigma)``, ``sigma ~ cauchy(0, 2.5)``."""
    return _linreg(posterior, "kidscore_momhsiq", [1.0, _a(data, "mom_hs"), _a(data, "mom_iq")],
                   _a(data, "kid_score"), sigma_prior="cauchy", sigma_scale=2.5)


def build_kidscore_interaction(posterior, data):
    """``kid_score ~ normal(b1 + b2 hs + b3 iq + b4 hs*iq, sigma)``, ``sigma ~ cauchy(0, 2.5)``."""
    hs, iq = _a(data, "mom_hs"), _a(data, "mom_iq")
    return _linreg(posterior, "kidscore_interaction", [1.0, hs, iq, hs * iq],
                   _a(data, "kid_score"), sigma_prior="cauchy", sigma_scale=2.5)


def build_logearn_interaction(posterior, data):
    """``log(earn) ~ normal(b1 + b2 height + b3 male + b4 height*male, sigma)``, flat priors."""
    h, m = _a(data, "height"), _a(data, "male")
    return _linreg(posterior, "logearn_interaction", [1.0, h, m, h * m], np.log(_a(data, "earn")))


def build_logmesquite_logvas(posterior, data):
    """``log(weight) ~ normal(b1 + b2 log(d1 d2 ch) + b3 log(d1 d2) + b4 log(d1/d2)
    + b5 log(total_height) + b6 log(density) + b7 group, sigma)``, flat priors."""
    d1, d2, ch = _a(data, "diam1"), _a(data, "diam2"), _a(data, "canopy_height")
    cols = [1.0, np.log(d1 * d2 * ch), np.log(d1 * d2), np.log(d1 / d2),
            np.log(_a(data, "total_height")), np.log(_a(data, "density")), _a(data, "group")]
    return _linreg(posterior, "logmesquite_logvas", cols, np.log(_a(data, "weight")))


def build_nes(posterior, data):
    """``partyid7 ~ normal(b1 + b2 real_ideo + b3 race_adj + b4 [age=2] + b5 [age=3]
    + b6 [age=4] + b7 educ1 + b8 gender + b9 income, sigma)``, flat priors."""
    age = np.asarray(data["age_discrete"])
    cols = [1.0, _a(data, "real_ideo"), _a(data, "race_adj"), (age == 2) * 1.0, (age == 3) * 1.0,
            (age == 4) * 1.0, _a(data, "educ1"), _a(data, "gender"), _a(data, "income")]
    return _linreg(posterior, "nes", cols, _a(data, "partyid7"))


def build_blr(posterior, data):
    """``y ~ normal(X beta, sigma)``, ``beta ~ normal(0, 10)``, ``sigma ~ normal(0, 10)``."""
    X = _a(data, "X")
    return _linreg(posterior, "blr", list(X.T), _a(data, "y"), coef_sd=np.full(X.shape[1], 10.0),
                   sigma_prior="normal", sigma_scale=10.0)


def build_kilpisjarvi(posterior, data):
    """``y ~ normal(alpha + beta x, sigma)``, ``alpha ~ normal(pmualpha, psalpha)``,
    ``beta ~ normal(pmubeta, psbeta)``, flat sigma."""
    return _linreg(posterior, "kilpisjarvi", [1.0, _a(data, "x")], _a(data, "y"),
                   coef_loc=[data["pmualpha"], data["pmubeta"]],
                   coef_sd=[data["psalpha"], data["psbeta"]])


# ---------------------------------------------------------------------------


class Diamonds(PosteriorDBTarget):
    """brms regression ``diamonds``: ``Y ~ normal(Intercept + Xc b, sigma)``.

    ``Xc`` is the design matrix without its intercept column, centred by
    column means; priors ``b ~ normal(0, 1)``, ``Intercept ~ student_t(3, 8, 10)``,
    ``sigma ~ student_t(3, 0, 10)`` (half, through ``<lower=0>``).  Parameters
    ``b`` (K-1), ``Intercept``, ``sigma``.
    """

    Xc: jax.Array
    Y: jax.Array

    @property
    def layout(self):
        return (Param("b", self.Xc.shape[1]), Param("Intercept", 1), Param("sigma", 1, Lower(0.0)))

    def model_logdensity(self, params):
        b, icpt, sigma = params["b"], _scalar(params["Intercept"]), _scalar(params["sigma"])
        lp = normal_lpdf(b, 0.0, 1.0)
        lp = lp + student_t_lpdf(icpt, 3.0, 8.0, 10.0) + student_t_lpdf(sigma, 3.0, 0.0, 10.0)
        return lp + normal_lpdf(self.Y, icpt + self.Xc @ b, sigma)


def build_diamonds(posterior, data):
    """Diamonds: centre the non-intercept columns of ``X`` (brms ``transformed data``)."""
    X = _a(data, "X")
    Xc = X[:, 1:] - X[:, 1:].mean(axis=0)
    if int(data.get("prior_only", 0)):
        raise ValueError("diamonds: prior_only=1 is not supported")
    return Diamonds(posterior=posterior, stan_model="diamonds", Xc=as_float(Xc), Y=as_float(_a(data, "Y")))


# ---------------------------------------------------------------------------


class EightSchoolsNoncentered(PosteriorDBTarget):
    """Eight schools, non-centred (Rubin 1981; Gelman et al., BDA3 section 5.5).

    ``theta_trans ~ normal(0, 1)``, ``theta = mu + tau theta_trans``,
    ``y ~ normal(theta, sigma)``, ``mu ~ normal(0, 5)``, ``tau ~ cauchy(0, 5)``,
    ``tau > 0``.  Unconstrained: ``(theta_trans[1..J], mu, log tau)``; reported:
    ``(theta[1..J], mu, tau)`` as in the reference draws.
    """

    y: jax.Array
    sigma: jax.Array

    @property
    def layout(self):
        j = self.y.shape[0]
        return (Param("theta_trans", j), Param("mu", 1), Param("tau", 1, Lower(0.0)))

    def model_logdensity(self, params):
        tt, mu, tau = params["theta_trans"], _scalar(params["mu"]), _scalar(params["tau"])
        theta = mu + tau * tt
        return (normal_lpdf(tt, 0.0, 1.0) + normal_lpdf(self.y, theta, self.sigma)
                + normal_lpdf(mu, 0.0, 5.0) + cauchy_lpdf(tau, 0.0, 5.0))

    def reported(self, params):
        theta = params["mu"] + params["tau"] * params["theta_trans"]
        return jnp.concatenate([theta, params["mu"], params["tau"]])

    def params_from_reported(self, q):
        j = self.y.shape[0]
        theta, mu, tau = q[:j], q[j:j + 1], q[j + 1:j + 2]
        return {"theta_trans": (theta - mu) / tau, "mu": mu, "tau": tau}


def build_eight_schools_noncentered(posterior, data):
    return EightSchoolsNoncentered(posterior=posterior, stan_model="eight_schools_noncentered",
                                   y=as_float(data["y"]), sigma=as_float(data["sigma"]))


# ---------------------------------------------------------------------------


def _exp_quad_cov(x, alpha, rho):
    d = x[:, None] - x[None, :]
    return alpha**2 * jnp.exp(-0.5 * d * d / rho**2)


class GPPoissonRegression(PosteriorDBTarget):
    """Latent GP Poisson regression (``gp_pois_regr``), non-centred.

    ``K = alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + 1e-10 I``, ``f = chol(K) f_tilde``,
    ``rho ~ gamma(25, 4)``, ``alpha ~ normal(0, 2)``, ``f_tilde ~ normal(0, 1)``,
    ``k ~ poisson_log(f)``.  Reported: ``(rho, alpha, f[1..N])``.
    """

    x: jax.Array
    k: jax.Array

    @property
    def layout(self):
        return (Param("rho", 1, Lower(0.0)), Param("alpha", 1, Lower(0.0)), Param("f_tilde", self.x.shape[0]))

    def _chol(self, params):
        cov = _exp_quad_cov(self.x, _scalar(params["alpha"]), _scalar(params["rho"]))
        return jnp.linalg.cholesky(cov + 1e-10 * jnp.eye(self.x.shape[0], dtype=cov.dtype))

    def model_logdensity(self, params):
        rho, alpha, ft = _scalar(params["rho"]), _scalar(params["alpha"]), params["f_tilde"]
        f = self._chol(params) @ ft
        return (gamma_lpdf(rho, 25.0, 4.0) + normal_lpdf(alpha, 0.0, 2.0) + normal_lpdf(ft, 0.0, 1.0)
                + jnp.sum(self.k * f - jnp.exp(f)))

    def reported(self, params):
        f = self._chol(params) @ params["f_tilde"]
        return jnp.concatenate([params["rho"], params["alpha"], f])

    def params_from_reported(self, q):
        p = {"rho": q[:1], "alpha": q[1:2]}
        p["f_tilde"] = jax.scipy.linalg.solve_triangular(self._chol(p), q[2:], lower=True)
        return p


def build_gp_pois_regr(posterior, data):
    return GPPoissonRegression(posterior=posterior, stan_model="gp_pois_regr",
                               x=as_float(data["x"]), k=as_float(data["k"]))


class GPRegression(PosteriorDBTarget):
    """GP regression with marginalized latent function (``gp_regr``).

    ``y ~ multi_normal(0, alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + sigma I)`` (note:
    the program adds ``sigma``, not ``sigma^2``, to the diagonal), ``rho ~ gamma(25, 4)``,
    ``alpha ~ normal(0, 2)``, ``sigma ~ normal(0, 1)``; all three positive.
    """

    x: jax.Array
    y: jax.Array

    @property
    def layout(self):
        return (Param("rho", 1, Lower(0.0)), Param("alpha", 1, Lower(0.0)), Param("sigma", 1, Lower(0.0)))

    def model_logdensity(self, params):
        rho, alpha, sigma = (_scalar(params[n]) for n in ("rho", "alpha", "sigma"))
        n = self.x.shape[0]
        cov = _exp_quad_cov(self.x, alpha, rho) + sigma * jnp.eye(n, dtype=self.x.dtype)
        chol = jnp.linalg.cholesky(cov)
        w = jax.scipy.linalg.solve_triangular(chol, self.y, lower=True)
        lp_y = -0.5 * jnp.sum(w * w) - jnp.sum(jnp.log(jnp.diag(chol)))
        return gamma_lpdf(rho, 25.0, 4.0) + normal_lpdf(alpha, 0.0, 2.0) + normal_lpdf(sigma, 0.0, 1.0) + lp_y


def build_gp_regr(posterior, data):
    return GPRegression(posterior=posterior, stan_model="gp_regr", x=as_float(data["x"]), y=as_float(data["y"]))


# ---------------------------------------------------------------------------


class HMMExample(PosteriorDBTarget):
    """Two-state Gaussian HMM (``hmm_example``), states marginalized by the forward algorithm.

    Transition rows ``theta1, theta2`` (simplexes), emission means
    ``mu`` (positive_ordered), ``y_t | state k ~ normal(mu_k, 1)``;
    ``mu_1 ~ normal(3, 1)``, ``mu_2 ~ normal(10, 1)``; flat Dirichlet(1) rows.
    ``log p(y) = logsumexp(gamma_N)`` with ``gamma_t[k] = logsumexp_j(gamma_{t-1}[j]
    + log theta_j[k]) + log N(y_t | mu_k, 1)`` (Rabiner 1989).
    """

    y: jax.Array

    @property
    def layout(self):
        return (Param("theta1", 2, Simplex()), Param("theta2", 2, Simplex()), Param("mu", 2, PositiveOrdered()))

    def model_logdensity(self, params):
        mu = params["mu"]
        log_a = jnp.log(jnp.stack([params["theta1"], params["theta2"]]))  # [from j, to k]

        def emit(yt):
            return -0.5 * (yt - mu) ** 2

        def step(g, yt):
            g = jax.nn.logsumexp(g[:, None] + log_a, axis=0) + emit(yt)
            return g, None

        g, _ = jax.lax.scan(step, emit(self.y[0]), self.y[1:])
        return normal_lpdf(mu[0], 3.0, 1.0) + normal_lpdf(mu[1], 10.0, 1.0) + jax.nn.logsumexp(g)


def build_hmm_example(posterior, data):
    if int(data["K"]) != 2:
        raise ValueError(f"hmm_example: the program declares theta1, theta2 so K must be 2, got {data['K']}")
    return HMMExample(posterior=posterior, stan_model="hmm_example", y=as_float(data["y"]))


# ---------------------------------------------------------------------------


class LowDimGaussMix(PosteriorDBTarget):
    """Two-component 1-D Gaussian mixture (``low_dim_gauss_mix``).

    ``y_n ~ theta N(mu_1, sigma_1) + (1 - theta) N(mu_2, sigma_2)``, ``mu`` ordered,
    ``sigma ~ normal(0, 2)`` (positive), ``mu ~ normal(0, 2)``, ``theta ~ beta(5, 5)``.
    """

    y: jax.Array

    @property
    def layout(self):
        return (Param("mu", 2, Ordered()), Param("sigma", 2, Lower(0.0)), Param("theta", 1, Interval(0.0, 1.0)))

    def model_logdensity(self, params):
        mu, sigma, theta = params["mu"], params["sigma"], _scalar(params["theta"])
        comp = -0.5 * ((self.y[:, None] - mu) / sigma) ** 2 - jnp.log(sigma)
        lik = jnp.logaddexp(jnp.log(theta) + comp[:, 0], jnp.log1p(-theta) + comp[:, 1])
        return normal_lpdf(sigma, 0.0, 2.0) + normal_lpdf(mu, 0.0, 2.0) + beta_lpdf(theta, 5.0, 5.0) + jnp.sum(lik)


def build_low_dim_gauss_mix(posterior, data):
    return LowDimGaussMix(posterior=posterior, stan_model="low_dim_gauss_mix", y=as_float(data["y"]))


# ---------------------------------------------------------------------------


class ARK(PosteriorDBTarget):
    """AR(K) (``arK``): ``y_t ~ normal(alpha + sum_k beta_k y_{t-k}, sigma)`` for ``t > K``.

    ``alpha, beta ~ normal(0, 10)``, ``sigma ~ cauchy(0, 2.5)`` (positive).
    ``lags[t, k] = y_{t-k}``, built once from the data.
    """

    lags: jax.Array
    y_now: jax.Array

    @property
    def layout(self):
        return (Param("alpha", 1), Param("beta", self.lags.shape[1]), Param("sigma", 1, Lower(0.0)))

    def model_logdensity(self, params):
        alpha, beta, sigma = _scalar(params["alpha"]), params["beta"], _scalar(params["sigma"])
        return (normal_lpdf(alpha, 0.0, 10.0) + normal_lpdf(beta, 0.0, 10.0) + cauchy_lpdf(sigma, 0.0, 2.5)
                + normal_lpdf(self.y_now, alpha + self.lags @ beta, sigma))


def build_arK(posterior, data):
    y, k = _a(data, "y"), int(data["K"])
    t = len(y)
    lags = np.stack([y[k - j:t - j] for j in range(1, k + 1)], axis=1)
    return ARK(posterior=posterior, stan_model="arK", lags=as_float(lags), y_now=as_float(y[k:]))


class ARMA11(PosteriorDBTarget):
    """ARMA(1, 1) (``arma11``).

    ``nu_1 = mu + phi mu``, ``nu_t = mu + phi y_{t-1} + theta err_{t-1}``,
    ``err_t = y_t - nu_t ~ normal(0, sigma)``; ``mu ~ normal(0, 10)``,
    ``phi, theta ~ normal(0, 2)``, ``sigma ~ cauchy(0, 2.5)`` (positive).
    """

    y: jax.Array

    @property
    def layout(self):
        return (Param("mu", 1), Param("phi", 1), Param("theta", 1), Param("sigma", 1, Lower(0.0)))

    def model_logdensity(self, params):
        mu, phi, theta, sigma = (_scalar(params[n]) for n in ("mu", "phi", "theta", "sigma"))
        err0 = self.y[0] - (mu + phi * mu)

        def step(err_prev, yy):
            y_t, y_prev = yy
            err = y_t - (mu + phi * y_prev + theta * err_prev)
            return err, err

        _, errs = jax.lax.scan(step, err0, (self.y[1:], self.y[:-1]))
        err = jnp.concatenate([err0[None], errs])
        return (normal_lpdf(mu, 0.0, 10.0) + normal_lpdf(phi, 0.0, 2.0) + normal_lpdf(theta, 0.0, 2.0)
                + cauchy_lpdf(sigma, 0.0, 2.5) + normal_lpdf(err, 0.0, sigma))


def build_arma11(posterior, data):
    return ARMA11(posterior=posterior, stan_model="arma11", y=as_float(data["y"]))


class GARCH11(PosteriorDBTarget):
    """GARCH(1, 1) (``garch11``; Bollerslev 1986), flat priors.

    ``sigma_1 = sigma1`` (data), ``sigma_t^2 = alpha0 + alpha1 (y_{t-1} - mu)^2
    + beta1 sigma_{t-1}^2``, ``y_t ~ normal(mu, sigma_t)``; ``alpha0 > 0``,
    ``0 < alpha1 < 1``, ``0 < beta1 < 1 - alpha1`` (a parameter-dependent bound,
    whose log-width enters the log-Jacobian).
    """

    y: jax.Array
    sigma1: jax.Array

    @property
    def layout(self):
        return (Param("mu", 1), Param("alpha0", 1, Lower(0.0)), Param("alpha1", 1, Interval(0.0, 1.0)),
                Param("beta1", 1, Interval(0.0, _one_minus_alpha1)))

    def model_logdensity(self, params):
        mu, a0, a1, b1 = (_scalar(params[n]) for n in ("mu", "alpha0", "alpha1", "beta1"))

        def step(s_prev, y_prev):
            s = jnp.sqrt(a0 + a1 * (y_prev - mu) ** 2 + b1 * s_prev**2)
            return s, s

        s1 = _scalar(self.sigma1)
        _, s_rest = jax.lax.scan(step, s1, self.y[:-1])
        sig = jnp.concatenate([s1[None], s_rest])
        return normal_lpdf(self.y, mu, sig)


def _one_minus_alpha1(params):
    return 1.0 - params["alpha1"]


def build_garch11(posterior, data):
    return GARCH11(posterior=posterior, stan_model="garch11", y=as_float(data["y"]),
                   sigma1=as_float(data["sigma1"]))


# ---------------------------------------------------------------------------
# more Gaussian linear regressions of posteriordb (same family as above; each
# entry states the program's response and design columns, from its
# ``transformed data`` block).  Stan's ``sd`` is the sample sd (ddof = 1).


def _sd(v):
    return np.std(v, ddof=1)


def _linreg_builder(stan_model, response, columns, sigma_prior="flat", sigma_scale=1.0, doc=""):
    def build(posterior, data):
        return _linreg(posterior, stan_model, columns(data), response(data),
                       sigma_prior=sigma_prior, sigma_scale=sigma_scale)

    build.__name__ = f"build_{stan_model}"
    build.__doc__ = f"posteriordb ``{stan_model}``: {doc}"
    return build


def _earn(d):
    return _a(d, "earn")


def _log_earn(d):
    return np.log(_a(d, "earn"))


def _kid(d):
    return _a(d, "kid_score")


def _log_weight(d):
    return np.log(_a(d, "weight"))


def _z_height(d):
    h = _a(d, "height")
    return (h - h.mean()) / _sd(h)


def _std2(v):
    return (v - v.mean()) / (2.0 * _sd(v))


def _log_vol(d):
    return np.log(_a(d, "diam1") * _a(d, "diam2") * _a(d, "canopy_height"))


def _log_area(d):
    return np.log(_a(d, "diam1") * _a(d, "diam2"))


def _work(d, level):
    return (np.asarray(d["mom_work"]) == level) * 1.0


EXTRA_LINREG = {
    "earn_height": _linreg_builder(
        "earn_height", _earn, lambda d: [1.0, _a(d, "height")],
        doc="earn ~ normal(b1 + b2 height, sigma), flat priors"),
    "log10earn_height": _linreg_builder(
        "log10earn_height", lambda d: np.log10(_a(d, "earn")), lambda d: [1.0, _a(d, "height")],
        doc="log10(earn) ~ normal(b1 + b2 height, sigma), flat priors"),
    "logearn_height": _linreg_builder(
        "logearn_height", _log_earn, lambda d: [1.0, _a(d, "height")],
        doc="log(earn) ~ normal(b1 + b2 height, sigma), flat priors"),
    "logearn_height_male": _linreg_builder(
        "logearn_height_male", _log_earn, lambda d: [1.0, _a(d, "height"), _a(d, "male")],
        doc="log(earn) ~ normal(b1 + b2 height + b3 male, sigma), flat priors"),
    "logearn_interaction_z": _linreg_builder(
        "logearn_interaction_z", _log_earn,
        lambda d: [1.0, _z_height(d), _a(d, "male"), _z_height(d) * _a(d, "male")],
        doc="log(earn) ~ normal(b1 + b2 z + b3 male + b4 z male, sigma), z = standardized height"),
    "logearn_logheight_male": _linreg_builder(
        "logearn_logheight_male", _log_earn, lambda d: [1.0, np.log(_a(d, "height")), _a(d, "male")],
        doc="log(earn) ~ normal(b1 + b2 log(height) + b3 male, sigma), flat priors"),
    "kidscore_momhs": _linreg_builder(
        "kidscore_momhs", _kid, lambda d: [1.0, _a(d, "mom_hs")], "cauchy", 2.5,
        doc="kid_score ~ normal(b1 + b2 mom_hs, sigma), sigma ~ cauchy(0, 2.5)"),
    "kidscore_momiq": _linreg_builder(
        "kidscore_momiq", _kid, lambda d: [1.0, _a(d, "mom_iq")], "cauchy", 2.5,
        doc="kid_score ~ normal(b1 + b2 mom_iq, sigma), sigma ~ cauchy(0, 2.5)"),
    "kidscore_interaction_c": _linreg_builder(
        "kidscore_interaction_c", _kid,
        lambda d: [1.0, _a(d, "mom_hs") - _a(d, "mom_hs").mean(), _a(d, "mom_iq") - _a(d, "mom_iq").mean(),
                   (_a(d, "mom_hs") - _a(d, "mom_hs").mean()) * (_a(d, "mom_iq") - _a(d, "mom_iq").mean())],
        doc="kid_score on mean-centred mom_hs, mom_iq and their product, flat priors"),
    "kidscore_interaction_c2": _linreg_builder(
        "kidscore_interaction_c2", _kid,
        lambda d: [1.0, _a(d, "mom_hs") - 0.5, _a(d, "mom_iq") - 100.0,
                   (_a(d, "mom_hs") - 0.5) * (_a(d, "mom_iq") - 100.0)],
        doc="kid_score on mom_hs - 0.5, mom_iq - 100 and their product, flat priors"),
    "kidscore_interaction_z": _linreg_builder(
        "kidscore_interaction_z", _kid,
        lambda d: [1.0, _std2(_a(d, "mom_hs")), _std2(_a(d, "mom_iq")),
                   _std2(_a(d, "mom_hs")) * _std2(_a(d, "mom_iq"))],
        doc="kid_score on (x - mean) / (2 sd) of mom_hs, mom_iq and their product, flat priors"),
    "kidscore_mom_work": _linreg_builder(
        "kidscore_mom_work", _kid, lambda d: [1.0, _work(d, 2), _work(d, 3), _work(d, 4)],
        doc="kid_score on indicators mom_work == 2, 3, 4, flat priors"),
    "mesquite": _linreg_builder(
        "mesquite", lambda d: _a(d, "weight"),
        lambda d: [1.0] + [_a(d, k) for k in ("diam1", "diam2", "canopy_height", "total_height", "density", "group")],
        doc="weight on diam1, diam2, canopy_height, total_height, density, group, flat priors"),
    "logmesquite": _linreg_builder(
        "logmesquite", _log_weight,
        lambda d: [1.0] + [np.log(_a(d, k)) for k in ("diam1", "diam2", "canopy_height", "total_height", "density")]
        + [_a(d, "group")],
        doc="log weight on logs of diam1, diam2, canopy_height, total_height, density, and group, flat priors"),
    "logmesquite_logva": _linreg_builder(
        "logmesquite_logva", _log_weight, lambda d: [1.0, _log_vol(d), _log_area(d), _a(d, "group")],
        doc="log weight on log canopy volume, log canopy area, group, flat priors"),
    "logmesquite_logvash": _linreg_builder(
        "logmesquite_logvash", _log_weight,
        lambda d: [1.0, _log_vol(d), _log_area(d), np.log(_a(d, "diam1") / _a(d, "diam2")),
                   np.log(_a(d, "total_height")), _a(d, "group")],
        doc="log weight on log volume, log area, log shape, log total_height, group, flat priors"),
    "logmesquite_logvolume": _linreg_builder(
        "logmesquite_logvolume", _log_weight, lambda d: [1.0, _log_vol(d)],
        doc="log weight on log canopy volume, flat priors"),
}
