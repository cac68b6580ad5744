"""Slice samplers: gpss, elliptical_slice, hit_and_run_slice, coordinate_slice."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.mcmc import elliptical_slice as ess_m
from samplax.mcmc import gpss as gpss_m
from samplax.mcmc import slice as slice_m
from samplax.mcmc import coordinate_slice as cs_m
from mcmc2_helpers import block_gaussian, check_moments, counting

METHODS = ["gpss", "elliptical_slice", "hit_and_run_slice", "coordinate_slice"]


@pytest.mark.parametrize("method", METHODS)
def test_moments_block_gaussian(method):
    """Standard-normal block and correlated anisotropic block, against analytic moments (z = 5)."""
    target, mean, std = block_gaussian()
    r = samplax.sample(target, method=method, seed=3, num_chains=4, num_warmup=500, num_samples=3000,
                       progress=False, chunk_size=3500)
    check_moments(r, mean, std, z=5.0)
    assert r.cost["num_grad_evals"] == 0
    # per-draw counts are >= 1 and, with warm-up and the initial points, add up to at most the total
    assert np.all(r.stats["n_steps"] >= 1)
    assert int(np.sum(r.stats["n_steps"])) + 4 * 500 + 4 <= r.cost["num_logdensity_evals"]


def _single_step_counts(kernel_step, params, logdensity, x0, n_steps=30):
    counted, count = counting(logdensity)
    step = jax.jit(lambda k, s: kernel_step(counted)(k, s, params))
    state = slice_m.SliceState(x0, logdensity(x0))
    total = 0
    for i in range(n_steps):
        state, info = step(jax.random.fold_in(jax.random.key(0), i), state)
        jax.block_until_ready(state)
        total += int(info.num_logdensity_evals)
        assert np.isfinite(float(state.logdensity))
        np.testing.assert_allclose(float(state.logdensity), float(logdensity(state.position)), rtol=1e-12)
    return total, count[0]


def _lp(x):
    return -0.5 * jnp.sum((x / jnp.array([1.0, 2.0, 0.5])) ** 2)


@pytest.mark.parametrize("name", ["gpss", "ess", "hrs", "crs"])
def test_exact_evaluation_counts(name):
    """The reported num_logdensity_evals equals the number of actual calls (varies per step)."""
    x0 = jnp.array([0.3, -1.0, 0.2])
    c, s = jnp.zeros(3), jnp.ones(3)
    if name == "gpss":
        build, params = gpss_m.build_kernel, gpss_m.GPSSParams(c, s, jnp.asarray(0.5))
    elif name == "ess":
        build, params = ess_m.build_kernel, ess_m.EllipticalSliceParams(c, s)
    elif name == "hrs":
        build, params = slice_m.build_kernel, slice_m.HitAndRunSliceParams(c, s, jnp.asarray(0.5))
    else:
        build, params = cs_m.build_kernel, cs_m.CoordinateSliceParams(c, s, jnp.asarray(0.5))
    reported, actual = _single_step_counts(build, params, _lp, x0)
    assert reported == actual
    assert reported > 30  # more than one evaluation per step on average


def test_kernel_factories_run(key):
    x0 = jnp.array([0.5, -0.5, 1.0])
    for k in (samplax.mcmc.gpss(_lp), samplax.mcmc.elliptical_slice(_lp), samplax.mcmc.hit_and_run_slice(_lp),
              samplax.mcmc.coordinate_slice(_lp)):
        st = k.init(key, x0)
        st, info = jax.jit(k.step)(key, st)
        assert st.position.shape == (3,) and bool(jnp.isfinite(st.logdensity))
        assert int(info.num_grad_evals) == 0


def test_bad_options():
    target, _, _ = block_gaussian()
    with pytest.raises(ValueError, match="width"):
        samplax.sample(target, method="gpss", width=-1.0, num_samples=10, progress=False)
    with pytest.raises(ValueError, match="max_steps"):
        samplax.sample(target, method="hit_and_run_slice", max_steps=0, num_samples=10, progress=False)
    with pytest.raises(TypeError, match="unknown option"):
        samplax.sample(target, method="elliptical_slice", width=1.0, num_samples=10, progress=False)
    one_d = samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), 1)
    with pytest.raises(ValueError, match="dimension >= 2"):
        samplax.sample(one_d, method="gpss", num_samples=10, progress=False)
    with pytest.raises(ValueError, match="width"):
        samplax.mcmc.hit_and_run_slice(_lp, width=0.0)
    with pytest.raises(ValueError, match="width"):
        samplax.mcmc.coordinate_slice(_lp, width=-2.0)
    with pytest.raises(ValueError, match="max_steps"):
        samplax.sample(target, method="coordinate_slice", max_steps=0, num_samples=10, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_moments_std_gaussian_20d(method):
    target = samplax.targets.get("std_gaussian", dim=20)
    r = samplax.sample(target, method=method, seed=5, num_chains=4, num_warmup=500, num_samples=4000,
                       progress=False, chunk_size=4500)
    check_moments(r, np.zeros(20), np.ones(20), z=5.0)
