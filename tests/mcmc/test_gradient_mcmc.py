"""Statistical tests of the gradient MCMC kernels against ground truth (z * MCSE, fixed seeds)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.targets.gaussian import _gaussian

Z = 5.0  # |estimate - truth| <= Z * MCSE; 5 sigma over <= 20 comparisons per test


def _correlated():
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 2.0]])
    return _gaussian(np.array([1.0, -2.0, 0.5]), cov, "corr3")


def _check_moments(r, gt):
    d = r.diagnostics
    z_mean = np.abs(d["mean"] - gt.mean) / d["mcse_mean"]
    z_sd = np.abs(d["sd"] - gt.std) / d["mcse_sd"]
    assert np.all(z_mean < Z), (z_mean, d["mean"], gt.mean)
    assert np.all(z_sd < Z), (z_sd, d["sd"], gt.std)
    assert np.max(d["rhat"]) < 1.05


@pytest.mark.parametrize("method,kw", [
    ("nuts", {}), ("hmc", {}), ("mala", {}), ("rwm", dict(num_samples=5000)),
    ("nuts", dict(dense_mass=True)), ("nuts", dict(pooled_adaptation=True)),
])
def test_moments_correlated_gaussian(method, kw):
    t = _correlated()
    args = dict(num_chains=4, num_warmup=500, num_samples=1500, seed=1, progress=False)
    args.update(kw)
    r = samplax.sample(t, method, **args)
    _check_moments(r, t.ground_truth())


def test_nuts_adapts_mass_matrix_to_scales():
    scales = np.array([0.01, 1.0, 100.0])
    t = _gaussian(np.zeros(3), np.diag(scales**2), "scaled")
    r = samplax.sample(t, "nuts", num_chains=2, num_warmup=1000, num_samples=500, seed=0, progress=False)
    _check_moments(r, t.ground_truth())
    # after adaptation NUTS needs few leapfrog steps per draw (well-conditioned)
    assert np.mean(r.stats["n_steps"]) < 8


def test_mh_exactness_on_bimodal_1d():
    """RWM on an equal mixture N(-2, 1), N(2, 1): P(x > 0) = 1/2, E[x^2] = 5."""
    def lp(x):
        return jnp.logaddexp(-0.5 * (x[0] - 2) ** 2, -0.5 * (x[0] + 2) ** 2)

    t = samplax.from_logdensity(lp, 1)
    r = samplax.sample(t, "rwm", num_chains=8, num_warmup=500, num_samples=5000, seed=2, progress=False)
    x = r.samples[..., 0]
    from samplax.diagnostics import mcse_mean

    for f, truth in [((x > 0).astype(float), 0.5), (x**2, 5.0)]:
        assert abs(f.mean() - truth) < Z * float(mcse_mean(f)), (f.mean(), truth)


def test_low_level_kernels_compose_with_scan(key):
    """The Kernel factories work on their own in a user's scan."""
    lp = lambda x: -0.5 * jnp.sum(x**2)  # noqa: E731
    for k in [samplax.mcmc.nuts(lp, 0.8), samplax.mcmc.hmc(lp, 0.3, num_integration_steps=5),
              samplax.mcmc.mala(lp, 0.8), samplax.mcmc.rwm(lp, 1.0)]:
        state = k.init(key, jnp.zeros(2))

        def body(s, i):
            s, _ = k.step(jax.random.fold_in(key, i), s)
            return s, s.position

        _, xs = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(3000)))(state)
        xs = np.asarray(xs)
        assert abs(xs.mean()) < 0.15 and abs(xs.var() - 1) < 0.25


@pytest.mark.parametrize("step_size", [0.8432658, 0.86734451])
def test_nuts_detects_u_turns_of_periodic_trajectories(step_size, key):
    """Regression: with the plain momentum-sum criterion these step sizes made NUTS on an isotropic
    Gaussian miss U-turns and run trees to the maximum depth (mean ~200 leapfrogs instead of ~5)."""
    lp = lambda x: -0.5 * jnp.sum(x**2)  # noqa: E731
    k = samplax.mcmc.nuts(lp, step_size)
    state = k.init(key, jnp.zeros(10))

    def body(s, i):
        s, info = k.step(jax.random.fold_in(key, i), s)
        return s, info.num_integration_steps

    _, n = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(1000)))(state)
    n = np.asarray(n)
    assert n.max() < 2**10 - 1
    assert n.mean() < 8


def test_low_rank_metric_matches_its_dense_matrix():
    """velocity, kinetic energy, noise scaling, whitening and momentum draws of a LowRankMetric."""
    import jax
    from samplax.mcmc import metrics as M

    rng = np.random.default_rng(0)
    d, k = 6, 3
    u, _ = np.linalg.qr(rng.normal(size=(d, k)))
    m = M.LowRankMetric(jnp.asarray(rng.uniform(0.5, 2, d)), jnp.asarray(u), jnp.asarray([3.0, 0.2, 1.0]))
    c = np.asarray(M.low_rank_to_dense(m))
    assert np.all(np.linalg.eigvalsh(c) > 0)
    p = jnp.asarray(rng.normal(size=d))
    np.testing.assert_allclose(M.velocity(m, p), c @ np.asarray(p), rtol=1e-12)
    np.testing.assert_allclose(M.kinetic_energy(m, p), 0.5 * np.asarray(p) @ c @ np.asarray(p), rtol=1e-12)
    eye = jnp.eye(d)
    a = np.stack([np.asarray(M.scale_noise(m, eye[i])) for i in range(d)], 1)  # C^{1/2}
    np.testing.assert_allclose(a @ a.T, c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(M.whiten(m, M.scale_noise(m, p)), p, rtol=1e-10)
    # momentum draws p = A z from the same normal z: A A^T must be C^{-1}
    keys = jax.random.split(jax.random.key(0), d)
    zs = np.stack([np.asarray(jax.random.normal(kk, (d,), dtype=p.dtype)) for kk in keys])
    ps = np.stack([np.asarray(M.sample_momentum(kk, m, p)) for kk in keys])
    amap = np.linalg.solve(zs, ps).T  # ps = zs @ A^T
    np.testing.assert_allclose(amap @ amap.T, np.linalg.inv(c), rtol=1e-8, atol=1e-9)
    # a diagonal written as a LowRankMetric is that diagonal
    diag = jnp.asarray(rng.uniform(0.1, 3, d))
    np.testing.assert_allclose(M.low_rank_to_dense(M.diagonal_as_low_rank(diag, 2)), np.diag(diag), rtol=1e-12)
