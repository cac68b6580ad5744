"""The cost record every run reports (DESIGN.md principle 8: every cost is counted).

One type for every family: MCMC chains, populations (SMC, nested sampling,
particle flows) and diffusion sampling.  It is a ``dict`` so that it serializes
to JSON as it is and old code reading ``result.cost["num_grad_evals"]`` keeps
working; :func:`make_cost` fills the standard fields.
"""
from __future__ import annotations

from typing import Optional

#: The standard fields, in the order reports show them.
FIELDS = ("num_logdensity_evals", "num_grad_evals", "num_model_evals", "compile_seconds", "sampling_seconds",
          "num_compilations", "num_devices")


class Cost(dict):
    """A cost record: evaluation counts, compile and run seconds, compilations, devices.

    Fields (all optional; absent means "not applicable"):
      num_logdensity_evals: single-point log-density evaluations (a value-and-gradient call counts one).
      num_grad_evals: single-point gradient evaluations.
      num_model_evals: denoiser / network calls (diffusion: per sample; trained samplers that report them, e.g.
        idem and flow_perturbation: the score-network passes of their sampling, in all).
      compile_seconds: time spent tracing and compiling.
      sampling_seconds: wall time after compilation (the run itself).
      num_compilations: programs compiled by this run (0 when every program came from the cache).
      num_devices: devices the batch of chains / runs / particles was sharded over.
    """

    def total_seconds(self) -> float:
        """Compile plus sampling seconds."""
        return float(self.get("compile_seconds", 0.0)) + float(self.get("sampling_seconds", 0.0))


def make_cost(*, num_logdensity_evals: Optional[int] = None, num_grad_evals: Optional[int] = None,
              num_model_evals: Optional[int] = None, compile_seconds: Optional[float] = None,
              sampling_seconds: Optional[float] = None, num_compilations: Optional[int] = None,
              num_devices: Optional[int] = None, **more) -> Cost:
    """A :class:`Cost` with the given standard fields (``None`` ones left out) and any ``more`` entries."""
    given = dict(num_logdensity_evals=num_logdensity_evals, num_grad_evals=num_grad_evals,
                 num_model_evals=num_model_evals, compile_seconds=compile_seconds,
                 sampling_seconds=sampling_seconds, num_compilations=num_compilations, num_devices=num_devices)
    out = Cost({k: v for k, v in given.items() if v is not None})
    out.update(more)
    return out
