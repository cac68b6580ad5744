"""Walk-jump sampling with accumulating measurements.

Saremi & Hyvärinen 2019 ("Neural Empirical Bayes", JMLR) sample the smoothed
density ``p_sigma = p * N(0, sigma^2 I)`` by Langevin dynamics ("walk") and map
a noisy point ``y`` back by the empirical-Bayes denoiser
``x_hat(y) = E[x | y] = y + sigma^2 grad log p_sigma(y)`` ("jump").
Saremi, Park & Bach 2023 ("Chain of Log-Concave Markov Chains", arXiv:2305.19473)
accumulate measurements ``y_m = x + sigma eps_m``: the joint law of
``y_{1:m}`` depends on ``x`` only through ``ybar_m = mean(y_{1:m})`` and

    log p(y_{1:m}) = log p_{sigma^2/m}(ybar_m) - (1 / 2 sigma^2) sum_{i<=m} ||y_i - ybar_m||^2 + const,

so ``y_1 ~ p(y_1)``, ``y_2 ~ p(y_2 | y_1)``, ... are sampled one after the other
(each conditional is close to log-concave when ``sigma`` is large), and after
``M`` measurements the jump is ``x_hat = ybar_M + (sigma^2 / M) grad log p_{sigma^2/M}(ybar_M)``.

What this module does (per independent trajectory; a chain holds
``num_samples`` of them, so the returned draws are independent):

* measurement ``m`` starts from a draw of the Gaussian approximation
  ``N(x_hat_{m-1}, C_{m-1} + sigma^2 I)`` of ``p(y_m | y_{1:m-1})``, with
  ``C_{m-1} = Cov[x | y_{1:m-1}]`` (Tweedie's second-order formula
  ``s I + s^2 Hess log p_s`` when exact, the weighted covariance of the importance
  draws otherwise), computed together with the jump
  (``m = 1``: the initial point plus ``sigma eps``), and runs Langevin steps of size
  ``h = step_size * sigma^2`` on ``log p(y_m | y_{1:m-1})``, whose gradient is
  ``(1/m) grad log p_{sigma^2/m}(ybar_m) - (y_m - ybar_m) / sigma^2``;
  the first measurement gets ``max(1, num_warmup // 2)`` steps, each later one
  ``max(1, num_warmup // (2 (M - 1)))``;
* Langevin steps are Metropolis-adjusted (MALA) when the smoothed density is
  exact (Gaussian mixtures, see :mod:`samplax.interacting.smoothing`) and
  unadjusted (ULA with the SNIS score) otherwise;
* the returned draw is the final jump ``x_hat_M``.

Step size (default): ``0.5`` for the Metropolis-adjusted (exact) path, ``0.1``
for the unadjusted SNIS path, which has an ``O(h)`` discretisation bias.  The SNIS estimator's own ``O(1/num_is)`` bias inflates the
spread (measured on a 2-D Gaussian: ``num_is = 16`` gives a ~60% too large sd,
``num_is = 256``, the default, is within Monte Carlo error).

Known bias, by construction: ``x_hat_M`` is a posterior mean, so for a
Gaussian target ``N(mu, Sigma)`` its law is ``N(mu, Sigma (Sigma + s I)^{-1} Sigma)``
with ``s = sigma^2 / M`` (variance shrunk by ``≈ s``); the mean is exact.

Known bias of the SNIS path (targets that are not Gaussian mixtures): the walk is
unadjusted and its score a self-normalised estimate, and both biases grow with the
dimension.  Measured at the defaults on the 6-D correlated Gaussian of the tests (sds 0.5
... 2, correlations 0.6^|i-j|): the sds come out 16% to 45% too large (2 x 200 draws, MCSE
about 5%).  Every run therefore carries a ``biased`` warning (:data:`SNIS_BIAS_MESSAGE`,
or :data:`EXACT_BIAS_MESSAGE` for the shrinkage of the exact path).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from samplax.interacting import smoothing


SNIS_BIAS_MESSAGE = (
    "the target is not a Gaussian mixture, so the walk is unadjusted Langevin on a self-normalised importance "
    "sampling estimate of the smoothed score: its step-size bias and the estimator's O(1/num_is) bias grow with the "
    "dimension (at the defaults on a 6-D correlated Gaussian the sds came out 16-45% too large); raise num_is, "
    "lower step_size, or use an exact method")

EXACT_BIAS_MESSAGE = (
    "the returned draws are posterior means E[x | measurements] at noise variance s = sigma^2 / num_measurements, "
    "so the spread is shrunk (for a Gaussian N(mu, S) the law is N(mu, S (S + s I)^-1 S)); raise num_measurements "
    "or lower sigma to reduce it")


def bias_warning(name: str, exact: bool, final_noise_variance: float) -> dict:
    """The ``biased`` run warning of walk-jump (module docstring): the SNIS walk's bias or the exact path's shrinkage."""
    return {"code": "biased", "value": float(final_noise_variance),
            "message": f"{name} ({'exact mixture' if exact else 'SNIS'} smoothed score, final noise variance "
                       f"{final_noise_variance:.3g}): " + (EXACT_BIAS_MESSAGE if exact else SNIS_BIAS_MESSAGE)}


def stage_steps(num_warmup: int, num_measurements: int) -> tuple:
    """Langevin steps for the first measurement and for each later one."""
    first = max(1, num_warmup // 2)
    later = max(1, num_warmup // (2 * max(num_measurements - 1, 1))) if num_measurements > 1 else 0
    return first, later


def make_run_chain(logdensity_of_target, parts, *, sigma, num_measurements, num_warmup, step_size, num_is):
    """``run_chain(key, x0 [N, d], target) -> (x_hat [N, d], stats)`` (module doc).

    ``stats["nonfinite_evals"] [N]``: each trajectory's target evaluations (SNIS draws) with a NaN or ``+inf``
    log-density, which get zero weight (always 0 on the exact path, which evaluates no target)."""
    M = num_measurements
    first, later = stage_steps(num_warmup, M)
    s2 = float(sigma) ** 2
    exact = parts is not None

    def run_chain(key, x0, target):
        if exact:
            smooth = smoothing.exact_smoothed(parts)
            posterior = smoothing.exact_posterior(parts)
        else:
            smooth = smoothing.snis_smoothed(logdensity_of_target(target), num_is)
            posterior = smoothing.snis_posterior(logdensity_of_target(target), num_is)

        def cond_logp_grad(k, y, S_prev, Q_prev, m):
            """log p(y_m | y_{1:m-1}) (+const) and its gradient at y_m = y."""
            ybar = (S_prev + y) / m
            ss = Q_prev + jnp.sum(y * y) - m * jnp.sum(ybar * ybar)
            lps, g, n_bad = smooth(k, ybar, s2 / m)
            return lps - ss / (2 * s2), g / m - (y - ybar) / s2, n_bad

        def one_traj(k_traj, x_init):
            h = step_size * s2

            def langevin(carry, i):
                y, lp, g, S_prev, Q_prev, m, acc_sum, bad = carry
                kk = jax.random.fold_in(k_traj, i)
                k1, k2, k3 = jax.random.split(kk, 3)
                prop = y + h * g + jnp.sqrt(2 * h) * jax.random.normal(k1, y.shape, y.dtype)
                lp_p, g_p, nb = cond_logp_grad(k2, prop, S_prev, Q_prev, m)
                if exact:
                    def logq(a, b, gb):  # log q(a | b), up to a constant
                        return -jnp.sum((a - b - h * gb) ** 2) / (4 * h)
                    log_r = lp_p - lp + logq(y, prop, g_p) - logq(prop, y, g)
                    log_r = jnp.where(jnp.isnan(log_r), -jnp.inf, log_r)
                    accept = jnp.log(jax.random.uniform(k3, dtype=y.dtype)) < log_r
                    a = jnp.exp(jnp.minimum(log_r, 0.0))
                else:
                    accept = jnp.all(jnp.isfinite(prop)) & jnp.all(jnp.isfinite(g_p))
                    a = accept.astype(y.dtype)
                y = jnp.where(accept, prop, y)
                lp = jnp.where(accept, lp_p, lp)
                g = jnp.where(accept, g_p, g)
                return (y, lp, g, S_prev, Q_prev, m, acc_sum + a, bad + nb), None

            def measurement(carry, m_idx):
                S_prev, Q_prev, xhat, cov, acc_sum, bad = carry
                m = (m_idx + 1).astype(x_init.dtype)
                km = jax.random.fold_in(k_traj, 10_000_000 + m_idx)
                d = xhat.shape[0]
                L = jnp.linalg.cholesky(cov + s2 * jnp.eye(d, dtype=xhat.dtype))
                y0 = xhat + L @ jax.random.normal(km, xhat.shape, xhat.dtype)
                lp0, g0, nb0 = cond_logp_grad(jax.random.fold_in(km, 1), y0, S_prev, Q_prev, m)
                n_steps = jnp.where(m_idx == 0, first, later)
                base = jnp.where(m_idx == 0, 0, first + (m_idx - 1) * later)

                def body(i, c):
                    return jax.lax.cond(i < n_steps, lambda c: langevin(c, base + i)[0], lambda c: c, c)

                y, _, _, _, _, _, acc_sum, bad = jax.lax.fori_loop(
                    0, max(first, later), body, (y0, lp0, g0, S_prev, Q_prev, m, acc_sum, bad + nb0))
                S, Q = S_prev + y, Q_prev + jnp.sum(y * y)
                ybar = S / m
                xhat, cov, nb = posterior(jax.random.fold_in(km, 2), ybar, s2 / m)
                return (S, Q, xhat, cov, acc_sum, bad + nb), None

            zero = jnp.zeros_like(x_init)
            cov0 = jnp.zeros((x_init.shape[0],) * 2, x_init.dtype)
            (S, Q, xhat, _, acc_sum, bad), _ = jax.lax.scan(
                measurement, (zero, jnp.zeros((), x_init.dtype), x_init, cov0, jnp.zeros((), x_init.dtype),
                              jnp.zeros((), jnp.int32)),
                jnp.arange(M))
            return xhat, acc_sum / (first + (M - 1) * later), bad

        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x0.shape[0]))
        xhat, acc, bad = jax.vmap(one_traj)(keys, x0)
        return xhat, {"acceptance_rate": acc, "nonfinite_evals": bad}

    return run_chain


def snis_evals_per_chain(num_particles, *, num_measurements, num_warmup, num_is) -> int:
    """Target evaluations inside one chain's run on the SNIS path (those ``stats["nonfinite_evals"]`` counts from)."""
    first, later = stage_steps(num_warmup, num_measurements)
    return num_particles * num_is * (first + (num_measurements - 1) * later + 2 * num_measurements)


def cost_per_chain(num_particles, *, exact, num_measurements, num_warmup, num_is) -> dict:
    """Per chain: SNIS costs ``num_is`` log-densities per smoothed evaluation (the initial points'
    search is counted by the run engine).

    Smoothed evaluations per trajectory: one per Langevin step, one at the start
    of each measurement and one jump per measurement.  The exact (mixture) path
    evaluates the closed-form smoothed density only and no target log-density.
    """
    first, later = stage_steps(num_warmup, num_measurements)
    n_smooth = first + (num_measurements - 1) * later + 2 * num_measurements
    lp = num_particles * (0 if exact else num_is * n_smooth)
    return {"num_logdensity_evals": lp, "num_grad_evals": 0}
