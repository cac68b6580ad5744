"""Learned samplers for energies: one path-measure core for diffusion samplers.

* :mod:`samplax.neural.sde`: the controlled SDE on a time grid (learned drift :class:`DriftNet`), the
  references of PIS and DDS, path simulation, the log importance weight and the estimates of
  ``log Z`` (standard error, ELBO, ESS).
* :mod:`samplax.neural.losses`: reparameterized KL, log-variance and trajectory balance.
* :mod:`samplax.neural.flows`: normalizing flows on equinox (flowjax): :func:`make_flow` and
  :class:`FlowReference` (a flow as the reference of ``smc`` / ``nested_sampling``);
  :mod:`samplax.neural.flow_samplers`: the plans of ``flow`` and ``fab``.
* :mod:`samplax.neural.plan`: a configuration as the run engine's
  :class:`~samplax.core.method.TrainingPlan` (registered as the methods ``pis``, ``dds`` and ``cmcd``).

This part imports :mod:`samplax.core`, equinox and optax; the engine runs it (``samplax.run``), and
``samplax.methods.neural`` registers it.
"""
from samplax.neural.flows import FLOW_KINDS, FlowReference, make_flow
from samplax.neural.losses import LOSSES, kl_loss, logvar_loss, off_policy_paths, path_residuals, tb_loss
from samplax.neural.plan import SamplerConfig, check_config, make_plan
from samplax.neural.sde import (
    DriftNet, Path, Reference, cmcd_reference, cosine_alphas, dds_reference, estimates, log_weight, logmeanexp,
    path_log_b, path_log_q, pis_reference, reverse_simulate, simulate, systematic_resample,
)

__all__ = [
    "FLOW_KINDS", "FlowReference", "make_flow",
    "LOSSES", "DriftNet", "Path", "Reference", "SamplerConfig", "check_config", "cmcd_reference", "cosine_alphas",
    "dds_reference",
    "estimates", "kl_loss", "log_weight", "logmeanexp", "logvar_loss", "make_plan", "off_policy_paths",
    "path_log_b", "path_log_q", "path_residuals", "pis_reference", "reverse_simulate", "simulate", "systematic_resample", "tb_loss",
]
