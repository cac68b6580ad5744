import numpy as np

import samplax
from tests.interacting.helpers import correlated_gaussian

PARTICLE_METHODS = ["ensemble_stretch", "ensemble_de", "svgd", "mirrored_svgd", "mmd_flow", "walk_jump", "rdmc",
                    "score_ensemble"]


def test_all_registered_with_defaults_documented():
    from samplax.methods import get_method

    names = samplax.method_names()
    for m in PARTICLE_METHODS:
        assert m in names
        spec = get_method(m)
        assert spec.kind == "population" and spec.family == "interacting"
        for opt in spec.options.values():
            assert opt.doc


def test_svgd_batch_invariance():
    """Population c depends only on (seed, c): 2 chains reproduce the first 2 of 3."""
    t = correlated_gaussian(2)
    kw = dict(method="svgd", seed=9, num_warmup=20, num_samples=16, progress=False)
    r2 = samplax.sample(t, num_chains=2, **kw)
    r3 = samplax.sample(t, num_chains=3, **kw)
    np.testing.assert_array_equal(r2.samples, r3.samples[:2])
