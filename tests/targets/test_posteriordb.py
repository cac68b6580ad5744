"""posteriordb targets against Stan's own log-density/gradient and the reference draws.

Oracle files (``stan_oracle.npz``, 80 points each) and reference draws live in
``<repo>/../shared/external/posteriordb``; tests that need them skip when that
folder is absent.  Stan drops constants, so log-densities are compared as
differences ``logp - logp[0]``.
"""
import dataclasses
import functools
import json
import pathlib
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.diagnostics import mcse_mean
from samplax.targets import posteriordb as pdb
from samplax.targets.posteriordb import _bundle

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared" / "external" / "posteriordb"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared posteriordb reference folder {SHARED} is absent"
)

NAMES = sorted(pdb.POSTERIORS)
ORACLE_NAMES = [n for n in NAMES if (SHARED / n / "stan_oracle.npz").exists()] if SHARED.is_dir() else []
RTOL = 1e-8
GP_POIS = "gp_pois_regr-gp_pois_regr"


@pytest.fixture(scope="module")
def oracles():
    return {n: dict(np.load(SHARED / n / "stan_oracle.npz")) for n in ORACLE_NAMES}


def _oracle_to_ref_name(s: str) -> str:
    """Oracle names are ``theta.1`` / ``theta.1.2``; reference names ``theta[1]`` / ``theta[1,2]``."""
    base, *idx = str(s).split(".")
    return f"{base}[{','.join(idx)}]" if idx else base


def _points_and_tol(name, target, o):
    """Points compared and per-point tolerance.

    Default: all 80 points, tolerance ``RTOL``.  gp_pois_regr's kernel matrix
    has a 1e-10 jitter, so its condition number reaches 1e12: float64 Cholesky
    factors (Stan's and ours) are then only accurate to about
    ``eps * cond(K)``; on the 16 perturbed points ``exp(f)`` amplifies that
    further (checked separately against a 40-digit reference below).  There
    we compare the 64 posterior draws with ``RTOL + eps * cond(K)``.
    """
    n = o["z_unconstrained"].shape[0]
    if name != GP_POIS:
        return np.arange(n), np.full(n, RTOL)
    idx = np.flatnonzero(o["is_posterior_draw"])
    x = np.asarray(target.x)
    tol = []
    for z in o["z_unconstrained"][idx]:
        rho, alpha = np.exp(z[0]), np.exp(z[1])
        k = alpha**2 * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho**2) + 1e-10 * np.eye(len(x))
        tol.append(RTOL + np.finfo(np.float64).eps * np.linalg.cond(k))
    return idx, np.asarray(tol)


@functools.lru_cache(maxsize=None)
def _evaluated(name, with_draws=False):
    """Everything the tests need for one posterior, from three compiled calls.

    Batch U (unconstrain): Stan's constrained values at the oracle points (in
    reference-name order) followed by all reference draws.  Batch Z
    (log-density, gradient, constrain): the oracle points followed by the
    unconstrained reference draws.  The calls run one after the other: XLA
    may run independent batched LAPACK calls (Cholesky, triangular solves) of
    one program concurrently, and on a 2-thread CPU pool jax's
    ParallelBatchMap then deadlocks (observed with jax 0.10 on this machine).
    """
    t = pdb.load(name)
    names = list(t.quantity_names())
    opath = SHARED / name / "stan_oracle.npz"
    if opath.exists():
        o = np.load(opath)
        col = {_oracle_to_ref_name(s): i for i, s in enumerate(o["x_with_tparams_names"])}
        zo, qo = o["z_unconstrained"], o["x_with_tparams"][:, [col[n] for n in names]]
    else:
        zo, qo = np.zeros((0,) + t.event_shape), np.zeros((0, len(names)))
    draws = np.load(SHARED / name / "reference_draws.npz")["draws"]
    if not with_draws:
        draws = draws[:, :0]
    n_o = zo.shape[0]

    def call(fn, x):
        return jax.block_until_ready(eqx.filter_jit(fn)(t, jnp.asarray(x)))

    zu = np.asarray(call(lambda tt, q: jax.vmap(tt.unconstrain)(q), np.concatenate([qo, draws.reshape(-1, len(names))])))
    zz = np.concatenate([zo, zu[n_o:]])
    lp, g = (np.asarray(v) for v in call(lambda tt, z: jax.vmap(jax.value_and_grad(tt.logdensity))(z), zz))
    q = np.asarray(call(lambda tt, z: jax.vmap(tt.constrain)(z), zz))
    return t, dict(lp=lp[:n_o], grad=g[:n_o], q=q[:n_o], z_back=zu[:n_o], q_round=q[n_o:],
                   grad_ref=g[n_o:].reshape(draws.shape[:2] + (g.shape[-1],)))


# ---------------------------------------------------------------------------
# registry and basic behaviour (no shared folder needed)


def test_registered_names_and_alias():
    names = samplax.targets.names()
    for n in NAMES:
        assert f"pdb:{n}" in names
    assert "eight_schools" in names
    t = samplax.targets.get("eight_schools")
    assert t.name == "pdb:eight_schools-eight_schools_noncentered"
    assert t.event_shape == (10,)
    with pytest.raises(KeyError, match="unknown posterior"):
        pdb.load("no-such-posterior")


@pytest.mark.parametrize("name", NAMES)
def test_finite_logdensity_and_truth_from_bundle(name, key):
    t = pdb.load(name)
    z = jax.vmap(t.initial_point)(jax.random.split(key, 4))
    lp, g = eqx.filter_jit(lambda tt, zz: jax.vmap(jax.value_and_grad(tt.logdensity))(zz))(t, z)
    assert lp.shape == (4,) and g.shape == z.shape
    assert np.all(np.isfinite(np.asarray(lp))) and np.all(np.isfinite(np.asarray(g)))
    gt = t.ground_truth()
    p = len(gt.names)
    assert gt.kind == "reference_draws" and gt.source == f"posteriordb {name} reference draws"
    for arr in (gt.mean, gt.std, gt.mean_se, gt.std_se):
        assert arr.shape == (p,) and np.all(np.isfinite(arr))
    assert np.all(gt.std > 0) and np.all(gt.mean_se > 0) and np.all(gt.std_se > 0)
    assert jax.eval_shape(jax.vmap(t.constrain), z).shape == (4, p)
    assert t.quantity_names() == gt.names
    prov = t.provenance()
    assert prov["posterior"] == name and prov["stan_model"].endswith(".stan")


def test_bad_input_shapes():
    t = pdb.load("eight_schools")
    with pytest.raises(ValueError, match=r"x must be one unconstrained point of shape \(10,\)"):
        t.logdensity(jnp.zeros((2, 10)))
    with pytest.raises(ValueError, match="q must be one vector of the 10"):
        t.unconstrain(jnp.zeros(9))
    with pytest.raises(TypeError, match="data must be a dict"):
        pdb.load("eight_schools", data=[1, 2])


def test_new_data_does_not_retrace():
    """Data are array fields: a new data set of the same shapes reuses the compiled code."""
    traces = []

    @eqx.filter_jit
    def f(target, z):
        traces.append(1)
        return target.logdensity(z)

    data = _bundle.load_data("eight_schools-eight_schools_noncentered")
    t1 = pdb.load("eight_schools", data)
    t2 = pdb.load("eight_schools", {**data, "y": [v + 1.0 for v in data["y"]]})
    z = jnp.linspace(-1.0, 1.0, 10)
    a, b = f(t1, z), f(t2, z)
    assert len(traces) == 1
    assert float(a) != float(b)


def test_corrupted_bundle_is_rejected(tmp_path):
    name = "eight_schools-eight_schools_noncentered"
    dst = tmp_path / "pdb"
    shutil.copytree(_bundle.DATA_DIR, dst)
    assert _bundle.load_json(name, "data.json", data_dir=dst) == _bundle.load_data(name)
    path = dst / name / "data.json"
    path.write_text(path.read_text().replace("28", "29", 1))
    with pytest.raises(ValueError, match="checksum mismatch"):
        _bundle.load_json(name, "data.json", data_dir=dst)


def test_bijectors_round_trip_and_log_jacobian(key):
    """Each bijector's inverse undoes it and its log-Jacobian equals log|det dx/dz| (autodiff)."""
    cases = [
        (pdb.Lower(1.5), 3, 3), (pdb.Interval(-2.0, 3.0), 3, 3), (pdb.Ordered(), 4, 4),
        (pdb.PositiveOrdered(), 4, 4), (pdb.Simplex(), 4, 3),
    ]
    for bij, n_x, n_z in cases:
        z = jax.random.normal(key, (n_z,))
        # a simplex has K-1 free coordinates: take the Jacobian of its first K-1 components
        m = n_z if isinstance(bij, pdb.Simplex) else n_x

        @jax.jit
        def check(u, bij=bij, m=m):
            x, logj = bij.forward(u, {})
            jac = jax.jacfwd(lambda v: bij.forward(v, {})[0][:m])(u)
            return x, logj, bij.inverse(x, {}), jac

        x, logj, z_back, jac = check(z)
        assert x.shape == (n_x,)
        np.testing.assert_allclose(z_back, z, rtol=1e-10, atol=1e-12)
        if isinstance(bij, pdb.Simplex):
            np.testing.assert_allclose(float(jnp.sum(x)), 1.0, rtol=1e-14)
        np.testing.assert_allclose(float(logj), np.linalg.slogdet(np.asarray(jac))[1], rtol=1e-12)


# ---------------------------------------------------------------------------
# Stan oracle


@needs_shared
def test_every_oracle_posterior_is_implemented():
    have = sorted(p.parent.name for p in SHARED.glob("*/stan_oracle.npz"))
    assert len(have) == 16
    assert set(have) == set(pdb.ORACLE_CHECKED) and set(have) <= set(NAMES)


@needs_shared
@pytest.mark.parametrize("name", ORACLE_NAMES)
def test_logdensity_and_gradient_match_stan(name, oracles):
    o = oracles[name]
    t, ev = _evaluated(name)
    assert t.event_shape == (o["z_unconstrained"].shape[1],)
    lp, g = ev["lp"], ev["grad"]
    idx, tol = _points_and_tol(name, t, o)
    ref = o["logp_unconstrained_jacobian_propto"]
    d_ours, d_stan = lp[idx] - lp[idx[0]], ref[idx] - ref[idx[0]]
    assert np.all(np.abs(d_ours - d_stan) <= tol * (1.0 + np.abs(d_stan))), np.max(np.abs(d_ours - d_stan))
    gs = o["grad_logp_unconstrained_jacobian"][idx]
    err = np.abs(g[idx] - gs) / (1.0 + np.abs(gs))
    assert np.all(err <= tol[:, None]), err.max()


@needs_shared
@pytest.mark.parametrize("name", ORACLE_NAMES)
def test_constrain_matches_stan(name, oracles):
    o = oracles[name]
    t, ev = _evaluated(name)
    q = ev["q"]
    ref_names = list(t.quantity_names())
    col = {_oracle_to_ref_name(s): i for i, s in enumerate(o["x_with_tparams_names"])}
    assert set(ref_names) <= set(col), set(ref_names) - set(col)
    expected = o["x_with_tparams"][:, [col[n] for n in ref_names]]
    idx, tol = _points_and_tol(name, t, o)
    err = np.abs(q[idx] - expected[idx]) / (1.0 + np.abs(expected[idx]))
    assert np.all(err <= tol[:, None]), err.max()
    # and back: unconstrain maps Stan's constrained values to Stan's z
    z0 = o["z_unconstrained"][idx]
    err = np.abs(ev["z_back"][idx] - z0) / (1.0 + np.abs(z0))
    assert np.all(err <= 100 * tol[:, None]), err.max()


@pytest.mark.slow
@needs_shared
def test_gp_pois_regr_as_accurate_as_stan_against_40_digits(oracles):
    """On all 80 points (incl. ill-conditioned ones) our float64 log-density is
    as close to a 40-digit evaluation of the model as Stan's float64 value is."""
    mp = pytest.importorskip("mpmath")
    o = oracles[GP_POIS]
    t = pdb.load(GP_POIS)
    x = [mp.mpf(float(v)) for v in np.asarray(t.x)]
    kk = [int(v) for v in np.asarray(t.k)]
    n = len(x)

    def exact(z):
        with mp.workdps(40):
            rho, alpha = mp.exp(mp.mpf(float(z[0]))), mp.exp(mp.mpf(float(z[1])))
            cov = mp.matrix(n, n)
            for i in range(n):
                for j in range(n):
                    cov[i, j] = alpha**2 * mp.exp(-((x[i] - x[j]) ** 2) / (2 * rho**2)) + (mp.mpf("1e-10") if i == j else 0)
            ft = [mp.mpf(float(v)) for v in z[2:]]
            f = mp.cholesky(cov) * mp.matrix(ft)
            val = (24 * mp.log(rho) - 4 * rho - alpha**2 / 8 - sum(v**2 for v in ft) / 2
                   + sum(kk[i] * f[i] - mp.exp(f[i]) for i in range(n)) + mp.log(rho) + mp.log(alpha))
            return float(val)

    zs = o["z_unconstrained"]
    ex = np.array([exact(z) for z in zs])
    ours = np.asarray(jax.vmap(t.logdensity)(jnp.asarray(zs)))
    stan = o["logp_unconstrained_jacobian_propto"]
    e_ours = np.abs((ours - ours[0]) - (ex - ex[0]))
    e_stan = np.abs((stan - stan[0]) - (ex - ex[0]))
    assert np.all(e_ours <= RTOL * (1 + np.abs(ex - ex[0])) + 10 * e_stan), (e_ours.max(), e_stan.max())


# ---------------------------------------------------------------------------
# reference draws and the bundled files


@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_bundle_matches_shared_files(name):
    assert _bundle.sha256_file(_bundle.DATA_DIR / name / "data.json") == _bundle.sha256_file(SHARED / name / "data.json")
    summary = _bundle.load_summary(name)
    assert summary == json.loads(json.dumps(_bundle.summarize_reference_draws(SHARED / name / "reference_draws.npz")))


@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_ground_truth_consistent_with_reference_file(name):
    ref = np.load(SHARED / name / "reference_draws.npz")
    gt = pdb.load(name).ground_truth()
    assert gt.names == tuple(str(s) for s in ref["names"])
    np.testing.assert_allclose(gt.mean, ref["mean"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gt.std, ref["std"], rtol=1e-12)
    np.testing.assert_allclose(gt.mean_se, ref["mcse_mean_between_chains"], rtol=1e-12)
    # the std's standard error is of the same order as the mean's (x chain-to-chain spread)
    assert np.all(gt.std_se < gt.std)


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_reference_draws_round_trip_and_satisfy_stein_identity(name):
    """Map the reference draws to unconstrained space and back (mean preserved), then
    check E[grad log p(z)] = 0 (Stein's identity; holds for any smooth proper density
    on R^d): each coordinate's mean gradient within 5 MCSE of 0.  This checks the
    model against the draws independently of the Stan oracle."""
    t, ev = _evaluated(name, with_draws=True)
    np.testing.assert_allclose(ev["q_round"].mean(axis=0), t.ground_truth().mean, rtol=1e-7, atol=1e-9)
    g = ev["grad_ref"]
    assert np.all(np.isfinite(g))
    mcse = np.asarray(mcse_mean(g))  # = az.mcse per coordinate (tests/test_diagnostics.py)
    zscore = g.mean(axis=(0, 1)) / mcse
    assert np.all(np.abs(zscore) < 5.0), zscore


def _stein_zscores(target, draws):
    c, s, p = draws.shape

    z = eqx.filter_jit(lambda t, q: jax.vmap(t.unconstrain)(q))(target, jnp.asarray(draws.reshape(-1, p)))
    g = np.asarray(eqx.filter_jit(lambda t, z: jax.vmap(jax.grad(t.logdensity))(z))(target, z)).reshape(c, s, -1)
    mcse = np.asarray(mcse_mean(g))  # = az.mcse per coordinate (tests/test_diagnostics.py)
    return g.mean(axis=(0, 1)) / mcse


@pytest.mark.slow
@needs_shared
def test_stein_check_detects_a_wrong_model():
    """Negative controls: the Stein check above has power against realistic mistakes."""
    draws = np.load(SHARED / "kidiq-kidscore_momhs" / "reference_draws.npz")["draws"]
    data = _bundle.load_data("kidiq-kidscore_momhs")
    right = pdb.load("kidiq-kidscore_momhs", data)
    assert np.all(np.abs(_stein_zscores(right, draws)) < 5.0)
    # forgetting the sigma ~ cauchy(0, 2.5) prior
    no_prior = dataclasses.replace(right, sigma_prior="flat")
    assert np.max(np.abs(_stein_zscores(no_prior, draws))) > 5.0
    # centring a predictor that the program does not centre
    name = "kidiq_with_mom_work-kidscore_interaction_c2"
    draws = np.load(SHARED / name / "reference_draws.npz")["draws"]
    wrong = pdb.models.EXTRA_LINREG["kidscore_interaction_c"](name, _bundle.load_data(name))
    assert np.max(np.abs(_stein_zscores(wrong, draws))) > 5.0
