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
    """Protocol conformance of one target: shapes, finite values, ground truth and provenance.

    Everything that touches JAX runs inside one jitted call (one compilation per target).
    """
    import jax
    import jax.numpy as jnp

    from samplax.core.target import GroundTruth, Target

    assert isinstance(target, Target)
    d = target.dim
    sampler = target.has_exact_sampler

    @jax.jit
    def run(t, k):
        x = t.initial_point(k)
        out = {"x": x, "lp": t.logdensity(x), "g": t.score(x)}
        if sampler:
            s = t.sample(k, 7)
            out["s"] = s
            out["lps"] = jax.vmap(t.logdensity)(s)
        return out

    out = run(target, key)
    assert out["x"].shape == target.event_shape
    assert out["lp"].shape == () and bool(jnp.isfinite(out["lp"]))
    assert out["g"].shape == target.event_shape and bool(jnp.all(jnp.isfinite(out["g"])))
    if sampler:
        assert out["s"].shape == (7, *target.event_shape)
        assert bool(jnp.all(jnp.isfinite(out["lps"])))
    gt = target.ground_truth()
    if gt is not None:  # targets without ground truth (e.g. LGCP) return None
        assert isinstance(gt, GroundTruth)
        q = np.asarray(jax.eval_shape(target.constrain, out["x"]).shape)
        for field in ("mean", "std", "mean_se", "std_se"):
            assert np.shape(getattr(gt, field)) == tuple(q), field
        assert gt.names is not None and len(gt.names) == int(np.prod(q))
    prov = target.provenance()
    assert {"source", "variant", "version"} <= set(prov)


def _draw(target, key, n, m=32):
    """``n`` exact draws and the log-density of the first ``m`` of them, in one jitted call."""
    import jax

    @jax.jit
    def run(t, k):
        s = t.sample(k, n)
        return s, jax.vmap(t.logdensity)(s[:m])

    s, lp = run(target, key)
    return np.asarray(s), np.asarray(lp)


@pytest.fixture
def draw():
    return _draw


@pytest.fixture
def check_protocol():
    return _check_protocol
