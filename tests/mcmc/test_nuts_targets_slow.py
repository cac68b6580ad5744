"""NUTS against the ground truth of the foundation targets (slow tier)."""
import numpy as np
import pytest

import samplax
from samplax.bench.harness import Z_PASS, evaluate

pytestmark = pytest.mark.slow

ACCURATE = [
    ("std_gaussian", {}, {}),
    ("correlated_gaussian", {}, {}),
    ("ill_conditioned_gaussian", {}, {}),
    ("banana", {}, {"target_accept": 0.95}),
    ("eight_schools", {}, {"target_accept": 0.95}),
    ("german_credit", {}, {}),
    ("pdb:arK-arK", {}, {}),
    ("pdb:kidiq-kidscore_momhsiq", {}, {}),
    ("pdb:sblrc-blr", {}, {}),
]


@pytest.mark.parametrize("name,params,options", ACCURATE, ids=[a[0] for a in ACCURATE])
def test_nuts_matches_ground_truth(name, params, options):
    target = samplax.targets.get(name, **params)
    r = samplax.sample(target, "nuts", seed=0, num_chains=4, num_warmup=1000, num_samples=1500,
                       progress=False, **options)
    row = evaluate(r, target)
    assert row["max_z_mean"] < Z_PASS, row
    assert row["max_z_sd"] < Z_PASS, row
    assert row["max_rhat"] < 1.02, row


def test_funnel_is_right_or_warned():
    """Neal's funnel: Var[v] = 9.  Default NUTS either gets it right or says it should not be trusted."""
    target = samplax.targets.get("funnel")
    r = samplax.sample(target, "nuts", seed=0, num_chains=4, num_warmup=1000, num_samples=2000, progress=False)
    row = evaluate(r, target)
    accurate = row["max_z_mean"] < Z_PASS and row["max_z_sd"] < Z_PASS
    assert accurate or r.warnings, row
    if not accurate:
        codes = {w["code"] for w in r.warnings}
        assert codes & {"divergences", "rhat", "ess_bulk", "ess_tail", "ebfmi"}, codes


def test_multimodal_gmm40_is_flagged():
    """NUTS cannot cross between 40 separated modes; the run must carry a warning (R-hat / ESS)."""
    target = samplax.targets.get("gmm40")
    r = samplax.sample(target, "nuts", seed=0, num_chains=4, num_warmup=500, num_samples=500, progress=False)
    assert any(w["code"] in ("rhat", "ess_bulk", "ess_tail") for w in r.warnings)
    assert np.isfinite(r.samples).all()
