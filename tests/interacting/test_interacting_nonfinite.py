"""Non-finite log-densities in rdmc, score_ensemble and walk_jump: the NaN importance weights are counted per
draw (``stats["nonfinite_evals"]``) and per run, reported with the ``nonfinite`` warning, and a chain in which
every evaluation was non-finite is a ValueError.  Counts are checked against a host-side recount."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from tests.nonfinite_helpers import nan_stripe_gaussian, nonfinite_warning

SMALL = {
    "rdmc": {"num_warmup": 10, "num_samples": 20, "num_inner": 32},
    "score_ensemble": {"num_warmup": 10, "num_samples": 20, "draws_per_member": 4},
    # SNIS path (the target exposes no mixture); init inside the finite part: no initial-point retries
    "walk_jump": {"num_warmup": 6, "num_samples": 10, "num_measurements": 3, "num_is": 16,
                  "init": np.full((10, 2), -1.0)},
}


@pytest.mark.parametrize("method", sorted(SMALL))
def test_nan_stripe_count_equals_host_recount(method):
    t, counter = nan_stripe_gaussian(name=f"nan_stripe_{method}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = samplax.sample(t, method=method, seed=1, num_chains=2, progress=False, **SMALL[method])
    jax.effects_barrier()
    per_draw = r.stats["nonfinite_evals"]
    assert per_draw.shape == r.samples.shape[:2]
    assert nonfinite_warning(r)["value"] == r.extra["num_nonfinite"] == int(per_draw.sum()) == counter["nan"] > 0
    assert r.extra["num_nonfinite_runs"] == per_draw.sum(axis=1).tolist()
    assert "nonfinite" not in r.stats  # the chain methods' per-transition flag: not this count


@pytest.mark.parametrize("method", ["rdmc", "score_ensemble"])
def test_nan_everywhere_is_a_value_error(method):
    t, _ = nan_stripe_gaussian(region=lambda x: jnp.ones((), bool), name=f"nan_everywhere_{method}")
    kw = {k: v for k, v in SMALL[method].items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match="non-finite \\(NaN or \\+inf\\) everywhere it was tried: all \\d+ "
                                             "log-density evaluations"):
            samplax.sample(t, method=method, seed=1, num_chains=2, progress=False, **kw)
