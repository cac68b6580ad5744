"""Stan's windowed warm-up schedule (Stan Reference Manual, "HMC algorithm parameters").

Warm-up of ``W`` iterations = an initial fast buffer (75), slow windows of
doubling length starting at 25 (the last stretched to the terminal buffer), and
a terminal fast buffer (50).  When ``W`` is too short for that
(``W < 75 + 25 + 50``) the buffers become 15%/75%/10% of ``W``.  Step size is
adapted by dual averaging throughout; the (inverse) mass matrix is re-estimated
at the end of each slow window from the draws in that window, after which dual
averaging restarts at ``mu = log(10 e)``.
"""
from __future__ import annotations

import numpy as np

MAX_WINDOWS = 32


def window_ends(num_warmup: int, init_buffer: int = 75, term_buffer: int = 50,
                base_window: int = 25) -> tuple[int, int, np.ndarray]:
    """Return ``(slow_start, slow_end, ends)``: slow windows occupy ``[slow_start, slow_end)``.

    ``ends`` is a fixed-size int array (length ``MAX_WINDOWS``, padded with -1) of the
    last iteration index of every slow window.  ``num_warmup < 20`` gives no slow window.
    """
    w = int(num_warmup)
    ends = -np.ones(MAX_WINDOWS, dtype=np.int32)
    if w < 20:
        return w, w, ends
    if init_buffer + base_window + term_buffer > w:
        init_buffer = int(0.15 * w)
        term_buffer = int(0.1 * w)
        base_window = w - init_buffer - term_buffer
    slow_start, slow_end = init_buffer, w - term_buffer
    out = []
    start, size = slow_start, base_window
    while start < slow_end:
        end = start + size
        if end + 2 * size > slow_end:  # next window would not fit: stretch this one
            end = slow_end
        out.append(end - 1)
        start, size = end, 2 * size
    out = out[:MAX_WINDOWS]
    ends[: len(out)] = out
    return slow_start, slow_end, ends
