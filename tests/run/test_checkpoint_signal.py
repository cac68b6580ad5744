"""A Ctrl-C that arrives while a checkpoint file is written waits until the file is whole."""
import os
import signal

import numpy as np
import pytest

from samplax.core.result import atomic_savez, atomic_write


def test_ctrl_c_during_savez_is_raised_after_the_file_is_complete(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    real_savez = np.savez
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:  # a shell's background job ignores SIGINT; the test needs the Python handler
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def savez_interrupted(f, **arrays):
        # the signal lands in the middle of the zip write, where it broke the CI run
        os.kill(os.getpid(), signal.SIGINT)
        real_savez(f, **arrays)

    monkeypatch.setattr(np, "savez", savez_interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_savez(path, {"a": np.arange(5.0)})
    monkeypatch.setattr(np, "savez", real_savez)
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(5.0))
    assert not os.path.exists(path + ".tmp.npz")
    # the previous handler is back: a later Ctrl-C interrupts at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, before)


def test_atomic_write_without_signal_writes_and_returns(tmp_path):
    path = str(tmp_path / "r.json")
    atomic_write(path, "{}")
    assert open(path).read() == "{}"
