"""The progress line on stderr (one place for every family)."""
from __future__ import annotations

import sys
import time


class Progress:
    """``[samplax LABEL] warmup|sampling done/total (pct) rate it/s`` on stderr.

    On a terminal the line is rewritten in place; otherwise one line per 10 %.
    ``message(text)`` writes one free-form line (population methods, tuning rounds).
    """

    def __init__(self, enabled: bool, total: int, num_warmup: int, label: str):
        self.enabled = bool(enabled)
        self.total, self.num_warmup, self.label = total, num_warmup, label
        self.tty = self.enabled and sys.stderr.isatty()
        self.last_pct = -1
        self.t0 = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        pct = int(100 * done / max(self.total, 1))
        if not self.tty and pct // 10 == self.last_pct // 10 and done < self.total:
            return
        self.last_pct = pct
        phase = "warmup" if done <= self.num_warmup and self.num_warmup > 0 else "sampling"
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        msg = f"[samplax {self.label}] {phase} {done}/{self.total} ({pct}%) {rate:,.0f} it/s"
        sys.stderr.write(("\r" + msg) if self.tty else (msg + "\n"))
        if self.tty and done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        sys.stderr.write(f"[samplax {self.label}] {text}\n")
        sys.stderr.flush()
