"""Shared checks for the target tests: CLT-based moment tests against ground truth."""
import numpy as np
import pytest

Z = 5.0  # many comparisons per test, fixed seeds: |estimate - truth| <= 5 * standard error


def _check_moments(samples, mean, std, z=Z, what=""):
    """z-tests of the sample mean and of E[(x - mean)^2] against the analytic mean and std.

    mean: |xbar - m| <= z * s / sqrt(n);
    variance: |mean((x - m)^2) - std^2| <= z * sd((x - m)^2) / sqrt(n).
    """
    x = np.asarray(samples, dtype=np.float64)
    n = x.shape[0]
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    se_mean = x.std(axis=0, ddof=1) / np.sqrt(n)
    err_mean = np.abs(x.mean(axis=0) - mean)
    assert np.all(err_mean <= z * se_mean), (
        f"{what} mean off: max |err|/se = {np.max(err_mean / se_mean):.2f} (index {np.argmax(err_mean / se_mean)})")
    sq = (x - mean) ** 2
    se_var = sq.std(axis=0, ddof=1) / np.sqrt(n)
    err_var = np.abs(sq.mean(axis=0) - std**2)
    assert np.all(err_var <= z * se_var), (
        f"{what} variance off: max |err|/se = {np.max(err_var / se_var):.2f} (index {np.argmax(err_var / se_var)})")


@pytest.fixture
def check_moments():
    return _check_moments


def _check_protocol(target, key):
    """Protocol conformance of one target: shapes, finite values, ground truth and provenance."""
    import jax
    import jax.numpy as jnp

    from samplax.core.target import GroundTruth, Target

    assert isinstance(target, Target)
    d = target.dim
    x = target.initial_point(key)
    assert x.shape == target.event_shape
    lp = target.logdensity(x)
    assert lp.shape == () and jnp.isfinite(lp)
    g = target.score(x)
    assert g.shape == target.event_shape and bool(jnp.all(jnp.isfinite(g)))
    gt = target.ground_truth()
    assert isinstance(gt, GroundTruth)
    for field in ("mean", "std", "mean_se", "std_se"):
        assert np.shape(getattr(gt, field)) == (d,), field
    assert gt.names is not None and len(gt.names) == d
    prov = target.provenance()
    assert {"source", "variant", "version"} <= set(prov)
    if target.has_exact_sampler:
        s = jax.jit(lambda t, k: t.sample(k, 7))(target, key)
        assert s.shape == (7, *target.event_shape)
        assert bool(jnp.all(jnp.isfinite(jax.vmap(target.logdensity)(s))))


@pytest.fixture
def check_protocol():
    return _check_protocol
