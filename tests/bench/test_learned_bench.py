"""The learned-sampler bench (samplax/bench/learned.py): budgets -> settings, and one tiny suite end to end through
the CLI (`samplax bench SUITE --budget-scale tiny`): the run folder's table has every column of LEARNED_COLUMNS."""
import json
import math

import pytest

import samplax
from samplax.bench.harness import load_suite, suite_cells
from samplax.bench.learned import LEARNED_COLUMNS, budget_options, is_learned, learned_plots
from samplax.cli import main

TINY = """
[suite]
name = "learned-tiny"
kind = "learned"
methods = METHODS
num_chains = 1
num_samples = 200
seed = 0
[suite.budgets]
tiny = [2e4]
[[target]]
name = "gmm9"
eubo = true
learned = { sigma = 4.0, num_time_steps = 8, batch_size = 32, width = 32 }
classical = { reference_scale = 5.0 }
cmcd = { sigma = 1.5 }
dis = { num_time_steps = 16 }  # the VP schedule's Euler step needs > 9 steps
snf = { layers = "flow,mala*2", base_std = 4.0, width = 16 }
mixflow = { flow_length = 4, leapfrog_steps = 2, base_std = 4.0 }
idem = { num_mc_samples = 16, batch_size = 16, buffer_size = 256, inner_steps = 10, outer_paths = 128, num_time_steps = 16, width = 16, depth = 1, sigma_max = 8.0 }
flow_perturbation = { num_mc_samples = 16, batch_size = 16, buffer_size = 256, inner_steps = 10, outer_paths = 128, num_time_steps = 16, width = 16, depth = 1, sigma_max = 8.0, num_ode_steps = 8 }
flow = { kind = "coupling", layers = 2, width = 16, base_scale = 4.0, batch_size = 64 }
fab = { kind = "coupling", layers = 2, width = 16, base_scale = 4.0, batch_size = 32, num_ais_steps = 2, num_leapfrog_steps = 2 }
"""


def test_budget_rules_spend_the_budget():
    n, warm, o = budget_options("pis", 100_000, 2, 1000, {"num_time_steps": 16, "batch_size": 64})
    assert (n, warm) == (1000, 0) and o["training_evals"] == 100_000 - 1000 * 17
    n, _, o = budget_options("smc", 100_000, 2, 1000, {})
    assert n == 100_000 // (32 * 11) and o["schedule"] == 32 and o["correlation_threshold"] is None
    n, warm, o = budget_options("parallel_tempering", 96_000, 2, 1000, {})
    assert n + warm == 2000 and warm == 400
    with pytest.raises(ValueError, match="too small for one training step"):
        budget_options("dds", 17_500, 2, 1000, {"num_time_steps": 16}, target=samplax.targets.get("gmm25"))
    with pytest.raises(ValueError, match="leaves nothing for training"):
        budget_options("dds", 17_000, 2, 1000, {"num_time_steps": 16})
    with pytest.raises(ValueError, match="no budget rule"):
        budget_options("nuts", 10_000, 2, 100, {})
    cells = suite_cells(load_suite("learned"), budget_scale="small")
    assert {c.method for c in cells} == {"pis", "dds", "cmcd", "tb", "dgfs", "dis", "snf", "mixflow", "idem",
                                         "flow_perturbation", "flow", "fab", "smc", "nested_sampling",
                                         "parallel_tempering"}
    assert {c.target for c in cells} == {"gmm25", "gmm40", "funnel", "many_well32", "dw4", "lj13"}
    # a budget that cannot pay for a method's settings is an error row of that cell, not a stop of the suite:
    # mixflow's 1000 draws cost 96 evaluations each on gmm25 (flow_length 20, 5 leapfrog steps) > 1e5
    bad = [c for c in cells if c.error is not None]
    assert ("mixflow", "gmm25", 100_000) in {(c.method, c.target, c.budget) for c in bad}
    assert all("cannot run at budget 100000" in c.error and c.budget == 100_000 for c in bad), [c.error for c in bad]
    assert any("too small for one tuning step" in c.error for c in bad)
    from samplax.bench.harness import run_cell

    with pytest.raises(ValueError, match="cannot run at budget"):
        run_cell(bad[0])
    with pytest.raises(ValueError, match="budget scale 'huge'"):
        suite_cells(load_suite("learned"), budget_scale="huge")


def _run_tiny(tmp_path, capsys, methods):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace("METHODS", json.dumps(methods)))
    out = tmp_path / "run"
    main(["bench", str(path), "--budget-scale", "tiny", "--out", str(out), "--no-report"])
    printed = capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == methods
    for r in rows:
        assert r["status"] != "error", r.get("error")
        assert set(LEARNED_COLUMNS) <= set(r), set(LEARNED_COLUMNS) - set(r)
        assert r["budget"] == 20_000
        assert r["total_evals"] <= 1.2 * 20_000, r
        for k in ("log_Z_err", "mode_coverage", "sliced_w2", "energy_distance"):
            assert math.isfinite(r[k]), (r["method"], k)
        assert 0.0 <= r["mode_coverage"] <= 1.0
        assert r["training_evals"] + r["sampling_evals"] == r["total_evals"]
        if r["method"] in ("pis", "dds", "cmcd", "tb", "dgfs", "dis"):  # path samplers: reverse paths give the EUBO
            assert math.isfinite(r["eubo"]) and r["elbo"] <= r["eubo"]  # ELBO <= log Z <= EUBO, up to noise
            assert r["training_evals"] > 0
        elif is_learned(r["method"]):
            assert r["training_evals"] > 0 and math.isfinite(r["elbo"])
        else:
            assert r["training_evals"] == 0 and math.isnan(r["eubo"])
    text = (out / "learned.txt").read_text()
    assert all(c in text.splitlines()[0] for c in LEARNED_COLUMNS) and "abs_log_Z_err" in printed
    return rows


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_tiny_learned_suite_end_to_end(tmp_path, capsys):
    """Default tier: one learned method through the CLI, every column, and the plot."""
    rows = _run_tiny(tmp_path, capsys, ["pis"])
    paths = learned_plots(rows, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["learned_gmm9.png"]


@pytest.mark.slow
def test_tiny_learned_suite_all_methods(tmp_path, capsys):
    """Slow tier: every method of the learned suite at one tiny budget."""
    # every method within 1.2 x its budget (nested sampling through max_evals: it overspent 4x before)
    _run_tiny(tmp_path, capsys, ["pis", "dds", "cmcd", "tb", "dgfs", "dis", "snf", "mixflow", "idem",
                                 "flow_perturbation", "flow", "fab", "smc", "nested_sampling", "parallel_tempering"])
