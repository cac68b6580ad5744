"""NumPyro and PyMC models as targets (``samplax.from_numpyro``, ``samplax.from_pymc``).

Default tier: on the posteriordb posteriors written in both frameworks
(``samplax.targets.posteriordb.numpyro_models`` / ``pymc_models``), each
adapter's log-density and gradient equal the hand-written, Stan-oracle-checked
target's (:mod:`samplax.targets.posteriordb.models`) at a few points up to a
constant (the Jacobians of the transforms included: the points differ in the
unconstrained coordinates), and ``constrain`` gives the same named values;
errors name the site; new data of the same shapes compile nothing.
Slow tier: ``samplax.sample(..., method="auto")`` on both routes agrees with
posteriordb's reference means and with NumPyro's own NUTS within 5 MCSE.
"""
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.targets import posteriordb as pdb

numpyro = pytest.importorskip("numpyro")
pm = pytest.importorskip("pymc")

import numpyro.distributions as dist  # noqa: E402
from samplax.targets.posteriordb import numpyro_models, pymc_models  # noqa: E402

NAMES = sorted(numpyro_models.MODELS)
FRAMEWORKS = {"numpyro": numpyro_models.target, "pymc": pymc_models.target}


def test_both_frameworks_cover_the_same_posteriors():
    assert sorted(pymc_models.MODELS) == NAMES and len(NAMES) >= 8
    assert set(NAMES) <= set(pdb.ORACLE_CHECKED)


def _blocks_to_framework(hand, fw, z):
    """The framework's flat point holding the hand-written target's unconstrained blocks ``z``
    (same transforms, blocks matched by the Stan parameter name)."""
    blocks, start = {}, 0
    for p in hand.layout:
        blocks[p.name] = z[..., start:start + p.unconstrained_size]
        start += p.unconstrained_size
    assert sorted(blocks) == sorted(fw.latent_names), (sorted(blocks), fw.latent_names)
    return jnp.concatenate([blocks[n] for n in fw.latent_names], axis=-1)


def _reference_from_named(named, names):
    """Named constrained values -> the reference quantities ``theta[1]`` (1-based, Stan order)."""
    out = []
    for n in names:
        m = re.fullmatch(r"(\w+)\[([\d,]+)\]", n)
        if m is None:
            out.append(named[n].reshape(named[n].shape[:1] + (-1,))[:, 0])
        else:
            idx = tuple(int(i) - 1 for i in m.group(2).split(","))
            out.append(named[m.group(1)][(slice(None),) + idx])
    return jnp.stack(out, axis=-1)


#: default tier: one posterior per feature (hierarchical with a deterministic and plates, improper flat
#: priors, a multivariate normal likelihood, an ordered vector and a mixture); the slow tier checks all
DEFAULT = ("eight_schools-eight_schools_noncentered", "earnings-logearn_interaction", "gp_pois_regr-gp_regr",
           "low_dim_gauss_mix-low_dim_gauss_mix")


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
@pytest.mark.parametrize("name", [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_logdensity_gradient_and_constrain_match_the_oracle_checked_target(name, framework):
    hand = pdb.load(name)
    fw = FRAMEWORKS[framework](name)
    gt = hand.ground_truth()
    z0 = hand.unconstrain(jnp.asarray(gt.mean))
    z = z0 + 0.3 * jax.random.normal(jax.random.key(7), (4, hand.dim))
    z = jnp.concatenate([z0[None], z])
    x = _blocks_to_framework(hand, fw, z)

    @eqx.filter_jit  # the model's sizes (J, N, K) are static: not traced
    def evaluate(hand, fw, z, x):
        lp_h, g_h = jax.vmap(jax.value_and_grad(hand.logdensity))(z)
        lp_f, g_f = jax.vmap(jax.value_and_grad(fw.logdensity))(x)
        return lp_h, g_h, lp_f, g_f, jax.vmap(hand.constrain)(z), jax.vmap(fw.constrain)(x)

    lp_h, g_h, lp_f, g_f, q_h, named = evaluate(hand, fw, z, x)
    scale = np.max(np.abs(lp_h)) + 1.0
    np.testing.assert_allclose(lp_f - lp_f[0], lp_h - lp_h[0], rtol=1e-8, atol=1e-9 * scale)
    np.testing.assert_allclose(g_f, _blocks_to_framework(hand, fw, g_h), rtol=1e-7,
                               atol=1e-9 * float(np.max(np.abs(g_h)) + 1.0))
    np.testing.assert_allclose(_reference_from_named(named, gt.names), q_h, rtol=1e-10, atol=1e-12)
    assert fw.quantity_names()[:1] and all("[" not in n or "]" in n for n in fw.quantity_names())
    # unconstrain inverts constrain
    latent_values = {n: named[n][2] for n in fw.latent_names}
    np.testing.assert_allclose(fw.unconstrain(latent_values), x[2], rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- NumPyro errors


def _eight_schools_data():
    return {k: np.asarray(v, dtype=float) if isinstance(v, list) else v
            for k, v in pdb._bundle.load_data("eight_schools-eight_schools_noncentered").items()}


def test_numpyro_names_dims_and_no_recompile_on_new_data():
    d = _eight_schools_data()
    model = numpyro_models.eight_schools_noncentered
    t1 = samplax.from_numpyro(model, **d)
    assert t1.dim == 10 and t1.latent_names == ("theta_trans", "mu", "tau")
    assert t1.variables() == {"theta_trans": (8,), "mu": (), "tau": (), "theta": (8,)}
    assert t1.coords_and_dims()[1] == {"theta_trans": ("school",)}
    kw = dict(num_chains=2, num_warmup=20, num_samples=10, progress=False, seed=0)
    r1 = samplax.sample(t1, "rwm", **kw)
    assert r1.posterior["theta"].shape == (2, 10, 8) and r1.cost["num_compilations"] >= 1
    t2 = samplax.from_numpyro(model, **{**d, "y": d["y"] + 1.0})
    r2 = samplax.sample(t2, "rwm", **kw)
    assert r2.cost["num_compilations"] == 0  # same model, new data: nothing recompiles
    assert not np.array_equal(r1.samples, r2.samples)


def test_numpyro_discrete_latent_site_is_refused_by_name():
    def model(y):
        k = numpyro.sample("k", dist.Poisson(3.0))
        numpyro.sample("y", dist.Normal(k, 1.0), obs=y)

    with pytest.raises(ValueError, match="discrete latent site 'k'"):
        samplax.from_numpyro(model, np.zeros(3))


def test_numpyro_model_that_raises_names_model_site_and_message():
    def broken(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        raise RuntimeError("the covariates are missing")
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"model '.*broken'.*site 'mu'.*RuntimeError: the covariates are missing"):
        samplax.from_numpyro(broken, np.zeros(3))


def test_numpyro_data_of_the_wrong_shape_names_the_site():
    d = _eight_schools_data()
    with pytest.raises(ValueError, match=r"site 'y' have shape \(7,\)"):
        samplax.from_numpyro(numpyro_models.eight_schools_noncentered, 8, d["y"][:7], d["sigma"])

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        numpyro.sample("obs", dist.Normal(mu, 1.0).to_event(1), obs=y)

    with pytest.raises(ValueError, match=r"site 'obs' have shape \(3, 1\).*broadcast to \(3, 3\)"):
        samplax.from_numpyro(model, np.zeros((3, 1)))


def test_numpyro_model_with_no_finite_start_names_the_site():
    def model(y):
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Gamma(2.0, s), obs=y)  # log(y) of negative data: NaN

    t = samplax.from_numpyro(model, -np.ones(4))
    with pytest.raises(ValueError, match=r"finite initial point.*not finite there: the terms of \['y'\]"):
        samplax.sample(t, "rwm", num_chains=1, num_warmup=5, num_samples=5, progress=False)


# ----------------------------------------------------------------------------- PyMC errors


def _pymc_eight_schools(y, sigma):
    with pm.Model(coords={"school": np.arange(len(y))}) as m:
        y_d = pm.Data("y_obs", y, dims="school")
        theta_trans = pm.Normal("theta_trans", 0.0, 1.0, dims="school")
        mu = pm.Normal("mu", 0.0, 5.0)
        tau = pm.HalfCauchy("tau", 5.0)
        theta = pm.Deterministic("theta", mu + tau * theta_trans, dims="school")
        pm.Normal("y", theta, sigma, observed=y_d, dims="school")
    return m


def test_pymc_names_coords_and_no_recompile_after_set_data():
    d = _eight_schools_data()
    m = _pymc_eight_schools(d["y"], d["sigma"])
    t1 = samplax.from_pymc(m)
    assert t1.latent_names == ("theta_trans", "mu", "tau")
    assert t1.variables() == {"theta_trans": (8,), "mu": (), "tau": (), "theta": (8,)}
    coords, dims = t1.coords_and_dims()
    assert dims["theta"] == ("school",) and coords["school"] == list(range(8))
    kw = dict(num_chains=2, num_warmup=20, num_samples=10, progress=False, seed=0)
    r1 = samplax.sample(t1, "rwm", **kw)
    idata = r1.to_arviz()
    assert idata.posterior["theta"].dims == ("chain", "draw", "school")
    with m:
        pm.set_data({"y_obs": d["y"] + 1.0})
    t2 = samplax.from_pymc(m)
    r2 = samplax.sample(t2, "rwm", **kw)
    assert r2.cost["num_compilations"] == 0
    assert not np.array_equal(r1.samples, r2.samples)
    # a model built again with the same structure reuses the compiled programs too
    r3 = samplax.sample(samplax.from_pymc(_pymc_eight_schools(d["y"] - 1.0, d["sigma"])), "rwm", **kw)
    assert r3.cost["num_compilations"] == 0


def test_pymc_discrete_free_variable_is_refused_by_name():
    with pm.Model() as m:
        k = pm.Poisson("k", 3.0)
        pm.Normal("y", k, 1.0, observed=np.zeros(3))
    with pytest.raises(ValueError, match="discrete free variable 'k'"):
        samplax.from_pymc(m)


def test_pymc_data_of_the_wrong_shape_names_the_variable():
    d = _eight_schools_data()
    m = _pymc_eight_schools(d["y"], d["sigma"])
    with m:
        pm.set_data({"y_obs": d["y"][:7]}, coords={"school": np.arange(7)})
    with pytest.raises(ValueError, match="observed variable 'y'|observed data of 'y'"):
        samplax.from_pymc(m)


def test_pymc_model_with_a_nonfinite_start_names_the_variable():
    with pm.Model() as m:
        s = pm.HalfNormal("s", 1.0)
        pm.Exponential("y", s, observed=-np.ones(4))
    t = samplax.from_pymc(m)
    with pytest.raises(ValueError, match=r"'pymc_model'.*not finite there: the terms of \['y'\]"):
        samplax.sample(t, "rwm", num_chains=1, num_warmup=5, num_samples=5, progress=False)


# ----------------------------------------------------------------------------- slow: sampling


def _reference_draws(posterior, names):
    """``{name: [chains, draws, *shape]}`` -> ``[chains, draws, k]`` in the reference's order."""
    flat = {n: np.asarray(v).reshape(v.shape[0] * v.shape[1], *v.shape[2:]) for n, v in posterior.items()}
    q = np.asarray(_reference_from_named(flat, names))
    c, n = next(iter(posterior.values())).shape[:2]
    return q.reshape(c, n, -1)


def _z(a, b, se_a, se_b):
    return np.abs(a - b) / np.sqrt(se_a**2 + se_b**2)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_auto_on_both_routes_agrees_with_the_reference_and_numpyro_nuts(name):
    from numpyro.infer import MCMC, NUTS

    from samplax.diagnostics import mcse_mean
    from samplax.targets.posteriordb import _bundle

    gt = pdb.load(name).ground_truth()
    kw = dict(seed=0, num_chains=4, num_warmup=500, num_samples=1000, progress=False)
    means = {}
    for framework, build in sorted(FRAMEWORKS.items()):
        r = samplax.sample(build(name), method="auto", **kw)
        q = _reference_draws(r.posterior, gt.names)
        m, se = q.mean(axis=(0, 1)), mcse_mean(q)
        z = _z(m, gt.mean, se, gt.mean_se)
        assert np.all(z <= 5.0), (framework, {n: round(float(v), 2) for n, v in zip(gt.names, z) if v > 5})
        means[framework] = (m, se)
    # NumPyro's own NUTS on the same model and data (dense mass matrix: several of these posteriors are
    # strongly correlated, and a diagonal one needs the maximum tree depth there)
    model = numpyro_models.MODELS[name]
    mcmc = MCMC(NUTS(model, dense_mass=True), num_warmup=500, num_samples=1000, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), **_bundle.program_data(model, _bundle.load_data(name)))
    q = _reference_draws(mcmc.get_samples(group_by_chain=True), gt.names)
    m_np, se_np = q.mean(axis=(0, 1)), mcse_mean(q)
    for framework, (m, se) in means.items():
        z = _z(m, m_np, se, se_np)
        assert np.all(z <= 5.0), (framework, "vs numpyro NUTS",
                                  {n: round(float(v), 2) for n, v in zip(gt.names, z) if v > 5})
