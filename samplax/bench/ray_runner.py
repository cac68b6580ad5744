"""Run a suite's cells on a Ray cluster (``samplax bench SUITE --ray [ADDRESS]``).

Each (method, target, seed) cell is one Ray task that runs :func:`samplax.bench.harness.run_cell`
in a worker process and returns the scored row and the :class:`~samplax.core.result.Result`;
the driver writes the run folder exactly as a serial run does, rows in the suite's order.
A worker runs with the driver's JAX settings (float64 or not, platform), so its draws equal
the serial run's.  A cell whose run raises, or whose worker dies, is retried up to
``retries`` times; one that still fails becomes a row with status ``error``, the message and
the number of attempts -- reported, not lost.

``address="local"`` starts a Ray instance on this machine (one CPU per task) and stops it
afterwards; any other value is passed to ``ray.init(address=...)`` (e.g. ``"auto"`` or
``"ray://head:10001"``), and a cluster that was already running is left running.
"""
from __future__ import annotations

from typing import Callable, Optional


def _ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("samplax bench --ray needs Ray: pip install 'samplax[ray]'") from e
    return ray


def _jax_settings() -> dict:
    import jax

    return {"jax_enable_x64": bool(jax.config.jax_enable_x64)}


def _run_in_worker(cell, settings: dict):
    """The Ray task: apply the driver's JAX settings, run and score one cell."""
    import os

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    for k, v in settings.items():
        jax.config.update(k, v)
    from samplax.bench.harness import run_cell

    return run_cell(cell, progress=False)


def run_cells(cells: list, address: str = "local", retries: int = 2,
              on_done: Optional[Callable] = None) -> list:
    """Run ``cells`` as Ray tasks; ``[(row, result_or_None), ...]`` in the cells' order.

    ``on_done(cell, row)`` is called on the driver as each cell finishes (in completion order).
    """
    ray = _ray()
    from samplax.bench.harness import error_row

    started = False
    if not ray.is_initialized():
        if address == "local":
            import os

            env = {k: os.environ[k] for k in ("JAX_PLATFORMS", "XLA_FLAGS") if k in os.environ}
            ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env} if env else None)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(_run_in_worker)
        settings = _jax_settings()
        pending = {task.remote(c, settings): c for c in cells}
        outcomes = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            cell = pending.pop(ref)
            try:
                row, res = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the task's last attempt failed: an error row
                cause = getattr(e, "cause", None) or e
                row, res = error_row(cell, cause if isinstance(cause, BaseException) else str(cause),
                                     attempts=retries + 1), None
            outcomes[cell.index] = (row, res)
            if on_done is not None:
                on_done(cell, row)
        return [outcomes[c.index] for c in cells]
    finally:
        if started and address == "local":
            ray.shutdown()
