"""ReDi (trajectory retrieval, Zhang et al. 2023) and DPM-OT (semi-discrete OT start, Li et al. 2023).

ReDi: a query equal to a stored trajectory's key retrieves that trajectory's value exactly and its sample equals the
finishing solver continued from the stored value; the retrieval error at sigma_value (and the endpoint error)
against the exact PF-ODE on ring8 falls as the knowledge base grows; bad inputs name the argument.
DPM-OT: the solved dual's cells carry the target weights within Monte Carlo error; the map is exact on known cases
(one target; two points +-a, where the cell boundary is the normal quantile of the weight); the mode weights of the
samples follow the cells' weights; bad inputs name the argument."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from samplax import diffusion as sd
from samplax.diffusion import dpm_ot, redi

SMAX, SKEY, SVAL = 80.0, 10.0, 0.2


@pytest.fixture(scope="module")
def small_kb():
    # batches of 8 throughout the module: one compiled program per solver
    return redi.redi_build(sd.ring8(), key=jax.random.key(1), num_trajectories=16, event_shape=(2,),
                           sigma_max=SMAX, sigma_key=SKEY, sigma_value=SVAL, value_nfe=32, batch_size=8)


def test_redi_build_counts_and_keys_are_the_query_phase(small_kb):
    kb = small_kb
    assert kb.size == 16 and kb.event_shape == (2,)
    assert kb.num_model_evals == 16 * (1 + 32) and kb.cost["num_model_evals"] == kb.num_model_evals
    # the noises are fold_in(key, i) and the keys the query phase (1 DDIM step to sigma_key) from sigma_max z_i
    z = jax.random.normal(jax.random.fold_in(jax.random.key(1), 5), (2,), kb.noises.dtype)
    np.testing.assert_array_equal(np.asarray(kb.noises[5]), np.asarray(z))
    k, _ = sd.sample(sd.ring8(), key=jax.random.key(0), x_init=SMAX * kb.noises[8:], sigma_max=SMAX, sigma_min=SKEY,
                     nfe=1, solver="ddim")
    np.testing.assert_allclose(np.asarray(k), np.asarray(kb.keys[8:]), rtol=0, atol=1e-13)


@pytest.mark.parametrize("combine,h", [("affine", 4), ("nearest", 1), ("linear", 2)])
def test_redi_stored_query_returns_its_value_and_continues_its_trajectory(small_kb, combine, h):
    """Queries from the build's own noises (same key): the retrieval picks the stored trajectory with weight 1 and
    returns its value to round-off (the query recomputes the key, which may differ from the stored one by an ulp;
    affine/nearest give c = 0 exactly for an equal key, linear through the pseudo-inverse of 2 independent keys in
    2-D); the sample is the finishing solver run from the stored value."""
    kb, m = small_kb, sd.ring8()
    x, info = redi.sample_redi(m, kb, key=jax.random.key(1), num_samples=8, nfe=4, combine=combine,
                               num_neighbors=h)
    np.testing.assert_array_equal(np.asarray(info.retrieval.indices[:, 0]), np.arange(8))
    np.testing.assert_allclose(np.asarray(info.retrieval.weights[:, 0]), 1.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(info.retrieved), np.asarray(kb.values[:8]), rtol=0, atol=1e-12)
    y, yi = sd.sample(m, key=jax.random.key(0), x_init=kb.values[:8], sigma_max=SVAL, nfe=3, solver="dpmpp_2m")
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-12)
    assert info.num_model_evals == 4 == kb.key_nfe + int(yi.num_model_evals)
    assert info.cost["num_model_evals"] == 4


def test_redi_retrieve_equal_key_is_bit_exact(small_kb):
    vals, info = redi.redi_retrieve(small_kb, small_kb.keys[8:], num_neighbors=4)
    np.testing.assert_array_equal(np.asarray(vals), np.asarray(small_kb.values[8:]))
    np.testing.assert_array_equal(np.asarray(info.residual), 0.0)
    vals, _ = redi.redi_retrieve(small_kb, small_kb.keys[8:], num_neighbors=4, ridge=1e-3)  # c = 0 for r = 0
    np.testing.assert_array_equal(np.asarray(vals), np.asarray(small_kb.values[8:]))


@pytest.mark.slow
def test_redi_error_falls_as_the_knowledge_base_grows():
    """Retrieval error at sigma_value against the exact PF-ODE state (and the endpoint error, finishing with 9 calls)
    on 512 held-out noises, knowledge bases of 256, 1024 and 4096 trajectories. The affine interpolation of the
    map key -> value errs O(h^2) where the map is smooth and O(1) on a band of width O(h) around the basins'
    boundaries, h ~ N^(-1/2): each 4x growth should cut the mean error by 2 to 4; measured 2.5 and 4.1 (ring8;
    endpoint 2.2 and 4.2).
    Asserted: a cut by at least 1.5 each time."""
    m = sd.ring8()
    z = SMAX * jax.random.normal(jax.random.key(7), (512, 2))
    ref_v = sd.solve_pf_ode(m, z, SMAX, SVAL)
    ref_0 = sd.solve_pf_ode(m, z, SMAX, 0.0)
    errs_v, errs_0 = [], []
    for n in (256, 1024, 4096):
        kb = redi.redi_build(m, key=jax.random.key(1), num_trajectories=n, event_shape=(2,), sigma_max=SMAX,
                             sigma_key=SKEY, sigma_value=SVAL)
        x, info = redi.sample_redi(m, kb, x_init=z, nfe=10)
        errs_v.append(float(jnp.mean(jnp.linalg.norm(info.retrieved - ref_v, axis=1))))
        errs_0.append(float(jnp.mean(jnp.linalg.norm(x - ref_0, axis=1))))
    print("retrieval errors", errs_v, "endpoint errors", errs_0)
    for a, b in zip(errs_v, errs_v[1:]):
        assert b < a / 1.5
    for a, b in zip(errs_0, errs_0[1:]):
        assert b < a / 1.5


def test_redi_bad_inputs(small_kb):
    m = sd.ring8()
    base = dict(key=jax.random.key(0), num_trajectories=4, event_shape=(2,), sigma_max=SMAX)
    with pytest.raises(ValueError, match="sigma_value must be < sigma_key"):
        redi.redi_build(m, sigma_key=1.0, sigma_value=1.0, **base)
    with pytest.raises(ValueError, match="sigma_value must be > 0"):
        redi.redi_build(m, sigma_key=1.0, sigma_value=0.0, **base)
    with pytest.raises(ValueError, match="sigma_key must be < sigma_max"):
        redi.redi_build(m, sigma_key=90.0, sigma_value=0.1, **base)
    with pytest.raises(ValueError, match="num_trajectories"):
        redi.redi_build(m, **{**base, "num_trajectories": 0}, sigma_key=1.0, sigma_value=0.1)
    with pytest.raises(ValueError, match="key_solver must be a deterministic"):
        redi.redi_build(m, sigma_key=1.0, sigma_value=0.1, key_solver="ddpm", **base)
    with pytest.raises(ValueError, match="event_shape"):
        redi.redi_build(m, **{**base, "event_shape": (3,)}, sigma_key=1.0, sigma_value=0.1)
    kb = small_kb
    empty = redi.KnowledgeBase(kb.noises[:0], kb.keys[:0], kb.values[:0], SMAX, SKEY, SVAL, "ddim", 1, "logsnr",
                               "heun", 32, 0, 0.0)
    with pytest.raises(ValueError, match="kb is empty"):
        redi.sample_redi(m, empty, key=jax.random.key(0), num_samples=2, nfe=3)
    with pytest.raises(ValueError, match="kb is empty"):
        redi.redi_retrieve(empty, kb.keys[:2])
    with pytest.raises(TypeError, match="kb must be a KnowledgeBase"):
        redi.sample_redi(m, {"keys": kb.keys}, key=jax.random.key(0), num_samples=2, nfe=3)
    with pytest.raises(ValueError, match="queries must be a batch"):
        redi.redi_retrieve(kb, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="x_init must be a batch"):
        redi.sample_redi(m, kb, x_init=jnp.zeros((2, 3)), nfe=3)
    with pytest.raises(ValueError, match="nfe must be >= kb.key_nfe"):
        redi.sample_redi(m, kb, key=jax.random.key(0), num_samples=2, nfe=2)
    with pytest.raises(ValueError, match="num_neighbors=17 exceeds"):
        redi.redi_retrieve(kb, kb.keys[:2], num_neighbors=17)
    with pytest.raises(ValueError, match="combine must be one of"):
        redi.redi_retrieve(kb, kb.keys[:2], combine="mean")
    with pytest.raises(ValueError, match="sigma_end must be in"):
        redi.sample_redi(m, kb, key=jax.random.key(0), num_samples=2, nfe=3, sigma_end=0.5)
    with pytest.raises(ValueError, match="either key= and num_samples="):
        redi.sample_redi(m, kb, nfe=3)


# ---------------------------------------------------------------------------- DPM-OT

@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_semidiscrete_ot_cells_carry_the_weights():
    """8 random points with weights from 0.05 to 0.3: after the dual is solved (1000 Adam steps x 4096 noises) the
    masses of the cells on 2^19 fresh noises are within 4.5 binomial standard errors of the weights (the solved
    potentials are themselves a Monte Carlo estimate; measured max |z| about 2.7 with 2^20 check points)."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(8, 2))
    w = rng.uniform(0.5, 3.0, 8)
    ot = dpm_ot.semidiscrete_ot(jax.random.key(0), y, w, num_iters=1000, batch_size=4096)
    nu = np.asarray(ot.weights)
    np.testing.assert_allclose(nu, w / w.sum(), rtol=1e-12)
    m = 1 << 19
    mass = np.asarray(ot.cell_masses(jax.random.key(5), m))
    se = np.sqrt(nu * (1 - nu) / m)
    assert np.max(np.abs(mass - nu) / se) < 4.5, (mass, nu)
    # without the dual (h = 0) the cells do not carry the weights: the test can fail
    bare = dpm_ot.SemiDiscreteOT(ot.targets, ot.weights, jnp.zeros(8), 0, 0)
    mass0 = np.asarray(bare.cell_masses(jax.random.key(5), m))
    assert np.max(np.abs(mass0 - nu) / se) > 20


def test_semidiscrete_ot_known_answers():
    # one target: every noise maps to it, h = 0
    ot1 = dpm_ot.semidiscrete_ot(jax.random.key(0), np.array([[0.3, -2.0]]))
    z = jax.random.normal(jax.random.key(1), (100, 2))
    np.testing.assert_array_equal(np.asarray(ot1(z)), np.tile([[0.3, -2.0]], (100, 1)))
    np.testing.assert_array_equal(np.asarray(ot1.potentials), [0.0])
    # two points y = +-a with weights (w, 1 - w): the cell of +a is {<z, a/|a|> > t}, t = (h2 - h1) / (2|a|), and it
    # must carry mass w, so t = Phi^{-1}(1 - w). The estimate's error: the cell mass has standard error ~ 1/sqrt(n)
    # from the optimisation's noises; measured |t - t*| < 1e-3. Asserted 0.01 (the density there is >= 0.35).
    a = np.array([1.5, 0.5])
    for w in (0.5, 0.3):
        ot = dpm_ot.semidiscrete_ot(jax.random.key(1), np.stack([a, -a]), np.array([w, 1 - w]),
                                    num_iters=1000, batch_size=4096)
        h = np.asarray(ot.potentials)
        t = (h[1] - h[0]) / (2 * np.linalg.norm(a))
        assert abs(t - norm.ppf(1 - w)) < 0.01, (w, t)
        zz = jax.random.normal(jax.random.key(2), (4096, 2))
        expect = np.where(np.asarray(zz) @ a / np.linalg.norm(a) > t, 0, 1)
        np.testing.assert_array_equal(np.asarray(ot.assign(zz)), expect)


@pytest.mark.slow
def test_dpm_ot_samples_carry_the_cell_weights_to_the_modes():
    """ring8 data noised to sigma_mid = 0.5, 64 targets, 5 dpmpp_2m calls: a deterministic solver sends target j to a
    fixed point f(y_j), so the samples' mode fractions must be sum_j nu_j [mode(f(y_j)) = k] (nu_j = 1/64) within
    multinomial error: the OT cells carry the weights through the solver. Asserted within 5 standard errors (the
    solved cells' own error, measured below 1e-3 per cell, is small against them). The map makes no model call."""
    m = sd.ring8()
    data = m.sample(jax.random.key(7), 64)
    plan = dpm_ot.dpm_ot_build(m, key=jax.random.key(8), sigma_mid=0.5, data=data, num_iters=600, batch_size=4096)
    assert plan.num_model_evals == 0 and plan.source == "data" and plan.cost["num_ot_iters"] == 600
    b = 4096
    x, info = dpm_ot.sample_dpm_ot(m, plan, key=jax.random.key(5), num_samples=b, nfe=5)
    assert info.num_model_evals == 5 and info.cost["num_model_evals"] == 5
    cells = np.asarray(info.cells)
    np.testing.assert_array_equal(np.asarray(info.start), np.asarray(plan.ot.targets[cells]))
    modes = np.asarray(m.component_of(x))
    assert set(cells.tolist()) == set(range(64))  # every cell is hit (expected count 64 each)
    first = np.array([np.flatnonzero(cells == j)[0] for j in range(64)])
    mode_of_target = modes[first]
    for j in range(64):  # the output is a function of the cell
        np.testing.assert_array_equal(modes[cells == j], mode_of_target[j])
    expect = np.bincount(mode_of_target, minlength=8) / 64
    got = np.bincount(modes, minlength=8) / b
    se = np.sqrt(expect * (1 - expect) / b)
    assert np.all(np.abs(got - expect) <= 5 * se + 1e-12), (got, expect)


def test_dpm_ot_bad_inputs():
    m = sd.ring8()
    with pytest.raises(ValueError, match="sigma_mid must be positive"):
        dpm_ot.dpm_ot_build(m, key=jax.random.key(0), sigma_mid=0.0, data=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="give num_targets, event_shape and sigma_max"):
        dpm_ot.dpm_ot_build(m, key=jax.random.key(0), sigma_mid=1.0)
    with pytest.raises(ValueError, match="sigma_max must be finite and > sigma_mid"):
        dpm_ot.dpm_ot_build(m, key=jax.random.key(0), sigma_mid=1.0, num_targets=4, event_shape=(2,), sigma_max=0.5)
    with pytest.raises(ValueError, match="data"):
        dpm_ot.dpm_ot_build(m, key=jax.random.key(0), sigma_mid=1.0, data=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="weights must have shape"):
        dpm_ot.semidiscrete_ot(jax.random.key(0), np.zeros((4, 2)), np.ones(3))
    with pytest.raises(ValueError, match="weights must be positive"):
        dpm_ot.semidiscrete_ot(jax.random.key(0), np.zeros((2, 2)), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="targets must be a non-empty batch"):
        dpm_ot.semidiscrete_ot(jax.random.key(0), np.zeros((0, 2)))
    with pytest.raises(TypeError, match="plan must be a DPMOT"):
        dpm_ot.sample_dpm_ot(m, None, key=jax.random.key(0), num_samples=2, nfe=3)


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_dpm_ot_from_the_model_counts_its_calls():
    m = sd.ring8()
    plan = dpm_ot.dpm_ot_build(m, key=jax.random.key(0), sigma_mid=1.0, num_targets=32, event_shape=(2,),
                               sigma_max=SMAX, target_nfe=16, num_iters=100, batch_size=1024)
    assert plan.source == "model" and plan.num_model_evals == 32 * 16
    k_t = jax.random.split(jax.random.key(0))[0]
    z = jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(k_t, b), (2,), plan.ot.targets.dtype))(jnp.arange(32))
    ref, _ = sd.sample(m, key=jax.random.key(0), x_init=SMAX * z, sigma_max=SMAX, sigma_min=1.0, nfe=16,
                       solver="heun")
    np.testing.assert_allclose(np.asarray(plan.ot.targets), np.asarray(ref), rtol=0, atol=1e-12)
