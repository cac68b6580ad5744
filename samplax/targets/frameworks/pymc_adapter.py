"""PyMC models as samplax targets: :func:`from_pymc`.

The target is the model's posterior on PyMC's unconstrained space: PyMC samples
the *value variables* ``model.value_vars`` (a bounded variable ``tau`` is
sampled as ``tau_log__`` and so on, through ``model.rvs_to_transforms``), and

    log p(z) = model.logp(jacobian=True)

is the joint log-density of the value variables with the log-Jacobians of the
transforms (Abril-Pla et al. 2023, "PyMC: a modern, and comprehensive
probabilistic programming framework in Python", PeerJ Comput. Sci. 9:e1516).
The graph is compiled to JAX by PyTensor's JAX backend
(``pymc.sampling.jax.get_jaxified_graph``, as ``pymc.sampling.jax`` does for
NumPyro's and BlackJAX's samplers).  :meth:`PyMCTarget.constrain` returns the
free random variables and the ``pm.Deterministic`` quantities by name
(``model.replace_rvs_by_values``, the back-transforms included).

Observed data and ``pm.Data`` containers are inputs of the compiled graph and
array fields of the target, not constants inside it: after ``pm.set_data`` (or
for a model built again with the same structure and data of the same shapes)
``from_pymc`` returns a target that reuses the JAX function, so samplax
compiles nothing new.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.caches import register
from samplax.core.target import Target
from samplax.targets.frameworks.common import (
    HostOnly, Layout, LayoutNamed, join_flat, shape_tuple, short, split_flat,
)


class PyMCTarget(LayoutNamed, Target):
    """A PyMC model's posterior on PyMC's unconstrained space (log-Jacobians included).

    Built by :func:`from_pymc`.  ``data`` are the values of the model's data (``pm.Data``
    containers, then observed values) in the order of ``data_names``; ``logp_fn`` and
    ``constrain_fn`` are the JAX functions of the value variables and the data.
    """

    data: tuple
    logp_fn: Callable = eqx.field(static=True)
    constrain_fn: Callable = eqx.field(static=True)
    latent: Layout = eqx.field(static=True)
    latent_rvs: Tuple[str, ...] = eqx.field(static=True)
    reported: Layout = eqx.field(static=True)
    data_names: Tuple[str, ...] = eqx.field(static=True)
    site_dims: Tuple[Tuple[str, Tuple[str, ...]], ...] = eqx.field(static=True)
    site_coords: Tuple[Tuple[str, tuple], ...] = eqx.field(static=True)
    label: str = eqx.field(static=True)
    host: HostOnly = eqx.field(static=True)

    def _values(self, x, fn):
        x = jnp.asarray(x)
        if x.shape != self.event_shape:
            raise ValueError(f"{self.name}.{fn}: x must be one unconstrained point of shape {self.event_shape} "
                             f"(vmap outside for batches), got shape {x.shape}")
        vals = split_flat(self.latent, x)
        return [vals[n] for n, _ in self.latent]

    @property
    def latent_names(self) -> Tuple[str, ...]:
        """The free random variable of each unconstrained block (value variable), in order."""
        return self.latent_rvs

    def unconstrained_params(self, x) -> Dict[str, jax.Array]:
        """``{value variable: value}`` of one flat point (PyMC's names: ``tau_log__``)."""
        return dict(zip([n for n, _ in self.latent], self._values(x, "unconstrained_params")))

    def logdensity(self, x):
        """``model.logp()`` (log-Jacobians included) at the value variables of ``x``."""
        out = self.logp_fn(*self._values(x, "logdensity"), *self.data)
        return jnp.reshape(out[0], ())

    def constrain(self, x):
        """``{name: value}`` of the free random variables and deterministics at one flat point."""
        outs = self.constrain_fn(*self._values(x, "constrain"), *self.data)
        return {name: jnp.reshape(o, shape) for (name, shape), o in zip(self.reported, outs)}

    def unconstrain(self, values: Dict[str, Any]) -> jax.Array:
        """The flat unconstrained point of constrained values ``{free variable: value}`` (PyMC's
        forward transforms, ``pymc.initial_point.make_initial_point_fn``)."""
        from pymc.initial_point import make_initial_point_fn

        model = self.host.value
        free = [rv.name for rv in model.free_RVs]
        missing = [n for n in free if n not in values]
        if missing:
            raise ValueError(f"{self.name}.unconstrain: values are missing for the free variables {missing}")
        fn = make_initial_point_fn(model=model, overrides={n: np.asarray(values[n]) for n in free},
                                   jitter_rvs=set(), return_transformed=True)
        return join_flat(self.latent, fn(0), f"{self.name}.unconstrain")

    def variables(self):
        return dict(self.reported)

    def nonfinite_terms(self, x) -> tuple:
        """The random variables whose log-density term is not finite at the flat point ``x`` (host-side
        diagnosis of a failed start; evaluated on the model's current data)."""
        model = self.host.value
        return _nonfinite_terms(model, list(model.value_vars), [np.asarray(v) for v in self._values(x, "nonfinite_terms")])

    def coords_and_dims(self):
        return {k: list(v) for k, v in self.site_coords}, dict(self.site_dims)

    def provenance(self):
        return {"source": "PyMC model", "model": self.label,
                "space": "PyMC's unconstrained value variables (model.rvs_to_transforms), log-Jacobian included",
                "data": ", ".join(self.data_names), "version": "1"}


class _RecentFunctions:
    """The JAX functions of recent models, ``entries`` of ``(inputs, outputs, functions)``, most recent
    last, reused for a model of the same structure; emptied by ``samplax.clear_caches``."""

    size = 16

    def __init__(self):
        self.entries: list = []

    def clear(self) -> None:
        self.entries.clear()


_FUNCTIONS = register(_RecentFunctions())


def _hashable(values) -> tuple:
    out = []
    for v in np.asarray(values, dtype=object).reshape(-1):
        out.append(v.item() if hasattr(v, "item") else v)
    return tuple(out)


def _jax_functions(inputs, outputs):
    """``(logp_fn, constrain_fn)`` for the graph ``outputs = [logp, *reported]`` of ``inputs`` (value
    variables, then data); a graph equal to a recent one (same operations and constants, inputs in
    the same places) reuses its functions, so samplax compiles nothing new."""
    from pymc.sampling.jax import get_jaxified_graph
    from pytensor.graph.basic import equal_computations

    for entry in reversed(_FUNCTIONS.entries):
        e_inputs, e_outputs, fns = entry
        if (len(e_inputs) == len(inputs) and len(e_outputs) == len(outputs)
                and all(a.type == b.type for a, b in zip(inputs, e_inputs))
                and equal_computations(list(outputs), list(e_outputs), in_xs=list(inputs), in_ys=list(e_inputs))):
            return fns
    fns = (get_jaxified_graph(inputs=list(inputs), outputs=[outputs[0]]),
           get_jaxified_graph(inputs=list(inputs), outputs=list(outputs[1:])))
    _FUNCTIONS.entries.append((list(inputs), list(outputs), fns))
    del _FUNCTIONS.entries[:-_FUNCTIONS.size]
    return fns


def _graph_inputs(graphs):
    try:
        from pytensor.graph.traversal import graph_inputs
    except ImportError:  # pragma: no cover - pytensor before 2.31
        from pytensor.graph.basic import graph_inputs
    return graph_inputs(graphs)


def from_pymc(model, *, name: str | None = None) -> PyMCTarget:
    """The posterior of the PyMC model ``model`` as a samplax target.

    The target's point is PyMC's value variables on the unconstrained space (``model.value_vars``,
    raveled and concatenated in order), its log-density ``model.logp()`` with the log-Jacobians of
    the transforms, compiled to JAX; ``constrain`` returns ``{name: value}`` of the free random
    variables and deterministics, so ``Result.posterior`` and ``to_arviz()`` carry the model's
    names, coords and dims.  Observed data and ``pm.Data`` values are array fields of the target
    (after ``pm.set_data`` with arrays of the same shapes nothing recompiles).

    Refused with a ``ValueError`` naming the variable: a discrete free variable; observed data whose
    shape does not match the distribution; a model whose log-density graph cannot be built.  The
    checks trace shapes only (nothing is computed here); when ``samplax.sample`` finds no initial
    point with a finite log-density, its error names the variables whose terms are not finite
    (:meth:`PyMCTarget.nonfinite_terms`).  Note: PyTensor's JAX backend sets ``jax_enable_x64`` to
    match ``pytensor.config.floatX`` (float64 by default) when it is first used, for the whole process.
    """
    try:
        import pymc as pm
        import pytensor
        import pytensor.tensor as pt
        from pytensor.compile.sharedvalue import SharedVariable
        from pytensor.graph.basic import Constant
        from pytensor.tensor.type import discrete_dtypes
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("from_pymc needs PyMC: pip install 'samplax[pymc]'") from e
    if not isinstance(model, pm.Model):
        raise TypeError(f"from_pymc: model must be a pymc.Model, got {type(model).__name__}")
    label = name or model.name or "pymc_model"
    for rv in model.free_RVs:
        if rv.type.dtype in discrete_dtypes:
            raise ValueError(
                f"from_pymc: model {label!r} has a discrete free variable {rv.name!r} ({rv.owner.op}, dtype "
                f"{rv.type.dtype}); samplax samples continuous unknowns only: marginalize it out "
                "(pm.Mixture, pm.Potential with a logsumexp, or pymc_experimental's marginalize) or observe it")
    if not model.free_RVs:
        raise ValueError(f"from_pymc: model {label!r} has no free variable: nothing to sample")
    value_vars = list(model.value_vars)
    try:
        ip = model.initial_point(random_seed=0)
        logp = model.logp()
        reported_rvs = list(model.free_RVs) + list(model.deterministics)
        reported_graphs = model.replace_rvs_by_values(reported_rvs)
    except Exception as e:  # noqa: BLE001 - re-raised with the model named
        raise ValueError(f"from_pymc: model {label!r}: building its log-density failed: {short(e)}") from e
    ip_values = [np.asarray(ip[v.name]) for v in value_vars]

    # data: pm.Data containers, then observed values that are constants
    data_nodes, data_names = [], []
    for v in getattr(model, "data_vars", []):
        if isinstance(v, SharedVariable):
            data_nodes.append(v)
            data_names.append(v.name)
    for rv in model.observed_RVs:
        obs = model.rvs_to_values[rv]
        if isinstance(obs, Constant) and obs not in data_nodes:
            data_nodes.append(obs)
            data_names.append(f"{rv.name} (observed)")
    data_values = [np.asarray(v.get_value() if isinstance(v, SharedVariable) else v.data) for v in data_nodes]

    _check_observed(model, label, value_vars, ip_values)

    new_inputs = [pt.tensor(dtype=v.type.dtype, shape=np.shape(val), name=n)
                  for v, val, n in zip(data_nodes, data_values, data_names)]
    replace = dict(zip(data_nodes, new_inputs))
    graphs = [logp] + list(reported_graphs)
    for v in _graph_inputs(graphs):  # other shared variables (dimension lengths, ...) become constants
        if isinstance(v, SharedVariable) and v not in replace:
            replace[v] = pt.constant(v.get_value(), name=v.name, dtype=v.type.dtype)
    outputs = pytensor.clone_replace(graphs, replace=replace)
    inputs = value_vars + new_inputs
    logp_fn, constrain_fn = _jax_functions(inputs, outputs)

    abstract = [jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for v in ip_values + data_values]
    try:
        reported_values = jax.eval_shape(constrain_fn, *abstract)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"from_pymc: model {label!r}: its constrained variables cannot be computed: "
                         f"{short(e)}") from e

    latent = tuple((v.name, shape_tuple(np.shape(val))) for v, val in zip(value_vars, ip_values))
    reported = tuple((rv.name, shape_tuple(np.shape(val))) for rv, val in zip(reported_rvs, reported_values))
    dims_map = getattr(model, "named_vars_to_dims", {}) or {}
    site_dims, used = [], set()
    for n, shape in reported:
        d = dims_map.get(n)
        if d and len(d) == len(shape) and all(isinstance(x, str) for x in d):
            site_dims.append((n, tuple(d)))
            used.update(d)
    site_coords = []
    for dim, vals in (model.coords or {}).items():
        if dim in used and vals is not None:
            site_coords.append((dim, _hashable(vals)))
    data = tuple(jnp.asarray(v) for v in data_values)
    latent_rvs = tuple(model.values_to_rvs[v].name for v in value_vars)
    return PyMCTarget(data=data, logp_fn=logp_fn, constrain_fn=constrain_fn, latent=latent, latent_rvs=latent_rvs,
                      reported=reported,
                      data_names=tuple(data_names), site_dims=tuple(site_dims), site_coords=tuple(site_coords),
                      label=label, host=HostOnly(model))


def _check_observed(model, label, value_vars, ip_values):
    """Every observed variable's element-wise log-density has the shape of its data (less the event
    dimensions); a shape mismatch is a ValueError naming the variable.  Shapes only
    (``jax.eval_shape``): nothing is computed."""
    from pymc.sampling.jax import get_jaxified_graph

    observed = list(model.observed_RVs)
    if not observed:
        return
    abstract = [jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for v in ip_values]
    try:
        fn = get_jaxified_graph(inputs=list(value_vars), outputs=list(model.logp(vars=observed, sum=False)))
        shapes = [tuple(s.shape) for s in jax.eval_shape(fn, *abstract)]
    except Exception as e:  # noqa: BLE001 - find the variable, one at a time
        for rv in observed:
            try:
                one = get_jaxified_graph(inputs=list(value_vars), outputs=list(model.logp(vars=[rv], sum=False)))
                jax.eval_shape(one, *abstract)
            except Exception as e_rv:  # noqa: BLE001
                raise ValueError(
                    f"from_pymc: model {label!r}: the log-density of the observed variable {rv.name!r} (data of "
                    f"shape {_observed_shape(model, rv)}) cannot be evaluated; check the data's shape: "
                    f"{short(e_rv)}") from e_rv
        raise ValueError(f"from_pymc: model {label!r}: the observed variables' log-densities cannot be "
                         f"evaluated: {short(e)}") from e
    for rv, lp_shape in zip(observed, shapes):
        obs_shape = _observed_shape(model, rv)
        if len(lp_shape) > len(obs_shape) or obs_shape[:len(lp_shape)] != lp_shape:
            raise ValueError(f"from_pymc: model {label!r}: the observed data of {rv.name!r} have shape {obs_shape}, "
                             f"but its distribution's log-density has shape {lp_shape}: they broadcast into each "
                             "other; check the data's shape")


def _observed_shape(model, rv) -> tuple:
    obs = model.rvs_to_values[rv]
    if hasattr(obs, "get_value"):
        return tuple(np.shape(obs.get_value()))
    if hasattr(obs, "data"):
        return tuple(np.shape(obs.data))
    try:
        return tuple(int(s) for s in obs.shape.eval())
    except Exception:  # noqa: BLE001 - an expression whose shape cannot be evaluated alone
        return ()


def _nonfinite_terms(model, value_vars, values) -> tuple:
    """The random variables whose log-density term (log-Jacobian included) is not finite at ``values``."""
    from pymc.sampling.jax import get_jaxified_graph

    out = []
    for rv in list(model.free_RVs) + list(model.observed_RVs):
        try:
            fn = get_jaxified_graph(inputs=list(value_vars), outputs=[model.logp(vars=[rv], sum=True)])
            ok = bool(np.isfinite(np.asarray(fn(*values)[0])))
        except Exception:  # noqa: BLE001 - a term that cannot be evaluated is not finite
            ok = False
        if not ok:
            out.append(rv.name)
    return tuple(out)
