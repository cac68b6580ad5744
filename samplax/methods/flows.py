"""Normalizing-flow samplers: ``flow``, ``fab`` (trained methods) and ``neutra`` (a flow, then a chain kernel in its
latent space).

``samplax.sample(target, method="flow" | "fab", seed=..., num_samples=..., training_evals=..., **options)`` trains a
normalizing flow (:func:`samplax.neural.flows.make_flow`) from the target's log-density through the engine's
trainer (progress, checkpoints, a clear stop at a non-finite loss), then draws ``num_chains x num_samples`` flow
draws with importance weights: ``log_Z``, ``log_Z_se``, the ELBO and the ESS (``result.extra``), equal-weight draws
by resampling, and the trained flow (``extra["flow"]``).  See :mod:`samplax.neural.flow_samplers`.

``method="neutra"`` (NeuTra-HMC, Hoffman, Sountsov, Dillon, Langmore, Tran & Vasudevan 2019): the flow ``x = T(z)``,
``z ~ N(0, I)``, is fitted by reverse KL (``training_evals``, as ``flow``), then the registered chain method
``kernel`` (default ``"nuts"``; its options in ``kernel_options``) runs through the engine (warm-up
``num_warmup``, ``num_samples`` draws per chain, its adaptation and diagnostics) on the latent target
``log pi~(T(z)) + log|det dT/dz|`` (:class:`LatentTarget`), and the draws are pushed forward, ``x = T(z)``.
``log_Z`` is the flow's importance-sampling estimate from ``num_is_samples`` flow draws per chain
(``extra["log_Z_method"]`` says so), not from the chains.  The cost counts the flow's training, the
importance-sampling draws and the kernel's evaluations (``training_*``, ``is_*``, ``kernel_*`` entries; the
totals are their sums).  The kernel's own diagnostics in the latent space are ``extra["latent_diagnostics"]``;
``result.diagnostics`` are those of the pushed-forward draws.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.cost import make_cost
from samplax.core.method import MethodSpec, Option
from samplax.core.options import boolean, one_of, pos_float, pos_int, prob
from samplax.core.target import Target
from samplax.methods import get_method, method_names, register_method
from samplax.neural.flow_samplers import FLOW_LOSSES, FlowConfig, check_flow_config, make_flow_plan
from samplax.neural.flows import FLOW_KINDS, StaticPart, split_arrays
from samplax.postprocess import finish_result
from samplax.run import run_chains, run_keys, run_trained


def _finite(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and bool(np.isfinite(v))


def _flow_options(**defaults) -> dict:
    d = FlowConfig(**defaults)
    return {
        "training_evals": Option(d.training_evals, "training budget: target evaluations (a value and gradient "
                                 "counts one); steps = training_evals // (evaluations per step)", pos_int,
                                 "an int >= 1"),
        "batch_size": Option(d.batch_size, "flow draws (fab: AIS paths) per training step", pos_int, "an int >= 1"),
        "kind": Option(d.kind, "flow: 'maf' (masked autoregressive, rational-quadratic splines), 'coupling' "
                       "(coupling layers, splines) or 'realnvp' (affine coupling)", one_of(FLOW_KINDS),
                       f"one of {list(FLOW_KINDS)}"),
        "layers": Option(d.layers, "flow layers", pos_int, "an int >= 1"),
        "knots": Option(d.knots, "spline bins per coordinate", pos_int, "an int >= 1"),
        "width": Option(d.width, "hidden width of the conditioner networks", pos_int, "an int >= 1"),
        "depth": Option(d.depth, "hidden layers of the conditioner networks", pos_int, "an int >= 1"),
        "interval": Option(d.interval, "the splines act on [-interval, interval] in units of base_scale (identity "
                           "outside)", pos_float, "a finite number > 0"),
        "base_scale": Option(d.base_scale, "the flow's base N(base_loc, base_scale^2 I), which the untrained flow "
                             "is: it should cover the target", pos_float, "a finite number > 0"),
        "base_loc": Option(d.base_loc, "mean of the flow's base (a scalar)", _finite, "a finite number"),
        "learning_rate": Option(d.learning_rate, "Adam step size", pos_float, "a finite number > 0"),
        "grad_clip": Option(d.grad_clip, "global-norm clip of the gradient", pos_float, "a finite number > 0"),
    }


def _fab_options() -> dict:
    d = FlowConfig(method="fab", kind="coupling", batch_size=128)
    return {
        **_flow_options(method="fab", kind="coupling", batch_size=128),
        "num_ais_steps": Option(d.num_ais_steps, "AIS intermediate distributions (one HMC step each) from the flow "
                                "to pi^2 / q", pos_int, "an int >= 1"),
        "num_leapfrog_steps": Option(d.num_leapfrog_steps, "leapfrog steps per HMC step", pos_int, "an int >= 1"),
        "step_size": Option(d.step_size, "initial HMC step size (each AIS step's adapts to target_accept)",
                            pos_float, "a finite number > 0"),
        "target_accept": Option(d.target_accept, "the HMC acceptance the step sizes adapt to", prob,
                                "a number in (0, 1)"),
        "buffer": Option(d.buffer, "prioritised replay buffer (the paper's Algorithm 2)", boolean, "True/False"),
        "buffer_size": Option(d.buffer_size, "replay buffer capacity (AIS points)", pos_int, "an int >= 1"),
        "updates_per_step": Option(d.updates_per_step, "gradient steps on buffer batches per AIS batch "
                                   "(buffer=True)", pos_int, "an int >= 1"),
        "sample_with_ais": Option(d.sample_with_ais, "sampling: AIS from the flow to the target from each flow draw "
                                  "(1 + num_ais_steps x num_leapfrog_steps evaluations per draw) instead of the flow "
                                  "alone", boolean, "True/False"),
    }


def _kernel_problem(v) -> str:
    if not isinstance(v, str) or v not in method_names():
        return f"{v!r} is not a registered method"
    spec = get_method(v)
    if spec.kind != "chain":
        return f"{v!r} is a {spec.kind} method, not a chain method"
    return ""


def _neutra_options() -> dict:
    return {
        **_flow_options(),
        "loss": Option("kl", "the flow's training loss: 'kl' (reverse KL, the paper's)",
                       one_of(FLOW_LOSSES), f"one of {list(FLOW_LOSSES)}"),
        "kernel": Option("nuts", "the registered chain method run in the latent space", lambda v: not _kernel_problem(v),
                         "a registered chain method ('nuts', 'hmc', 'mala', ...)", explain=_kernel_problem),
        "kernel_options": Option(None, "options of the kernel's method (a dict; None: its defaults)",
                                 lambda v: v is None or isinstance(v, dict), "None or a dict"),
        "num_is_samples": Option(1000, "flow draws per chain for the importance-sampling log Z", pos_int,
                                 "an int >= 1"),
    }


FLOW_FIELDS = {f.name for f in dataclasses.fields(FlowConfig)}


def _config(method, options) -> FlowConfig:
    return FlowConfig(method=method, **{k: v for k, v in options.items() if k in FLOW_FIELDS})


def _prepare(method):
    def prepare(target, options):
        check_flow_config(method, target, _config(method, options))
        return options

    return prepare


def _trainer(method):
    def trainer(target, ctx, **options):
        return make_plan_named(method, target, ctx, _config("fab" if method == "fab" else "flow", options))

    return trainer


def make_plan_named(name, target, ctx, cfg):
    return make_flow_plan(name, target, ctx, cfg)


def _sampling_cost(method):
    def cost(options):
        return _config(method, options).evals_per_draw()[0]

    return cost


register_method(MethodSpec(
    "flow", None, "Normalizing flow (MAF / coupling with rational-quadratic splines) trained by reverse KL, "
    "importance sampling with it",
    {"loss": Option("kl", "training loss: 'kl' (reverse KL, reparameterized: the target's gradient; for the "
                    "mass-covering alpha = 2 divergence use method 'fab')", one_of(FLOW_LOSSES),
                    f"one of {list(FLOW_LOSSES)}"), **_flow_options()},
    family="neural", gradient_based=True, trainer=_trainer("flow"), prepare=_prepare("flow"),
    sampling_cost=_sampling_cost("flow")))
register_method(MethodSpec(
    "fab", None, "Flow Annealed importance sampling Bootstrap (Midgley et al. 2023): a flow trained on AIS draws "
    "towards pi^2 / q (the alpha = 2 divergence)", _fab_options(), family="neural", gradient_based=True,
    trainer=_trainer("fab"), prepare=_prepare("fab"), sampling_cost=_sampling_cost("fab")))


# ------------------------------------------------------------------------------------------------------ NeuTra
class LatentTarget(Target):
    """The target seen through a flow ``x = T(z)``: ``log pi~(T(z)) + log|det dT/dz|`` on ``z`` in ``R^d``
    (Hoffman et al. 2019).  Its normalizing constant is the target's; a chain on it, pushed forward by ``T``,
    samples the target.  ``target`` and the flow's arrays are fields (traced in the engine's programs)."""

    target: Target
    params: Any
    static: StaticPart = eqx.field(static=True)
    label: str = eqx.field(static=True, default="latent")

    @property
    def event_shape(self):
        return (self.target.dim,)

    @property
    def name(self) -> str:
        return self.label

    def bijection(self):
        import paramax

        return paramax.unwrap(self.static.combine(self.params)).bijection

    def push(self, z):
        """``(T(z), log|det dT/dz|)`` for one latent point."""
        return self.bijection().transform_and_log_det(z)

    def logdensity(self, z):
        x, log_det = self.push(z)
        return self.target.flat_logdensity()(x) + log_det


def latent_target(target: Target, flow) -> LatentTarget:
    """:class:`LatentTarget` of ``target`` under the flowjax ``Transformed`` distribution ``flow`` (base
    ``N(0, I)``, as :func:`samplax.neural.flows.make_flow` builds)."""
    params, static = split_arrays(flow)
    return LatentTarget(target, params, static, label=f"latent({target.name})")


@eqx.filter_jit
def _push_all(lat: LatentTarget, z):
    """``(T(z), log|det dT/dz|)`` of ``z [chains, draws, d]`` (compiled once per flow and target structure)."""
    return jax.vmap(jax.vmap(lat.push))(z)


def _kernel_spec_options(o):
    spec = get_method(o["kernel"])
    return spec, spec.resolve_options(dict(o["kernel_options"] or {}))


def _neutra_prepare(target, options):
    check_flow_config("neutra", target, _config("flow", options))
    try:
        _kernel_spec_options(options)
    except (TypeError, ValueError) as e:
        raise type(e)(f"method 'neutra': option kernel_options for kernel {options['kernel']!r}: {e}") from None
    return options


def neutra_runner(target, spec, *, keys, seed_id, num_chains, num_warmup, num_samples, init, progress, thinning=1,
                  devices=None, chain_method="auto", **o):
    """``method="neutra"``: train the flow (reverse KL), importance-sample log Z, run the kernel in the latent
    space through the engine and push its draws forward (see the module)."""
    if init is not None:
        raise ValueError("sample: init: method 'neutra' starts its chains in the flow's latent space (leave "
                         "init=None)")
    flow_spec = dataclasses.replace(get_method("flow"), name="neutra")
    flow_opts = {k: v for k, v in o.items() if k in get_method("flow").options}
    fres = run_trained(target, flow_spec, flow_opts, keys=keys, seed_id=seed_id, num_chains=num_chains,
                       num_samples=o["num_is_samples"], progress=progress, devices=devices)
    flow = fres.extra["flow"]
    lat = latent_target(target, flow)
    kspec, kopts = _kernel_spec_options(o)
    if kspec.prepare is not None:
        kopts = kspec.prepare(lat, kopts)
    kkeys = run_keys(jax.random.fold_in(keys.run, 1), kspec.run_stream)
    kres = run_chains(lat, kspec, kopts, keys=kkeys, seed_id=seed_id, num_chains=num_chains, num_warmup=num_warmup,
                      num_samples=num_samples, progress=progress, thinning=thinning, devices=devices,
                      chain_method=chain_method)
    z = np.asarray(kres.samples).reshape(num_chains, -1, target.dim)
    x, log_det = _push_all(lat, jnp.asarray(z))
    stats = dict(kres.stats)
    if "lp" in stats:  # the target's log-density at x: the latent one minus log|det|
        stats["lp"] = np.asarray(stats["lp"]) - np.asarray(log_det)
    fc, kc = fres.cost, kres.cost
    cost = make_cost(
        num_logdensity_evals=int(fc["num_logdensity_evals"]) + int(kc["num_logdensity_evals"]),
        num_grad_evals=int(fc["num_grad_evals"]) + int(kc["num_grad_evals"]),
        compile_seconds=fc.get("compile_seconds", 0.0) + kc.get("compile_seconds", 0.0),
        sampling_seconds=kc.get("sampling_seconds", 0.0),
        num_compilations=fc.get("num_compilations", 0) + kc.get("num_compilations", 0), num_devices=1,
        training_logdensity_evals=fc["training_logdensity_evals"], training_grad_evals=fc["training_grad_evals"],
        num_training_steps=fc["num_training_steps"], training_seconds=fc["training_seconds"],
        is_logdensity_evals=fc["sampling_logdensity_evals"], is_grad_evals=fc["sampling_grad_evals"],
        kernel_logdensity_evals=int(kc["num_logdensity_evals"]), kernel_grad_evals=int(kc["num_grad_evals"]))
    extra = {"flow": flow, "flow_spec": fres.extra["flow_spec"], "log_Z_method": "importance sampling with the trained flow (num_is_samples draws per "
                                           "chain), not from the chains",
             "is_ess": fres.extra["ess"], "is_elbo": fres.extra["elbo"], "kernel": o["kernel"],
             "latent_samples": z, "latent_diagnostics": kres.diagnostics, "kernel_extra": kres.extra,
             "training": fres.extra["training"]}
    config = {"method": "neutra", "options": {k: v for k, v in o.items()}, "seed": seed_id,
              "num_chains": num_chains, "num_warmup": num_warmup, "num_samples": num_samples,
              "kernel_config": kres.config}
    result = finish_result(target, "neutra", np.asarray(x), stats, cost, config, log_Z=fres.log_Z,
                           log_Z_se=fres.log_Z_se, extra=extra, extra_warnings=list(fres.warnings))
    # the kernel's own warnings that the pushed-forward draws' diagnostics did not raise again (e.g. its step size)
    codes = {w.get("code") for w in result.warnings}
    result.warnings += [w for w in kres.warnings if w.get("code") not in codes]
    return result


register_method(MethodSpec(
    "neutra", None, "NeuTra (Hoffman et al. 2019): a flow fitted by reverse KL, then a chain kernel (NUTS) in its "
    "latent space, draws pushed forward", _neutra_options(), family="neural", gradient_based=True,
    runner=neutra_runner, prepare=_neutra_prepare, checkpoints=False))
