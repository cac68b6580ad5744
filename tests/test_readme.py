"""Every code block of README.md runs as written.

* Python blocks run verbatim, each in a fresh namespace, in a temporary working folder.
* Shell blocks: every ``samplax ...`` command runs through ``samplax.cli.main`` (the function
  behind the ``samplax`` executable), in README order in one temporary working folder, so that
  later lines use the run folders of earlier ones.  Run lengths are shortened with the CLI's own
  documented flags (:func:`shortened`): ``samplax run`` gets ``--warmup 50 --samples 50`` (a
  ``--resume`` line is left as written: it continues the stored run), ``samplax bench`` gets
  ``--chains 2 --warmup 50 --samples 50`` (the bench's override flags) and ``samplax diffusion
  train`` gets ``--steps 50``.  Each must exit with code 0; a shortened bench may also exit with 1
  (a 50-draw run failing its accuracy check), but it must finish and print its summary.
* Not run: ``pip install ...`` and ``pytest`` (installing, and running these tests themselves), and
  ``sphinx-build`` (the documentation build, minutes long: CI's docs step runs it, and
  ``tests/test_docs.py`` checks that step runs this very command).
  ``python benchmarks/mcmc_vs_peers.py`` needs the ``peers`` extra (BlackJAX, NumPyro): it runs
  shortened in the slow tier when they are installed.

The slow tier also runs the heavy commands (the bench suites, nested sampling on the funnel,
``samplax diffusion inverse``: its default tier is tests/diffusion/test_inverse_cli.py).
Any other kind of line fails :func:`test_every_readme_line_is_covered`, so a new README line
gets a test or an explicit reason here.
"""
import contextlib
import importlib.util
import io
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from samplax.cli import main

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHORT = {"--warmup": "50", "--samples": "50"}
SLOW = (("samplax", "bench"), ("samplax", "run", "nested_sampling"), ("python", "benchmarks/mcmc_vs_peers.py"),
        ("samplax", "diffusion", "inverse"))


def code_blocks(text: str) -> list:
    """``(language, code, line number)`` of every fenced block, indentation of a list item removed."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if m:
            indent, lang, start, body = len(m.group(1)), m.group(2), i + 1, []
            i += 1
            while not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i][indent:])
                i += 1
            blocks.append((lang, "\n".join(body) + "\n", start + 1))
        i += 1
    return blocks


def commands() -> list:
    """``(argv, line number)`` of every command of the shell blocks (``a && b`` gives two)."""
    out = []
    for lang, code, first in code_blocks(README.read_text()):
        if lang not in ("bash", "sh", "shell"):
            continue
        for j, line in enumerate(code.splitlines()):
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv:
                    out.append((argv, first + j))
    return out


def kind(argv) -> str:
    """``skip`` (install, the tests), ``slow`` or ``run``; ``unknown`` for a line no rule covers."""
    if argv[:2] == ["pip", "install"] or argv[0] in ("pytest", "sphinx-build"):
        return "skip"
    if any(tuple(argv[:len(s)]) == s for s in SLOW):
        return "slow"
    return "run" if argv[0] == "samplax" else "unknown"


def _set(argv, flag, value):
    if flag in argv:
        argv = list(argv)
        argv[argv.index(flag) + 1] = value
        return argv
    return [*argv, flag, value]


def shortened(argv) -> list:
    """The command with a short run length, by the CLI's own flags (see the module docstring)."""
    if argv[:2] == ["samplax", "run"] and "--resume" not in argv:
        for flag, value in SHORT.items():
            argv = _set(argv, flag, value)
    elif argv[:2] == ["samplax", "bench"]:
        for flag, value in {"--chains": "2", **SHORT}.items():
            argv = _set(argv, flag, value)
    elif argv[:3] == ["samplax", "diffusion", "train"]:
        argv = _set(argv, "--steps", "50")
    elif argv[:3] == ["samplax", "diffusion", "inverse"]:
        for flag, value in {"--n": "32", "--nfe": "10"}.items():
            argv = _set(argv, flag, value)
        if "digits" in argv:
            argv = _set(argv, "--train-steps", "50")
        if "--sbc" in argv:
            argv = _set(_set(argv, "--sbc", "3"), "--sbc-draws", "2")
    elif argv[:2] == ["python", "benchmarks/mcmc_vs_peers.py"]:
        argv = [*argv, "--chains", "2", "--seeds", "0", "--targets", "std_gaussian", *sum(
            ([f, v] for f, v in SHORT.items()), [])]
    return argv


def _cli(argv, line):
    """Run one ``samplax`` command in this process; its exit code and printed output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv[1:])
        except SystemExit as e:  # --help
            rc = e.code
    assert "Traceback" not in err.getvalue(), f"README.md:{line}: {' '.join(argv)}\n{err.getvalue()}"
    return rc, out.getvalue(), err.getvalue()


def test_every_readme_line_is_covered():
    kinds = {" ".join(a): kind(a) for a, _ in commands()}
    assert "unknown" not in kinds.values(), kinds
    assert sum(k == "run" for k in kinds.values()) >= 8, kinds
    py = [b for b in code_blocks(README.read_text()) if b[0] == "python"]
    assert len(py) >= 2 and all(lang in ("python", "bash") for lang, _, _ in code_blocks(README.read_text()))


@pytest.mark.parametrize("line", [ln for lang, _, ln in code_blocks(README.read_text()) if lang == "python"])
def test_python_block_runs_verbatim(line, tmp_path, monkeypatch, capsys):
    code = next(c for lang, c, ln in code_blocks(README.read_text()) if ln == line)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip(), "the README's Python blocks print their results"


def test_commands_run(tmp_path, monkeypatch):
    """The ``samplax`` lines in README order, short run lengths; the resume line continues the run
    started by the line before it with its stored options (``--set target_accept=0.95``)."""
    monkeypatch.chdir(tmp_path)
    ran = []
    for argv, line in commands():
        if kind(argv) != "run":
            continue
        rc, out, err = _cli(shortened(argv), line)
        assert rc == 0, f"README.md:{line}: {' '.join(shortened(argv))} exited {rc}\n{err[-3000:]}"
        ran.append(argv[:3])
    assert ["samplax", "run", "nuts"] in ran and ["samplax", "report", "runs/es"] in ran
    es = tmp_path / "runs" / "es"
    assert '"target_accept": 0.95' in (es / "config.json").read_text()
    assert (es / "report.html").exists()


@pytest.mark.slow
def test_slow_commands_run(tmp_path, monkeypatch):
    """The bench suites and nested sampling (each shortened), and the peers benchmark when its extra
    is installed."""
    monkeypatch.chdir(tmp_path)
    for argv, line in commands():
        if kind(argv) != "slow":
            continue
        argv = shortened(argv)
        if argv[0] == "python":
            if not all(importlib.util.find_spec(m) for m in ("blackjax", "numpyro")):
                continue  # the peers extra is not installed
            proc = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr[-3000:]
            continue
        rc, out, err = _cli(argv, line)
        if argv[1] == "bench":
            assert rc in (0, 1) and re.search(r"of \d+ runs; run folder", out), (line, rc, err[-3000:])
        else:
            assert rc == 0, (line, err[-3000:])


def test_readme_names_the_pooled_exceptions_to_chain_reproducibility():
    """"8 chains reproduce the first 8 of 64" holds for per-chain warm-up only: the README names the
    methods whose warm-up pools the chains (``auto``, ``chees_hmc``: see POOLED_BY_DESIGN of
    tests/test_conformance_methods.py) and the ``pooled_adaptation`` option."""
    import samplax
    from samplax.methods import get_method
    from samplax.run import build_algorithm

    text = " ".join(README.read_text().split())
    m = re.search(r"8 chains reproduce the first 8 of 64([^.]*)\.", text)
    assert m, "the reproducibility sentence is gone from the README"
    pooled = {"auto", "chees_hmc", "pooled_adaptation"}
    for name in samplax.method_names():  # chain methods whose default warm-up pools the chains
        spec = get_method(name)
        if spec.build is None:
            continue
        target = samplax.targets.get(spec.example_target or "std_gaussian")
        opts = spec.resolve_options({})
        opts = spec.prepare(target, opts) if spec.prepare is not None else opts
        if not build_algorithm(spec, target, 10, 4, opts).adapter.per_chain:
            pooled.add(name)
    missing = [p for p in sorted(pooled) if f"`{p}" not in m.group(1)]
    assert not missing, f"README: the sentence '{m.group(0)}' does not name {missing}"
