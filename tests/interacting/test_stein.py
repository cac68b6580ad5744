"""SVGD and mirrored SVGD against analytic moments.

Tolerance (stated, not tuned): interacting particles are not independent draws, so MCSE from
autocorrelation is meaningless.  We use the yardstick of exact sampling at equal size: with
N particles per chain and C independent chains, the particle mean and standard deviation must be
within z standard errors of an i.i.d. sample of N*C draws, i.e.
    |mean - mu| <= z * sigma / sqrt(N C),   |sd - sigma| <= z * sigma / sqrt(2 N C),
z = 4.5.  SVGD's deterministic finite-particle bias (variance underestimation that shrinks as N
grows) must be below that.  A broken repulsion term (particle collapse) or score fails it at once.
"""
import numpy as np
import pytest

import samplax
from samplax.interacting import stein
from tests.interacting.helpers import Z, correlated_gaussian


def _iid_yardstick(samples, mean, std, z=Z):
    C, N = samples.shape[:2]
    flat = samples.reshape(C * N, -1)
    err_m = np.abs(flat.mean(0) - mean)
    err_s = np.abs(flat.std(0, ddof=1) - std)
    assert np.all(err_m <= z * std / np.sqrt(N * C)), (flat.mean(0), mean)
    assert np.all(err_s <= z * std / np.sqrt(2 * N * C)), (flat.std(0, ddof=1), std)
    return err_m, err_s


def test_svgd_gaussian_2d():
    target = correlated_gaussian(2)
    r = samplax.sample(target, method="svgd", seed=1, num_chains=8, num_warmup=400, num_samples=100,
                       progress=False)
    assert r.samples.shape == (8, 100, 2)
    gt = target.ground_truth()
    _iid_yardstick(r.samples, gt.mean, gt.std)
    # the initial-point search (a value and gradient per particle), a gradient per particle and step (its
    # forward pass is a log-density evaluation), the final lp
    assert r.cost["num_grad_evals"] == 8 * 100 + 8 * 100 * 400
    assert r.cost["num_logdensity_evals"] == 8 * 100 + 8 * 100 * 400 + 8 * 100


def test_median_bandwidth_matches_numpy():
    import jax
    from samplax.interacting._common import pairwise_sq_dists

    x = jax.random.normal(jax.random.key(1), (100, 3))
    sq = np.asarray(pairwise_sq_dists(x, x))
    pairs = np.sort(sq[np.triu_indices(100, 1)])
    m = float(stein.median_pairwise_sq(pairwise_sq_dists(x, x)))
    assert pairs[len(pairs) // 2 - 1] <= m * (1 + 1e-12) and m <= pairs[len(pairs) // 2] * (1 + 1e-12)


def test_svgd_direction_is_kernelised_score_plus_repulsion():
    """phi against a direct double loop."""
    import jax

    x = np.asarray(jax.random.normal(jax.random.key(2), (7, 2)))
    s = -x
    h = 0.7
    phi = np.zeros_like(x)
    for i in range(7):
        for j in range(7):
            k = np.exp(-np.sum((x[j] - x[i]) ** 2) / h)
            phi[i] += k * s[j] - 2.0 / h * (x[j] - x[i]) * k
    phi /= 7
    np.testing.assert_allclose(np.asarray(stein.svgd_direction(x, s, h)), phi, rtol=1e-10)


def test_mirrored_svgd_dirichlet():
    target = samplax.targets.get("dirichlet", alpha=(2.0, 3.0, 5.0))
    r = samplax.sample(target, method="mirrored_svgd", seed=2, num_chains=8, num_warmup=400, num_samples=100,
                       progress=False)
    assert r.samples.shape == (8, 100, 3)
    np.testing.assert_allclose(r.samples.sum(-1), 1.0, atol=1e-12)
    assert np.all(r.samples > 0)
    gt = target.ground_truth()
    _iid_yardstick(r.samples, gt.mean, gt.std)


def test_stein_bad_input():
    g = correlated_gaussian(2)
    with pytest.raises(ValueError, match="step_size"):
        samplax.sample(g, method="svgd", step_size=-1.0, progress=False)
    with pytest.raises(ValueError, match="init"):
        samplax.sample(g, method="svgd", init=np.zeros((3, 5, 2)), num_chains=2, num_samples=4, progress=False)
    d = samplax.targets.get("dirichlet")
    with pytest.raises(ValueError, match="simplex"):
        samplax.sample(d, method="mirrored_svgd", init=np.array([0.5, 0.6, -0.1]), progress=False)
    with pytest.raises(ValueError, match="alpha"):
        samplax.targets.get("dirichlet", alpha=(1.0, -2.0))
