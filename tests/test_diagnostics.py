"""Tests for samplax.diagnostics: exact agreement with ArviZ, and statistical sanity on AR(1) chains."""
import logging
import warnings

import numpy as np
import pytest

from samplax import diagnostics as D

az = pytest.importorskip("arviz")
logging.getLogger("arviz").setLevel(logging.ERROR)

RTOL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def _arviz_numpy_path():
    """Compare with ArviZ's plain NumPy code: with numba installed (pytensor, of the pymc extra, brings
    it) ArviZ 0.23 takes a numba path whose ``mcse`` returns a 1-element array instead of a scalar and
    whose ``mcse(method="sd")`` raises under NumPy 2 (``float`` of a 1-element array)."""
    numba = getattr(az, "Numba", None)
    was_on = bool(getattr(numba, "numba_flag", False))
    if was_on:
        numba.disable_numba()
    yield
    if was_on:
        numba.enable_numba()


def ar1(rng, chains, draws, k=None, rho=0.5, heavy=False):
    """Stationary AR(1) chains x_t = rho x_{t-1} + e_t; e ~ N(0,1) or Student-t(3) when heavy."""
    shape = (chains, draws) if k is None else (chains, draws, k)
    e = rng.standard_t(3, size=shape) if heavy else rng.normal(size=shape)
    x = np.empty_like(e)
    x[:, 0] = e[:, 0] / np.sqrt(1.0 - rho**2)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x


def _az(fn, x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(x, **kw))


CASES = [
    (1, 100, 0.5, False),
    (1, 1000, 0.9, True),
    (4, 100, 0.0, False),
    (4, 101, -0.4, True),
    (4, 1000, 0.5, False),
    (4, 1000, 0.95, True),
    (3, 7, 0.3, False),
]


@pytest.mark.parametrize("chains,draws,rho,heavy", CASES)
def test_matches_arviz_scalar(chains, draws, rho, heavy):
    rng = np.random.default_rng(chains * 10_000 + draws)
    x = ar1(rng, chains, draws, rho=rho, heavy=heavy)
    np.testing.assert_allclose(D.ess_bulk(x), _az(az.ess, x, method="bulk"), rtol=RTOL)
    np.testing.assert_allclose(D.ess_tail(x), _az(az.ess, x, method="tail"), rtol=RTOL)
    np.testing.assert_allclose(D.ess_mean(x), _az(az.ess, x, method="mean"), rtol=RTOL)
    np.testing.assert_allclose(D.ess_sd(x), _az(az.ess, x, method="sd"), rtol=RTOL)
    np.testing.assert_allclose(D.mcse_mean(x), _az(az.mcse, x, method="mean"), rtol=RTOL)
    np.testing.assert_allclose(D.mcse_sd(x), _az(az.mcse, x, method="sd"), rtol=RTOL)
    if chains >= 2:
        np.testing.assert_allclose(D.rhat(x), _az(az.rhat, x, method="rank"), rtol=RTOL)
        np.testing.assert_allclose(D.split_rhat(x), _az(az.rhat, x, method="split"), rtol=RTOL)


def test_batched_matches_arviz_per_quantity():
    rng = np.random.default_rng(7)
    x = ar1(rng, 4, 200, k=5, rho=0.7, heavy=True)
    fns = {
        "ess_bulk": (D.ess_bulk, az.ess, {"method": "bulk"}),
        "ess_tail": (D.ess_tail, az.ess, {"method": "tail"}),
        "mcse_sd": (D.mcse_sd, az.mcse, {"method": "sd"}),
        "rhat": (D.rhat, az.rhat, {"method": "rank"}),
    }
    for ours, theirs, kw in fns.values():
        got = ours(x)
        assert got.shape == (5,)
        want = [_az(theirs, x[..., j], **kw) for j in range(5)]
        np.testing.assert_allclose(got, want, rtol=RTOL)
    # trailing event dimensions are preserved
    assert D.ess_bulk(x.reshape(4, 200, 5, 1)).shape == (5, 1)


def test_single_chain_rhat_is_split_of_halves():
    # ArviZ returns NaN for one chain; we compare the two halves (as R's posterior does).
    from arviz.stats.diagnostics import _rhat, _split_chains, _z_scale

    rng = np.random.default_rng(3)
    x = ar1(rng, 1, 501, rho=0.6)
    split = _split_chains(x)
    folded = np.abs(split - np.median(split))
    want = max(_rhat(_z_scale(split)), _rhat(_z_scale(folded)))
    np.testing.assert_allclose(D.rhat(x), want, rtol=RTOL)
    np.testing.assert_allclose(D.split_rhat(x), _rhat(split), rtol=RTOL)


def test_summarize_matches_arviz_summary():
    rng = np.random.default_rng(11)
    x = ar1(rng, 4, 300, k=3, rho=0.6, heavy=True)
    names = ["a", "b", "c"]
    s = D.summarize(x, names=names)
    idata = az.from_dict(posterior={n: x[..., j] for j, n in enumerate(names)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = az.summary(idata, round_to="none")
    cols = {
        "mean": "mean", "sd": "sd", "mcse_mean": "mcse_mean", "mcse_sd": "mcse_sd",
        "ess_bulk": "ess_bulk", "ess_tail": "ess_tail", "rhat": "r_hat",
    }
    for ours, theirs in cols.items():
        assert s[ours].shape == (3,)
        np.testing.assert_allclose(s[ours], ref[theirs].to_numpy(dtype=float), rtol=RTOL, err_msg=ours)
    flat = x.reshape(-1, 3)
    for q in (5, 50, 95):
        np.testing.assert_allclose(s[f"q{q}"], np.quantile(flat, q / 100, axis=0), rtol=1e-12)
    assert s["names"] == names


def test_autocorrelation_and_ebfmi():
    rng = np.random.default_rng(5)
    x = ar1(rng, 3, 64, rho=0.8)
    acf = D.autocorrelation(x)
    assert acf.shape == x.shape
    np.testing.assert_allclose(acf, az.autocorr(x, axis=1), rtol=1e-10, atol=1e-12)
    # direct O(n^2) definition
    c = x - x.mean(axis=1, keepdims=True)
    direct = np.stack([(c[:, : 64 - t] * c[:, t:]).sum(axis=1) / 64 for t in range(64)], axis=1)
    np.testing.assert_allclose(D.autocovariance(x), direct, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(D.ebfmi(x), az.bfmi(x), rtol=RTOL)


def test_constant_and_nan_quantities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 100, 3))
    x[..., 1] = 2.5
    x[0, 3, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning spam
        s = D.summarize(x)
        eb, et, r = D.ess_bulk(x), D.ess_tail(x), D.rhat(x)
    # constant: ArviZ gives ESS = number of draws, R-hat NaN
    assert eb[1] == _az(az.ess, x[..., 1], method="bulk") == 400
    assert et[1] == _az(az.ess, x[..., 1], method="tail") == 400
    assert np.isnan(r[1]) and np.isnan(_az(az.rhat, x[..., 1]))
    assert s["mcse_mean"][1] == 0.0
    # NaN quantity: every diagnostic is NaN; the others are untouched
    for v in s.values():
        assert np.isnan(v[2])
    np.testing.assert_allclose(eb[0], _az(az.ess, x[..., 0], method="bulk"), rtol=RTOL)


def test_bad_input():
    with pytest.raises(ValueError, match="`x`.*at least 4 draws"):
        D.ess_bulk(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"`x`.*\[chains, draws\]"):
        D.rhat(np.zeros(100))
    with pytest.raises(ValueError, match="`samples`"):
        D.summarize(np.zeros((4, 100)))
    with pytest.raises(ValueError, match="`names`"):
        D.summarize(np.zeros((4, 100, 2)), names=["a"])
    with pytest.raises(ValueError, match="`prob`"):
        D.ess_tail(np.zeros((4, 100)), prob=(0.5,))
    with pytest.raises(ValueError, match="`energy`"):
        D.ebfmi(np.zeros(10))
    with pytest.raises(TypeError, match="`x`"):
        D.ess_mean(np.array([["a"] * 5]))


@pytest.mark.parametrize("chains,draws,rho", [(4, 1000, 0.0), (1, 2000, 0.0), (4, 1000, 0.5), (4, 1000, 0.9),
                                              (2, 1000, -0.5)])
def test_ess_of_ar1_near_theory(chains, draws, rho):
    """ESS ~ N (1 - rho) / (1 + rho) for stationary AR(1).

    Band: the ESS estimator is N / tau_hat with tau_hat a truncated (lag window
    of half-width L) estimate of the integrated autocorrelation time, whose
    relative standard deviation is about sqrt(2 (2L + 1) / N) (Priestley 1981,
    sec. 6.2.3, rectangular lag window at frequency 0). Geyer's rule truncates
    where the true autocorrelation drops to the noise level 1/sqrt(N), i.e.
    L ~ log(sqrt N) / log(1/|rho|) (at least 2). 20 independent replicates
    per case, each within 4.5 standard deviations.
    """
    rng = np.random.default_rng(int(1000 * (rho + 1)) + chains)
    k = 20
    x = ar1(rng, chains, draws, k=k, rho=rho)
    n_total = chains * draws
    truth = n_total * (1 - rho) / (1 + rho)
    lag = 2 if rho == 0 else max(2, int(np.ceil(np.log(np.sqrt(n_total)) / np.log(1 / abs(rho)))))
    rel_sd = np.sqrt(2 * (2 * lag + 1) / n_total)
    estimates = {"ess_mean": D.ess_mean(x), "ess_bulk": D.ess_bulk(x)}
    if rho == 0:
        estimates["ess_tail"] = D.ess_tail(x)  # iid: any functional has ESS = N
    for name, est in estimates.items():
        rel = est / truth - 1
        assert np.all(np.abs(rel) <= 4.5 * rel_sd), (name, rel.min(), rel.max(), rel_sd)


def test_rhat_detects_nonmixing():
    rng = np.random.default_rng(9)
    good = rng.normal(size=(4, 1000))
    assert D.rhat(good) < 1.01
    # one chain shifted by 2 sd: population split R-hat is sqrt(1 + 4 * 3/16 * 8/7) ~ 1.36
    shifted = good + np.array([0.0, 0.0, 0.0, 2.0])[:, None]
    assert D.rhat(shifted) > 1.2
    # same location, different scale: classic split R-hat misses it, the folded part catches it
    scaled = good * np.array([1.0, 1.0, 1.0, 3.0])[:, None]
    assert D.split_rhat(scaled) < 1.01
    assert D.rhat(scaled) > 1.05
