"""The Stan-windowed adapter with pluggable metric estimators: schedule, estimates and freezing, exactly."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax.adaptation.fisher import fisher_diag_estimator, fisher_window_adapter
from samplax.adaptation.window import window_ends
from samplax.adaptation.windowed import MetricEstimator, identity_metric, welford_estimator, windowed_adapter

NUM_WARMUP, C, D = 200, 2, 3


class _State(NamedTuple):
    position: jax.Array
    logdensity_grad: jax.Array


class _Info(NamedTuple):
    acceptance_rate: jax.Array


class _Params(NamedTuple):
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


def _count_estimator() -> MetricEstimator:
    """A custom estimator whose metric is the number of draws it absorbed (tests the plug-in protocol)."""
    return MetricEstimator(
        init=lambda dim, dtype: jnp.zeros((), dtype),
        update=lambda est, positions, grads: est + positions.shape[0],
        finalize=lambda est: est * jnp.ones((D,), est.dtype),
        initial=identity_metric(False),
    )


def _run(estimator, key, pooled=False, steps=NUM_WARMUP + 5):
    """Feed ``steps`` iterations of random positions/gradients; return the adapter states after each and the inputs."""
    adapter = windowed_adapter(lambda x: -0.5 * x @ x, _Params, D, NUM_WARMUP, estimator, target_accept=0.8,
                               pooled=pooled, initial_step_size=0.5, num_chains=C)
    kx, kg, ka = jax.random.split(key, 3)
    xs = jax.random.normal(kx, (steps, C, D)) * jnp.array([1.0, 3.0, 0.2])
    gs = jax.random.normal(kg, (steps, C, D)) * jnp.array([2.0, 0.5, 1.0])
    acc = jax.random.uniform(ka, (steps, C), minval=0.6, maxval=1.0)  # mean 0.8: the target
    ws, n = adapter.init(jax.random.split(key, C), _State(xs[0], gs[0]))
    assert np.all(np.asarray(n) == 0)  # initial_step_size given: no heuristic search
    update = jax.jit(adapter.update)
    out = []
    for i in range(steps):
        ws = update(ws, jnp.asarray(i, jnp.int32), _State(xs[i], gs[i]), _Info(acc[i]))
        out.append(ws)
    return adapter, out, np.asarray(xs), np.asarray(gs)


def _windows():
    _, _, ends = window_ends(NUM_WARMUP)
    ends = [int(e) for e in ends if e >= 0]
    assert ends == [99, 149]  # 75 fast, windows [75, 100) and [100, 150), 50 terminal
    return [(75, 100), (100, 150)]


def test_custom_estimator_sees_exactly_each_slow_window(key):
    adapter, out, _, _ = _run(_count_estimator(), key)
    (a0, a1), (b0, b1) = _windows()
    imm = np.stack([np.asarray(w.inverse_mass_matrix) for w in out])  # [steps, C, D]
    assert np.all(imm[: a1 - 1] == 1.0)  # identity until the first window ends
    assert np.all(imm[a1 - 1: b1 - 1] == a1 - a0)  # 25 draws per chain
    assert np.all(imm[b1 - 1:] == b1 - b0)  # 50 draws per chain
    # the accumulator restarts empty at each window end
    assert np.all(np.asarray(out[a1 - 1].estimator) == 0) and np.all(np.asarray(out[b1 - 1].estimator) == 0)


def test_pooled_custom_estimator_pools_every_chain(key):
    adapter, out, _, _ = _run(_count_estimator(), key, pooled=True)
    (a0, a1), (b0, b1) = _windows()
    assert np.all(np.asarray(out[a1 - 1].inverse_mass_matrix) == C * (a1 - a0))
    assert np.all(np.asarray(out[-1].inverse_mass_matrix) == C * (b1 - b0))
    p = adapter.params(out[-1])
    assert p.inverse_mass_matrix.shape == (C, D) and p.step_size.shape == (C,)
    assert not adapter.per_chain


@pytest.mark.parametrize("dense", [False, True])
def test_welford_estimator_is_stans_regularized_covariance(key, dense):
    _, out, xs, _ = _run(welford_estimator(dense), key)
    for lo, hi in _windows():
        for c in range(C):
            x = xs[lo:hi, c]
            n = hi - lo
            cov = np.cov(x, rowvar=False) if dense else np.var(x, axis=0, ddof=1)
            reg = 1e-3 * 5.0 / (n + 5.0)
            want = n / (n + 5.0) * cov + (reg * np.eye(D) if dense else reg)
            np.testing.assert_allclose(np.asarray(out[hi - 1].inverse_mass_matrix[c]), want, rtol=1e-12)


def test_fisher_diag_estimator_is_sqrt_var_ratio(key):
    _, out, xs, gs = _run(fisher_diag_estimator(), key)
    for lo, hi in _windows():
        for c in range(C):
            want = np.sqrt(np.var(xs[lo:hi, c], axis=0, ddof=1) / np.var(gs[lo:hi, c], axis=0, ddof=1))
            np.testing.assert_allclose(np.asarray(out[hi - 1].inverse_mass_matrix[c]), want, rtol=1e-12)


def test_step_size_is_the_average_at_the_end_and_frozen_after(key):
    _, out, _, _ = _run(welford_estimator(False), key)
    last = out[NUM_WARMUP - 1]
    np.testing.assert_array_equal(np.asarray(last.step_size), np.exp(np.asarray(last.da.log_step_size_avg)))
    before = np.asarray(out[NUM_WARMUP - 2].step_size)
    assert np.all(np.isfinite(before) & (before > 1e-3)) and np.all(before != np.asarray(last.step_size))
    for w in out[NUM_WARMUP:]:
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), w, last)


def test_fisher_window_adapter_rejects_unknown_metric():
    with pytest.raises(ValueError, match="metric must be 'diag' or 'low_rank'"):
        fisher_window_adapter(lambda x: x.sum(), _Params, D, NUM_WARMUP, target_accept=0.8, metric="dense")
