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
    ("smc", []), ("ais", ["--set", "num_temperatures=20"]), pytest.param("nested_sampling", [], marks=pytest.mark.slow),  # 15 s: the default tier's budget
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
    # 4 chains: with 2 chains of 400 draws, split R-hat of a correct NUTS run on N(0, I) exceeds 1.01 by
    # chance on 3 of 6 seeds (measured), so "passed" would hinge on the seed rather than on the harness.
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        '[suite]\nname = "tiny"\nnum_chains = 4\nnum_warmup = 200\nnum_samples = 400\nseed = 0\n'
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
    assert rows[0]["status"] == "passed" and rows[0]["pass"] is True
    # MALA cannot cross between the 9 well-separated modes: its accuracy check fails (warned or not),
    # and a failed run is never counted as passed
    assert rows[1]["status"] in ("failed", "failed (warned)") and rows[1]["pass"] is False
    assert rc == 1
    assert f"1 passed, 1 {rows[1]['status']} of 2 runs; run folder: {out}" in text
    header = next(line for line in text.splitlines() if line.startswith("method "))
    assert header.split()[-1] == "warnings" and "ESS/lp-eval" in header
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["passed"] == 1 and summary[rows[1]["status"]] == 1 and sum(summary.values()) == 2


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "samplax", "run", "nuts", "std_gaussian", "--chains", "2", "--warmup", "300",
           "--samples", "200000", "--out", str(out), "--quiet", "--no-report", "--checkpoint-interval", "0"]
    # the child must not inherit an ignored SIGINT (a shell's background job ignores it; a handler, unlike SIG_IGN,
    # is reset to the default by exec, and Python then installs its KeyboardInterrupt handler at start-up)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, before)
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


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resume_reuses_the_stored_configuration(tmp_path, capsys):
    """``--resume`` continues with the options stored in config.json (issue #16: a run started with
    ``--set target_accept=0.95`` was refused, and the refusal overwrote config.json)."""
    out = tmp_path / "es"
    first = ["run", "nuts", "std_gaussian", "--target-param", "dim=2", "--chains", "2", "--warmup", "60",
             "--samples", "40", "--set", "target_accept=0.95", "--out", str(out), "--quiet", "--no-report"]
    assert main(first) == 0
    with np.load(out / "samples.npz") as z:
        draws = z["samples"]
    before = _files(out)
    capsys.readouterr()
    # no option given: the stored run (dim=2, target_accept=0.95, 2 x (60 + 40)) is continued as is
    assert main(["run", "nuts", "std_gaussian", "--out", str(out), "--resume", "--quiet", "--no-report"]) == 0
    assert json.loads((out / "config.json").read_text())["options"] == {"target_accept": 0.95}
    with np.load(out / "samples.npz") as z:
        np.testing.assert_array_equal(z["samples"], draws)
    # options stated again with the stored values (or a default) are accepted
    assert main(["run", "nuts", "std_gaussian", "--out", str(out), "--resume", "--quiet", "--no-report",
                 "--set", "target_accept=0.95", "--set", "max_tree_depth=10", "--samples", "40"]) == 0
    before = _files(out)
    capsys.readouterr()
    # a differing option is named, and nothing is written
    for extra, named in ((["--set", "target_accept=0.8"], "--set target_accept=0.8 (the run used target_accept=0.95)"),
                         (["--samples", "80"], "--samples 80 (the run used 40)"),
                         (["--target-param", "dim=3"], "--target-param dim=3 (the run used dim=2)")):
        rc = main(["run", "nuts", "std_gaussian", "--out", str(out), "--resume", "--quiet", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and named in err and err.count("\n") == 1, err
        assert _files(out) == before


def test_resume_without_checkpoint_is_an_error(tmp_path, capsys):
    """``--resume`` where there is nothing to continue says so (exit 2) instead of starting afresh."""
    out = tmp_path / "none"
    assert main(["run", "nuts", "std_gaussian", "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds no checkpoint" in err and "without --resume" in err
    assert not out.exists()
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main(["run", "nuts", "std_gaussian", "--out", str(out), "--resume", "--quiet"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["config.json"]


@pytest.mark.parametrize("argv,message", [
    (["run", "nuts", "std_gaussian", "--target-param", "dimm=3"], "unexpected keyword argument 'dimm'"),
    (["run", "nuts", "std_gaussian", "--target-param", "dim=-3"], "dim must be >= 1"),
    (["run", "nuts", "std_gaussian", "--set", "max_tree_depth=99"], "max_tree_depth"),
    (["run", "nuts", "std_gaussian", "--set", "no_such_option=1"], "no_such_option"),
    (["run", "nuts", "std_gaussian", "--set", "target_accept"], "--set expects key=value"),
    (["run", "nuts", "std_gaussian", "--chains", "0"], "num_chains"),
    (["run", "smc", "std_gaussian", "--set", "kernel='ula'"], "ula"),
    (["diffusion", "sample", "--model", "ring8", "--n", "0"], "--n must be >= 1"),
    (["diffusion", "sample", "--checkpoint", "DIR"], "has no config.json"),
    (["diffusion", "train", "--data", "moons", "--steps", "5", "--out", "DIR", "--resume"], "holds no checkpoint"),
    (["diffusion", "train", "--data", "moons", "--steps", "5", "--out", "DIR", "--lr", "-1"], "learning_rate"),
])
def test_user_mistakes_are_one_line_and_leave_no_run_folder(tmp_path, capsys, argv, message):
    """A user's mistake: exit code 2, one line ``samplax CMD...: message`` on stderr (no traceback), no
    run folder left behind."""
    out = tmp_path / "out"
    argv = [str(out) if a == "DIR" else a for a in argv]
    if argv[0] == "run":
        argv += ["--out", str(out), "--quiet", "--warmup", "10", "--samples", "10"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"samplax {argv[0]}") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_cli_errors_print_no_traceback_in_a_subprocess(tmp_path):
    """The ``samplax`` executable itself (``python -m samplax``): a typo in --target-param is one line, exit 2."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "samplax", "run", "nuts", "std_gaussian", "--target-param",
                           "dimm=3", "--out", str(tmp_path / "x")], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("samplax run:") and not (tmp_path / "x").exists()
