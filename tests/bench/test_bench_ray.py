"""``samplax bench --ray``: the cells of a suite on a local Ray cluster started by the test give the same
rows, draws and run folder as a serial run; a run that raises is retried and reported, not lost."""
import json

import numpy as np
import pytest

from samplax.cli import main

ray = pytest.importorskip("ray")

SUITE = ('[suite]\nname = "tiny"\nnum_chains = 2\nnum_warmup = 100\nnum_samples = 100\nseed = 3\n'
         '[[run]]\nmethod = "nuts"\ntarget = "std_gaussian"\ntarget_params = { dim = 2 }\n'
         '[[run]]\nmethod = "smc"\ntarget = "gmm9"\n'
         '[[run]]\nmethod = "mala"\ntarget = "banana"\n'
         '[[run]]\nmethod = "nuts"\ntarget = "std_gaussian"\noptions = { max_tree_depth = 99 }\n')

TIMING = {"wall_s", "compile_s", "sampling_s", "ess_per_sec"}


@pytest.mark.slow  # starts a Ray instance (about 10-20 s) and compiles every run in its workers
def test_ray_sweep_equals_the_serial_run(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    serial, remote = tmp_path / "serial", tmp_path / "ray"
    rc_serial = main(["bench", str(suite), "--out", str(serial), "--no-report"])
    rc_ray = main(["bench", str(suite), "--out", str(remote), "--no-report", "--ray", "--retries", "1"])
    printed = capsys.readouterr().out
    assert rc_serial == rc_ray == 1  # the invalid-option run is an error in both
    rows_s = json.loads((serial / "results.json").read_text())["rows"]
    rows_r = json.loads((remote / "results.json").read_text())["rows"]
    assert [r["status"] for r in rows_s] == [r["status"] for r in rows_r]
    for a, b in zip(rows_s, rows_r):
        assert {k: v for k, v in a.items() if k not in TIMING | {"attempts"}} == \
               {k: v for k, v in b.items() if k not in TIMING | {"attempts"}}
    assert rows_r[3]["status"] == "error" and "max_tree_depth" in rows_r[3]["error"]
    assert rows_r[3]["attempts"] == 2  # tried, retried once, reported
    assert "error" in printed
    for r in rows_s[:3]:
        with np.load(serial / "runs" / r["run_dir"] / "samples.npz") as zs, \
                np.load(remote / "runs" / r["run_dir"] / "samples.npz") as zr:
            np.testing.assert_array_equal(zs["samples"], zr["samples"])
    assert not ray.is_initialized()  # the local instance is stopped again
