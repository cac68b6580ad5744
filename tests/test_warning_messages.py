"""Warning and error messages say what they mean (issue #16)."""
import numpy as np
import pytest

import samplax
from samplax.postprocess import finish_result, is_noncentred, run_warnings
from samplax.run import CheckpointMismatchError


def _diag(ess, names=("tau",)):
    k = len(names)
    return {"rhat": np.ones(k), "ess_bulk": np.asarray(ess, float), "ess_tail": np.full(k, 1e4), "names": names}


def test_ess_warning_reads_as_the_per_chain_rule():
    """Not "min ess bulk ESS 371 < 100 per chain": the total is compared with 100 per chain."""
    w = run_warnings(_diag([371.0]), {}, 8)
    assert [x["code"] for x in w] == ["ess_bulk"]
    assert w[0]["message"].startswith("bulk ESS 371 of tau over 8 chains is below 100 per chain (800)")
    assert "over 1 chain is below 100 per chain (100)" in run_warnings(_diag([50.0]), {}, 1)[0]["message"]
    assert run_warnings(_diag([850.0]), {}, 8) == []


def _divergent(n_chains=4, n=200, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n_chains, n, 1))
    div = np.zeros((n_chains, n), bool)
    low = np.argsort(q[..., 0], axis=None)[:40]  # divergences at the smallest values
    div.reshape(-1)[low] = True
    return q, {"diverging": div}


@pytest.mark.parametrize("noncentred", [False, True])
def test_divergence_hints_do_not_suggest_non_centring_a_non_centred_model(noncentred):
    q, stats = _divergent()
    w = {x["code"]: x["message"] for x in run_warnings(_diag([1e4], ("x",)), stats, 4, quantities=q,
                                                        noncentred=noncentred)}
    assert {"divergences", "divergence_concentration"} <= set(w)
    for msg in (w["divergences"], w["divergence_concentration"]):
        assert "target_accept" in msg
        if noncentred:
            assert "already non-centred" in msg and "parameterization usually helps" not in msg
        else:  # said conditionally: the model may be centred or not
            assert "if a hierarchical scale is centred, a non-centred parameterization usually helps" in msg


def test_non_centred_targets_are_recognised_from_name_and_provenance():
    assert is_noncentred(samplax.targets.get("eight_schools"))
    assert not is_noncentred(samplax.targets.get("funnel"))
    assert not is_noncentred(samplax.from_logdensity(lambda x: -x @ x, 2, name="mine"))
    # the eight-schools result itself: its divergence warning names the model as non-centred
    t = samplax.targets.get("eight_schools")
    q, stats = _divergent(n=100)
    x = np.random.default_rng(1).normal(size=(4, 100, t.dim))
    res = finish_result(t, "nuts", x, stats, {}, {"options": {}})
    msg = next(w["message"] for w in res.warnings if w["code"] == "divergences")
    assert "already non-centred" in msg


def test_checkpoint_mismatch_names_the_field(tmp_path):
    """A resume with another option is refused naming the option and both values, not a hash."""
    t = samplax.targets.get("std_gaussian", dim=2)
    kw = dict(seed=0, num_chains=1, num_warmup=20, num_samples=20, progress=False,
              checkpoint_dir=str(tmp_path / "ck"))
    samplax.sample(t, "nuts", target_accept=0.95, **kw)
    with pytest.raises(CheckpointMismatchError, match=r"options\.target_accept: 0\.95 in the checkpoint, 0\.8 now"):
        samplax.sample(t, "nuts", target_accept=0.8, **kw)
    with pytest.raises(CheckpointMismatchError, match=r"num_samples: 20 in the checkpoint, 30 now"):
        samplax.sample(t, "nuts", target_accept=0.95, **{**kw, "num_samples": 30})
