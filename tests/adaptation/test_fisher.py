"""Fisher-divergence (draws + gradients) mass-matrix estimates against exact answers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.adaptation.fisher import (
    fisher_diagonal, fisher_init, fisher_low_rank, fisher_update, low_rank_inverse_mass_matrix,
    spd_geometric_mean_inverse,
)


def _state(x, g, dense=False):
    s = fisher_init(x.shape[1], dense, x.dtype)
    # two batches: exercises the Chan merge as well
    h = x.shape[0] // 2
    s = fisher_update(s, x[:h], g[:h])
    return fisher_update(s, x[h:], g[h:])


def test_diagonal_gaussian_is_exact(key):
    """x = m + s z and grad = -z / s share z, so sqrt(Var x / Var g) = s^2 for ANY sample size."""
    sd = jnp.asarray(10.0 ** np.linspace(-2, 2, 7))
    mean = jnp.arange(7.0)
    z = jax.random.normal(key, (50, 7))
    x = mean + sd * z
    g = -(x - mean) / sd**2
    imm = fisher_diagonal(_state(x, g))
    np.testing.assert_allclose(np.sqrt(np.asarray(imm)), np.asarray(sd), rtol=1e-10)


def test_correlated_gaussian_diagonal_within_clt_tolerance(key):
    """Truth: sqrt(S_ii / P_ii), P = S^{-1}.  log(estimate) = (log vx - log vg)/2 with
    sd(log v) <= sqrt(2/n) each, so |log est - log truth| <= z sqrt(2/n) (z = 5)."""
    d, n, rho = 6, 20000, 0.8
    S = (1 - rho) * np.eye(d) + rho * np.ones((d, d))
    S = S * np.outer(np.arange(1, d + 1), np.arange(1, d + 1))
    P = np.linalg.inv(S)
    x = jax.random.multivariate_normal(key, jnp.zeros(d), jnp.asarray(S), (n,))
    g = -x @ jnp.asarray(P)
    est = np.asarray(fisher_diagonal(_state(x, g)))
    truth = np.sqrt(np.diag(S) / np.diag(P))
    assert np.max(np.abs(np.log(est / truth))) < 5 * np.sqrt(2.0 / n)
    # and it is NOT the marginal variance (the test can fail for a Welford estimate)
    assert np.min(np.abs(np.log(np.diag(S) / truth))) > 10 * np.sqrt(2.0 / n)


def test_zero_gradient_variance_falls_back():
    x = jnp.ones((10, 2)) * jnp.arange(10.0)[:, None]
    g = jnp.zeros((10, 2))
    np.testing.assert_array_equal(np.asarray(fisher_diagonal(_state(x, g))), [1.0, 1.0])


def test_spd_geometric_mean_solves_riccati(key):
    k1, k2 = jax.random.split(key)
    a = jax.random.normal(k1, (5, 5)); a = a @ a.T + 0.5 * jnp.eye(5)
    b = jax.random.normal(k2, (5, 5)); b = b @ b.T + 0.5 * jnp.eye(5)
    s = spd_geometric_mean_inverse(a, b)
    np.testing.assert_allclose(np.asarray(s @ b @ s), np.asarray(a), rtol=1e-8, atol=1e-8)
    assert np.all(np.linalg.eigvalsh(np.asarray(s)) > 0)


def _correlated(d=8):
    """Covariance with one dominant direction v (eigenvalue 50) on top of unequal scales."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal(d); v /= np.linalg.norm(v)
    scales = np.linspace(0.5, 2.0, d)
    S = np.diag(scales**2) + 50.0 * np.outer(v, v)
    return S


def test_low_rank_recovers_leading_eigenvector(key):
    d, n = 8, 20000
    S = _correlated(d)
    x = jax.random.multivariate_normal(key, jnp.zeros(d), jnp.asarray(S), (n,))
    g = -x @ jnp.asarray(np.linalg.inv(S))
    st = _state(x, g, dense=True)
    m1 = fisher_low_rank(st, rank=1)
    # in the diagonally rescaled space the leading eigenvector of diag(1/s) S diag(1/s)
    s = np.asarray(m1.scale)
    lam, u = np.linalg.eigh(S / np.outer(s, s))
    cos = abs(float(np.dot(np.asarray(m1.vectors[:, 0]), u[:, -1])))
    assert cos > 0.999, cos
    assert float(m1.values[0]) > 2.0
    # full rank: the dense estimate equals S (CLT: relative error ~ sqrt(2/n) per entry, z = 5)
    full = np.asarray(low_rank_inverse_mass_matrix(fisher_low_rank(st, rank=d, cutoff=1.0)))
    err = np.abs(full - S) / np.sqrt(np.outer(np.diag(S), np.diag(S)))
    assert np.max(err) < 5 * np.sqrt(2.0 / n) * 2, np.max(err)


def test_low_rank_rejects_bad_input(key):
    x = jax.random.normal(key, (20, 3))
    with pytest.raises(ValueError, match="dense"):
        fisher_low_rank(_state(x, -x), rank=1)
    with pytest.raises(ValueError, match="rank"):
        fisher_low_rank(_state(x, -x, dense=True), rank=4)


@pytest.mark.slow  # 15-20 s on an idle core; the default tier's 15-minute budget
def test_nuts_fisher_adapts_exact_variances():
    """From MCMC draws, the Fisher diagonal on a diagonal Gaussian is still exactly the variance."""
    from samplax.targets.gaussian import Gaussian

    var = 10.0 ** np.linspace(-2, 2, 5)
    t = Gaussian(jnp.zeros(5), jnp.diag(jnp.sqrt(jnp.asarray(var))), "diag5")
    r = samplax.sample(t, "auto", seed=1, num_chains=2, num_warmup=300, num_samples=100, progress=False)
    imm = np.asarray(r.extra["inverse_mass_matrix"])
    np.testing.assert_allclose(imm, np.broadcast_to(var, imm.shape), rtol=1e-6)
