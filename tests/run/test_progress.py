"""The progress display (samplax/run/progress.py) as a user sees it on stderr.

Each point of issue #16's progress item has its own test: the compile phase is shown before
sampling; the rate and an ETA; the rate after a resume counts only the steps of this call; on a
terminal the line is redrawn in place and cut to the terminal's width; elsewhere (CI logs, files)
a few whole lines, never one per chunk; ``auto`` reaches 100 %; ``samplax bench`` shows each run's
progress under its own ``run i of n``; population methods show compile, ``running`` and per-run
progress through a host callback that is compiled in only when progress is on.
"""
from __future__ import annotations

import io
import re

import jax.numpy as jnp
import numpy as np
import pytest

import samplax
import samplax.run.population as population
import samplax.run.progress as progress_mod
from samplax.run.progress import Progress


class FakeTTY(io.StringIO):
    """stderr as a terminal."""

    def isatty(self):
        return True


class FakeClock:
    """Seconds that move only when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def perf_counter(self):  # stands in for the ``time`` module inside samplax.run.progress
        return self.now


def _gauss(name):
    return samplax.from_logdensity(lambda x: -0.5 * jnp.sum(x ** 2), 2, name=name)


#: one target for the chain-method tests that need no fresh compilation (the program is then cached)
LONG = _gauss("a_target_with_a_rather_long_name_to_overflow_sixty_columns")
RUN = dict(seed=0, num_chains=2, num_warmup=500, num_samples=500, chunk_size=10)


def _lines(text, label):
    return [ln for ln in text.splitlines() if f"[samplax {label}]" in ln]


# --------------------------------------------------------------------------- compile phase
def test_compile_phase_shown_before_sampling(capfd):
    t = _gauss("compile_phase")
    samplax.sample(t, "nuts", seed=0, num_chains=2, num_warmup=50, num_samples=50)
    lines = _lines(capfd.readouterr().err, "nuts/compile_phase")
    assert lines[0] == "[samplax nuts/compile_phase] compiling ...", lines
    assert re.fullmatch(r"\[samplax nuts/compile_phase\] compiled in \d+\.\d s", lines[1]), lines
    assert "sampling 100/100 100%" in lines[-1], lines
    samplax.sample(t, "nuts", seed=1, num_chains=2, num_warmup=50, num_samples=50)
    lines = _lines(capfd.readouterr().err, "nuts/compile_phase")
    assert "compiled program reused" in lines[0] and not any("compiling" in ln for ln in lines), lines


# --------------------------------------------------------------------------- rate and ETA
def test_rate_and_eta():
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(True, 1000, 200, "m/t", stream=out, clock=clock)
    bar.start(0)
    clock.now = 10.0
    bar.update(500)  # a new milestone, 10 s after the start
    clock.now = 20.0
    bar.update(1000)
    lines = out.getvalue().splitlines()
    assert lines == ["[samplax m/t] sampling 500/1000 50% | ETA 0:10 | 50.0 steps/s",
                     "[samplax m/t] sampling 1000/1000 100% | 20.0 s | 50.0 steps/s"]
    assert Progress(True, 10, 0, "x", stream=io.StringIO()).eta() is None  # no rate before the first step
    slow = Progress(True, 10, 0, "x", stream=io.StringIO(), clock=clock)
    slow.start(0)
    clock.now += 25.0
    slow.update(2)
    assert "12.5 s/step" in slow.status() and "ETA 1:40" in slow.status()


def test_compiling_inside_the_run_is_not_in_the_rate():
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(True, 100, 0, "m/t", stream=out, clock=clock)
    bar.start(0)
    clock.now = 1.0
    bar.update(10)
    bar.compiling("another metric's program")
    clock.now = 21.0
    assert bar.compiled() == 20.0
    clock.now = 22.0
    bar.update(20)
    assert bar.rate() == 10.0 and "compiled another metric's program in 20.0 s" in out.getvalue()


# --------------------------------------------------------------------------- resume
def test_resume_rate_counts_only_this_calls_steps():
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(True, 1000, 0, "m/t", stream=out, clock=clock)
    bar.start(900)
    clock.now = 1.0
    bar.update(1000)
    assert out.getvalue().splitlines() == ["[samplax m/t] resuming at step 900/1000 (90%)",
                                           "[samplax m/t] sampling 1000/1000 100% | 1.0 s | 100 steps/s"]


def test_resumed_run_reports_the_rate_of_its_own_steps(tmp_path, monkeypatch, capfd):
    """Each chunk of 100 steps takes one second on the display's clock; a run interrupted after 3 of 10
    chunks and resumed runs 7 chunks in 7 s: 100 steps/s (counting the restored 300: 143)."""
    clock = FakeClock()
    monkeypatch.setattr(progress_mod, "time", clock)
    orig, calls = Progress.update, {"n": 0, "stop": 3}

    def update(self, done):
        calls["n"] += 1
        clock.now += 1.0
        if calls["n"] == calls["stop"]:
            raise KeyboardInterrupt
        return orig(self, done)

    monkeypatch.setattr(Progress, "update", update)
    kw = dict(seed=0, num_chains=2, num_warmup=500, num_samples=500, chunk_size=100,
              checkpoint_dir=str(tmp_path / "ck"), checkpoint_interval=0.0)
    part = samplax.sample(LONG, "rwm", **kw)
    assert not part.complete
    capfd.readouterr()
    calls["stop"] = -1
    full = samplax.sample(LONG, "rwm", **kw)
    assert full.complete
    lines = _lines(capfd.readouterr().err, f"rwm/{LONG.name}")
    assert any(ln.endswith("resuming at step 300/1000 (30%)") for ln in lines), lines
    assert lines[-1].endswith("sampling 1000/1000 100% | 7.0 s | 100 steps/s"), lines


# --------------------------------------------------------------------------- terminal width / non-terminal
def test_terminal_line_is_redrawn_in_place_within_60_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setattr(progress_mod, "TTY_INTERVAL", 0.0)  # redraw at every chunk
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    samplax.sample(LONG, "nuts", **RUN)
    text = tty.getvalue()
    assert text.count("\r") >= 50  # 100 chunks: redrawn in place
    pieces = [p for p in re.split(r"[\r\n]", text) if p]
    assert max(len(p) for p in pieces) <= 59, max(pieces, key=len)
    # the long label is shortened so that the status stays visible
    assert all(p.startswith("[samplax nuts/a_t") for p in pieces), pieces[:3]
    assert any("] warmup 250/1000 25% | ETA " in p for p in pieces), pieces
    assert text.count("\n") <= 3, text.split("\n")  # compile line, final line: no pile of wrapped lines
    final = text.split("\r")[-1]
    assert "] sampling 1000/1000 100% | " in final and final.endswith("\n"), final


def test_fit_and_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert progress_mod.terminal_width(io.StringIO()) == 60
    bar = Progress(True, 10, 0, "m/t", stream=FakeTTY())
    bar.start(0)
    bar.note("x" * 200)
    drawn = bar.stream.getvalue().split("\r")[-1]
    assert len(drawn) == 59 and drawn.endswith("...")
    monkeypatch.delenv("COLUMNS")
    assert progress_mod.terminal_width(io.StringIO()) >= 1


def test_non_terminal_prints_few_whole_lines(capfd):
    samplax.sample(LONG, "nuts", **RUN)  # 100 chunks of 10 steps
    err = capfd.readouterr().err
    assert "\r" not in err
    lines = _lines(err, f"nuts/{LONG.name}")
    # at most: compile (2 lines) or cache (1), a milestone per 5 s, the final line
    assert len(lines) <= 5, lines
    assert "sampling 1000/1000 100%" in lines[-1]


def test_non_terminal_milestones_and_heartbeat():
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(True, 1000, 0, "m/t", stream=out, clock=clock)
    bar.start(0)
    for i in range(1, 1001):  # 10 s in all: only the 50 % milestone is 5 s after the start
        clock.now = i * 0.01
        bar.update(i)
    assert [ln.split("] ")[1][:22] for ln in out.getvalue().splitlines()] == [
        "sampling 500/1000 50% ", "sampling 1000/1000 100"]
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(True, 10, 0, "m/t", stream=out, clock=clock)
    bar.start(0)
    for i in range(1, 11):  # a step every 100 s: a line at every milestone
        clock.now = i * 100.0
        bar.update(i)
    assert len(out.getvalue().splitlines()) == 10
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(True, 1000, 0, "m/t", stream=out, clock=clock)
    bar.start(0)
    for i in range(1, 90):  # 89 s within the first 10 %: heartbeat lines every 30 s
        clock.now = float(i)
        bar.update(i)
    assert len(out.getvalue().splitlines()) == 2
    bar.update(89)
    clock.now = 200.0
    bar.note("temperature 3")
    assert out.getvalue().splitlines()[-1].endswith("| temperature 3")


# --------------------------------------------------------------------------- auto
def test_auto_reaches_100_percent(capfd):
    t = samplax.targets.get("std_gaussian", dim=3)
    r = samplax.sample(t, "auto", seed=0, num_chains=2, num_warmup=1000, num_samples=100)
    assert r.extra["warmup_steps"] < 1000  # warm-up stopped early: the case that stopped short before
    w = r.extra["warmup_steps"]
    lines = _lines(capfd.readouterr().err, "auto/std_gaussian")
    assert any(f"warm-up converged after {w} of at most 1000 steps" in ln for ln in lines), lines
    assert f"sampling {w + 100}/{w + 100} 100%" in lines[-1], lines


# --------------------------------------------------------------------------- bench
@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_bench_shows_each_runs_progress(monkeypatch):
    from samplax.bench import run_suite

    both = io.StringIO()  # stdout and stderr in one stream, to see the order
    monkeypatch.setattr("sys.stdout", both)
    monkeypatch.setattr("sys.stderr", both)
    suite = {"suite": {"name": "tiny", "num_chains": 2, "num_warmup": 100, "num_samples": 100, "seed": 0},
             "run": [{"method": "rwm", "target": "std_gaussian", "target_params": {"dim": 2}},
                     {"method": "smc", "target": "std_gaussian", "target_params": {"dim": 2}}]}
    run_suite(suite, progress=True)
    text = both.getvalue()
    order = [text.index(s) for s in ("run 1 of 2: rwm on std_gaussian", "[samplax rwm/std_gaussian] sampling 200/200",
                                     "[1/2]", "run 2 of 2: smc on std_gaussian", "[samplax smc/std_gaussian] runs 2/2",
                                     "[2/2]")]
    assert order == sorted(order), text


# --------------------------------------------------------------------------- population methods
def test_population_shows_compile_running_and_finished_runs(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(progress_mod, "TTY_INTERVAL", 0.0)
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    samplax.sample(_gauss("population_tty"), "smc", seed=0, num_chains=4, num_samples=100, kernel="rwm")
    text = tty.getvalue()
    label = "[samplax smc/population_tty]"
    done = [text.index(f"{label} runs {k}/4") for k in range(4)]  # each finished run is counted
    first = [text.index(f"{label} {s}") for s in ("compiling ...", "compiled in", "running 4 runs")]
    assert first == sorted(first) and first[-1] < done[0] and done == sorted(done), text
    final = text.split("\r")[-1]
    assert final.startswith(f"{label} runs 4/4 100%") and "beta 1," in final and final.endswith("\n"), final


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_population_callback_only_with_progress(monkeypatch, capfd):
    calls = []
    monkeypatch.setattr(population, "_run_started", lambda c: calls.append(int(np.asarray(c))))
    kw = dict(seed=0, num_chains=3, num_samples=100, kernel="rwm")
    off = samplax.sample(_gauss("population_off"), "smc", progress=False, **kw)
    assert calls == [] and "[samplax" not in capfd.readouterr().err
    on = samplax.sample(_gauss("population_on"), "smc", progress=True, **kw)
    assert sorted(calls) == [0, 1, 2]
    np.testing.assert_array_equal(on.samples, off.samples)  # the callback changes nothing in the draws
    err = capfd.readouterr().err
    lines = _lines(err, "smc/population_on")
    assert "\r" not in err and 3 <= len(lines) <= 5 and "runs 3/3 100%" in lines[-1], lines


@pytest.mark.parametrize("bad", [0, -5])
def test_disabled_or_degenerate_totals_write_nothing_odd(bad):
    out = io.StringIO()
    bar = Progress(False, 10, 0, "m/t", stream=out)
    bar.compiling()
    bar.compiled()
    bar.start(0)
    bar.update(10)
    bar.message("x")
    bar.close()
    assert out.getvalue() == ""
    empty = Progress(True, bad, 0, "m/t", stream=out)
    empty.update(0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[samplax m/t] sampling 0/0 100% | "), lines


@pytest.mark.slow  # 20-45 s: the default tier must fit 15 min on 2 cores
def test_parallel_tempering_draws_do_not_depend_on_progress():
    """Its report used to be a callback inside the tuning rounds' loop, which changed how XLA compiled
    the loop (max difference 4.6 on a 2-d Gaussian); it now reports once the rounds are over."""
    t = _gauss("pt_progress")
    kw = dict(seed=1, num_chains=2, num_samples=60, num_warmup=20)
    on = samplax.sample(t, "parallel_tempering", progress=True, **kw)
    off = samplax.sample(t, "parallel_tempering", progress=False, **kw)
    np.testing.assert_array_equal(on.samples, off.samples)
