"""``samplax.sample(target, kernel=K)``: a user's own Kernel(init, step) runs through the engine."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.run import CheckpointMismatchError

SD = np.array([1.0, 2.0])


def _logdensity(x):
    return -0.5 * jnp.sum((x / SD) ** 2)


def _target():
    return samplax.from_logdensity(_logdensity, event_shape=2, name="diag2")


def test_user_mala_kernel_moments_within_mcse():
    kernel = samplax.mcmc.mala(_logdensity, step_size=0.9, inverse_mass_matrix=jnp.asarray(SD**2))
    r = samplax.sample(_target(), kernel=kernel, seed=1, num_chains=4, num_warmup=200, num_samples=2000,
                       progress=False)
    assert r.samples.shape == (4, 2000, 2)
    mean, mcse = r.diagnostics["mean"], r.diagnostics["mcse_mean"]
    assert np.all(np.abs(mean) < 5 * mcse), (mean, mcse)
    sd, mcse_sd = r.diagnostics["sd"], r.diagnostics["mcse_sd"]
    assert np.all(np.abs(sd - SD) < 5 * mcse_sd), (sd, mcse_sd)
    # MALA: one value-and-gradient per step and per chain, plus one per chain at the start and one per chain
    # in the initial-point search
    assert r.cost["num_grad_evals"] == 4 * (200 + 2000) + 4 + 4
    assert r.cost["num_compilations"] == 1
    assert "acceptance_rate" in r.stats and "lp" in r.stats


@pytest.mark.slow  # 25-35 s: the default tier must fit 15 min on 2 cores
def test_user_kernel_deterministic_batch_invariant_and_resumes(tmp_path):
    kernel = samplax.mcmc.hmc(_logdensity, step_size=0.4, num_integration_steps=5)
    kw = dict(seed=3, num_warmup=20, num_samples=40, progress=False)
    a = samplax.sample(_target(), kernel=kernel, num_chains=8, **kw)
    b = samplax.sample(_target(), kernel=kernel, num_chains=8, **kw)
    np.testing.assert_array_equal(a.samples, b.samples)
    c = samplax.sample(_target(), kernel=kernel, num_chains=4, **kw)
    np.testing.assert_array_equal(a.samples[:4], c.samples)
    d = samplax.sample(_target(), kernel=kernel, num_chains=4, key=jax.random.key(3), **{**kw, "seed": 0})
    np.testing.assert_array_equal(c.samples, d.samples)  # key= gives the same root as seed=

    ckpt = str(tmp_path / "ck")
    calls = {"n": 0}
    import samplax.run.progress as prog

    orig = prog.Progress.update

    def interrupt(self, done):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return orig(self, done)

    prog.Progress.update = interrupt
    try:
        part = samplax.sample(_target(), kernel=kernel, num_chains=4, checkpoint_dir=ckpt, chunk_size=10,
                              checkpoint_interval=0.0, **kw)
    finally:
        prog.Progress.update = orig
    assert not part.complete
    full = samplax.sample(_target(), kernel=kernel, num_chains=4, checkpoint_dir=ckpt, chunk_size=10, **kw)
    assert full.complete
    ref = samplax.sample(_target(), kernel=kernel, num_chains=4, chunk_size=10, **kw)
    np.testing.assert_array_equal(full.samples, ref.samples)
    with pytest.raises(CheckpointMismatchError):
        samplax.sample(_target(), kernel=kernel, num_chains=4, checkpoint_dir=ckpt, chunk_size=10,
                       **{**kw, "seed": 4})


class _State(NamedTuple):
    position: jax.Array


class _Info(NamedTuple):
    accepted: jax.Array


def test_kernel_without_counts_reports_unknown_cost():
    def init(key, x):
        del key
        return _State(x)

    def step(key, state):  # an independence sampler from N(0, 1), no counts in the info
        return _State(jax.random.normal(key, state.position.shape)), _Info(jnp.asarray(True))

    r = samplax.sample(samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), event_shape=3),
                       kernel=samplax.Kernel(init, step), num_chains=2, num_warmup=0, num_samples=50,
                       progress=False)
    assert r.cost["num_logdensity_evals"] is None and r.cost["num_grad_evals"] is None
    assert any(w["code"] == "cost_unknown" for w in r.warnings)
    assert r.samples.shape == (2, 50, 3)


def test_bad_kernels_are_clear_errors():
    t = _target()
    with pytest.raises(TypeError, match="kernel must be"):
        samplax.sample(t, kernel=lambda k, x: x, progress=False)

    def init(key, x):
        return {"x": x}

    def step(key, s):
        return s, None

    with pytest.raises(TypeError, match="position"):
        samplax.sample(t, kernel=samplax.Kernel(init, step), num_samples=5, num_warmup=0, progress=False)
    with pytest.raises(TypeError, match="method options"):
        samplax.sample(t, kernel=samplax.mcmc.mala(_logdensity, 0.5), target_accept=0.5, progress=False)


def test_kernel_none_is_no_kernel_or_the_methods_own_option():
    """``kernel=None`` said explicitly: for a method without a ``kernel`` option it means no user kernel (the old
    default); for a method whose own option is ``kernel`` (SMC family, parallel tempering) it is that option's
    value, refused by its check (never silently replaced by the default)."""
    t = _target()
    kw = dict(seed=1, num_chains=1, num_warmup=5, num_samples=5, progress=False)
    r = samplax.sample(t, "rwm", kernel=None, **kw)
    np.testing.assert_array_equal(r.samples, samplax.sample(t, "rwm", **kw).samples)
    for method in ("smc", "parallel_tempering"):
        with pytest.raises(ValueError, match=r"option kernel=None is invalid"):
            samplax.sample(t, method, kernel=None, **kw)
    with pytest.raises(TypeError, match="unknown option"):  # a kernel name for a method without the option
        samplax.sample(t, "rwm", kernel="mala", **kw)
