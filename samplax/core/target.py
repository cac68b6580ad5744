"""The :class:`Target` protocol: an unnormalized log-density with ground truth.

A target acts on a single point of shape ``event_shape`` (vmap outside).  Data
lives in array fields of the equinox Module, so new data never retraces.
:func:`from_energy` is the only place where the sign of an energy appears
(``logdensity = -energy``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """What is known exactly (or to a stated precision) about a target.

    All moments refer to the *reported quantities* ``target.constrain(x)``
    (a flat vector; for most targets the point itself).

    Attributes:
      kind: ``"analytic"``, ``"exact_sampler"``, ``"reference_draws"`` or ``"long_run"``.
      source: where the numbers come from (paper, file, run that produced them).
      version: version string of this ground truth (bump when it changes).
      mean, std: per-quantity posterior mean and standard deviation.
      mean_se, std_se: standard errors of ``mean``/``std`` themselves (0 when analytic).
      kurtosis: per-quantity fourth standardized moment ``E[(x - mean)^4] / std^4``
        where known (None otherwise).  Benchmarks use it for the standard error
        of a sample sd when the draws' own kurtosis estimate is unreliable
        (heavy tails: 3 e^9 for the funnel's ``x_i``).
      log_Z: log normalizing constant of ``exp(logdensity)`` (None if unknown).
      log_Z_se: its standard error.
      names: names of the reported quantities.
    """

    kind: str
    source: str
    version: str = "1"
    mean: Optional[np.ndarray] = None
    std: Optional[np.ndarray] = None
    mean_se: Optional[np.ndarray] = None
    std_se: Optional[np.ndarray] = None
    log_Z: Optional[float] = None
    log_Z_se: float = 0.0
    names: Optional[tuple] = None
    kurtosis: Optional[np.ndarray] = None

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            out[f.name] = v
        return out


class Target(eqx.Module):
    """Abstract target distribution ``p(x) ∝ exp(logdensity(x))``.

    Subclasses define ``logdensity(x)`` for one point of shape
    ``event_shape`` and may override :meth:`sample` (exact sampler),
    :meth:`constrain` (map an unconstrained point to the reported
    quantities), :meth:`ground_truth` and :meth:`provenance`.
    """

    def logdensity(self, x: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define logdensity(x)")

    @property
    def event_shape(self) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def dim(self) -> int:
        """Number of scalar coordinates of one point."""
        return int(math.prod(self.event_shape))

    @property
    def log_Z(self) -> Optional[float]:
        gt = self.ground_truth()
        return None if gt is None else gt.log_Z

    def flat_logdensity(self) -> Callable:
        """``lp(x_flat)``: the log-density of a flat point ``[dim]`` (kernels work on flat vectors)."""
        shape = tuple(self.event_shape)

        def lp(x):
            return self.logdensity(jnp.reshape(x, shape))

        return lp

    def score(self, x: jax.Array) -> jax.Array:
        """Gradient of the log-density (``jax.grad`` unless overridden)."""
        return jax.grad(self.logdensity)(x)

    def energy(self, x: jax.Array) -> jax.Array:
        """``-logdensity(x)``."""
        return -self.logdensity(x)

    @property
    def has_exact_sampler(self) -> bool:
        return type(self).sample is not Target.sample

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """Exact i.i.d. draws of shape ``[n, *event_shape]`` (only for targets that have one)."""
        raise NotImplementedError(f"target {self.name!r} has no exact sampler")

    def constrain(self, x: jax.Array):
        """Reported quantities of a point: a flat vector (the identity by default), or a dict
        ``{name: array}`` of named variables (a model's constrained parameters, e.g.
        :func:`samplax.from_numpyro`); :func:`flatten_quantities` turns either into one flat vector
        (each variable raveled in C order, in the dict's order)."""
        return jnp.reshape(x, (-1,))

    def variables(self) -> Optional[Dict[str, tuple]]:
        """``{name: shape}`` of the named variables :meth:`constrain` returns, in order, or ``None``
        when it returns a flat vector (found with ``jax.eval_shape``, nothing is computed)."""
        if type(self).constrain is Target.constrain:
            return None
        names = []

        def values(x):  # the dict's own order (JAX would return a dict with sorted keys)
            out = self.constrain(x)
            if not isinstance(out, dict):
                return None
            names.extend(out)
            return [jnp.asarray(v) for v in out.values()]

        shapes = jax.eval_shape(values, jax.ShapeDtypeStruct(tuple(self.event_shape), jnp.result_type(float)))
        if shapes is None:
            return None
        return {str(k): tuple(int(s) for s in v.shape) for k, v in zip(names, shapes)}

    def coords_and_dims(self) -> Tuple[Dict[str, Any], Dict[str, tuple]]:
        """ArviZ ``coords`` (``{dim name: values}``) and ``dims`` (``{variable: dim names}``) of the
        named variables; empty by default (ArviZ then names dimensions ``<var>_dim_<i>``)."""
        return {}, {}

    def quantity_names(self) -> tuple:
        """Names of the reported quantities: one per element of each named variable (``theta[0]``,
        ``L[0,1]``, ``mu``) when :meth:`variables` is known, else the ground truth's names, else ``x[i]``."""
        variables = self.variables()
        if variables is not None:
            return element_names(variables)
        gt = self.ground_truth()
        if gt is not None and gt.names is not None:
            return tuple(gt.names)
        return tuple(f"x[{i}]" for i in range(self.dim))

    def nonfinite_terms(self, x: jax.Array) -> tuple:
        """Names of the terms of the log-density that are not finite at ``x`` (a model's sites), for the
        error when no finite initial point is found; empty when the target cannot tell."""
        return ()

    def ground_truth(self) -> Optional[GroundTruth]:
        """Ground truth for this target, or None."""
        return None

    def provenance(self) -> dict:
        """Where this target's definition comes from (source, variant, version)."""
        return {"source": "user", "version": "1"}

    def initial_point(self, key: jax.Array) -> jax.Array:
        """Stan-style initial point: uniform on [-2, 2] in unconstrained space."""
        return jax.random.uniform(key, self.event_shape, minval=-2.0, maxval=2.0)


def element_names(variables: Dict[str, tuple]) -> tuple:
    """One name per scalar of the named variables ``{name: shape}``, C order, 0-based:
    ``mu``, ``theta[0]``, ..., ``L[0,1]``."""
    out = []
    for name, shape in variables.items():
        if len(shape) == 0:
            out.append(name)
        else:
            out += [f"{name}[{','.join(str(i) for i in idx)}]" for idx in np.ndindex(*shape)]
    return tuple(out)


def flatten_quantities(q) -> jax.Array:
    """The flat quantity vector of what :meth:`Target.constrain` returned: a dict of named
    arrays is raveled (C order) and concatenated in its order; an array is raveled."""
    if isinstance(q, dict):
        parts = [jnp.reshape(jnp.asarray(v), (-1,)) for v in q.values()]
        if not parts:
            return jnp.zeros((0,), jnp.result_type(float))
        dtype = jnp.result_type(*parts)
        return jnp.concatenate([p.astype(dtype) for p in parts])
    return jnp.reshape(q, (-1,))


def _check_event_shape(event_shape, fn_name: str) -> tuple:
    """``event_shape`` as a tuple of positive ints; a ValueError naming it for anything else.

    Accepted: an int or a tuple/list of ints (numpy integers too).  Refused: strings (``'2'`` is not
    the shape ``(2,)``), floats (``2.0``, ``2.5``), bools, other objects, empty, zero or negative sizes.
    """
    def as_int(v):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(
                f"{fn_name}: event_shape must be an int or a tuple of ints, got {event_shape!r} "
                f"({type(v).__name__} {v!r} is not an int)")
        return int(v)

    if isinstance(event_shape, np.ndarray) and event_shape.ndim == 1:
        event_shape = event_shape.tolist()
    if isinstance(event_shape, (tuple, list)):
        shape = tuple(as_int(s) for s in event_shape)
    else:
        shape = (as_int(event_shape),)
    if len(shape) == 0 or any(s <= 0 for s in shape):
        raise ValueError(
            f"{fn_name}: event_shape must be a non-empty tuple of positive ints, got {event_shape!r}"
        )
    return shape


class FunctionTarget(Target):
    """A target defined by a user function ``fn(x) -> scalar`` (log-density)."""

    fn: Callable = eqx.field(static=True)
    shape: tuple = eqx.field(static=True)
    label: str = eqx.field(static=True)
    truth: Any = eqx.field(static=True, default=None)
    sampler: Optional[Callable] = eqx.field(static=True, default=None)

    def logdensity(self, x):
        return self.fn(x)

    @property
    def event_shape(self):
        return self.shape

    @property
    def name(self):
        return self.label

    @property
    def has_exact_sampler(self) -> bool:
        return self.sampler is not None

    def sample(self, key, n):
        if self.sampler is None:
            return Target.sample(self, key, n)
        return self.sampler(key, n)

    def ground_truth(self):
        return self.truth


def _validate_fn(fn, event_shape, fn_name, check_indexing=True, label=None):
    if not callable(fn):
        raise TypeError(f"{fn_name}: fn must be callable, got {type(fn).__name__}")
    point = jax.ShapeDtypeStruct(event_shape, jnp.result_type(float))
    try:
        out = jax.eval_shape(fn, point)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"{fn_name}: calling fn on one point of shape {event_shape} failed: {e}"
        ) from e
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(
            f"{fn_name}: fn must return a scalar for one point of shape {event_shape}, "
            f"got shape {getattr(out, 'shape', type(out))}; samplax vmaps outside, "
            "so write fn for a single point"
        )
    if check_indexing:
        _check_indexing(fn, point, fn_name, label or getattr(fn, "__name__", "fn"))


def _check_indexing(fn, point, fn_name, label):
    """Evaluate ``fn`` once at the zero point with JAX's index checks on (``checkify.index_checks``).

    JAX clamps out-of-bounds indices instead of failing (``x[2]`` of a 2-vector reads ``x[1]``),
    so a log-density written for the wrong ``event_shape`` would run and sample the wrong
    distribution.  Every gather and dynamic slice is checked here, in one compiled evaluation.
    A function that cannot be checkified (an unsupported primitive) is not checked.
    """
    from jax.experimental import checkify

    try:
        checked = jax.jit(checkify.checkify(fn, errors=checkify.index_checks))
        err, _ = checked(jnp.zeros(point.shape, point.dtype))
        msg = err.get()
    except Exception:  # noqa: BLE001 - the check is best effort; fn itself was validated above
        return
    if msg is not None:
        first = msg.strip().splitlines()[0].rstrip(". ") if msg.strip() else msg
        what = "energy function" if fn_name == "from_energy" else "log-density"
        raise ValueError(
            f"{fn_name}: the {what} {label!r} indexes outside its point of event_shape {point.shape}: "
            f"{first} (JAX clamps such indices silently, so it would sample the wrong distribution). "
            "Fix the indexing or the event_shape; pass check_indexing=False if the out-of-bounds access "
            "is intended (jnp.take(..., mode='clip') or .at[].get(mode='fill'))")


def from_logdensity(fn: Callable, event_shape, *, name: Optional[str] = None,
                    ground_truth: Optional[GroundTruth] = None,
                    sampler: Optional[Callable] = None, check_indexing: bool = True) -> FunctionTarget:
    """Wrap a log-density ``fn(x) -> scalar`` for one point of shape ``event_shape``.

    ``fn`` is checked once here: its output shape (``jax.eval_shape``) and, with
    ``check_indexing``, one evaluation at the zero point with JAX's index checks
    (``jax.experimental.checkify``), since JAX clamps an out-of-bounds index instead of failing.

    Args:
      fn: unnormalized log-density of a single point.
      event_shape: shape of one point: an int or a tuple of positive ints.
      name: display name (defaults to ``fn.__name__``).
      ground_truth: optional :class:`GroundTruth` (moments, log Z) for checks.
      sampler: optional exact sampler ``sampler(key, n) -> [n, *event_shape]``.
      check_indexing: raise a ValueError when ``fn`` indexes outside its point (default True;
        False for functions that use out-of-bounds indices on purpose with ``mode='clip'``/``'fill'``).
    """
    event_shape = _check_event_shape(event_shape, "from_logdensity")
    label = name or getattr(fn, "__name__", "target")
    _validate_fn(fn, event_shape, "from_logdensity", check_indexing, label)
    return FunctionTarget(fn=fn, shape=event_shape, label=label, truth=ground_truth, sampler=sampler)


def from_energy(energy_fn: Callable, event_shape, *, name: Optional[str] = None,
                temperature: float = 1.0, ground_truth: Optional[GroundTruth] = None,
                sampler: Optional[Callable] = None, check_indexing: bool = True) -> FunctionTarget:
    """Target with ``logdensity(x) = -energy_fn(x) / temperature``.

    This is the only place in samplax where the sign of an energy appears.  ``energy_fn`` is
    checked as in :func:`from_logdensity` (output shape; out-of-bounds indexing unless
    ``check_indexing=False``).
    """
    event_shape = _check_event_shape(event_shape, "from_energy")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"from_energy: temperature must be a positive number, got {temperature!r}")
    label = name or getattr(energy_fn, "__name__", "energy")
    _validate_fn(energy_fn, event_shape, "from_energy", check_indexing, label)
    inv_t = 1.0 / float(temperature)

    def logdensity(x):
        return -energy_fn(x) * inv_t

    return FunctionTarget(fn=logdensity, shape=event_shape, label=label, truth=ground_truth, sampler=sampler)
