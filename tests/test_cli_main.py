"""The command line, end to end (in-process for speed, one subprocess for Ctrl-C)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from samplax.cli import main


def test_list(capsys):
    assert main(["list", "targets"]) == 0
    out = capsys.readouterr().out
    assert "eight_schools" in out and "german_credit" in out
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "nuts" in out and "max_tree_depth=10" in out
    assert main(["list", "suites"]) == 0
    suites = capsys.readouterr().out
    assert "quick" in suites and "logz" in suites


def test_run_writes_run_folder_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "nuts", "std_gaussian", "--chains", "2", "--warmup", "100", "--samples", "100",
               "--out", str(out), "--quiet", "--set", "target_accept=0.9", "--target-param", "dim=3"])
    assert rc == 0
    for f in ["config.json", "results.json", "samples.npz", "trace.png", "marginals.png", "diagnostics.png",
              "report.html"]:
        assert (out / f).exists(), f
    meta = json.loads((out / "results.json").read_text())
    assert meta["config"]["options"]["target_accept"] == 0.9
    with np.load(out / "samples.npz") as z:
        assert z["samples"].shape == (2, 100, 3)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "r_hat" in html
    # the same folder is refused without --resume, and --resume just reloads the finished run
    assert main(["run", "nuts", "std_gaussian", "--out", str(out), "--quiet", "--target-param", "dim=3"]) == 2
    assert "--resume" in capsys.readouterr().err
    # report can be regenerated
    assert main(["report", str(out)]) == 0


@pytest.mark.parametrize("method,sets", [
    ("smc", []), ("ais", ["--set", "num_temperatures=20"]), ("nested_sampling", []),
    ("parallel_tempering", ["--set", "num_temperatures=4"]), ("svgd", []), ("auto", [])])
def test_run_population_methods(tmp_path, capsys, method, sets):
    """Methods without checkpoints (one compiled program, or auto's host-side warm-up) work from the CLI;
    log Z reaches the output."""
    out = tmp_path / method
    rc = main(["run", method, "std_gaussian", "--chains", "2", "--warmup", "100", "--samples", "100",
               "--out", str(out), "--quiet", "--no-report", "--target-param", "dim=2", *sets])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    meta = json.loads((out / "results.json").read_text())
    with np.load(out / "samples.npz") as z:
        assert z["samples"].shape[-1] == 2
    if method not in ("svgd", "auto"):
        # std_gaussian is unnormalized: log Z = (d/2) log(2 pi)
        assert abs(meta["log_Z"] - np.log(2 * np.pi)) < 0.5, meta["log_Z"]
        assert "log_Z" in printed or "log Z" in printed
    assert not (out / "checkpoint").exists()
    # --resume names the reason instead of failing inside the sampler
    assert main(["run", method, "std_gaussian", "--out", str(out), "--resume", "--quiet"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_run_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "nuts", "no_such_target", "--out", str(tmp_path / "a")]) == 2
    assert "unknown target 'no_such_target'" in capsys.readouterr().err
    assert main(["run", "nutz", "std_gaussian", "--out", str(tmp_path / "b")]) == 2
    assert "did you mean 'nuts'" in capsys.readouterr().err
    assert main(["run", "nuts", "std_gaussian", "--out", str(tmp_path / "c"), "--set", "max_tree_depth=99",
                 "--quiet"]) == 2
    assert "max_tree_depth" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_bench_small_suite(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        '[suite]\nname = "tiny"\nnum_chains = 2\nnum_warmup = 200\nnum_samples = 400\nseed = 0\n'
        '[[run]]\nmethod = "nuts"\ntarget = "std_gaussian"\ntarget_params = { dim = 2 }\n'
        '[[run]]\nmethod = "mala"\ntarget = "gmm9"\n')
    out = tmp_path / "bench"
    rc = main(["bench", str(suite), "--out", str(out)])
    text = capsys.readouterr().out
    assert (out / "results.json").exists() and (out / "results.parquet").exists()
    assert (out / "report.html").exists()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["nuts", "mala"]
    for col in ["max_z_mean", "max_err_mean_sd", "max_rel_var_err", "min_ess_bulk", "ess_per_grad",
                "ess_per_sec", "compile_s", "status"]:
        assert col in rows[0]
    assert rows[0]["status"] == "ok"
    # MALA cannot cross between the 9 well-separated modes: it must be caught (fail or warning)
    assert rows[1]["status"] in ("FAIL", "flagged")
    assert rc == (1 if rows[1]["status"] == "FAIL" else 0)
    assert "passed" in text


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "samplax", "run", "nuts", "std_gaussian", "--chains", "2", "--warmup", "300",
           "--samples", "200000", "--out", str(out), "--quiet", "--no-report", "--checkpoint-interval", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out / "checkpoint" / "checkpoint.npz"
    deadline = time.time() + 240
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()[-2000:]
    meta = json.loads((out / "results.json").read_text())
    assert meta["complete"] is False
    assert any(w["code"] == "interrupted" for w in meta["warnings"])
