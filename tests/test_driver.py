"""Driver behaviour: bad input, non-finite densities, checkpoints, Result round trips."""
import os
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.run import CheckpointMismatchError


def _gauss(d=2):
    return samplax.targets.get("std_gaussian", dim=d)


def test_from_logdensity_and_energy_errors():
    with pytest.raises(ValueError, match="event_shape"):
        samplax.from_logdensity(lambda x: -jnp.sum(x**2), (0,))
    with pytest.raises(TypeError, match="callable"):
        samplax.from_logdensity(3.0, 2)
    with pytest.raises(ValueError, match="scalar"):
        samplax.from_logdensity(lambda x: -x**2, 2)
    with pytest.raises(ValueError, match="temperature"):
        samplax.from_energy(lambda x: jnp.sum(x**2), 2, temperature=-1.0)
    t = samplax.from_energy(lambda x: jnp.sum(x**2), 2)
    assert float(t.logdensity(jnp.ones(2))) == -2.0


@pytest.mark.parametrize("kw,match", [
    (dict(num_chains=0), "num_chains"),
    (dict(num_samples=-1), "num_samples"),
    (dict(num_warmup=1.5), "num_warmup"),
    (dict(seed=-3), "seed"),
    (dict(thinning=0), "thinning"),
    (dict(init=np.zeros(5)), "init must have shape"),
    (dict(target_accept=1.5), "target_accept"),
])
def test_bad_arguments_are_named(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        samplax.sample(_gauss(), "nuts", progress=False, **kw)


def test_unknown_method_and_option():
    with pytest.raises(KeyError, match="unknown method 'nutz'.*did you mean 'nuts'"):
        samplax.sample(_gauss(), "nutz")
    with pytest.raises(TypeError, match="unknown option"):
        samplax.sample(_gauss(), "nuts", max_depth=3)
    with pytest.raises(TypeError, match="must be a samplax Target"):
        samplax.sample(lambda x: x, "nuts")


def test_nonfinite_initial_point_is_a_clear_error():
    t = samplax.from_logdensity(lambda x: jnp.where(jnp.all(x > 10.0), -jnp.sum(x), -jnp.inf), 2, name="far")
    with pytest.raises(ValueError, match="could not find a finite initial point for target 'far'"):
        samplax.sample(t, "nuts", num_warmup=10, num_samples=10, progress=False)
    t2 = samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), 2)
    with pytest.raises(ValueError, match="init for chain 0 gives log-density nan"):
        samplax.sample(t2, "nuts", init=np.array([np.nan, 0.0]), num_warmup=10, num_samples=10, progress=False)


def test_nonfinite_proposals_are_counted_rejections():
    """Half-normal on x > 0 as -inf outside: the sampler stays correct and counts rejections."""
    def lp(x):
        return jnp.where(x[0] > 0, -0.5 * x[0] ** 2, -jnp.inf)

    t = samplax.from_logdensity(lp, 1, name="half_normal")
    r = samplax.sample(t, "rwm", num_chains=4, num_warmup=500, num_samples=4000, progress=False, seed=0)
    n_nonfinite = int(np.sum(r.stats["nonfinite"]))
    assert n_nonfinite > 0
    assert any(w["code"] == "nonfinite" for w in r.warnings)
    assert np.all(r.samples > 0)
    mean, mcse = r.diagnostics["mean"][0], r.diagnostics["mcse_mean"][0]
    assert abs(mean - np.sqrt(2 / np.pi)) < 5 * mcse


def test_nan_gradient_in_nuts_is_divergence_not_nan():
    def lp(x):
        # gradient is NaN beyond |x| > 3 (sqrt of a negative number)
        return -0.5 * jnp.sum(x**2) + 0.0 * jnp.sum(jnp.sqrt(9.0 - x**2))

    t = samplax.from_logdensity(lp, 2)
    r = samplax.sample(t, "nuts", num_chains=2, num_warmup=200, num_samples=300, progress=False)
    assert np.all(np.isfinite(r.samples))
    assert np.all(np.abs(r.samples) <= 3.0)


def test_result_save_load_and_arviz(tmp_path):
    r = samplax.sample(_gauss(), "mala", num_chains=2, num_warmup=100, num_samples=50, progress=False)
    r.save(str(tmp_path / "run"))
    r2 = samplax.Result.load(str(tmp_path / "run"))
    np.testing.assert_array_equal(r.samples, r2.samples)
    assert r2.cost == r.cost and r2.quantity_names == r.quantity_names
    for k in r.stats:
        np.testing.assert_array_equal(r.stats[k], r2.stats[k])
    idata = r.to_arviz()
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 50
    assert "acceptance_rate" in idata.sample_stats
    assert "mean" in r.summary() and "cost:" in r.summary()


def test_checkpoint_resume_in_process_and_mismatch(tmp_path):
    t = _gauss(3)
    kw = dict(num_chains=2, num_warmup=50, num_samples=60, progress=False, chunk_size=10, seed=5)
    ref = samplax.sample(t, "nuts", **kw)
    d = str(tmp_path / "ck")
    first = samplax.sample(t, "nuts", checkpoint_dir=d, checkpoint_interval=0.0, **kw)
    np.testing.assert_array_equal(first.samples, ref.samples)
    # resuming a finished run just reloads it
    again = samplax.sample(t, "nuts", checkpoint_dir=d, **kw)
    np.testing.assert_array_equal(again.samples, ref.samples)
    with pytest.raises(CheckpointMismatchError, match="different configuration"):
        samplax.sample(t, "nuts", checkpoint_dir=d, **{**kw, "seed": 6})
    with open(os.path.join(d, "checkpoint.npz"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(CheckpointMismatchError, match="corrupt"):
        samplax.sample(t, "nuts", checkpoint_dir=d, **kw)


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import samplax

    def lp(x):
        return -0.5 * jnp.sum(x ** 2)

    t = samplax.from_logdensity(lp, 4, name="g4")
    r = samplax.sample(t, "nuts", num_chains=3, num_warmup=200, num_samples=400, seed=11, chunk_size=25,
                       checkpoint_dir=sys.argv[1], checkpoint_interval=0.0, progress=False)
    import numpy as np
    np.save(sys.argv[2], r.samples)
""")


@pytest.mark.slow  # ~30-50 s
def test_kill_9_and_resume_is_bitwise_identical(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    full = tmp_path / "full.npy"
    subprocess.run([sys.executable, str(script), str(tmp_path / "ck_full"), str(full)], check=True, env=env)
    ck = tmp_path / "ck_kill"
    out = tmp_path / "resumed.npy"
    proc = subprocess.Popen([sys.executable, str(script), str(ck), str(out)], env=env)
    ckpt = ck / "checkpoint.npz"
    deadline = time.time() + 240
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.kill()  # SIGKILL
    proc.wait()
    assert ckpt.exists(), "no checkpoint was written before the kill"
    subprocess.run([sys.executable, str(script), str(ck), str(out)], check=True, env=env)
    np.testing.assert_array_equal(np.load(out), np.load(full))


def test_chunking_does_not_change_draws_or_counts():
    """Draws and evaluation counts are the same whether the last chunk runs past the end or not."""
    t = samplax.targets.get("std_gaussian", dim=3)
    kw = dict(num_chains=2, num_warmup=30, num_samples=40, seed=3, progress=False)
    runs = [samplax.sample(t, "nuts", chunk_size=c, **kw) for c in (7, 10, 70)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.samples, runs[0].samples)
        np.testing.assert_array_equal(r.stats["n_steps"], runs[0].stats["n_steps"])
        assert r.cost["num_grad_evals"] == runs[0].cost["num_grad_evals"]


def test_result_of_a_run_interrupted_during_warmup():
    """Ctrl-C before the first kept draw still gives a (marked incomplete) Result, also for constrained targets."""
    from samplax.postprocess import finish_result

    for name in ("std_gaussian", "eight_schools"):
        t = samplax.targets.get(name)
        cost = {"num_grad_evals": 0, "num_logdensity_evals": 0, "compile_seconds": 0.0, "sampling_seconds": 0.0}
        r = finish_result(t, "nuts", np.zeros((2, 0, t.dim)), {"lp": np.zeros((2, 0))}, cost, {}, complete=False)
        assert r.samples.shape == (2, 0) + tuple(t.event_shape)
        assert any(w["code"] == "interrupted" for w in r.warnings)


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_warmup_flag_methods_run_with_more_chains_than_a_block():
    """Unadjusted Langevin methods keep one warm-up counter per chain (5 chains = 2 blocks on CPU)."""
    t = samplax.targets.get("std_gaussian", dim=2)
    for m in ("ula", "kinetic_langevin"):
        r = samplax.sample(t, m, num_chains=5, num_warmup=60, num_samples=20, progress=False)
        assert r.samples.shape == (5, 20, 2)
        r4 = samplax.sample(t, m, num_chains=4, num_warmup=60, num_samples=20, progress=False)
        np.testing.assert_array_equal(r.samples[:4], r4.samples)
