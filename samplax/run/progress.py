"""The progress display on stderr (one place for every family).

What a run shows, in order::

    [samplax nuts/eight_schools] compiling ...
    [samplax nuts/eight_schools] compiled in 2.4 s
    [samplax nuts/eight_schools] sampling 1500/2000 75% | ETA 0:01 | 1,234 steps/s
    [samplax nuts/eight_schools] sampling 2000/2000 100% | 1.6 s | 1,240 steps/s

* The compile phase comes first (``compiling ...`` then its seconds), so a long
  compilation is not mistaken for a hang; a program found in the cache says so.
* The rate and the ETA count only the steps run since the start of THIS call:
  after a resume, the steps restored from the checkpoint are not in the rate
  (``resuming at step N/total`` is printed instead), and seconds spent compiling
  in the middle of a run (``auto`` switching metric) are not in it either.
* On a terminal (``stream.isatty()``) the status line is redrawn in place with
  ``\\r``, cut to the terminal's width (``COLUMNS``, else the size of the stream's
  terminal, else ``shutil.get_terminal_size``), so it never wraps into a pile of
  lines; at most one redraw per :data:`TTY_INTERVAL` seconds.  Elsewhere (CI logs,
  files) whole lines are printed: a line when a new 10 % milestone is reached and
  at least :data:`MIN_INTERVAL` seconds have passed since the last one, a line
  every :data:`HEARTBEAT` seconds of a slow run whatever its progress, and the
  final line; a short run prints its compile lines and one final line.

Population methods run all their independent runs as ONE compiled program, so
the host sees no step counter.  The engine shows the compile phase, then
``running N runs ...`` and a status line counted in finished runs (a
``jax.debug.callback`` at the start of each run, compiled in only when progress
is on; the program cache key includes ``progress``), and the final time.  What
a family reports from inside its run (SMC's temperatures, nested sampling's
``log X``) is the status line's note: redrawn on a terminal, shown at most every
:data:`HEARTBEAT` seconds elsewhere.

Why not ``tqdm`` or ``rich``: neither is installed with samplax's dependencies,
and both would still need what is written here: ``tqdm`` writes ``\\r`` frames
into log files (no milestone policy for non-terminals), neither knows about a
compile phase or about steps restored from a checkpoint, and the population
status comes from another thread through host callbacks.  The display is one
small class with no dependency.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import threading
import time
from typing import Callable, Optional

#: Non-terminal output: the least number of seconds between two milestone lines.
MIN_INTERVAL = 5.0
#: Non-terminal output: a line at least this often (seconds) while a run progresses or reports.
HEARTBEAT = 30.0
#: Terminal output: the least number of seconds between two redraws of the status line.
TTY_INTERVAL = 0.1


def terminal_width(stream) -> int:
    """Columns available to ``stream``: ``COLUMNS`` when set, else the size of the stream's own terminal,
    else ``shutil.get_terminal_size`` (stdout's terminal, or 80)."""
    env = os.environ.get("COLUMNS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        cols = os.get_terminal_size(stream.fileno()).columns
        if cols > 0:
            return cols
    except (AttributeError, OSError, ValueError):
        pass
    return shutil.get_terminal_size((80, 24)).columns


def fit(text: str, width: int) -> str:
    """``text`` cut to fit ``width`` columns without touching the last one (no automatic wrap)."""
    room = max(width - 1, 10)
    return text if len(text) <= room else text[: room - 3] + "..."


def compose(label: str, body: str, width: int) -> str:
    """``[samplax LABEL] BODY`` within ``width`` columns: a long label is shortened first (to no less
    than 12 characters) so that the status survives, then the text is cut at its end."""
    room = max(width - 1, 10)
    text = f"[samplax {label}] {body}"
    if len(text) > room:
        keep = max(room - len(body) - len("[samplax ] "), 12)
        if keep < len(label):
            text = f"[samplax {label[: keep - 3]}...] {body}"
    return fit(text, width)


def clock_text(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def rate_text(rate: float, unit: str) -> str:
    """``1,234 steps/s``, ``4.2 steps/s``, or ``12.5 s/step`` below one per second."""
    if rate >= 100:
        return f"{rate:,.0f} {unit}/s"
    if rate >= 1:
        return f"{rate:.1f} {unit}/s"
    return f"{1.0 / rate:.1f} s/{unit.rstrip('s')}"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """The progress display of one run: compile phase, then ``phase done/total pct | ETA | rate``.

    Args:
      enabled: False: nothing is written (the counters still move).
      total: steps (or runs) of the whole run.
      num_warmup: steps shown as ``warmup`` (``done <= num_warmup``); the rest are ``what``.
      label: ``method/target``, shown as ``[samplax LABEL]``.
      unit: what the rate counts (``steps``, ``runs``).
      what: the phase name after warm-up (``sampling``; population runs: ``runs``).
      stream: where to write (default: ``sys.stderr`` when the display is made).
      clock: seconds (``time.perf_counter``; tests pass their own).

    Use: ``compiling(what)`` / ``compiled()`` (or ``reused()``) around the compilation,
    ``start(done)`` when the timed loop begins (``done``: steps restored from a checkpoint),
    ``update(done)`` after each chunk, ``note(text)`` for a family's own report,
    ``message(text)`` for a line that stays, ``close()`` at the end.
    """

    def __init__(self, enabled: bool, total: int, num_warmup: int = 0, label: str = "", *,
                 unit: str = "steps", what: str = "sampling", stream=None,
                 clock: Optional[Callable[[], float]] = None):
        self.enabled = bool(enabled)
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.enabled and _isatty(self.stream)
        self.total, self.num_warmup = max(int(total), 0), max(int(num_warmup), 0)
        self.label, self.unit, self.what = label, unit, what
        self.clock = clock or time.perf_counter
        self.initial = 0          # steps done before this call (restored from a checkpoint)
        self.done = 0
        self.t0: Optional[float] = None   # start of this call's timed loop
        self.paused = 0.0          # seconds spent compiling inside the loop (not in the rate)
        self._compiling: Optional[tuple] = None  # (what, started)
        self._open = 0             # columns of the status line drawn on the terminal (0: none)
        self._last_draw = -math.inf
        self._last_line = -math.inf
        self._last_decile = -1
        self._finished = False
        self._note = ""
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ writing
    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _line(self, body: str) -> None:
        """A line that stays (replaces the status line on a terminal)."""
        if self.tty:
            text = compose(self.label, body, terminal_width(self.stream))
            self._write("\r" + text + " " * max(self._open - len(text), 0) + "\n")
            self._open = 0
        else:
            self._write(f"[samplax {self.label}] {body}\n")
        self._last_line = self.clock()

    def _draw(self, body: str, now: float) -> None:
        """The status line: redrawn in place on a terminal, a whole line elsewhere."""
        if self.tty:
            text = compose(self.label, body, terminal_width(self.stream))
            self._write("\r" + text + " " * max(self._open - len(text), 0))
            self._open = len(text)
            self._last_draw = now
        else:
            self._write(f"[samplax {self.label}] {body}\n")
            self._last_line = now

    # ------------------------------------------------------------------ compile phase
    def compiling(self, what: Optional[str] = None) -> None:
        """The compile phase begins: ``[samplax METHOD/TARGET] compiling ...`` (``compiling WHAT ...`` when
        ``what`` names a further program); a second call before ``compiled`` is ignored."""
        with self._lock:
            if self._compiling is not None:
                return
            what = "" if what is None else f"{what} "
            self._compiling = (what, self.clock())
            if not self.enabled:
                return
            if self.tty:
                self._draw(f"compiling {what}...", self.clock())
            else:
                self._line(f"compiling {what}...")

    def compiled(self, seconds: Optional[float] = None) -> Optional[float]:
        """The compile phase ends: ``compiled [WHAT ]in S s`` (``seconds``: the time to show; default the
        time since ``compiling``).  Returns the seconds, None when nothing was being compiled."""
        with self._lock:
            if self._compiling is None:
                return None
            what, began = self._compiling
            self._compiling = None
            now = self.clock()
            if self.t0 is not None:  # compiled in the middle of the run: not part of the rate
                self.paused += now - began
            seconds = now - began if seconds is None else float(seconds)
            if self.enabled:
                self._line(f"compiled {what}in {seconds:.1f} s")
            return seconds

    def reused(self) -> None:
        """The compiled program came from the cache: nothing to compile."""
        if self.enabled:
            with self._lock:
                self._line("compiled program reused (cache): nothing to compile")

    # ------------------------------------------------------------------ the run
    def start(self, done: int = 0) -> None:
        """The timed loop of this call begins with ``done`` steps already done (restored from a checkpoint:
        they count towards the percentage, never towards the rate)."""
        with self._lock:
            self.t0 = self.clock()
            self.paused = 0.0
            self._last_line = max(self._last_line, self.t0)  # intervals count from here when nothing was printed
            self.initial = self.done = int(done)
            self._last_decile = self._decile(self.done)
            if self.enabled and self.initial > 0:
                self._line(f"resuming at step {self.initial}/{self.total} ({self._pct(self.initial)}%)")

    def retotal(self, total: int, num_warmup: Optional[int] = None) -> None:
        """The run's length changed on the way (``auto``'s warm-up stopped early): the line reaches 100 %
        at the new total."""
        with self._lock:
            self.total = max(int(total), 0)
            if num_warmup is not None:
                self.num_warmup = max(int(num_warmup), 0)

    def rate(self) -> Optional[float]:
        """Steps per second over the steps run since ``start`` (None before the first)."""
        if self.t0 is None:
            return None
        elapsed = self.clock() - self.t0 - self.paused
        steps = self.done - self.initial
        if steps <= 0 or elapsed <= 0:
            return None
        return steps / elapsed

    def eta(self) -> Optional[float]:
        """Seconds left at the current rate (None before the first step)."""
        r = self.rate()
        return None if r is None else max(self.total - self.done, 0) / r

    def _pct(self, done: int) -> int:
        return int(100 * done / self.total) if self.total > 0 else 100

    def _decile(self, done: int) -> int:
        return int(10 * done / self.total) if self.total > 0 else 10

    def status(self) -> str:
        """The status line's text (without the ``[samplax LABEL]`` prefix)."""
        done, total = self.done, self.total
        phase = "warmup" if self.num_warmup > 0 and done <= self.num_warmup and done < total else self.what
        parts = [f"{phase} {done}/{total} {self._pct(done)}%"]
        r = self.rate()
        if done >= total and self.t0 is not None:
            parts.append(f"{self.clock() - self.t0:.1f} s")
        elif r is not None:
            parts.append(f"ETA {clock_text(self.eta())}")
        if r is not None:  # after the ETA, which a narrow terminal keeps first
            parts.append(rate_text(r, self.unit))
        if self._note:
            parts.append(self._note)
        return " | ".join(parts)

    def update(self, done: int) -> None:
        """``done`` of ``total`` steps are done (redraw, or a line at a milestone on a non-terminal)."""
        with self._lock:
            if self.t0 is None:
                self.start(0)
            self.done = int(done)
            if not self.enabled:
                return
            now = self.clock()
            final = self.done >= self.total
            if final and self._finished:
                return
            decile = self._decile(self.done)
            if self.tty:
                show = final or now - self._last_draw >= TTY_INTERVAL
            else:
                show = final or (decile > self._last_decile and now - self._last_line >= MIN_INTERVAL) \
                    or now - self._last_line >= HEARTBEAT
            if not show:
                return
            self._last_decile = decile
            if final:
                self._finished = True
                self._line(self.status())
            else:
                self._draw(self.status(), now)

    def note(self, text: str) -> None:
        """A family's report from inside its compiled program (through ``jax.debug.callback``, possibly
        from another thread): shown as the end of the status line."""
        with self._lock:
            self._note = str(text)
            if not self.enabled or self._finished:
                return
            now = self.clock()
            if (now - self._last_draw >= TTY_INTERVAL) if self.tty else (now - self._last_line >= HEARTBEAT):
                self._draw(self.status(), now)

    def message(self, text: str) -> None:
        """One line that stays (population messages, tuning rounds, warnings of the run)."""
        if self.enabled:
            with self._lock:
                self._line(text)

    def close(self) -> None:
        """End the status line on a terminal (call once the run is over or interrupted)."""
        with self._lock:
            if self.tty and self._open:
                self._write("\n")
                self._open = 0
