"""Targets shared by the learned samplers' tests."""
import jax
import jax.numpy as jnp
import numpy as np

import samplax
from samplax.targets.gaussian import Gaussian


def gaussian_target():
    """``N(m, diag(v))`` in 2-D, off-centre and anisotropic (exact log Z = log sqrt(det 2 pi C))."""
    mean = jnp.asarray([0.8, -0.5])
    chol = jnp.diag(jnp.asarray([0.7, 1.2]))
    return Gaussian(mean=mean, chol=chol, label="gauss2", chol_inv=jnp.linalg.inv(chol))


class NoGradient(samplax.Target):
    """A Gaussian log-density computed on the host (``pure_callback``): JAX cannot differentiate it."""

    def logdensity(self, x):
        def host(v):
            return np.asarray(-0.5 * np.sum(np.asarray(v) ** 2), np.asarray(v).dtype)

        return jax.pure_callback(host, jax.ShapeDtypeStruct((), x.dtype), x, vmap_method="sequential")

    @property
    def event_shape(self):
        return (2,)


def interrupted_and_resumed(monkeypatch, tmp_path, target, method, *, seed=4, **kw):
    """``(ref, part, resumed)``: an uninterrupted run of ``method``, the same run with checkpoints stopped by a
    ``KeyboardInterrupt`` at its second progress update (after two training chunks), and that run resumed."""
    from samplax.run.progress import Progress

    ref = samplax.sample(target, method, seed=seed, progress=False, **kw)
    orig, calls = Progress.update, [0]

    def update(self, done):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return orig(self, done)

    monkeypatch.setattr(Progress, "update", update)
    part = samplax.sample(target, method, seed=seed, progress=True, checkpoint_dir=str(tmp_path), **kw)
    monkeypatch.undo()
    resumed = samplax.sample(target, method, seed=seed, progress=False, checkpoint_dir=str(tmp_path), **kw)
    return ref, part, resumed


def assert_same_run(resumed, ref, cost_keys=()):
    """``resumed`` is ``ref`` bit for bit: complete, the same draws, proposal weights, log Z and its standard error,
    training metrics, and the cost entries ``cost_keys``."""
    assert resumed.complete
    np.testing.assert_array_equal(resumed.samples, ref.samples)
    np.testing.assert_array_equal(resumed.extra["proposal_log_weights"], ref.extra["proposal_log_weights"])
    assert resumed.log_Z == ref.log_Z and resumed.log_Z_se == ref.log_Z_se
    for k, v in ref.extra["training"]["metrics"].items():
        np.testing.assert_array_equal(resumed.extra["training"]["metrics"][k], v)
    for k in cost_keys:
        assert resumed.cost[k] == ref.cost[k]
