"""Resampling schemes are unbiased (E[count_i] = M W_i) and the ESS formulas are right."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax.smc import resampling


@pytest.mark.parametrize("name", sorted(resampling.RESAMPLERS))
def test_counts_are_unbiased(name, key):
    n, m, reps = 7, 13, 4000
    w = jnp.asarray([0.31, 0.02, 0.2, 0.0, 0.17, 0.25, 0.05])
    fn = resampling.get_resampler(name)

    def counts(k):
        idx = fn(k, w, m)
        return jnp.zeros(n).at[idx].add(1.0)

    c = np.asarray(jax.jit(jax.vmap(counts))(jax.random.split(key, reps)))
    assert c.shape == (reps, n)
    assert np.all(c.sum(1) == m)
    mean, se = c.mean(0), c.std(0, ddof=1) / np.sqrt(reps)
    expected = m * np.asarray(w)
    assert np.all(c[:, 3] == 0), "a zero-weight particle was resampled"
    ok = np.abs(mean - expected) <= 5 * se + 1e-12
    assert ok.all(), (name, mean, expected, se)
    if name == "systematic":
        # systematic resampling: every count is floor or ceil of M W_i
        assert np.all(np.abs(c - expected) < 1.0 + 1e-9)
    if name != "multinomial":
        # lower-variance schemes: count variance below the multinomial one, M W_i (1 - W_i)
        assert np.all(c.var(0) <= m * np.asarray(w) * (1 - np.asarray(w)) + 1e-9)


def test_residual_deterministic_part(key):
    w = jnp.asarray([0.5, 0.25, 0.25])
    idx = np.asarray(resampling.residual(key, w, 8))
    assert sorted(idx.tolist()) == [0, 0, 0, 0, 1, 1, 2, 2]


def test_ess_and_cess():
    lw = jnp.log(jnp.asarray([1.0, 1.0, 2.0, 4.0]))
    w = np.array([1, 1, 2, 4.0]) / 8
    assert np.isclose(resampling.ess(lw), 1 / np.sum(w**2))
    # CESS with uniform current weights equals the ESS of the increments
    inc = jnp.log(jnp.asarray([0.5, 2.0, 1.0, 3.0]))
    assert np.isclose(resampling.conditional_ess(jnp.zeros(4), inc), resampling.ess(inc))
    # general: N (sum W g)^2 / sum W g^2
    g = np.array([0.5, 2.0, 1.0, 3.0])
    assert np.isclose(resampling.conditional_ess(lw, inc), 4 * np.sum(w * g) ** 2 / np.sum(w * g**2))


def test_bad_resampler_name():
    with pytest.raises(ValueError, match="resampling must be one of"):
        resampling.get_resampler("bogus")


def test_combine_log_Z_single_run_negative_lee_whiteley_is_not_a_zero_error():
    """One run whose Lee & Whiteley estimate is negative (many resampling events) gets a NaN standard error and the
    reason, not 0; a positive one gives sqrt(V); several runs use the between-run spread."""
    from samplax.smc.logz import combine_log_Z

    lz, se, how = combine_log_Z(np.array([1.5]), np.array([-0.05]))
    assert lz == 1.5 and np.isnan(se) and "is negative" in how
    lz, se, _ = combine_log_Z(np.array([1.5]), np.array([0.04]))
    assert se == pytest.approx(0.2)
    _, se, how = combine_log_Z(np.array([1.4, 1.6]), np.array([-0.05, -0.05]))
    assert se > 0 and "between-run" in how
