"""NumPyro models as samplax targets: :func:`from_numpyro`.

The target is the model's posterior on NumPyro's unconstrained space: every
latent ``numpyro.sample`` site ``s`` with support ``S`` is ``T_s(z_s)`` with
``T_s = numpyro.distributions.transforms.biject_to(S)`` (the transform NumPyro's
own HMC/NUTS uses), and

    log p(z) = sum_sites log p_site(value) + sum_latent log |det J_{T_s}(z_s)|

is ``-numpyro.infer.util.potential_energy`` (Phan, Pradhan, Jankowiak 2019,
"Composable effects for flexible and accelerated probabilistic programming in
NumPyro", arXiv:1912.11554).  The flat point is the latent sites'
unconstrained values, raveled and concatenated in the order the model first
samples them.  :meth:`NumPyroTarget.constrain` maps a point to the named
constrained values of the latent sites and the ``numpyro.deterministic``
sites (``numpyro.infer.util.constrain_fn``), so ``Result.posterior`` is keyed
by the model's own names.

The model's arguments are array fields of the target: the same model on a new
data set of the same shapes reuses every compiled program.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.target import Target
from samplax.targets.frameworks.common import Layout, LayoutNamed, join_flat, shape_tuple, short, split_flat


def _model_label(model) -> str:
    return getattr(model, "__qualname__", None) or getattr(model, "__name__", None) or type(model).__name__


def _as_data(v):
    """numpy arrays become JAX arrays (data: traced, never part of the compiled program's identity)."""
    if isinstance(v, np.ndarray):
        return jnp.asarray(v)
    return v


class NumPyroTarget(LayoutNamed, Target):
    """A NumPyro model's posterior on NumPyro's unconstrained space (log-Jacobians included).

    Built by :func:`from_numpyro`.  Fields: the model's positional ``args`` and keyword
    values (arrays are data), the model (static), ``latent`` (unconstrained block of each
    latent site, in order), ``reported`` (constrained shape of each latent and deterministic
    site), ``site_dims`` (plate names of their dimensions).
    """

    args: tuple
    kwarg_values: tuple
    model: Callable = eqx.field(static=True)
    kwarg_names: Tuple[str, ...] = eqx.field(static=True)
    latent: Layout = eqx.field(static=True)
    reported: Layout = eqx.field(static=True)
    site_dims: Tuple[Tuple[str, Tuple[str, ...]], ...] = eqx.field(static=True)
    label: str = eqx.field(static=True)

    def model_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments the model is called with."""
        return dict(zip(self.kwarg_names, self.kwarg_values))

    def _check_point(self, x, fn: str):
        x = jnp.asarray(x)
        if x.shape != self.event_shape:
            raise ValueError(f"{self.name}.{fn}: x must be one unconstrained point of shape {self.event_shape} "
                             f"(vmap outside for batches), got shape {x.shape}")
        return x

    @property
    def latent_names(self) -> Tuple[str, ...]:
        """The latent site of each unconstrained block, in order."""
        return tuple(n for n, _ in self.latent)

    def unconstrained_params(self, x) -> Dict[str, jax.Array]:
        """``{site: unconstrained value}`` of one flat point."""
        return split_flat(self.latent, self._check_point(x, "unconstrained_params"))

    def logdensity(self, x):
        """``-potential_energy``: the model's log joint at ``T(z)`` plus the log-Jacobians of the transforms."""
        from numpyro.infer.util import potential_energy

        return -potential_energy(self.model, self.args, self.model_kwargs(), self.unconstrained_params(x))

    def constrain(self, x):
        """``{name: constrained value}`` of the latent and deterministic sites at one flat point."""
        from numpyro.infer.util import constrain_fn

        out = constrain_fn(self.model, self.args, self.model_kwargs(), self.unconstrained_params(x),
                           return_deterministic=True)
        return {name: jnp.reshape(out[name], shape) for name, shape in self.reported}

    def unconstrain(self, values: Dict[str, Any]) -> jax.Array:
        """The flat unconstrained point of constrained latent values ``{site: value}`` (inverse of
        :meth:`constrain` on the latent sites; deterministic sites are ignored)."""
        from numpyro.infer.util import unconstrain_fn

        names = [n for n, _ in self.latent]
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"{self.name}.unconstrain: values are missing for the latent sites {missing}")
        z = unconstrain_fn(self.model, self.args, self.model_kwargs(), {n: jnp.asarray(values[n]) for n in names})
        return join_flat(self.latent, z, f"{self.name}.unconstrain")

    def variables(self):
        return dict(self.reported)

    def coords_and_dims(self):
        return {}, dict(self.site_dims)

    def nonfinite_terms(self, x) -> tuple:
        """The sample sites whose log-density term is not finite at the flat point ``x`` (host-side
        diagnosis of a failed start)."""
        from numpyro import handlers
        from numpyro.infer.util import constrain_fn

        kw = self.model_kwargs()
        values = constrain_fn(self.model, self.args, kw, self.unconstrained_params(x))
        tr = handlers.trace(handlers.substitute(self.model, data=values)).get_trace(*self.args, **kw)
        bad = []
        for name, site in tr.items():
            if site["type"] != "sample":
                continue
            try:
                ok = bool(np.isfinite(float(jnp.sum(site["fn"].log_prob(site["value"])))))
            except Exception:  # noqa: BLE001 - a term that cannot be evaluated is not finite
                ok = False
            if not ok:
                bad.append(name)
        return tuple(bad)

    def provenance(self):
        fn = self.model
        return {"source": "NumPyro model", "model": f"{getattr(fn, '__module__', '?')}.{self.label}",
                "space": "NumPyro's unconstrained space (biject_to of each latent site's support), "
                         "log-Jacobian included", "version": "1"}


def _last_site_tracker():
    """A NumPyro messenger that remembers the last site the model reached (to name it in errors)."""
    from numpyro.primitives import Messenger

    class LastSite(Messenger):
        def __init__(self):
            super().__init__()
            self.last = None

        def process_message(self, msg):
            if msg.get("type") in ("sample", "deterministic", "param", "plate") and msg.get("name"):
                self.last = (msg["type"], msg["name"])

    return LastSite()


def _where(tracker) -> str:
    if tracker.last is None:
        return "before its first site"
    return f"at or after {tracker.last[0]} site {tracker.last[1]!r}"


def _trace(model, args, kwargs, label):
    """One abstract run of the model (``equinox.filter_eval_shape``: shapes only, nothing computed or
    compiled), recorded, its latent sites drawn as NumPyro's own initialization does
    (``init_to_uniform``, so improper priors work).  Returns ``(trace, unconstrained shapes of the
    latent sites)``; an exception names the model and the last site it reached."""
    from numpyro import handlers
    from numpyro.distributions.transforms import biject_to
    from numpyro.infer.initialization import init_to_uniform

    tracker = _last_site_tracker()
    out = {}

    def run(args, kwargs):
        seeded = handlers.substitute(handlers.seed(model, rng_seed=0), substitute_fn=init_to_uniform)
        with tracker:
            tr = handlers.trace(seeded).get_trace(*args, **kwargs)
        out["trace"] = tr  # shapes, supports and site kinds are read from it; values are abstract
        latent = {}
        for name, site in tr.items():
            if site["type"] == "sample" and not site["is_observed"] and \
                    not getattr(site["fn"].support, "is_discrete", False):
                latent[name] = biject_to(site["fn"].support).inv(site["value"])
        return latent

    try:
        shapes = eqx.filter_eval_shape(run, args, kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised with the model and site named
        raise ValueError(f"from_numpyro: model {label!r} raised while running it {_where(tracker)}: {short(e)}") from e
    return out["trace"], {k: shape_tuple(v.shape) for k, v in shapes.items()}


def _check_sites(tr, label):
    """Refuse what a gradient-based sampler on the unconstrained space cannot run, naming the site."""
    for name, site in tr.items():
        kind = site["type"]
        if kind == "param":
            raise ValueError(f"from_numpyro: model {label!r} has a numpyro.param site {name!r}; samplax samples "
                             "every unknown, so give it a prior (numpyro.sample) or pass its value as data")
        if kind == "plate":
            size, sub = site["args"][0], site["args"][1]
            if sub is not None and sub != size:
                raise ValueError(f"from_numpyro: model {label!r}: plate {name!r} subsamples ({sub} of {size}); "
                                 "the posterior needs the full data (no subsample_size)")
        if kind != "sample":
            continue
        fn = site["fn"]
        observed = site["is_observed"]
        if not observed and getattr(fn.support, "is_discrete", False):
            raise ValueError(
                f"from_numpyro: model {label!r} has a discrete latent site {name!r} ({type(fn).__name__}, support "
                f"{fn.support}); samplax samples continuous unknowns only: marginalize it out (sum over its values "
                "with numpyro.factor or a mixture distribution) or observe it")
        if observed:
            value_shape = tuple(np.shape(site["value"]))
            dist_shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
            try:
                joint = tuple(np.broadcast_shapes(value_shape, dist_shape))
            except ValueError:
                joint = None
            if joint != value_shape:
                raise ValueError(
                    f"from_numpyro: model {label!r}: the observed data of site {name!r} have shape {value_shape}, "
                    f"but the distribution there has shape {dist_shape} (batch {tuple(fn.batch_shape)} + event "
                    f"{tuple(fn.event_shape)})" + ("; they do not broadcast" if joint is None else
                                                   f"; they would broadcast to {joint}, counting data twice")
                    + ": check the data's shape")


def _dims_of(site, shape) -> Tuple[str, ...] | None:
    """Plate names of a site's dimensions (``None`` when it sits in no plate)."""
    frames = site.get("cond_indep_stack") or []
    if not frames or not shape:
        return None
    dims = [f"{site['name']}_dim_{i}" for i in range(len(shape))]
    n_batch = len(site["fn"].batch_shape) if site["type"] == "sample" else len(shape)
    named = False
    for f in frames:
        pos = n_batch + f.dim
        if 0 <= pos < len(shape) and shape[pos] == f.size:
            dims[pos] = f.name
            named = True
    return tuple(dims) if named else None


def from_numpyro(model: Callable, *args, **kwargs) -> NumPyroTarget:
    """The posterior of the NumPyro model ``model(*args, **kwargs)`` as a samplax target.

    The target's point is the latent sites' values on NumPyro's unconstrained space (the
    transforms ``biject_to(support)`` and their log-Jacobians, as NumPyro's NUTS uses); its
    ``constrain`` returns ``{name: value}`` of the latent and ``numpyro.deterministic`` sites,
    so ``samplax.sample(from_numpyro(model, data), ...)`` gives ``Result.posterior[name]`` of shape
    ``[chains, draws, *shape]`` and a named ``to_arviz()`` (plate names become dims).

    ``args``/``kwargs`` are passed to the model; arrays among them are data (a new data set of the
    same shapes reuses the compiled programs), other values (Python numbers, strings, ``None``) are
    part of the model's structure (another value compiles anew; pass a number that changes as an
    array), and so is the model function itself (define it once, not anew for each data set).  The model is traced once here (abstractly: nothing is computed or
    compiled): an exception names the last site it reached; a discrete latent site, a
    ``numpyro.param`` site, a subsampling plate, or observed data whose shape does not match its
    distribution is a ``ValueError`` naming the site.  When ``samplax.sample`` finds no initial
    point with a finite log-density, its error names the sites whose terms are not finite
    (:meth:`NumPyroTarget.nonfinite_terms`).
    """
    if not callable(model):
        raise TypeError(f"from_numpyro: model must be a callable NumPyro model, got {type(model).__name__}")
    try:
        import numpyro  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("from_numpyro needs NumPyro: pip install 'samplax[numpyro]'") from e
    label = _model_label(model)
    args = tuple(_as_data(a) for a in args)
    kwargs = {k: _as_data(v) for k, v in kwargs.items()}
    tr, z_shapes = _trace(model, args, kwargs, label)
    _check_sites(tr, label)
    latent_names = [n for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
                    and not (s.get("infer") or {}).get("is_auxiliary", False)]
    if not latent_names:
        raise ValueError(f"from_numpyro: model {label!r} has no latent sample site: nothing to sample")
    latent = tuple((n, z_shapes[n]) for n in latent_names)
    reported_names = [n for n, s in tr.items() if n in latent_names or s["type"] == "deterministic"]
    reported = tuple((n, shape_tuple(tr[n]["value"].shape)) for n in reported_names)
    site_dims = tuple((n, d) for n, shape in reported if (d := _dims_of(tr[n], shape)) is not None)
    return NumPyroTarget(args=args, kwarg_values=tuple(kwargs.values()), model=model,
                         kwarg_names=tuple(kwargs), latent=latent, reported=reported, site_dims=site_dims,
                         label=label)
