"""Tests for samplax.metrics: exact formulas on small inputs, CLT/permutation-calibrated statistical checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import metrics as M


# --------------------------------------------------------------------------
# MMD and energy distance


def _brute_u(k, x, y):
    kxx, kyy, kxy = k(x[:, None], x[None]), k(y[:, None], y[None]), k(x[:, None], y[None])
    n, m = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_mmd_and_energy_match_brute_force_with_blocking():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(7, 3)) + 0.3
    h = 1.3
    rbf = lambda a, b: np.exp(-((a - b) ** 2).sum(-1) / (2 * h**2))  # noqa: E731
    imq = lambda a, b: (1 + ((a - b) ** 2).sum(-1) / h**2) ** -0.5  # noqa: E731
    dist = lambda a, b: -np.sqrt(((a - b) ** 2).sum(-1))  # noqa: E731
    for block in (1 << 22, 3 * 10 * 3):  # one block; 3-row blocks with a padded last block
        r = M.mmd(x, y, bandwidth=h, max_block_elements=block)
        np.testing.assert_allclose(r["mmd2"], _brute_u(rbf, x, y), rtol=1e-12)
        r = M.mmd(x, y, kernel="imq", bandwidth=h, max_block_elements=block)
        np.testing.assert_allclose(r["mmd2"], _brute_u(imq, x, y), rtol=1e-12)
        r = M.energy_distance(x, y, max_block_elements=block)
        np.testing.assert_allclose(r["energy_distance"], _brute_u(dist, x, y), rtol=1e-12)
    # median heuristic: median pairwise distance of the pooled sample
    z = np.concatenate([x, y])
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(len(z), 1)]
    r = M.mmd(x, y)
    np.testing.assert_allclose(r["bandwidth"], np.median(d), rtol=1e-12)
    assert "median" in r["bandwidth_rule"] and r["estimator"].startswith("unbiased")


def _permutation_sd(stat, x, y, rng, num=100):
    z = np.concatenate([x, y])
    vals = []
    for _ in range(num):
        perm = rng.permutation(len(z))
        vals.append(float(stat(z[perm[: len(x)]], z[perm[len(x):]])))
    return np.std(vals, ddof=1)


@pytest.mark.parametrize("name", ["mmd", "energy"])
def test_two_sample_null_and_alternative(name):
    """Same law: |stat| <= 4.5 sd of the permutation null (mean 0, unbiased statistic).

    Shifted law (mean shift 0.5 per coordinate in d = 2): stat >= 4.5 permutation sd.
    """
    rng = np.random.default_rng(1)
    n, d = 300, 2
    x, y_same = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    y_shift = rng.normal(size=(n, d)) + 0.5
    if name == "mmd":
        h = M.mmd(x, y_same)["bandwidth"]
        stat = lambda a, b: M.mmd(a, b, bandwidth=h)["mmd2"]  # noqa: E731
    else:
        stat = lambda a, b: M.energy_distance(a, b)["energy_distance"]  # noqa: E731
    sd_null = _permutation_sd(stat, x, y_same, rng)
    assert abs(float(stat(x, y_same))) <= 4.5 * sd_null
    sd_alt = _permutation_sd(stat, x, y_shift, rng)
    assert float(stat(x, y_shift)) >= 4.5 * sd_alt


# --------------------------------------------------------------------------
# sliced Wasserstein


def test_sliced_wasserstein_1d_exact(key):
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    # d = 1: every direction is +-1, so SW_p is the exact 1-D W_p
    x, y = rng.normal(size=(37, 1)), rng.standard_t(3, size=(23, 1)) + 0.4
    r = M.sliced_wasserstein(key, x, y, num_projections=4, p=1)
    np.testing.assert_allclose(r["sliced_wasserstein"], scipy_stats.wasserstein_distance(x[:, 0], y[:, 0]),
                               rtol=1e-12)
    # hand computation, n != m, p = 2: x = {0,1,2}, y = {0,3}. Quantile steps on
    # [0,1/3,1/2,2/3,1]: |0-0|^2/3 + |1-0|^2/6 + |1-3|^2/6 + |2-3|^2/3 = 7/6
    r = M.sliced_wasserstein(key, np.array([[0.0], [1.0], [2.0]]), np.array([[0.0], [3.0]]), 3, p=2)
    np.testing.assert_allclose(r["sliced_wasserstein_pp"], 7 / 6, rtol=1e-12)
    np.testing.assert_allclose(r["sliced_wasserstein"], np.sqrt(7 / 6), rtol=1e-12)
    # equal sizes: sorted matching
    a, b = rng.normal(size=(50, 1)), rng.normal(size=(50, 1))
    r = M.sliced_wasserstein(key, a, b, 2, p=3)
    want = np.mean(np.abs(np.sort(a[:, 0]) - np.sort(b[:, 0])) ** 3) ** (1 / 3)
    np.testing.assert_allclose(r["sliced_wasserstein"], want, rtol=1e-12)


def test_sliced_w2_translate_direction_average(key):
    """y = x + mu (same points): every projected W2^2 is exactly (u.mu)^2, so the only
    error is the direction average: E_u (u.mu)^2 = |mu|^2/d with per-direction variance
    |mu|^4 2(d-1)/(d^2(d+2)) (u_1^2 ~ Beta(1/2, (d-1)/2)). Check within 5 sd."""
    n, d, L = 200, 4, 4096
    mu = jnp.array([1.0, -1.0, 1.0, 1.0])
    x = jax.random.normal(key, (n, d))
    r = M.sliced_wasserstein(jax.random.fold_in(key, 1), x, x + mu, num_projections=L, p=2)
    m2 = float(mu @ mu)
    sd = np.sqrt(m2**2 * 2 * (d - 1) / (d**2 * (d + 2)) / L)
    assert abs(float(r["sliced_wasserstein_pp"]) - m2 / d) <= 5 * sd
    np.testing.assert_allclose(r["sliced_wasserstein"], np.sqrt(r["sliced_wasserstein_pp"]), rtol=1e-12)


@pytest.mark.slow
def test_sliced_w2_gaussian_shift(key):
    """SW_2^2(N(0,I), N(mu,I)) = E_u (u.mu)^2 = |mu|^2 / d.

    Estimator error, two sources:
    * directions: (u.mu)^2 = |mu|^2 u_1^2 with u_1^2 ~ Beta(1/2, (d-1)/2), variance
      |mu|^4 2(d-1)/(d^2(d+2)); averaged over L directions.
    * samples: the finite-sample bias (W2^2 of two empirical laws of the same law)
      is removed by subtracting the statistic between x and a second N(0,I) sample
      with the same directions; the remaining cross term 2 mu.(xbar - ybar)/d has
      variance 8|mu|^2 / (n d^2) (twice, for the two samples used).
    Check within 5 standard deviations.
    """
    n, d, L = 4000, 4, 2048
    mu = jnp.array([1.0, -1.0, 1.0, 1.0])  # |mu|^2 = 4, |mu|^2/d = 1
    kx, ky, kz, kdir = jax.random.split(key, 4)
    x = jax.random.normal(kx, (n, d))
    y = jax.random.normal(ky, (n, d)) + mu
    z = jax.random.normal(kz, (n, d))
    shifted = M.sliced_wasserstein(kdir, x, y, num_projections=L, p=2)
    null = M.sliced_wasserstein(kdir, x, z, num_projections=L, p=2)
    estimate = shifted["sliced_wasserstein_pp"] - null["sliced_wasserstein_pp"]
    m2 = float(mu @ mu)
    truth = m2 / d
    var_dir = m2**2 * 2 * (d - 1) / (d**2 * (d + 2)) / L
    var_samples = 2 * 8 * m2 / (n * d**2)
    assert abs(float(estimate) - truth) <= 5 * np.sqrt(var_dir + var_samples)
    # the returned distance is SW_2, not its square
    np.testing.assert_allclose(shifted["sliced_wasserstein"] ** 2, shifted["sliced_wasserstein_pp"], rtol=1e-12)


# --------------------------------------------------------------------------
# Sinkhorn


def test_entropic_w2_translation_and_small_epsilon(key):
    # S_eps between a point cloud and its translate by mu is exactly |mu|^2, for any eps
    x = jax.random.normal(key, (40, 3))
    mu = jnp.array([1.0, 2.0, 0.0])
    r = M.entropic_w2(x, x + mu, epsilon=1.0, tol=1e-10)
    assert r["converged"]
    np.testing.assert_allclose(r["sinkhorn_divergence"], 5.0, rtol=1e-8)
    np.testing.assert_allclose(r["entropic_w2"], np.sqrt(5.0), rtol=1e-8)
    # 1-D, unique optimal matching with cost gap >> eps: S_eps = W2^2 + O(exp(-gap/eps))
    a = np.array([[0.0], [1.0], [2.5], [4.0], [4.6], [7.0]])
    b = np.array([[0.3], [1.9], [2.2], [5.0], [6.1], [9.0]])
    w22 = np.mean((np.sort(a[:, 0]) - np.sort(b[:, 0])) ** 2)
    r = M.entropic_w2(a, b, epsilon=1e-3, tol=1e-10)
    assert r["converged"] and r["epsilon"] == 1e-3
    np.testing.assert_allclose(r["sinkhorn_divergence"], w22, rtol=1e-8)


# --------------------------------------------------------------------------
# moment and log Z errors


def test_moment_errors_exact_draws():
    """Exact iid draws: mean_z_j are |N(0,1)|, so mean(z^2) = 1 +- sqrt(2/k) and max over k=200 < 5;
    relative variance errors have sd sqrt(2/(N-1))."""
    rng = np.random.default_rng(3)
    k, n = 200, 4000
    mu, sd = rng.normal(size=k), np.exp(rng.normal(size=k))
    x = mu + sd * rng.normal(size=(n, k))
    r = M.moment_errors(x, mu, sd)
    assert r["mean_z"].shape == (k,)
    assert abs(np.mean(r["mean_z"] ** 2) - 1) <= 5 * np.sqrt(2 / k)
    assert r["max_mean_z"] < 5
    assert r["max_rel_var_err"] < 5 * np.sqrt(2 / (n - 1))
    assert r["max_mean_err_std"] < 5 / np.sqrt(n)
    assert r["num_chains"] == 1 and r["num_draws"] == n and r["mcse_source"].startswith("estimated")
    # chain form: sd z-scores are O(1) too
    rc = M.moment_errors(x.reshape(4, n // 4, k), mu, sd)
    assert rc["num_chains"] == 4 and rc["max_mean_z"] < 5 and rc["max_sd_z"] < 5
    # a bias of 10 standard errors is flagged
    biased = M.moment_errors(x + 10 * sd / np.sqrt(n), mu, sd)
    assert biased["max_mean_z"] > 5


def test_moment_errors_given_mcse_formula():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]])  # means 3, 4; var 20/3
    r = M.moment_errors(x, truth_mean=[2.0, 4.5], truth_std=[2.0, 1.0], mcse=[0.3, 0.4],
                        truth_mean_se=[0.4, 0.3])
    np.testing.assert_allclose(r["mean_z"], [1.0 / 0.5, 0.5 / 0.5])
    np.testing.assert_allclose(r["mean_err_std"], [0.5, 0.5])
    np.testing.assert_allclose(r["rel_var_err"], [abs(20 / 3 - 4) / 4, abs(20 / 3 - 1)])
    assert r["mcse_source"] == "given" and np.isnan(r["max_sd_z"])


def test_log_z_error():
    r = M.log_z_error([1.0, 2.0, 4.0], truth=2.0)
    assert r["mean_abs_error"] == pytest.approx(1.0)
    assert r["bias"] == pytest.approx(1 / 3)
    assert r["mean"] == pytest.approx(7 / 3)
    assert r["std"] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert r["se_bias"] == pytest.approx(r["std"] / np.sqrt(3))
    assert r["num_repeats"] == 3


def test_bad_input(key):
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="`kernel`"):
        M.mmd(x, x, kernel="gauss")
    with pytest.raises(ValueError, match="`bandwidth`"):
        M.mmd(x, x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="same dimension"):
        M.energy_distance(x, np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"`y` must have shape \[n, d\]"):
        M.mmd(x, np.zeros(10))
    with pytest.raises(ValueError, match="`num_projections`"):
        M.sliced_wasserstein(key, x, x, num_projections=0)
    with pytest.raises(ValueError, match="`p`"):
        M.sliced_wasserstein(key, x, x, p=0.5)
    with pytest.raises(ValueError, match="`epsilon`"):
        M.entropic_w2(x, x, epsilon=0.0)
    with pytest.raises(ValueError, match="`truth_mean`"):
        M.moment_errors(np.zeros((10, 3)), np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="`truth_std`"):
        M.moment_errors(np.zeros((10, 3)), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="`samples`"):
        M.moment_errors(np.zeros(10), 0.0, 1.0)
    with pytest.raises(ValueError, match="`estimates`"):
        M.log_z_error(np.zeros((2, 2)), 0.0)
    with pytest.raises(ValueError, match="`truth`"):
        M.log_z_error([1.0], np.nan)


# --------------------------------------------------------------------------
# ELBO / EUBO, mode coverage, 1-D and particle W2


def test_elbo_eubo_are_means_with_their_standard_errors_and_the_kl_gaps():
    lw_q = np.array([-1.0, -2.0, -3.0, np.nan])
    lw_p = np.array([0.5, 1.5])
    r = M.elbo_eubo(lw_q, lw_p, log_z=0.0)
    assert r["elbo"] == pytest.approx(-2.0) and r["n_model"] == 3
    assert r["elbo_se"] == pytest.approx(1.0 / np.sqrt(3))
    assert r["eubo"] == pytest.approx(1.0) and r["eubo_se"] == pytest.approx(np.sqrt(0.5) / np.sqrt(2))
    assert r["reverse_kl"] == pytest.approx(2.0) and r["forward_kl"] == pytest.approx(1.0)
    assert np.isnan(M.elbo_eubo(lw_q)["eubo"])
    with pytest.raises(ValueError, match="log_w_model"):
        M.elbo_eubo([1.0])


def test_mode_coverage_closed_forms():
    modes = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    rng = np.random.default_rng(0)
    even = np.repeat(modes, 50, axis=0) + 0.1 * rng.normal(size=(200, 2))
    assert M.mode_coverage(even, modes)["mode_coverage"] == pytest.approx(1.0)
    one = modes[[2] * 30] + 0.1 * rng.normal(size=(30, 2))
    r = M.mode_coverage(one, modes)
    assert r["mode_coverage"] == 0.0 and r["modes_hit"] == 1
    # two of four modes, 3:1 -> H = -(3/4 log 3/4 + 1/4 log 1/4) / log 4
    x = np.concatenate([np.repeat(modes[:1], 30, 0), np.repeat(modes[3:], 10, 0)]) + 0.2
    expect = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(4)
    assert M.mode_coverage(x, modes)["mode_coverage"] == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError, match="modes"):
        M.mode_coverage(x, modes[:, :1])


def test_wasserstein_1d_closed_forms():
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    assert M.wasserstein_1d(x, x + 0.7)["wasserstein"] == pytest.approx(0.7, rel=1e-6)
    # unequal sizes: {0, 1} vs {0, 0.5, 1}: quantile steps at 1/3, 1/2, 2/3: W1 = (1/2 - 1/3) 0.5 + (2/3 - 1/2) 0.5
    r = M.wasserstein_1d([0.0, 1.0], [0.0, 0.5, 1.0], p=1)
    assert r["wasserstein"] == pytest.approx(1.0 / 6.0, rel=1e-6)
    # W2 between N(0, 1) and N(0, 4) is |1 - 2| = 1 (large samples, quantile matching)
    u = (np.arange(20000) + 0.5) / 20000
    from scipy.stats import norm
    assert M.wasserstein_1d(norm.ppf(u), 2 * norm.ppf(u))["wasserstein"] == pytest.approx(1.0, rel=2e-3)
    with pytest.raises(ValueError, match="`y`"):
        M.wasserstein_1d(x, [np.nan])


def test_particle_w2_of_a_shift_in_energy_and_of_a_scaled_configuration():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(200, 8))
    energy = lambda v: jnp.sum(v**2)  # noqa: E731
    r = M.particle_w2(ref, ref, 4, 2, energy)
    assert r["energy_w2"] == pytest.approx(0.0, abs=1e-9) and r["distance_w2"] == pytest.approx(0.0, abs=1e-9)
    # scaling every configuration by s scales each distance by s: the sorted distances move by (s - 1) d
    s = 1.5
    d = np.sort(M.pair_distances(ref, 4, 2).reshape(-1))
    r = M.particle_w2(s * ref, ref, 4, 2, energy)
    assert r["distance_w2"] == pytest.approx((s - 1) * np.sqrt(np.mean(d**2)), rel=1e-6)
    e = np.sort(np.sum(ref**2, axis=1))
    assert r["energy_w2"] == pytest.approx((s**2 - 1) * np.sqrt(np.mean(e**2)), rel=1e-6)
