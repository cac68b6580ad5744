"""iDEM (iterated denoising energy matching, Akhound-Sadegh et al. 2024) as the trained method ``idem``.

``samplax.sample(target, method="idem", seed=..., num_samples=..., training_evals=..., **options)`` regresses a
score network onto the MC score estimate of the VE-noised target at replay-buffer points (the engine's trainer:
progress, checkpoints, a clear stop at a non-finite loss), then simulates the reverse VE SDE and returns
equal-weight draws with ``log_Z``, ``log_Z_se``, the ELBO and the ESS from the path-measure weights
(``result.extra``).  See :mod:`samplax.neural.idem`.
"""
from __future__ import annotations

from samplax.core.method import MethodSpec, Option
from samplax.core.options import one_of, or_none, pos_float, pos_int
from samplax.methods import register_method
from samplax.neural.idem import NETWORKS, IDEMConfig, check_config, make_plan

_D = IDEMConfig()


def _auto_or(check):
    """``check`` that also accepts the string ``"auto"`` (the paper's value for the target)."""
    def ok(v) -> bool:
        return (isinstance(v, str) and v == "auto") or check(v)

    return ok

OPTIONS = {
    "training_evals": Option(_D.training_evals, "training budget: target value-and-gradient evaluations; steps = "
                             "training_evals // (batch_size x num_mc_samples)", pos_int, "an int >= 1"),
    "batch_size": Option(_D.batch_size, "buffer points regressed per training step", pos_int, "an int >= 1"),
    "num_mc_samples": Option(_D.num_mc_samples, "K: noise draws of the MC score estimate per point (K target "
                             "value-and-gradient evaluations)", pos_int, "an int >= 1"),
    "buffer_size": Option(_D.buffer_size, "replay buffer capacity (points; first in, first out)", pos_int,
                          "an int >= 1"),
    "inner_steps": Option(_D.inner_steps, "training steps per outer iteration (the buffer gets new endpoints every "
                          "inner_steps steps, from step 0)", pos_int, "an int >= 1"),
    "outer_paths": Option(_D.outer_paths, "reverse-SDE paths simulated per outer iteration (their endpoints enter "
                          "the buffer; no target evaluations)", pos_int, "an int >= 1"),
    "num_time_steps": Option(_D.num_time_steps, "Euler-Maruyama steps of the reverse VE SDE", pos_int,
                             "an int >= 1"),
    "sigma_min": Option(_D.sigma_min, "smallest noise level of the geometric VE schedule (None: the paper's: 0.01 "
                        "for lj13, else 1e-5)", or_none(pos_float), "None or a finite number > 0"),
    "sigma_max": Option(_D.sigma_max, "largest noise level (None: the paper's: 3 for dw4, 2 for lj13, else 70)",
                        or_none(pos_float), "None or a finite number > 0"),
    "score_clip": Option(_D.score_clip, "clip the norm of the MC score estimate to this (None: no clipping; 'auto': "
                         "the paper's, 20 for particle systems, else 1000)", _auto_or(or_none(pos_float)),
                         "'auto', None or a finite number > 0"),
    "network": Option(_D.network, "score network: 'mlp' or 'egnn' (E(n)-equivariant, particle systems only); None: "
                      "'egnn' for particle systems, else 'mlp'", or_none(one_of(NETWORKS)),
                      f"None or one of {list(NETWORKS)}"),
    "width": Option(_D.width, "hidden width of the score network", pos_int, "an int >= 1"),
    "depth": Option(_D.depth, "hidden layers (MLP) or message-passing layers (EGNN)", pos_int, "an int >= 1"),
    "learning_rate": Option(_D.learning_rate, "Adam step size", pos_float, "a finite number > 0"),
    "grad_clip": Option(_D.grad_clip, "global-norm clip of the loss gradient", pos_float, "a finite number > 0"),
}


def _prepare(target, options):
    cfg = IDEMConfig(**options)
    check_config(target, cfg)
    return {**options, **resolved_options(target, cfg)}


def resolved_options(target, cfg: IDEMConfig) -> dict:
    """The target-dependent defaults of ``cfg`` as the run records them (``network``, ``sigma_max``, ``sigma_min``,
    ``score_clip``; :meth:`~samplax.neural.idem.IDEMConfig.resolve`)."""
    cfg = cfg.resolve(target)
    return {"network": cfg.network, "sigma_max": cfg.sigma_max, "sigma_min": cfg.sigma_min,
            "score_clip": cfg.score_clip}


def _trainer(target, ctx, **options):
    return make_plan(target, ctx, IDEMConfig(**options))


def _sampling_cost(options):
    """One log-density evaluation per draw (``log pi~(x_K)`` for its weight)."""
    return 1


register_method(MethodSpec(
    "idem", None, "iterated denoising energy matching (Akhound-Sadegh et al. 2024): a score network regressed onto "
    "an MC estimate of the noised target's score at replay-buffer points; reverse VE SDE with path weights",
    OPTIONS, family="neural", gradient_based=True, trainer=_trainer, prepare=_prepare,
    sampling_cost=_sampling_cost))
