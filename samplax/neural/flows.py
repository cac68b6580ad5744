"""Normalizing flows on equinox (built with ``flowjax``): the shared flow builder of the flow-based learned
samplers (``flow``, ``fab``, ``neutra``, the stochastic normalizing flows) and the flow as a reference
distribution of the particle methods (``smc``, ``nested_sampling``).

A flow here is a flowjax ``Transformed`` distribution ``x = loc + s * T(z)``, ``z ~ N(0, I)``: ``T`` a stack
of ``layers`` learned bijections (each followed by a fixed permutation, flowjax's default), then a fixed
(non-trainable) elementwise affine map to the base ``N(loc, s^2 I)``.  The last layer of every conditioner
network starts at zero, which makes each learned layer the identity (flowjax's transformers are built from
the conditioner's output added to their identity parameters), so an untrained flow is that Gaussian.  Its density is
``log q(x) = log N(z; 0, I) - log|det dT/dz| - sum log s`` (change of variables).  Kinds:

* ``"maf"``: masked autoregressive flow (Papamakarios, Pavlakou & Murray 2017) whose per-coordinate
  transformer is a monotone rational-quadratic spline with ``knots`` bins on ``[-interval, interval]``
  (identity outside, derivative 1 at the ends: continuously differentiable; Durkan, Bekasov, Murray &
  Papamakarios 2019, neural spline flows; :func:`linear_tail_spline`) and whose
  conditioner is a MADE network (``width`` x ``depth``);
* ``"coupling"``: coupling layers (Dinh, Sohl-Dickstein & Bengio 2017) with the same spline transformer on
  half of the coordinates, conditioned on the other half (an MLP ``width`` x ``depth``);
* ``"realnvp"``: RealNVP, coupling layers with an affine transformer (scale bounded below by 0.01).

``invert=False`` (the default) makes sampling one pass (``sample_and_log_prob`` as used by reverse-KL
training and importance sampling); the density of a given point then inverts each autoregressive layer
coordinate by coordinate (``dim`` passes for ``"maf"``; coupling kinds are one pass both ways).
"""
from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import paramax
from flowjax.bijections import Affine, Chain, RationalQuadraticSpline
from flowjax.distributions import AbstractDistribution, StandardNormal, Transformed
from flowjax.flows import coupling_flow, masked_autoregressive_flow

from samplax.core.result import SavedLeaves

#: The flow kinds :func:`make_flow` builds.
FLOW_KINDS = ("maf", "coupling", "realnvp")


def make_flow(key, dim: int, *, kind: str = "maf", layers: int = 4, knots: int = 8, width: int = 64,
              depth: int = 1, interval: float = 4.0, scale=1.0, loc=0.0, invert: bool = False) -> Transformed:
    """A normalizing flow on ``R^dim`` whose base is ``N(loc, scale^2 I)`` (see the module for the kinds).

    Args:
      key: initialises the networks (and the permutations).
      dim: the dimension (``>= 2`` for the coupling kinds, ``>= 1`` for ``"maf"``).
      kind: ``"maf"``, ``"coupling"`` or ``"realnvp"``.
      layers: learned bijections (each followed by a fixed permutation).
      knots: spline bins (``"maf"``, ``"coupling"``).
      width, depth: the conditioner networks' hidden width and number of hidden layers.
      interval: the splines act on ``[-interval, interval]`` in the standardised coordinates ``(x - loc) / s``
        and are the identity outside (so the tails stay Gaussian with sd ``s``).
      scale, loc: the base ``N(loc, scale^2 I)`` (scalars or ``[dim]``): the fixed affine map after ``T``.
      invert: flowjax's ``invert``: False makes sampling one pass, True makes ``log_prob`` one pass.

    Returns a flowjax ``Transformed`` distribution (``sample``, ``log_prob``, ``sample_and_log_prob``); the
    affine map is wrapped ``paramax.non_trainable``, so :func:`split_flow` leaves it out of the parameters.
    """
    if kind not in FLOW_KINDS:
        raise ValueError(f"make_flow: kind={kind!r} is not one of {list(FLOW_KINDS)}")
    for name, v, lo in (("dim", dim, 2 if kind != "maf" else 1), ("layers", layers, 1), ("knots", knots, 1),
                        ("width", width, 1), ("depth", depth, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            why = " (a coupling layer splits the coordinates in two halves)" if name == "dim" else ""
            raise ValueError(f"make_flow: {name}={v!r} must be an int >= {lo}{why}")
    if not (np.isfinite(interval) and interval > 0):
        raise ValueError(f"make_flow: interval={interval!r} must be a finite number > 0")
    s = np.broadcast_to(np.asarray(scale, np.float64), (dim,))
    m = np.broadcast_to(np.asarray(loc, np.float64), (dim,))
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"make_flow: scale={scale!r} must be positive and finite (a scalar or [dim])")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"make_flow: loc={loc!r} must be finite (a scalar or [dim])")
    dtype = jnp.result_type(float)
    base = StandardNormal((dim,))
    if kind == "realnvp":
        transformer = None  # flowjax's affine transformer with scale >= 0.01
    else:
        transformer = linear_tail_spline(int(knots), float(interval))
    build = masked_autoregressive_flow if kind == "maf" else coupling_flow
    flow = build(key, base_dist=base, transformer=transformer, flow_layers=int(layers), nn_width=int(width),
                 nn_depth=int(depth), invert=bool(invert))
    affine = paramax.non_trainable(Affine(jnp.asarray(m, dtype), jnp.asarray(s, dtype)))
    flow = Transformed(base, Chain([_zero_last_layers(flow.bijection), affine]))
    # flowjax's layers hold closures made anew by each build: the first build's non-array part serves every later
    # flow of the same configuration, so that flows of one configuration compare equal as static data (the
    # engine's compiled programs are cached by the static part of a target, e.g. neutra's LatentTarget)
    arrays, static = eqx.partition(flow, eqx.is_array)
    config = (int(dim), kind, int(layers), int(knots), int(width), int(depth), float(interval), bool(invert),
              str(dtype), jax.tree.structure(arrays))
    return eqx.combine(arrays, _SKELETONS.setdefault(config, static))


#: The non-array part of the flows built so far, by configuration (see the end of :func:`make_flow`).
_SKELETONS: dict = {}


class StaticPart:
    """A flow's non-array part as hashable static data, with the structure of its arrays: flowjax's modules
    hold closures and dicts (also in the array half's metadata), which neither hash nor compare by value.
    :func:`split_arrays` gives ``(leaves, StaticPart)``: a flat tuple of arrays (the traced part) and this.  Two
    are equal when they hold the same objects (the same structures and leaves by identity): flows of one
    :func:`make_flow` configuration share theirs.  The engine caches compiled programs by such static data
    (a target's static part)."""

    __slots__ = ("tree", "treedef", "_key")

    def __init__(self, tree, treedef):
        self.tree, self.treedef = tree, treedef
        leaves, static_def = jax.tree.flatten(tree, is_leaf=lambda x: x is None)
        self._key = (str(treedef), str(static_def), tuple(id(leaf) for leaf in leaves))

    def __eq__(self, other):
        return isinstance(other, StaticPart) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def combine(self, leaves):
        """The flow from the tuple of its arrays (as :func:`split_arrays` gave them)."""
        return eqx.combine(jax.tree.unflatten(self.treedef, leaves), self.tree)


def split_arrays(flow) -> tuple:
    """``(leaves, static)``: the flow's arrays as a flat tuple and its :class:`StaticPart`
    (``static.combine(leaves)`` rebuilds it)."""
    arrays, static = eqx.partition(flow, eqx.is_array)
    leaves, treedef = jax.tree.flatten(arrays)
    return tuple(leaves), StaticPart(static, treedef)


_MIN_DERIVATIVE = 1e-3


def _inner_derivatives(arr):
    """The spline's knot derivatives: ``softplus(arr) + 1e-3`` inside, exactly 1 at both ends."""
    one = jnp.ones(arr.shape[:-1] + (1,), arr.dtype)
    return jnp.concatenate([one, jax.nn.softplus(arr) + _MIN_DERIVATIVE, one], axis=-1)


def linear_tail_spline(knots: int, interval: float) -> RationalQuadraticSpline:
    """flowjax's rational-quadratic spline on ``[-interval, interval]`` with its end derivatives fixed at 1
    (Durkan et al. 2019's linear tails): the map and its derivative are continuous where it meets the identity
    outside the interval, so ``log q`` has no jumps there (NeuTra's chains and HMC moves need a smooth density).
    Learned: the ``knots + 1`` bin widths and heights and the ``knots - 1`` inner derivatives; zero parameters
    give the identity."""
    spline = RationalQuadraticSpline(knots=knots, interval=interval, min_derivative=_MIN_DERIVATIVE)
    init = jnp.full((knots - 1,), float(paramax.utils.inv_softplus(1.0 - _MIN_DERIVATIVE)))
    return eqx.tree_at(lambda t: t.derivatives, spline, paramax.Parameterize(_inner_derivatives, init))


def _zero_last_layers(tree):
    """Every ``eqx.nn.MLP`` in ``tree`` with its last layer's weights and bias set to zero."""
    def fix(node):
        if not isinstance(node, eqx.nn.MLP):
            return node
        last = jax.tree.map(lambda a: jnp.zeros_like(a) if eqx.is_inexact_array(a) else a, node.layers[-1])
        return eqx.tree_at(lambda mlp: mlp.layers[-1], node, last)

    return jax.tree.map(fix, tree, is_leaf=lambda n: isinstance(n, eqx.nn.MLP))


def is_trainable(leaf) -> bool:
    """flowjax's filter: an inexact array outside a ``paramax.NonTrainable`` wrapper."""
    return eqx.is_inexact_array(leaf)


def split_flow(flow) -> tuple:
    """``(params, static)``: the trainable arrays of ``flow`` and the rest (``eqx.combine(params, static)``
    rebuilds it); arrays under ``paramax.non_trainable`` stay in ``static``."""
    return eqx.partition(flow, eqx.is_inexact_array, is_leaf=lambda x: isinstance(x, paramax.NonTrainable))


def sample_and_log_q(flow, key, n: int):
    """``n`` draws of ``flow`` and their log-densities ``(x [n, d], log q [n])`` (draw ``j`` from
    ``fold_in(key, j)``; differentiable in the flow's parameters: the reparameterization trick)."""
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n))
    flow = paramax.unwrap(flow)
    return jax.vmap(lambda k: flow.sample_and_log_prob(k))(keys)


def log_q(flow, x):
    """``log q(x)`` of one point ``x [d]`` (or a batch ``[n, d]``)."""
    return paramax.unwrap(flow).log_prob(x)


def as_flow(value: Any, dim: int, what: str = "reference"):
    """A flowjax distribution on ``R^dim`` from ``value``: a flowjax ``AbstractDistribution`` itself, or a
    :class:`~samplax.core.result.Result` of a flow-based method (its ``extra["flow"]``).  ``ValueError``
    naming ``what`` otherwise."""
    flow = value
    extra = getattr(value, "extra", None)
    if not isinstance(value, AbstractDistribution) and isinstance(extra, dict):
        flow = extra.get("flow")
        if flow is None:
            raise ValueError(f"{what}: the Result of method {getattr(value, 'method', '?')!r} carries no trained "
                             "flow (extra['flow']); give a Result of 'flow', 'fab' or 'neutra', or a flowjax "
                             "distribution")
        if isinstance(flow, SavedLeaves):  # a Result read back by Result.load: rebuild the flow from its spec
            spec = extra.get("flow_spec")
            if not isinstance(spec, dict):
                raise ValueError(f"{what}: the saved Result's flow has no extra['flow_spec'] to rebuild it from")
            flow = load_flow(flow.path, spec)
    if not isinstance(flow, AbstractDistribution):
        raise ValueError(f"{what}: expected a flowjax distribution or the Result of a flow-based method, got "
                         f"{type(value).__name__}")
    if tuple(flow.shape) != (dim,) or flow.cond_shape is not None:
        raise ValueError(f"{what}: the flow's event shape {tuple(flow.shape)} (condition shape {flow.cond_shape}) "
                         f"does not fit the target's flat dimension {dim}: an unconditional flow on R^{dim} is "
                         "needed")
    return flow


def load_flow(path: str, spec: dict):
    """The flow that :meth:`samplax.core.result.Result.save` wrote leaf by leaf to ``path``: a skeleton from
    :func:`make_flow` with ``spec`` (the Result's ``extra["flow_spec"]``: ``dim`` and make_flow's keywords) and the
    saved leaves (``equinox.tree_deserialise_leaves``)."""
    spec = dict(spec)
    for k in ("scale", "loc"):
        if isinstance(spec.get(k), list):
            spec[k] = np.asarray(spec[k])
    skeleton = make_flow(jax.random.key(0), **spec)
    return eqx.tree_deserialise_leaves(path, skeleton)


class FlowReference(eqx.Module):
    """A normalizing flow as the normalized reference of the particle methods (``smc``'s tempering start,
    ``nested_sampling``'s prior): the interface of :class:`samplax.smc.paths.GaussianReference`.

    ``logdensity(x)`` is the flow's ``log q(x)`` (normalized, so ``Z_0 = 1`` and log Z stays that of the
    target), ``sample(key, n)`` draws ``n`` points, and ``mean`` / ``scale`` are the flow's mean and standard
    deviation per coordinate, estimated from draws when the reference is made (the particle methods read
    them for the dimension, the dtype and a starting scale of their moves).  Its array leaves are the
    flow's arrays and the moments; the flow's structure is static, so a reference passes through ``jit`` as an
    argument.
    """

    params: Any
    static: StaticPart = eqx.field(static=True)
    mean: jax.Array
    scale: jax.Array

    def __init__(self, flow, *, key=None, num_moment_draws: int = 4096):
        self.params, self.static = split_arrays(flow)
        key = jax.random.key(0) if key is None else key
        x, _ = eqx.filter_jit(lambda f, k: sample_and_log_q(f, k, num_moment_draws))(flow, key)
        self.mean = jnp.mean(x, axis=0)
        self.scale = jnp.std(x, axis=0)

    @property
    def flow(self):
        return paramax.unwrap(self.static.combine(self.params))

    def logdensity(self, x):
        """``log q(x)`` for one point ``[d]``."""
        return self.flow.log_prob(x)

    def sample(self, key, n: int):
        """``n`` draws ``[n, d]``."""
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n))
        flow = self.flow
        return jax.vmap(lambda k: flow.sample(k))(keys).astype(self.mean.dtype)
