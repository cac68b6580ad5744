"""Compile ahead of time, cache the executables, and time compiling and running apart (the cost record).

:class:`Clock` runs a jitted function (``jax.jit`` or ``equinox.filter_jit``) as
``jitted.lower(*args).compile()`` -- timed as compile seconds, done only when the
executable is not already in the given :class:`ExecutableCache` -- and then calls the
executable and blocks until its outputs are ready -- timed as run seconds. The executable
is the one ``jitted(*args)`` would build and run, so the outputs are the same.

An executable is looked up by the jitted function, the static arguments and every array
argument's shape, dtype, weak type and (when committed) sharding, the pytree structure, and JAX's trace
context (``jax_enable_x64`` and the other settings that ``jax.jit`` keys its own cache on).
Non-array leaves are keyed by value. Arguments that are tracers (a caller inside
``jax.jit``/``vmap``), unhashable non-array leaves and ``jax.disable_jit()`` fall back to
calling ``jitted`` directly, and nothing is timed (:attr:`Clock.timed` becomes False).

Eager (op-by-op) JAX work compiles each operation on first use; :meth:`Clock.eager` counts
those compilations too, from JAX's compile events (``jax.monitoring``; process-wide, so a
compilation in another thread during the block is counted as well).

An executable that JAX loads from its persistent compilation cache
(``jax_compilation_cache_dir``) is not counted as a compilation; the seconds spent tracing,
lowering and loading it are still compile seconds.
"""
from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from samplax.core.caches import register


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_PERSISTENT_CACHE_HIT = "/jax/compilation_cache/cache_hits"


def _trace_context():
    try:  # what jax.jit itself keys its cache on (x64, matmul precision, promotion rules, ...)
        from jax._src import config as _jax_config
        return _jax_config.trace_context()
    except Exception:  # pragma: no cover - private API moved; the public settings that change a trace
        return (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision,
                jax.config.jax_numpy_dtype_promotion)


def _leaf_key(leaf):
    if isinstance(leaf, jax.Array):  # placement matters only for committed arrays (uncommitted: default device)
        sharding = leaf.sharding if getattr(leaf, "committed", True) else None
        return ("array", leaf.shape, leaf.dtype, getattr(leaf, "weak_type", None), sharding)
    if isinstance(leaf, np.ndarray):
        return ("ndarray", leaf.shape, leaf.dtype)
    return ("value", type(leaf), leaf)


class ExecutableCache:
    """An LRU cache of compiled executables (see the module docstring for the key)."""

    def __init__(self, size: int):
        self.size = int(size)
        self._items: "OrderedDict" = OrderedDict()
        register(self)

    def __len__(self):
        return len(self._items)

    def get(self, key):
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key, value):
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self):
        self._items.clear()


class Clock:
    """Accumulates the compile seconds, run seconds and compilations of the calls made through :meth:`call`."""

    def __init__(self):
        self.compile_seconds = 0.0
        self.run_seconds = 0.0
        self.num_compilations = 0
        self.timed = True  # False once a call could not be compiled ahead of time (see the module docstring)
        self._in_call = False

    @contextlib.contextmanager
    def eager(self):
        """Inside the block, JAX's compilations outside :meth:`call` add to the compile seconds and compilations."""
        def on_duration(name, duration, **_):
            if name in _COMPILE_EVENTS and not self._in_call:
                self.compile_seconds += float(duration)
                if name == _COMPILE_EVENTS[-1]:  # also emitted for a persistent-cache load (subtracted below)
                    self.num_compilations += 1

        def on_event(name, **_):
            if name == _PERSISTENT_CACHE_HIT and not self._in_call:
                self.num_compilations -= 1

        jax.monitoring.register_event_duration_secs_listener(on_duration)
        jax.monitoring.register_event_listener(on_event)
        try:
            yield self
        finally:
            jax.monitoring.unregister_event_duration_listener(on_duration)
            jax.monitoring.unregister_event_listener(on_event)

    def call(self, jitted: Callable, args: Sequence, cache: Optional[ExecutableCache] = None,
             static_argnums: Sequence[int] = ()):
        """``jitted(*args)``, compiled ahead of time (from ``cache`` when there) and run to completion.

        ``static_argnums`` must be those of ``jitted`` when it is a ``jax.jit`` with static
        arguments (they are left out of the call to the executable). With ``cache=None``
        the executable is compiled and not kept.
        """
        args = tuple(args)
        static = tuple(sorted(int(i) for i in static_argnums))
        dynamic = tuple(a for i, a in enumerate(args) if i not in static)
        leaves, treedef = jax.tree_util.tree_flatten(dynamic)
        if jax.config.jax_disable_jit or any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            self.timed = False
            return jitted(*args)
        key = None
        if cache is not None:
            key = (jitted, tuple((i, args[i]) for i in static), treedef, tuple(_leaf_key(x) for x in leaves),
                   _trace_context())
            try:
                hash(key)
            except TypeError:
                self.timed = False
                return jitted(*args)
        self._in_call = True
        try:
            compiled = cache.get(key) if cache is not None else None
            if compiled is None:
                hits = []

                def on_event(name, **_):
                    if name == _PERSISTENT_CACHE_HIT:
                        hits.append(name)

                jax.monitoring.register_event_listener(on_event)
                t0 = time.perf_counter()
                try:
                    compiled = jitted.lower(*args).compile()
                finally:
                    self.compile_seconds += time.perf_counter() - t0
                    jax.monitoring.unregister_event_listener(on_event)
                self.num_compilations += 0 if hits else 1
                if cache is not None:
                    cache.put(key, compiled)
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(*dynamic))
            self.run_seconds += time.perf_counter() - t0
        finally:
            self._in_call = False
        return out
