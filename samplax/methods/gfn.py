"""GFlowNet-style and time-reversal configurations of the path-measure core (trained methods): ``tb``, ``dgfs``
and ``dis``.

* ``tb``: the trajectory-balance diffusion sampler of Sendera, Kim, Mittal, Lemos, Scimeca, Rector-Brooks, Adam,
  Bengio & Malkin (2024, "Improved off-policy training of diffusion samplers"), their best configuration
  "TB + expl. + LS": PIS's Brownian reference, ``loss="tb"`` with a learned ``log Z``, off-policy exploration,
  the Langevin-parameterized drift, and a replay buffer whose rank-prioritized states are improved by MALA
  local search and trained on as backward paths (:mod:`samplax.neural.gfn`), on the schedule of their code: every
  100 training steps ``replay_fraction x batch_size`` buffer states run 200 MALA steps, and the states after a
  burn-in of 100 (during which the step size adapts) fill a second buffer that the backward paths start from
  (``local_search_every``, ``local_search_burn_in``; ``local_search_steps=8, local_search_every=1,
  local_search_burn_in=0`` is a short search on the drawn states at every step, this method's default before
  2026-12-08).
* ``dgfs``: Diffusion Generative Flow Samplers (Zhang, Chen, Liu, Courville & Bengio 2024, ICLR): the same
  reference and drift trained by sub-trajectory balance (``loss="subtb"``) with DGFS's log-flow, a network
  plus the geometric interpolation between the reference's marginal and the target; ``log Z`` is the flow at
  ``t = 0``.
* ``dis``: the time-reversed diffusion sampler (Berner, Richter & Ullrich 2022/2024): the Euler-Maruyama
  time reversal of the VP SDE with a learned score (:func:`samplax.neural.sde.dis_reference`), trained by the
  reparameterized reverse KL (``loss="kl"``, the paper's; ``"logvar"`` also applies).

Measured (seed 0, 1e6 total target evaluations, 2000 draws, ``num_time_steps=16``, ``batch_size=64``; one run
each, so single-seed numbers): on gmm25 (``sigma=6``) all 25 modes are hit by tb, dgfs and dis; on Funnel-10
(``sigma=2``) tb's short local search at every step made training worse (ELBO -95 against -3.1 with
``local_search_steps=0`` and -1.8 with no buffer at all): MALA and the rank priority pull buffer states into the
funnel's neck, where the Brownian reference's paths cannot follow; the long schedule hurts less (ELBO -6.1 at 1e6)
but still does.  Turn it off there.  The long schedule against the short one (``samplax bench learned``'s settings,
1e6, 1000 draws, seed 0; ``benchmarks/learned_samplers.md``): the ELBO is higher on GMM-25, GMM-40, Many-Well-32
(147.6 / 143.2, log Z = 164.7) and LJ-13, entropic mode coverage 0.98 / 0.92 (GMM-25) and 0.82 / 0.77 (GMM-40),
sliced W2 0.81 / 1.57 (GMM-25) and 0.68 / 1.35 (Many-Well-32), energy / distance W2 1.56 / 0.15 against 3.55 /
0.24 (DW-4) and 47 / 0.82 against 67 / 1.50 (LJ-13); |dlogZ| 0.010 / 0.077 on GMM-25 but 0.64 / 0.086 on GMM-40
and 4.2 / 3.1 on Many-Well-32, where both miss modes and are far outside their standard errors.

Every option of ``pis`` applies (the same :class:`~samplax.neural.SamplerConfig`), with these defaults; see
:mod:`samplax.methods.neural`.
"""
from __future__ import annotations

from samplax.core.method import MethodSpec
from samplax.methods import register_method
from samplax.methods.neural import sampler_options
from samplax.neural.plan import SamplerConfig, check_config, make_plan

#: name -> (reference, option defaults)
CONFIGS = {
    "tb": ("pis", dict(loss="tb", langevin=True, exploration=0.2, replay=10_000, replay_fraction=0.5,
                       local_search_steps=200, local_search_burn_in=100, local_search_every=100,
                       local_search_step_size=0.01)),
    "dgfs": ("pis", dict(loss="subtb", langevin=True, subtb_lambda=2.0)),
    "dis": ("dis", dict(loss="kl", langevin=True)),
}


def _config(name: str, options: dict) -> SamplerConfig:
    return SamplerConfig(reference=CONFIGS[name][0], **options)


def _prepare(name):
    def prepare(target, options):
        check_config(name, target, _config(name, options), CONFIGS[name][1])
        return options

    return prepare


def _sampling_cost(name):
    def cost(options):
        return _config(name, options).evals_per_path(training=False)[0]

    return cost


def _trainer(name):
    def trainer(target, ctx, **options):
        return make_plan(name, target, ctx, _config(name, options), CONFIGS[name][1])

    return trainer


DESCRIPTIONS = {
    "tb": "GFlowNet trajectory-balance diffusion sampler (Sendera et al. 2024): PIS reference, learned log Z, "
          "exploration, replay buffer with MALA local search",
    "dgfs": "Diffusion Generative Flow Samplers (Zhang et al. 2024): sub-trajectory balance with a learned log-flow",
    "dis": "time-reversed Diffusion Sampler (Berner, Richter & Ullrich 2022): the VP SDE's reversal with a learned "
           "score, reverse KL",
}

for _name, (_ref, _defaults) in CONFIGS.items():
    register_method(MethodSpec(
        _name, None, DESCRIPTIONS[_name], sampler_options(**_defaults), family="neural", gradient_based=True,
        trainer=_trainer(_name), prepare=_prepare(_name), sampling_cost=_sampling_cost(_name)))
