"""Learned samplers for energies: one path-measure core for diffusion samplers.

* :mod:`samplax.neural.sde`: the controlled SDE on a time grid (learned drift :class:`DriftNet`), the
  references of PIS and DDS, path simulation, the log importance weight and the estimates of
  ``log Z`` (standard error, ELBO, ESS).
* :mod:`samplax.neural.losses`: reparameterized KL, log-variance, trajectory balance and sub-trajectory balance.
* :mod:`samplax.neural.gfn`: the replay buffer with rank-based priority and MALA local search, and
  sub-trajectory balance with DGFS's log-flow.
* :mod:`samplax.neural.flows`: normalizing flows on equinox (flowjax): :func:`make_flow` and
  :class:`FlowReference` (a flow as the reference of ``smc`` / ``nested_sampling``);
  :mod:`samplax.neural.flow_samplers`: the plans of ``flow`` and ``fab``.
* :mod:`samplax.neural.plan`: a configuration as the run engine's
  :class:`~samplax.core.method.TrainingPlan` (registered as the methods ``pis``, ``dds``, ``cmcd``, and ``tb``, ``dgfs``, ``dis``).
* :mod:`samplax.neural.idem`: iterated denoising energy matching (iDEM; registered as ``idem``): a score network
  regressed onto an MC estimate of the VE-noised target's score at replay-buffer points, sampled by the reverse
  VE SDE on the same core (:func:`~samplax.neural.sde.ve_reference`); :mod:`samplax.neural.egnn`, the
  E(n)-equivariant network it uses for particle systems.
* :mod:`samplax.neural.flow_perturbation`: flow perturbation (registered as ``flow_perturbation``): iDEM's
  training, sampling by the probability-flow ODE with importance weights whose Jacobian determinant is estimated
  by random-direction stretches (:func:`~samplax.neural.flow_perturbation.stretch_log_inv_det`; per ODE step for
  Flow Perturbation++).
* :mod:`samplax.neural.snf` and :mod:`samplax.neural.mixflow`: Stochastic Normalizing Flows and MixFlows
  (registered as ``snf`` and ``mixflow`` by ``samplax.methods.snf``).

This part imports :mod:`samplax.core`, equinox, optax and flowjax (``snf``); the engine runs it (``samplax.run``), and
``samplax.methods.neural`` registers it.
"""
from samplax.neural.flows import FLOW_KINDS, FlowReference, make_flow
from samplax.neural.gfn import (
    Buffer, buffer_insert, buffer_sample, init_buffer, log_flows, mala, rank_priorities, subtb_loss, subtb_residuals,
    subtb_weights,
)
from samplax.neural.losses import LOSSES, kl_loss, logvar_loss, off_policy_paths, path_residuals, tb_loss
from samplax.neural.plan import SamplerConfig, check_config, make_plan
from samplax.neural.sde import (
    DriftNet, Path, Reference, cmcd_reference, cosine_alphas, dds_reference, dis_reference, estimates, geometric_sigmas,
    log_weight, logmeanexp, path_log_b, path_log_q, pis_reference, reverse_simulate, simulate, step_log_b, step_log_q,
    systematic_resample, ve_reference,
)
from samplax.neural.egnn import EGNN, remove_mean
from samplax.neural.idem import IDEMConfig, ScoreNet, mc_score, ve_simulate
from samplax.neural.flow_perturbation import LOG_DETS, PFODE, stretch_log_inv_det, weighted_draw

__all__ = [
    "Buffer", "DriftNet", "EGNN", "FLOW_KINDS", "FlowReference", "IDEMConfig", "LOG_DETS", "LOSSES", "PFODE", "Path",
    "Reference",
    "SamplerConfig", "ScoreNet", "buffer_insert", "buffer_sample", "check_config", "cmcd_reference",
    "cosine_alphas", "dds_reference", "dis_reference", "estimates", "geometric_sigmas", "init_buffer", "kl_loss",
    "log_flows", "log_weight", "logmeanexp", "logvar_loss", "make_flow", "make_plan", "mala", "mc_score",
    "off_policy_paths", "path_log_b", "path_log_q", "path_residuals", "pis_reference", "rank_priorities",
    "remove_mean", "reverse_simulate", "simulate", "step_log_b", "step_log_q", "subtb_loss", "subtb_residuals",
    "stretch_log_inv_det", "subtb_weights", "systematic_resample", "tb_loss", "ve_reference", "ve_simulate",
    "weighted_draw",
]
