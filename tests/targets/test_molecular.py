"""Tests of the DW-4 and LJ-13 molecular (particle-system) targets against the external reference files."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax.targets as T

DIR = "/work/shared/external/particles"


def _load(name):
    try:
        return dict(np.load(f"{DIR}/{name}.npz"))
    except FileNotFoundError:
        pytest.skip(f"external reference {name}.npz not available")


def _numpy_energy(x, name, pair_factor=2.0):
    """Direct numpy energies (independent oracle)."""
    if name == "dw4":
        p = x.reshape(-1, 4, 2)
        i, j = np.triu_indices(4, 1)
        r = np.linalg.norm(p[:, i] - p[:, j], axis=-1) - 4.0
        return (0.9 * r**4 - 4.0 * r**2).sum(-1)
    p = x.reshape(-1, 13, 3)
    i, j = np.triu_indices(13, 1)
    r = np.linalg.norm(p[:, i] - p[:, j], axis=-1)
    lj = pair_factor * (r**-12 - 2 * r**-6).sum(-1)
    return lj + 0.5 * ((p - p.mean(1, keepdims=True)) ** 2).sum((1, 2))


@pytest.mark.parametrize("name,rtol", [("dw4", 1e-12), ("lj13", 2e-5)])  # lj13 file values are float32-accurate
def test_molecular_against_reference(name, rtol, key, check_protocol):
    ref = _load(name)
    t = T.get(name)
    check_protocol(t, key)
    x = ref["samples_test"][:2000]

    @jax.jit
    def run(t, x):
        lp = jax.vmap(t.logdensity)(x)
        g = jax.vmap(t.score)(x[:64])
        virial = -jnp.sum(x * jax.vmap(t.score)(x), axis=1)
        return lp, g, virial

    lp, g, virial = (np.asarray(v) for v in run(t, x))
    np.testing.assert_allclose(lp, -_numpy_energy(x, name), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(lp, ref["logp_test"][:2000], rtol=rtol, atol=rtol)
    scale = np.abs(ref["grad_logp_test64"]).max()
    np.testing.assert_allclose(g, ref["grad_logp_test64"], atol=rtol * scale)
    # energy statistics of the reference draws, and the virial (Stein) identity E[-x . grad log p]
    n = x.shape[0]
    e = -lp
    assert abs(e.mean() - ref["energy_test_mean"]) <= 5 * ref["energy_test_std"] / math.sqrt(n)
    assert abs(virial.mean() - ref["stein_virial_mean"]) <= 5 * virial.std() / math.sqrt(n)
    gt = t.ground_truth()
    assert gt.kind == "reference_draws" and gt.log_Z is None
    np.testing.assert_array_equal(gt.mean, 0.0)  # exact by symmetry
    s = (x**2).mean(1)  # rotation-invariant: E[s] = std^2 for every coordinate
    assert abs(np.sqrt(s.mean()) - gt.std[0]) <= 5 * s.std() / (2 * gt.std[0] * math.sqrt(n))


def test_lj13_pair_conventions():
    x = _load("lj13")["samples_test"][:16]
    uniq = T.get("lj13", pairs="unique")
    lp = jax.jit(lambda t, x: jax.vmap(t.logdensity)(x))(uniq, x)
    np.testing.assert_allclose(np.asarray(lp), -_numpy_energy(x, "lj13", 1.0), rtol=1e-12)
    assert uniq.ground_truth() is None
    assert "ordered" in T.get("lj13").provenance()["variant"]


def test_molecular_bad_parameters():
    with pytest.raises(ValueError, match="pairs must be"):
        T.get("lj13", pairs="both")
