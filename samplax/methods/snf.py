"""Flow-based trained methods: ``snf`` (Stochastic Normalizing Flows, Wu, Kohler & Noe 2020) and ``mixflow``
(MixFlows, Xu, Chen & Campbell 2023).

``samplax.sample(target, method="snf" | "mixflow", seed=..., num_samples=..., training_evals=..., **options)``
trains through the engine's trainer (:func:`samplax.run.train`: progress, checkpoints, a clear stop at a
non-finite loss), then draws ``num_chains x num_samples`` independent samples with their importance weights
and returns equal-weight draws (systematic resampling) with ``log_Z``, ``log_Z_se``, the ELBO and the ESS
(``result.extra``); the cost counts the target evaluations of training and of sampling apart.  See
:mod:`samplax.neural.snf` and :mod:`samplax.neural.mixflow`.
"""
from __future__ import annotations

from samplax.core.method import MethodSpec, Option
from samplax.core.options import or_none, pos_float, pos_int
from samplax.methods import register_method
from samplax.neural.mixflow import MixFlowConfig
from samplax.neural.mixflow import check_config as mixflow_check
from samplax.neural.mixflow import make_plan as mixflow_plan
from samplax.neural.snf import LAYER_KINDS, SNFConfig, parse_layers
from samplax.neural.snf import check_config as snf_check
from samplax.neural.snf import make_plan as snf_plan


def _layers_ok(v) -> bool:
    try:
        parse_layers(v)
    except (TypeError, ValueError):
        return False
    return True


def _layers_why(v) -> str:
    try:
        parse_layers(v)
    except (TypeError, ValueError) as e:
        return str(e)
    return ""


def _snf_options() -> dict:
    d = SNFConfig()
    return {
        "layers": Option(d.layers, "the layer sequence, a comma-separated string (or a sequence) of "
                         f"{list(LAYER_KINDS)}, 'kind*count' repeating one: 'flow' a spline coupling layer, 'mala' one "
                         "Metropolis-adjusted Langevin step, 'langevin' one unadjusted Langevin step; the k-th of the M stochastic layers "
                         "targets base^(1 - k/M) pi^(k/M)", _layers_ok,
                         f"a comma-separated string or sequence of {list(LAYER_KINDS)}", explain=_layers_why),
        "training_evals": Option(d.training_evals, "training budget: target evaluations (a value and gradient counts "
                                 "one); steps = training_evals // (batch_size x evaluations per path)", pos_int,
                                 "an int >= 1"),
        "batch_size": Option(d.batch_size, "paths per training step", pos_int, "an int >= 1"),
        "base_std": Option(d.base_std, "standard deviation s of the base N(0, s^2 I)", pos_float,
                           "a finite number > 0"),
        "step_size": Option(d.step_size, "initial step size h of each stochastic layer (trained)", pos_float,
                            "a finite number > 0"),
        "knots": Option(d.knots, "knots of each rational-quadratic spline", pos_int, "an int >= 1"),
        "spline_interval": Option(d.spline_interval, "the splines act on [-B, B] (the identity outside); None: "
                                  "5 x base_std", or_none(pos_float), "None or a finite number > 0"),
        "width": Option(d.width, "hidden width of the coupling conditioners", pos_int, "an int >= 1"),
        "depth": Option(d.depth, "hidden layers of the coupling conditioners", pos_int, "an int >= 1"),
        "learning_rate": Option(d.learning_rate, "Adam step size", pos_float, "a finite number > 0"),
        "grad_clip": Option(d.grad_clip, "global-norm clip of the gradient", pos_float, "a finite number > 0"),
    }


def _mixflow_options() -> dict:
    d = MixFlowConfig()
    return {
        "flow_length": Option(d.flow_length, "N: the mixture averages the pushforwards of q_0 under T^0 .. T^(N-1)",
                              pos_int, "an int >= 1"),
        "leapfrog_steps": Option(d.leapfrog_steps, "L: leapfrog steps in one application of T", pos_int,
                                 "an int >= 1"),
        "step_size": Option(d.step_size, "leapfrog step size (the centre of the tuning grid)", pos_float,
                            "a finite number > 0"),
        "base_std": Option(d.base_std, "standard deviation of the reference q_0 = N(0, s^2 I) in x", pos_float,
                           "a finite number > 0"),
        "training_evals": Option(d.training_evals, "tuning budget: each training step evaluates the ELBO of one "
                                 "candidate step size on batch_size draws (flow_length x leapfrog_steps gradients "
                                 "each); the candidates are a geometric grid over [step_size / 8, step_size * 8]",
                                 pos_int, "an int >= 1"),
        "batch_size": Option(d.batch_size, "draws per ELBO estimate in tuning", pos_int, "an int >= 1"),
    }


def _prepare(check, config):
    def prepare(target, options):
        check("snf" if config is SNFConfig else "mixflow", target, config(**options))
        return options

    return prepare


def _sampling_cost(config):
    def cost(options):
        return config(**options).evals_per_path(training=False)[0]

    return cost


def _trainer(plan, config, name):
    def trainer(target, ctx, **options):
        return plan(name, target, ctx, config(**options))

    return trainer


register_method(MethodSpec(
    "snf", None, "Stochastic Normalizing Flows (Wu, Kohler & Noe 2020): spline coupling layers interleaved with "
    "MALA / Langevin layers on the annealing path, trained by the path KL", _snf_options(), family="neural",
    gradient_based=True, trainer=_trainer(snf_plan, SNFConfig, "snf"), prepare=_prepare(snf_check, SNFConfig),
    sampling_cost=_sampling_cost(SNFConfig)))
register_method(MethodSpec(
    "mixflow", None, "MixFlows (Xu, Chen & Campbell 2023): the average of N pushforwards of q_0 under an uncorrected "
    "Hamiltonian map with deterministic momentum refreshment; exact density, IID draws", _mixflow_options(),
    family="neural", gradient_based=True, trainer=_trainer(mixflow_plan, MixFlowConfig, "mixflow"),
    prepare=_prepare(mixflow_check, MixFlowConfig), sampling_cost=_sampling_cost(MixFlowConfig)))
