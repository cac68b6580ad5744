"""The engine's generic trainer (samplax.run.train): chunks, resume bit for bit, the non-finite stop, counts."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax.run import CheckpointMismatchError, NonFiniteLossError, Progress, train


def noisy_sgd(key, state):
    """A stochastic-gradient step on ``|w - 1|^2 / 2`` with Gaussian gradient noise (momentum in ``state``)."""
    w, m = state["w"], state["m"]
    g = (w - 1.0) + 0.3 * jax.random.normal(key, w.shape, w.dtype)
    m = 0.9 * m + g
    w = w - 0.05 * m
    loss = 0.5 * jnp.sum((w - 1.0) ** 2)
    return {"w": w, "m": m}, {"loss": loss, "log_Z": -loss, "num_logdensity_evals": jnp.asarray(3, jnp.int32),
                              "num_grad_evals": jnp.asarray(2, jnp.int32)}


def start():
    return {"w": jnp.zeros(3), "m": jnp.zeros(3)}


def test_chunks_skip_past_the_end_and_count_evaluations():
    key = jax.random.key(0)
    out = train(noisy_sgd, start(), key, 12, chunk_size=5)
    assert out.complete and out.steps_done == 12
    assert out.metrics["loss"].shape == (12,)
    assert out.totals == {"num_logdensity_evals": 36, "num_grad_evals": 24}
    # the same steps one by one on the host (step i with fold_in(key, i))
    s = start()
    for i in range(12):
        s, m = noisy_sgd(jax.random.fold_in(key, i), s)
    np.testing.assert_allclose(out.state["w"], s["w"], rtol=1e-12)
    np.testing.assert_allclose(out.metrics["loss"][-1], m["loss"], rtol=1e-12)


def _interrupt_at(monkeypatch, at):
    orig, calls = Progress.update, [0]

    def update(self, done):
        calls[0] += 1
        if calls[0] == at:
            raise KeyboardInterrupt
        return orig(self, done)

    monkeypatch.setattr(Progress, "update", update)


def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch):
    key = jax.random.key(3)
    ref = train(noisy_sgd, start(), key, 23, chunk_size=4, config={"what": "sgd"})
    ck = str(tmp_path / "ck")
    _interrupt_at(monkeypatch, 2)
    part = train(noisy_sgd, start(), key, 23, chunk_size=4, checkpoint_dir=ck, checkpoint_interval=0.0,
                 config={"what": "sgd"}, progress=True)
    monkeypatch.undo()
    assert not part.complete and part.steps_done == 8
    again = train(noisy_sgd, start(), key, 23, chunk_size=4, checkpoint_dir=ck, config={"what": "sgd"})
    assert again.complete and again.steps_done == 23
    np.testing.assert_array_equal(again.state["w"], ref.state["w"])
    np.testing.assert_array_equal(again.state["m"], ref.state["m"])
    for k in ref.metrics:
        np.testing.assert_array_equal(again.metrics[k], ref.metrics[k])
    assert again.totals == ref.totals
    with pytest.raises(CheckpointMismatchError, match="what"):
        train(noisy_sgd, start(), key, 23, chunk_size=4, checkpoint_dir=ck, config={"what": "other"})


def test_nonfinite_loss_stops_at_its_step_and_keeps_the_last_good_state():
    def step(key, state):
        new, m = noisy_sgd(key, state)
        bad = state["i"] == 7  # the 8th step (index 7) blows up
        new = {**new, "w": jnp.where(bad, jnp.nan, new["w"]), "i": state["i"] + 1}
        return new, {**m, "loss": jnp.where(bad, jnp.nan, m["loss"])}

    key = jax.random.key(1)
    s0 = {**start(), "i": jnp.asarray(0, jnp.int32)}
    with pytest.raises(NonFiniteLossError, match="step 7") as info:
        train(step, s0, key, 20, chunk_size=3)
    err = info.value
    assert isinstance(err, ValueError) and err.step == 7
    good = train(step, s0, key, 7, chunk_size=3)
    np.testing.assert_array_equal(err.state["w"], good.state["w"])
    assert int(err.state["i"]) == 7
    np.testing.assert_array_equal(err.metrics["loss"], good.metrics["loss"])


def test_finite_loss_with_a_nonfinite_update_is_named():
    def step(key, state):
        new, m = noisy_sgd(key, state)
        return {**new, "w": new["w"] / 0.0}, m

    with pytest.raises(NonFiniteLossError, match="step 0.*updated state"):
        train(step, start(), jax.random.key(0), 4)


def test_data_travels_as_an_argument():
    def step(key, state, data):
        new, m = noisy_sgd(key, state)
        return {**new, "w": new["w"] + data["shift"]}, m

    key = jax.random.key(0)
    a = train(step, start(), key, 6, data={"shift": jnp.ones(3)}, cache_key=("test_data_arg",))
    b = train(step, start(), key, 6, data={"shift": 2 * jnp.ones(3)}, cache_key=("test_data_arg",))
    assert a.num_compilations == 1 and b.num_compilations == 0
    assert not np.allclose(a.state["w"], b.state["w"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        train(noisy_sgd, start(), jax.random.key(0), -1)
    with pytest.raises(ValueError, match="chunk_size"):
        train(noisy_sgd, start(), jax.random.key(0), 3, chunk_size=0)
