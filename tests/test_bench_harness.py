"""The bench harness's scoring: log Z columns and the sd check on heavy-tailed targets."""
import dataclasses

import jax
import numpy as np
import pytest

import samplax
from samplax.bench.harness import evaluate, format_table
from samplax.postprocess import finish_result


def _exact_result(target, seed, chains=4, draws=1000, scale_x0=1.0, log_Z=None, log_Z_se=None):
    x = np.array(target.sample(jax.random.key(seed), chains * draws), dtype=np.float64)
    x[:, 0] *= scale_x0
    return finish_result(target, "exact", x.reshape(chains, draws, -1), {}, {"num_logdensity_evals": 1},
                         {"options": {}}, log_Z=log_Z, log_Z_se=log_Z_se)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_funnel_exact_draws_pass_and_wrong_sd_fails(seed):
    """Exact funnel draws pass; a 20 % wrong sd of x0 (kurtosis 3) fails.  The x_i's sds (kurtosis 3 e^9,
    far above the ESS) cannot be checked from 4000 draws: they are named in sd_unchecked, not scored, so a
    wrong x_i sd is not silently passed as checked."""
    t = samplax.targets.get("funnel")
    row = evaluate(_exact_result(t, seed), t)
    assert row["status"] == "ok", row
    assert row["sd_unchecked"] == ",".join(f"x[{i}]" for i in range(1, 10))
    bad = evaluate(_exact_result(t, seed, scale_x0=1.2), t)
    assert bad["status"] == "FAIL" and bad["max_z_sd"] > 5


def test_funnel_sd_check_without_kurtosis_is_overconfident():
    """Without the known kurtosis the sd z-score of exact draws exceeds 5 on some seed (the reason for the field)."""
    t = samplax.targets.get("funnel")
    gt = dataclasses.replace(t.ground_truth(), kurtosis=None)

    class NoKurtosis:
        def __getattr__(self, name):
            return getattr(t, name)

        def ground_truth(self):
            return gt

    zs = [evaluate(_exact_result(t, s), NoKurtosis())["max_z_sd"] for s in range(8)]
    assert max(zs) > 5, zs


def test_log_Z_scored_and_tabulated():
    t = samplax.targets.get("gmm9")
    ok = evaluate(_exact_result(t, 0, log_Z=0.01, log_Z_se=0.02), t)
    assert ok["status"] == "ok" and ok["log_Z_err"] == pytest.approx(0.01) and ok["log_Z_z"] == pytest.approx(0.5)
    assert ok["sd_unchecked"] == ""
    bad = evaluate(_exact_result(t, 0, log_Z=0.3, log_Z_se=0.02), t)
    assert bad["status"] == "FAIL" and bad["log_Z_z"] == pytest.approx(15.0)
    table = format_table([ok, bad]).splitlines()
    assert "|err|/se" in table[-3]
    assert table[-1].split()[-3:-1] == ["0.02", "15"]  # se and |err|/se of the second row
    # an estimate without a standard error is reported but not scored
    nose = evaluate(_exact_result(t, 0, log_Z=0.3, log_Z_se=0.0), t)
    assert nose["status"] == "ok" and np.isnan(nose["log_Z_z"])


def test_log_Z_without_moment_truth_and_without_truth():
    """log Z alone decides the status when the truth has no moments; no ground truth at all: 'no-truth'."""
    t = samplax.targets.get("gmm9")
    gt = dataclasses.replace(t.ground_truth(), mean=None, std=None, mean_se=None, std_se=None)

    class OnlyLogZ:
        def __getattr__(self, name):
            return getattr(t, name)

        def ground_truth(self):
            return gt

    assert evaluate(_exact_result(t, 0, log_Z=0.01, log_Z_se=0.02), OnlyLogZ())["status"] == "ok"
    assert evaluate(_exact_result(t, 0, log_Z=0.5, log_Z_se=0.02), OnlyLogZ())["status"] == "FAIL"
    free = samplax.from_logdensity(lambda x: -0.5 * (x @ x), 2)
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 100, 2)), np.float64)
    res = finish_result(free, "exact", x, {}, {"num_logdensity_evals": 1}, {"options": {}}, log_Z=1.8,
                        log_Z_se=0.1)
    row = evaluate(res, free)
    assert row["status"] == "no-truth" and row["log_Z"] == 1.8 and "log_Z_err" not in row
