"""Non-finite proposals during warm-up are reported (``nonfinite_warmup``), apart from the kept draws' ``nonfinite``."""
import jax.numpy as jnp
import numpy as np
import pytest

import samplax


def _nan_band(x):
    """A standard Gaussian whose log-density is NaN for ``x[0]`` in (0.5, 1): chains that move propose there."""
    return jnp.where((x[0] > 0.5) & (x[0] < 1.0), jnp.nan, -0.5 * jnp.sum(x**2))


def _warning(r, code):
    return next((w for w in r.warnings if w["code"] == code), None)


@pytest.mark.parametrize("method", ["rwm", "auto"])
def test_nonfinite_proposals_in_warmup_are_reported(method):
    target = samplax.from_logdensity(_nan_band, event_shape=2, name="nan_band")
    r = samplax.sample(target, method, seed=1, num_chains=2, num_warmup=60, num_samples=20, progress=False)
    w = _warning(r, "nonfinite_warmup")
    assert w is not None and w["value"] > 0, [x["code"] for x in r.warnings]
    assert "warm-up" in w["message"]
    # the kept draws' count is separate: every returned draw is finite (the NaN proposals were rejected)
    assert np.all(np.isfinite(r.samples))
    kept = _warning(r, "nonfinite")
    assert kept is None or kept["value"] == int(np.sum(r.stats["nonfinite"]))


def test_no_warmup_warning_on_a_finite_target():
    target = samplax.targets.get("std_gaussian", dim=2)
    r = samplax.sample(target, "rwm", seed=1, num_chains=2, num_warmup=60, num_samples=20, progress=False)
    assert _warning(r, "nonfinite_warmup") is None


def test_warmup_count_survives_a_resume(tmp_path):
    """The warm-up count is part of the checkpoint: a run resumed after warm-up reports the same count."""
    target = samplax.from_logdensity(_nan_band, event_shape=2, name="nan_band")
    kw = dict(seed=2, num_chains=2, num_warmup=60, num_samples=20, progress=False, chunk_size=10)
    ref = samplax.sample(target, "rwm", **kw)
    ck = str(tmp_path / "ck")
    # a complete run writes its last checkpoint; a second call with the same configuration resumes from it
    first = samplax.sample(target, "rwm", checkpoint_dir=ck, checkpoint_interval=0.0, **kw)
    again = samplax.sample(target, "rwm", checkpoint_dir=ck, **kw)
    for r in (first, again):
        assert _warning(r, "nonfinite_warmup")["value"] == _warning(ref, "nonfinite_warmup")["value"] > 0
