"""Flow perturbation (Peng & Gao 2024; Flow Perturbation++, Peng & Gao 2026) as the trained method
``flow_perturbation``.

``samplax.sample(target, method="flow_perturbation", seed=..., num_samples=..., training_evals=..., **options)``
trains a score network exactly as ``idem`` (same options, same training steps, checkpoints and resume), then draws
``x_T ~ N(0, sigma_max^2 I)``, integrates the probability-flow ODE to ``x_0`` (``num_ode_steps`` Heun steps) and
weights ``x_0`` with an estimate of the flow's Jacobian determinant (``log_det``: "stepwise" (Flow
Perturbation++), "perturbation", "exact", "hutchinson").  Returns equal-weight draws with ``log_Z``, ``log_Z_se``,
the ELBO and the ESS (``result.extra``).  See :mod:`samplax.neural.flow_perturbation`.
"""
from __future__ import annotations

import dataclasses

from samplax.core.method import MethodSpec, Option
from samplax.core.options import one_of, pos_int
from samplax.methods import register_method
from samplax.methods.idem import OPTIONS as IDEM_OPTIONS, resolved_options
from samplax.neural.flow_perturbation import LOG_DETS, FlowPerturbationConfig, check_config, make_plan
from samplax.neural.idem import IDEMConfig

_D = FlowPerturbationConfig()
_IDEM = tuple(f.name for f in dataclasses.fields(IDEMConfig))

OPTIONS = {
    **IDEM_OPTIONS,
    "log_det": Option(_D.log_det, "the flow's log-determinant estimate in the weights: 'stepwise' (Flow "
                      "Perturbation++: a random direction per ODE step), 'perturbation' (one direction through the "
                      "noising map), 'exact' (jax.jacfwd; d tangents), 'hutchinson' (trace estimator; biased "
                      "weights)", one_of(LOG_DETS), f"one of {list(LOG_DETS)}"),
    "num_ode_steps": Option(_D.num_ode_steps, "Heun steps of the probability-flow ODE (sampling: 2 network passes "
                            "per step, plus 2 Jacobian-vector products per step for the log-determinant)", pos_int,
                            "an int >= 1"),
}


def _config(options) -> FlowPerturbationConfig:
    opts = dict(options)
    rest = {k: opts.pop(k) for k in ("log_det", "num_ode_steps") if k in opts}
    return FlowPerturbationConfig(idem=IDEMConfig(**{k: v for k, v in opts.items() if k in _IDEM}), **rest)


def _prepare(target, options):
    cfg = _config(options)
    check_config(target, cfg)
    return {**options, **resolved_options(target, cfg.idem)}


def _trainer(target, ctx, **options):
    return make_plan(target, ctx, _config(options))


def _sampling_cost(options):
    """One log-density evaluation per draw (``log pi~(x_0)`` for its weight)."""
    return 1


register_method(MethodSpec(
    "flow_perturbation", None, "flow perturbation (Peng & Gao 2024, 2026): iDEM's score network, probability-flow "
    "ODE sampler, importance weights with an unbiased stochastic estimate of the flow's Jacobian determinant",
    OPTIONS, family="neural", gradient_based=True, trainer=_trainer, prepare=_prepare,
    sampling_cost=_sampling_cost))
