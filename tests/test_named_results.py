"""Named results: targets whose ``constrain`` returns named variables, ``Result.posterior``,
``summary()`` rows per element, ``to_arviz()`` with dims/coords/all stats, and kept warm-up draws."""
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.core.target import Target, element_names, flatten_quantities


class Named(Target):
    """A 6-d Gaussian reported as ``mu`` (scalar), ``sigma = exp(x[1])`` and a 2x2 matrix ``L``."""

    scale: jax.Array = eqx.field(default_factory=lambda: jnp.asarray([1.0, 0.5, 1.0, 2.0, 1.0, 1.0]))

    @property
    def event_shape(self):
        return (6,)

    def logdensity(self, x):
        return -0.5 * jnp.sum((x / self.scale) ** 2)

    def constrain(self, x):
        return {"mu": x[0], "sigma": jnp.exp(x[1]), "L": jnp.reshape(x[2:], (2, 2))}

    def coords_and_dims(self):
        return {"row": ["a", "b"], "col": [0, 1]}, {"L": ("row", "col")}


def test_element_names_and_flatten():
    assert element_names({"mu": (), "theta": (2,), "L": (2, 2)}) == (
        "mu", "theta[0]", "theta[1]", "L[0,0]", "L[0,1]", "L[1,0]", "L[1,1]")
    q = flatten_quantities({"a": jnp.ones(()), "b": jnp.arange(4).reshape(2, 2)})
    np.testing.assert_array_equal(np.asarray(q), [1, 0, 1, 2, 3])
    t = Named()
    assert t.variables() == {"mu": (), "sigma": (), "L": (2, 2)}
    assert t.quantity_names() == ("mu", "sigma", "L[0,0]", "L[0,1]", "L[1,0]", "L[1,1]")
    assert samplax.from_logdensity(lambda x: -jnp.sum(x**2), 2).variables() is None


@pytest.mark.parametrize("method", ["mala", "auto"])
def test_posterior_summary_arviz_and_warmup(method, tmp_path):
    t = Named()
    r = samplax.sample(t, method, seed=1, num_chains=2, num_warmup=100, num_samples=60, progress=False,
                       keep_warmup=True, thinning=2)
    post = r.posterior
    assert list(post) == ["mu", "sigma", "L"]
    assert post["mu"].shape == (2, 60) and post["L"].shape == (2, 60, 2, 2)
    np.testing.assert_allclose(post["sigma"], np.exp(r.samples[:, :, 1]), rtol=1e-12)
    np.testing.assert_allclose(post["L"][:, :, 1, 0], r.samples[:, :, 4], rtol=1e-12)
    assert r.samples.shape == (2, 60, 6)  # the flat unconstrained draws stay
    # summary: one row per element
    rows = r.summary().splitlines()
    for name in ("mu", "sigma", "L[0,0]", "L[1,1]"):
        assert any(line.split()[0] == name for line in rows[2:]), name
    # warm-up: every second warm-up step (thinning 2) of the warm-up that ran
    n_warm = r.warmup_samples.shape[1]
    expect = 50 if method == "mala" else -(-r.extra["warmup_steps"] // 2)
    assert n_warm == expect
    assert r.warmup_posterior["L"].shape == (2, n_warm, 2, 2)
    assert set(r.warmup_stats) == set(r.stats) and r.warmup_stats["lp"].shape == (2, n_warm)
    idata = r.to_arviz()
    assert set(idata.groups()) >= {"posterior", "sample_stats", "warmup_posterior", "warmup_sample_stats"}
    assert idata.posterior["L"].dims == ("chain", "draw", "row", "col")
    assert list(idata.posterior["L"].coords["row"].values) == ["a", "b"]
    assert idata.posterior["sigma"].shape == (2, 60)
    assert set(r.stats) <= set(idata.sample_stats.data_vars)
    assert idata.warmup_posterior.sizes["draw"] == n_warm
    np.testing.assert_array_equal(idata.warmup_posterior["mu"].values, r.warmup_posterior["mu"])
    # dims given here override the target's
    assert r.to_arviz(dims={"L": ["i", "j"]}).posterior["L"].dims == ("chain", "draw", "i", "j")
    # save / load keeps all of it
    r.save(str(tmp_path / "run"))
    r2 = samplax.Result.load(str(tmp_path / "run"))
    assert r2.variables == r.variables and r2.dims == r.dims
    np.testing.assert_array_equal(r2.posterior["L"], post["L"])
    np.testing.assert_array_equal(r2.warmup_posterior["sigma"], r.warmup_posterior["sigma"])
    np.testing.assert_array_equal(r2.warmup_stats["lp"], r.warmup_stats["lp"])


def test_keep_warmup_leaves_draws_unchanged_and_resumes(tmp_path):
    t = Named()
    # the run lengths of the test above: the compiled program is reused
    kw = dict(seed=3, num_chains=2, num_warmup=100, num_samples=60, thinning=2, progress=False)
    plain = samplax.sample(t, "mala", **kw)
    kept = samplax.sample(t, "mala", keep_warmup=True, **kw)
    np.testing.assert_array_equal(plain.samples, kept.samples)
    assert plain.warmup_samples is None and plain.to_arviz().groups() == ["posterior", "sample_stats"]
    assert kept.warmup_samples.shape == (2, 50, 6)
    # a finished checkpointed run reloads its warm-up draws too
    d = str(tmp_path / "ck")
    first = samplax.sample(t, "mala", keep_warmup=True, checkpoint_dir=d, checkpoint_interval=0.0, **kw)
    again = samplax.sample(t, "mala", keep_warmup=True, checkpoint_dir=d, **kw)
    np.testing.assert_array_equal(first.warmup_samples, kept.warmup_samples)
    np.testing.assert_array_equal(again.warmup_samples, kept.warmup_samples)
    np.testing.assert_array_equal(again.warmup_stats["lp"], kept.warmup_stats["lp"])
    with pytest.raises(ValueError, match="keep_warmup must be True or False"):
        samplax.sample(t, "mala", keep_warmup="yes", **kw)
    with pytest.raises(ValueError, match="no warm-up draws"):
        samplax.sample(t, "smc", keep_warmup=True, num_chains=1, num_samples=50, progress=False)


def test_plain_targets_keep_their_names():
    t = samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), 2)
    r = samplax.sample(t, "rwm", num_chains=2, num_warmup=20, num_samples=20, progress=False)
    assert r.variables is None and list(r.posterior) == ["x[0]", "x[1]"]
    assert list(r.to_arviz().posterior.data_vars) == ["x_0", "x_1"]
