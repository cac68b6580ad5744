"""One :class:`Result` record that the harness, the CLI, reports and ArviZ export all read."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
from typing import Any, Optional

import numpy as np

#: ArviZ ``sample_stats`` names of the per-draw statistics samplax records.
STAT_NAMES = {
    "acceptance_rate": "acceptance_rate",
    "diverging": "diverging",
    "step_size": "step_size",
    "tree_depth": "tree_depth",
    "n_steps": "n_steps",
    "lp": "lp",
    "energy": "energy",
    "nonfinite": "nonfinite",
}


@dataclasses.dataclass
class Result:
    """Samples and estimates from one run.

    Attributes:
      samples: ``[chains, draws, *event_shape]`` draws (unconstrained space).
      quantities: ``[chains, draws, k]`` reported quantities ``target.constrain(x)``.
      quantity_names: names of the ``k`` quantities.
      stats: per-draw sampler statistics ``{name: [chains, draws]}`` (ArviZ names).
      diagnostics: per-quantity ``mean, sd, mcse_mean, mcse_sd, ess_bulk, ess_tail, rhat``.
      cost: ``num_logdensity_evals``, ``num_grad_evals``, ``compile_seconds``, ``sampling_seconds``.
      warnings: structured records ``{"code", "message", ...}``.
      log_Z, log_Z_se: normalizing-constant estimate and its standard error (SMC family).
      log_weights: ``[chains, draws]`` importance log-weights for weighted particle output.
      method, target: names; config: the full run configuration.
      complete: False when the run was interrupted.
      variables: ``{name: shape}`` of the target's named variables (a model's constrained parameters and
        deterministic quantities, e.g. :func:`samplax.from_numpyro`): ``quantities`` are these, each raveled
        in C order, concatenated in this order; ``None`` for a target without named variables.
      coords, dims: ArviZ coordinates ``{dim: values}`` and dimension names ``{variable: (dim, ...)}``.
      warmup_samples, warmup_quantities, warmup_stats: the warm-up draws (unconstrained, reported
        quantities, per-draw stats), when the run kept them (``sample(..., keep_warmup=True)``), else None.
    """

    samples: np.ndarray
    quantities: np.ndarray
    quantity_names: tuple
    stats: dict
    diagnostics: dict
    cost: dict
    warnings: list
    method: str
    target: str
    config: dict
    log_Z: Optional[float] = None
    log_Z_se: Optional[float] = None
    log_weights: Optional[np.ndarray] = None
    complete: bool = True
    extra: dict = dataclasses.field(default_factory=dict)
    #: exact draws of the quantities ``[n, k]`` from the target's exact sampler (for plots), or None
    reference_draws: Optional[np.ndarray] = None
    variables: Optional[dict] = None
    coords: dict = dataclasses.field(default_factory=dict)
    dims: dict = dataclasses.field(default_factory=dict)
    warmup_samples: Optional[np.ndarray] = None
    warmup_quantities: Optional[np.ndarray] = None
    warmup_stats: Optional[dict] = None

    # ------------------------------------------------------------------ views
    @property
    def num_chains(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.samples.shape[1])

    def _named(self, quantities: np.ndarray) -> dict:
        if self.variables is None:
            return {n: quantities[:, :, i] for i, n in enumerate(self.quantity_names)}
        c, n = quantities.shape[:2]
        out, start = {}, 0
        for name, shape in self.variables.items():
            size = int(np.prod(shape, dtype=int))
            out[name] = quantities[:, :, start:start + size].reshape((c, n) + tuple(shape))
            start += size
        return out

    @property
    def posterior(self) -> dict:
        """``{name: [chains, draws, *shape]}``: the draws of each named variable in the constrained space
        (a model's parameters and deterministic quantities); for a target without named variables, one
        entry ``[chains, draws]`` per reported quantity.  The unconstrained draws are :attr:`samples`."""
        return self._named(self.quantities)

    @property
    def warmup_posterior(self) -> Optional[dict]:
        """:attr:`posterior` of the kept warm-up draws (``sample(..., keep_warmup=True)``), else None."""
        return None if self.warmup_quantities is None else self._named(self.warmup_quantities)

    def summary(self, max_rows: int = 30) -> str:
        """A text table: per-quantity mean, sd, MCSE, bulk/tail ESS, R-hat; then cost and warnings."""
        d = self.diagnostics
        names = list(self.quantity_names)
        lines = [f"samplax {self.method} on {self.target}: {self.num_chains} chains x {self.num_draws} draws"
                 + ("" if self.complete else " (INTERRUPTED)")]
        hdr = f"{'':>16} {'mean':>10} {'sd':>10} {'mcse':>9} {'ess_bulk':>9} {'ess_tail':>9} {'r_hat':>6}"
        lines.append(hdr)
        for i, n in enumerate(names[:max_rows]):
            lines.append(
                f"{n[:16]:>16} {d['mean'][i]:>10.4g} {d['sd'][i]:>10.4g} {d['mcse_mean'][i]:>9.3g} "
                f"{d['ess_bulk'][i]:>9.1f} {d['ess_tail'][i]:>9.1f} {d['rhat'][i]:>6.3f}")
        if len(names) > max_rows:
            lines.append(f"{'...':>16} ({len(names) - max_rows} more quantities)")
        if self.log_Z is not None:
            se = "" if self.log_Z_se is None else f" +- {self.log_Z_se:.4g}"
            lines.append(f"log Z = {self.log_Z:.6g}{se}")
        c = self.cost
        lines.append(
            f"cost: {c.get('num_logdensity_evals', 0):,} log-density evals, {c.get('num_grad_evals', 0):,} "
            f"gradient evals, compile {c.get('compile_seconds', 0):.2f}s, sampling {c.get('sampling_seconds', 0):.2f}s")
        if "diverging" in self.stats:
            lines.append(f"divergences after warm-up: {int(np.sum(self.stats['diverging']))}")
        for w in self.warnings:
            lines.append(f"WARNING [{w['code']}]: {w['message']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    # -------------------------------------------------------------- exports
    def to_arviz(self, coords: Optional[dict] = None, dims: Optional[dict] = None):
        """An ``arviz.InferenceData``: ``posterior`` (the named variables, :attr:`posterior`, with the
        target's coords and dims; ``coords``/``dims`` given here add to or override them),
        ``sample_stats`` (every per-draw statistic of the run, ArviZ names), and ``warmup_posterior`` /
        ``warmup_sample_stats`` when the warm-up draws were kept (``keep_warmup=True``).

        Needs the optional ``arviz`` extra (ArviZ 0.x on Python 3.11 or 1.x on >= 3.12).
        """
        try:
            import arviz as az
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("Result.to_arviz() needs ArviZ: pip install 'samplax[arviz]'") from e

        def names(d):  # quantities without named variables: x[0] -> x_0 (a valid variable name)
            return d if self.variables is not None else {_safe_var(k): v for k, v in d.items()}

        groups = {"posterior": names(self.posterior),
                  "sample_stats": {STAT_NAMES.get(k, k): np.asarray(v) for k, v in self.stats.items()}}
        if self.warmup_quantities is not None:
            groups["warmup_posterior"] = names(self.warmup_posterior)
            groups["warmup_sample_stats"] = {STAT_NAMES.get(k, k): np.asarray(v)
                                             for k, v in (self.warmup_stats or {}).items()}
        all_coords = {**self.coords, **(coords or {})}
        all_dims = {**{k: list(v) for k, v in self.dims.items()}, **{k: list(v) for k, v in (dims or {}).items()}}
        all_coords = {k: list(v) for k, v in all_coords.items() if any(k in d for d in all_dims.values())}
        attrs = {"inference_library": "samplax", "method": self.method, "target": self.target}
        if not hasattr(az, "from_dict"):  # pragma: no cover
            raise ImportError("this ArviZ version has no from_dict")
        try:
            return az.from_dict(**groups, coords=all_coords or None, dims=all_dims or None, attrs=attrs,
                                save_warmup=self.warmup_quantities is not None)
        except TypeError:  # pragma: no cover - ArviZ 1.x: groups as one mapping
            return az.from_dict(groups, coords=all_coords or None, dims=all_dims or None)

    def save(self, path: str) -> None:
        """Write ``results.json`` and ``samples.npz`` into the folder ``path``."""
        os.makedirs(path, exist_ok=True)
        arrays = {"samples": self.samples, "quantities": self.quantities}
        for k, v in self.stats.items():
            arrays[f"stat__{k}"] = np.asarray(v)
        if self.log_weights is not None:
            arrays["log_weights"] = self.log_weights
        if self.reference_draws is not None:
            arrays["reference_draws"] = self.reference_draws
        if self.warmup_samples is not None:
            arrays["warmup_samples"] = self.warmup_samples
            arrays["warmup_quantities"] = self.warmup_quantities
            for k, v in (self.warmup_stats or {}).items():
                arrays[f"wstat__{k}"] = np.asarray(v)
        atomic_savez(os.path.join(path, "samples.npz"), arrays)
        extra = dict(self.extra)
        for k, v in self.extra.items():
            if _is_module(v):  # e.g. a trained flow: its array leaves, rebuilt by the part that made it
                fname = f"extra__{_safe_var(k)}.eqx"
                with sigint_deferred():
                    import equinox as eqx

                    eqx.tree_serialise_leaves(os.path.join(path, fname), v)
                extra[k] = {"saved_leaves": fname, "type": f"{type(v).__module__}.{type(v).__qualname__}"}
        meta = {
            "method": self.method, "target": self.target, "config": self.config,
            "quantity_names": list(self.quantity_names),
            "diagnostics": {k: np.asarray(v).tolist() for k, v in self.diagnostics.items()},
            "cost": self.cost, "warnings": self.warnings, "log_Z": self.log_Z, "log_Z_se": self.log_Z_se,
            "complete": self.complete, "extra": extra,
            "variables": None if self.variables is None else {k: list(v) for k, v in self.variables.items()},
            "coords": self.coords, "dims": {k: list(v) for k, v in self.dims.items()},
        }
        atomic_write(os.path.join(path, "results.json"), json.dumps(meta, indent=1, default=_json_default))

    @classmethod
    def load(cls, path: str) -> "Result":
        """Read a folder written by :meth:`save`."""
        with open(os.path.join(path, "results.json")) as f:
            meta = json.load(f)
        with np.load(os.path.join(path, "samples.npz")) as z:
            arrays = {k: z[k] for k in z.files}
        stats = {k[len("stat__"):]: v for k, v in arrays.items() if k.startswith("stat__")}
        variables = meta.get("variables")
        warmup_stats = {k[len("wstat__"):]: v for k, v in arrays.items() if k.startswith("wstat__")}
        return cls(
            samples=arrays["samples"], quantities=arrays["quantities"],
            quantity_names=tuple(meta["quantity_names"]), stats=stats,
            diagnostics={k: np.asarray(v, dtype=float) for k, v in meta["diagnostics"].items()},
            cost=meta["cost"], warnings=meta["warnings"], method=meta["method"], target=meta["target"],
            config=meta["config"], log_Z=meta.get("log_Z"), log_Z_se=meta.get("log_Z_se"),
            log_weights=arrays.get("log_weights"), complete=meta.get("complete", True),
            extra={k: SavedLeaves(os.path.join(path, v["saved_leaves"]), v["type"])
                   if isinstance(v, dict) and set(v) == {"saved_leaves", "type"} else v
                   for k, v in meta.get("extra", {}).items()},
            reference_draws=arrays.get("reference_draws"),
            variables=None if variables is None else {k: tuple(v) for k, v in variables.items()},
            coords=meta.get("coords", {}), dims={k: tuple(v) for k, v in meta.get("dims", {}).items()},
            warmup_samples=arrays.get("warmup_samples"), warmup_quantities=arrays.get("warmup_quantities"),
            warmup_stats=warmup_stats if "warmup_samples" in arrays else None)


@dataclasses.dataclass(frozen=True)
class SavedLeaves:
    """An entry of ``Result.extra`` that :meth:`Result.save` wrote leaf by leaf (an equinox module such as a trained
    flow): the file of its array leaves and its type.  The part that made the object rebuilds it from a skeleton of
    the same structure (``equinox.tree_deserialise_leaves(path, skeleton)``), e.g.
    :func:`samplax.neural.flows.as_flow` from the Result's ``extra["flow_spec"]``."""

    path: str
    type: str


def _is_module(v) -> bool:
    """An equinox module (a pytree whose structure is code): saved by its leaves, not as JSON."""
    try:
        import equinox as eqx
    except ImportError:  # pragma: no cover - equinox is a dependency
        return False
    return isinstance(v, eqx.Module)


def _safe_var(name: str) -> str:
    return name.replace("[", "_").replace("]", "").replace(".", "_").replace(" ", "_")


def _json_default(o: Any):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    return str(o)


@contextlib.contextmanager
def sigint_deferred():
    """Hold back Ctrl-C (SIGINT) while a file is being written, then raise it.

    A ``KeyboardInterrupt`` inside ``np.savez`` leaves its zip writer half open, and the error
    raised while closing it (``ValueError``) replaces the interrupt, so the run would die instead
    of stopping cleanly with its checkpoint. Only the main thread can install signal handlers;
    elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, Ctrl-C held back."""
    tmp = path + ".tmp"
    with sigint_deferred():
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def atomic_savez(path: str, arrays: dict) -> None:
    """``np.savez`` to ``path`` through a temporary file and a rename, Ctrl-C held back."""
    tmp = path + ".tmp.npz"
    with sigint_deferred():
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
