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


#: iDEM's small settings of the 2-D Gaussian runs (idem and flow_perturbation, which trains as idem)
IDEM_SMALL = dict(batch_size=32, num_mc_samples=64, buffer_size=2000, inner_steps=50, outer_paths=500,
                  num_time_steps=100, sigma_max=5.0, width=64, depth=2)


def idem_gaussian_run(method, z_clt=3.29, steps=1500, **options):
    """``method`` (idem or flow_perturbation) trained ``steps`` steps on :func:`gaussian_target` with
    :data:`IDEM_SMALL`, 2 x 2000 draws: log Z within ``z_clt`` reported standard errors of the exact one, ELBO <=
    log Z, the draws' mean within ``z_clt`` standard errors (the ESS), and the training / sampling evaluation
    counts.  Returns the Result for the method's own checks."""
    target = gaussian_target()
    r = samplax.sample(target, method, seed=0, num_chains=2, num_samples=2000, progress=False,
                       training_evals=steps * 32 * 64, **{**IDEM_SMALL, **options})
    gt = target.ground_truth()
    err, se = r.log_Z - gt.log_Z, r.log_Z_se
    print(f"{method} gauss2: log Z error {err:+.4f}, se {se:.4f}, ESS {r.extra['ess']:.0f}, ELBO gap "
          f"{r.extra['elbo'] - gt.log_Z:.3f}")
    assert np.isfinite(se) and se > 0
    assert abs(err) <= z_clt * se
    assert r.extra["elbo"] <= r.log_Z + 1e-9
    draws = r.samples.reshape(-1, 2)
    tol = z_clt * gt.std / np.sqrt(r.extra["ess"])
    np.testing.assert_array_less(np.abs(draws.mean(0) - gt.mean), tol)
    c = r.cost
    assert c["num_training_steps"] == steps
    assert c["training_logdensity_evals"] == c["training_grad_evals"] == steps * 32 * 64
    assert c["sampling_logdensity_evals"] == 2 * 2000 and c["sampling_grad_evals"] == 0
    return r
