"""Tests of the Gaussian mixture targets GMM-40, GMM-25, GMM-9."""
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import samplax.targets as T
from samplax.targets import _data


def _numpy_mixture_logpdf(x, means, std):
    comps = np.stack([stats.multivariate_normal(m, std**2 * np.eye(len(m))).logpdf(x) for m in means])
    return special.logsumexp(comps, axis=0) - math.log(len(means))


def _grid(values):
    return np.array(list(itertools.product(values, values)), dtype=float)


CASES = [
    ("gmm25", {}, _grid([-10, -5, 0, 5, 10]), math.sqrt(0.3)),
    ("gmm9", {}, _grid([-5, 0, 5]), math.sqrt(0.3)),
    ("gmm40", {}, None, 1.0),
    pytest.param("gmm40", {"variant": "softplus0.1"}, None, math.log1p(math.e**0.1), marks=pytest.mark.slow),
    pytest.param("gmm40", {"variant": "softplus1"}, None, 1.3132616875182228, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,params,means,std", CASES)
def test_mixture(name, params, means, std, key, check_protocol, check_moments, draw):
    t = T.get(name, **params)
    check_protocol(t, key)
    if means is None:
        with open(_data.DATA_DIR / "gmm40_means.json") as f:
            means = np.array(json.load(f)["means_dim2"])
        assert means.shape == (40, 2) and means.min() >= -40 and means.max() <= 40
    np.testing.assert_allclose(np.asarray(t.means), means)
    s, lp = draw(t, key, 20000)
    np.testing.assert_allclose(lp, _numpy_mixture_logpdf(s[:32], means, std), rtol=1e-10, atol=1e-10)
    gt = t.ground_truth()
    assert gt.log_Z == 0.0
    check_moments(s, gt.mean, gt.std, what=name)
    # every component is hit at its share: counts of nearest means are Binomial(n, 1/K)
    nearest = np.argmin(((s[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=len(means))
    p = 1.0 / len(means)
    n = s.shape[0]
    if std < 1.2 or name != "gmm40":  # well-separated enough for nearest-mean labels to be exact-ish
        assert np.all(np.abs(counts - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 0.02 * n * p)


@pytest.mark.parametrize("name,params,box", [("gmm25", {}, 15.0), ("gmm9", {}, 10.0), ("gmm40", {}, 46.0)])
def test_mixture_log_z_by_quadrature(name, params, box):
    """Trapezoid rule on a 2-D grid (spectrally accurate for Gaussians): log Z = 0."""
    t = T.get(name, **params)
    m = 1201
    g = np.linspace(-box, box, m)
    xx = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    f = jax.jit(lambda t, x: jnp.exp(jax.vmap(t.logdensity)(x)))(t, xx)
    z = np.trapezoid(np.trapezoid(np.asarray(f).reshape(m, m), g, axis=1), g)
    assert abs(math.log(z)) < 1e-8


def test_gmm40_50d(draw):
    t = T.get("gmm40", dim=50)
    assert t.event_shape == (50,)
    with open(_data.DATA_DIR / "gmm40_means.json") as f:
        means = np.array(json.load(f)["means_dim50"])
    x, lp = draw(t, jax.random.key(0), 4)
    np.testing.assert_allclose(lp, _numpy_mixture_logpdf(x, means, 1.0), rtol=1e-10)


def test_checksum_is_verified(tmp_path, monkeypatch):
    bad = tmp_path / "gmm40_means.json"
    bad.write_text((_data.DATA_DIR / "gmm40_means.json").read_text().replace("3", "4", 1))
    (tmp_path / "CHECKSUMS.txt").write_text((_data.DATA_DIR / "CHECKSUMS.txt").read_text())
    monkeypatch.setattr(_data, "DATA_DIR", tmp_path)
    monkeypatch.setattr(_data, "CHECKSUMS", tmp_path / "CHECKSUMS.txt")
    _data.data_path.cache_clear()
    _data._recorded.cache_clear()
    try:
        with pytest.raises(ValueError, match="corrupted or changed"):
            _data.data_path("gmm40_means.json")
        with pytest.raises(FileNotFoundError, match="not found"):
            _data.data_path("nope.json")
    finally:
        _data.data_path.cache_clear()
        _data._recorded.cache_clear()


def test_gmm40_variant_stds():
    for variant, std in [("std1", 1.0), ("softplus0.1", 0.7443966600735709), ("softplus1", 1.3132616875182228)]:
        np.testing.assert_allclose(np.asarray(T.get("gmm40", variant=variant).stds), std, rtol=1e-14)


def test_mixture_bad_parameters():
    with pytest.raises(ValueError, match="variant must be one of"):
        T.get("gmm40", variant="torch")
    with pytest.raises(ValueError, match="dim must be 2 or 50"):
        T.get("gmm40", dim=3)
    with pytest.raises(ValueError, match="variance must be positive"):
        T.get("gmm25", variance=0.0)
    with pytest.raises(TypeError, match="variance must be a number"):
        T.get("gmm9", variance="big")
