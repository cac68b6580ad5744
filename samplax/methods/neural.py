"""Learned diffusion samplers (trained methods): ``pis``, ``dds`` and ``cmcd``, configurations of one
path-measure core.

``samplax.sample(target, method="pis" | "dds" | "cmcd", seed=..., num_samples=..., training_evals=..., loss=...)``
trains a drift network from the target's log-density alone (through the engine's trainer,
:func:`samplax.run.train`: progress, checkpoints, a clear stop at a non-finite loss), then draws
``num_chains x num_samples`` paths and returns equal-weight draws with ``log_Z``, ``log_Z_se``, the ELBO
and the ESS (``result.extra``); the cost counts the target evaluations of training and of sampling apart.
``num_warmup`` does not apply (the training length is ``training_evals``).  See :mod:`samplax.neural`.
"""
from __future__ import annotations

from samplax.core.method import MethodSpec, Option
from samplax.core.options import boolean, one_of, pos_float, pos_int
from samplax.methods import register_method
from samplax.neural.losses import LOSSES
from samplax.neural.plan import SamplerConfig, check_config, make_plan


def _nonneg_float(v) -> bool:
    return pos_float(v) or (not isinstance(v, bool) and isinstance(v, (int, float)) and v == 0)


def _nonneg_int(v) -> bool:
    return pos_int(v) or (not isinstance(v, bool) and isinstance(v, int) and v == 0)


def _fraction(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0.0 <= v <= 1.0


def sampler_options(**defaults) -> dict:
    """The options of a configuration of the path-measure core (``SamplerConfig``'s fields but ``reference``),
    with ``defaults`` overriding :class:`~samplax.neural.SamplerConfig`'s."""
    d = SamplerConfig(**defaults)
    return {
        "loss": Option(d.loss, "training loss: 'kl' (reparameterized reverse KL; the default of pis and dds), 'logvar' "
                       "(log-variance, off-policy; the default of cmcd, whose KL gradient would miss the "
                       "derivative of the target's gradient along the path), 'tb' (trajectory balance with a "
                       "learned log Z) or 'subtb' (sub-trajectory balance with a learned log-flow, as DGFS)",
                       one_of(LOSSES),
                       f"one of {list(LOSSES)}"),
        "training_evals": Option(d.training_evals, "training budget: target log-density evaluations (a value and "
                                 "gradient counts one); steps = training_evals // (batch_size x evaluations per "
                                 "path)", pos_int, "an int >= 1"),
        "batch_size": Option(d.batch_size, "paths per training step", pos_int, "an int >= 1"),
        "num_time_steps": Option(d.num_time_steps, "steps K of the SDE's time grid", pos_int, "an int >= 1"),
        "sigma": Option(d.sigma, "scale of the reference process (PIS: Brownian sigma; DDS: stationary sd)",
                        pos_float, "a finite number > 0"),
        "width": Option(d.width, "hidden width of the drift MLP", pos_int, "an int >= 1"),
        "depth": Option(d.depth, "hidden layers of the drift MLP", pos_int, "an int >= 1"),
        "langevin": Option(d.langevin, "add g(t) * grad log pi(x) to the drift (needs the target's gradient; not "
                           "for cmcd, whose transitions follow it already)",
                           boolean, "True/False"),
        "learning_rate": Option(d.learning_rate, "Adam step size of the drift", pos_float, "a finite number > 0"),
        "log_z_learning_rate": Option(d.log_z_learning_rate, "Adam step size of the learned log Z (loss='tb')",
                                      pos_float, "a finite number > 0"),
        "grad_clip": Option(d.grad_clip, "global-norm clip of the gradient", pos_float, "a finite number > 0"),
        "exploration": Option(d.exploration, "off-policy exploration: the training paths' noise variance grows by "
                              "exploration^2 per unit time (loss='logvar' or 'tb' only)", _nonneg_float,
                              "a finite number >= 0"),
        "score_clip": Option(d.score_clip, "clip each coordinate of the target's gradient that the transitions use "
                             "(Langevin drift, CMCD) to [-score_clip, score_clip]; the weights stay exact for any "
                             "clip (gfn-diffusion uses 100)", pos_float, "a finite number > 0"),
        "replay": Option(d.replay, "replay buffer size (terminal states with their log pi; 0 = off): each step "
                         "inserts its forward paths' end points and trains on replay_fraction x batch_size backward "
                         "paths from states drawn by rank-based priority (Sendera et al. 2024; off-policy losses "
                         "only; replay >= batch_size)", _nonneg_int, "an int >= 0"),
        "replay_fraction": Option(d.replay_fraction, "share of each batch that are backward paths from buffer states "
                                  "(with replay > 0; the rest are forward paths)", _fraction,
                                  "a number in [0, 1]"),
        "local_search_steps": Option(d.local_search_steps, "MALA steps on the buffer states drawn for the backward "
                                     "paths (each step, or each local_search_every steps; 0 = no local search; "
                                     "Metropolis-adjusted, so the target is invariant; counted as training evaluations)", _nonneg_int,
                                     "an int >= 0"),
        "local_search_step_size": Option(d.local_search_step_size, "initial MALA step size of the local search "
                                         "(adapted toward acceptance 0.574: between searches, or during the "
                                         "long schedule's burn-in)", pos_float,
                                         "a finite number > 0"),
        "local_search_every": Option(d.local_search_every, "with local_search_steps > 0: run the local search "
                                     "only every this many steps (1 = every step, on the drawn states); > 1 or "
                                     "local_search_burn_in > 0 is the long schedule of Sendera et al.'s code "
                                     "(200 steps every 100 iterations, burn-in 100): each search's chains after "
                                     "the burn-in fill a second buffer, which every step's backward paths start "
                                     "from", pos_int, "an int >= 1"),
        "local_search_burn_in": Option(d.local_search_burn_in, "long schedule: MALA steps of each search whose "
                                       "states are not kept (the step size adapts during them)", _nonneg_int,
                                       "an int >= 0"),
        "subtb_lambda": Option(d.subtb_lambda, "loss='subtb': weight lambda^(n - m) of the sub-path from step m to "
                               "n (lambda > 1 favours long sub-paths; DGFS uses 2)", pos_float,
                               "a finite number > 0"),
        "eubo": Option(d.eubo, "also draw exact target points and their reverse paths: extra['eubo'], the EUBO "
                       "(an upper bound on log Z; only for targets with an exact sampler; not counted in the cost)",
                       boolean, "True/False"),
    }


def _prepare(reference):
    def prepare(target, options):
        check_config(reference, target, SamplerConfig(reference=reference, **options))
        return options

    return prepare


def _sampling_cost(reference):
    def cost(options):
        return SamplerConfig(reference=reference, **options).evals_per_path(training=False)[0]

    return cost


def _trainer(reference):
    def trainer(target, ctx, **options):
        return make_plan(reference, target, ctx, SamplerConfig(reference=reference, **options))

    return trainer


register_method(MethodSpec(
    "pis", None, "Path Integral Sampler (Zhang & Chen 2022): a learned drift on Brownian motion from 0",
    sampler_options(), family="neural", gradient_based=True, trainer=_trainer("pis"), prepare=_prepare("pis"),
    sampling_cost=_sampling_cost("pis")))
register_method(MethodSpec(
    "dds", None, "Denoising Diffusion Sampler (Vargas et al. 2023): a learned drift on the stationary OU process",
    sampler_options(), family="neural", gradient_based=True, trainer=_trainer("dds"), prepare=_prepare("dds"),
    sampling_cost=_sampling_cost("dds")))
register_method(MethodSpec(
    "cmcd", None, "Controlled Monte Carlo Diffusion (Vargas et al. 2024): learned control of annealed Langevin "
    "transitions in both directions", sampler_options(langevin=False, loss="logvar"), family="neural", gradient_based=True,
    trainer=_trainer("cmcd"), prepare=_prepare("cmcd"),
    sampling_cost=_sampling_cost("cmcd")))
