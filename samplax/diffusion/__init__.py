"""Diffusion-model sampling: schedules, denoiser adapters, exact GMM models, grids, solvers.

Public entry points: :func:`sample`, :func:`log_likelihood`, :mod:`samplax.diffusion.train`
(``train.train`` fits small MLP denoisers), :mod:`samplax.diffusion.guidance` (guided denoisers),
:mod:`samplax.diffusion.compose` (products, powers, CFG of models; :func:`sample_smc`, Feynman–Kac correctors) and
:mod:`samplax.diffusion.energy` (energy-parameterized models); few-step sampling with precomputed help:
:func:`sample_shortcut` (shortcut models), :func:`sample_redi` (ReDi's trajectory retrieval from a
:func:`redi_build` knowledge base) and :func:`sample_dpm_ot` (DPM-OT's semi-discrete OT start, :func:`dpm_ot_build`). VE convention ``x = x0 + sigma * noise``, a denoiser
``D(x, sigma) = E[x0 | x]`` for one point. :func:`solver_names` and :func:`grid_names`
list what ``solver=`` and ``grid=`` accept.
"""
from samplax.diffusion.schedules import (  # noqa: F401
    Schedule, VPDiscrete, VPLinear, VPCosine, VE, EDM, LinearInterpolant, ddpm_linear,
)
from samplax.diffusion.gmm import (  # noqa: F401
    GaussianMixtureDiffusion, FullCovGaussianMixtureDiffusion, ring8, grid25, random_mixture, random_full_mixture,
    get_model,
)
from samplax.diffusion.grids import make_grid, grid_names  # noqa: F401
from samplax.diffusion.solvers import Solver, get_solver, solver_names  # noqa: F401
from samplax.diffusion.sampling import sample, SampleInfo, auto_choice, AUTO_RULE  # noqa: F401
from samplax.diffusion.reference import solve_pf_ode  # noqa: F401
from samplax.diffusion.likelihood import log_likelihood  # noqa: F401
from samplax.diffusion.optimize_grid import optimized_grid  # noqa: F401
from samplax.diffusion.fit_solvers import FittedSolver, fit_dc, fit_iia, fit_v3, search_schedule  # noqa: F401
from samplax.diffusion.train import (  # noqa: F401
    MLPDenoiser, TrainConfig, TrainState, init_train_state, save_checkpoint, load_checkpoint, load_denoiser,
)
from samplax.diffusion import train  # noqa: F401,E402  (the module: train.train runs training)
from samplax.diffusion.shortcut import ShortcutMLP, sample_shortcut  # noqa: F401,E402
from samplax.diffusion import shortcut  # noqa: F401,E402  (shortcut models: few-step sampling)
from samplax.diffusion.redi import KnowledgeBase, redi_build, redi_retrieve, sample_redi  # noqa: F401,E402
from samplax.diffusion.dpm_ot import (  # noqa: F401,E402
    DPMOT, SemiDiscreteOT, dpm_ot_build, sample_dpm_ot, semidiscrete_ot,
)
from samplax.diffusion.distill import EMDModel, sample_emd, sample_sfd  # noqa: F401,E402
from samplax.diffusion import distill  # noqa: F401,E402  (SFD and EM distillation: few-step students)
from samplax.diffusion.denoisers import (  # noqa: F401
    from_eps, from_v, from_score, from_velocity, from_discrete_eps, to_eps, to_score, reshaped,
)
from samplax.diffusion import guidance  # noqa: F401,E402  (guided denoisers and guided samplers)
from samplax.diffusion import inverse  # noqa: F401,E402  (inverse problems: inverse.sample, inverse.posterior)
from samplax.diffusion.energy import (  # noqa: F401,E402
    EnergyDiffusion, MixtureEnergy, MLPDifferenceEnergy, MLPScalarEnergy, energy_model,
)
from samplax.diffusion.correctors import Corrector, corrector  # noqa: F401,E402
from samplax.diffusion import compose  # noqa: F401,E402  (composition operators and their ground truth)
from samplax.diffusion.compose import sample_smc, SMCInfo  # noqa: F401,E402

__all__ = [
    "Schedule", "VPDiscrete", "VPLinear", "VPCosine", "VE", "EDM", "LinearInterpolant", "ddpm_linear",
    "GaussianMixtureDiffusion", "FullCovGaussianMixtureDiffusion", "random_full_mixture", "ring8", "grid25", "random_mixture", "get_model",
    "make_grid", "grid_names", "Solver", "get_solver", "solver_names",
    "sample", "SampleInfo", "auto_choice", "AUTO_RULE", "solve_pf_ode", "log_likelihood", "optimized_grid",
    "fit_iia", "fit_dc", "fit_v3", "search_schedule", "FittedSolver",
    "MLPDenoiser", "TrainConfig", "TrainState", "train", "init_train_state", "save_checkpoint", "load_checkpoint",
    "load_denoiser", "ShortcutMLP", "sample_shortcut", "shortcut",
    "KnowledgeBase", "redi_build", "redi_retrieve", "sample_redi",
    "DPMOT", "SemiDiscreteOT", "dpm_ot_build", "sample_dpm_ot", "semidiscrete_ot",
    "EMDModel", "sample_emd", "sample_sfd", "distill",
    "from_eps", "from_v", "from_score", "from_velocity", "from_discrete_eps", "to_eps", "to_score", "reshaped",
    "guidance", "inverse", "EnergyDiffusion", "MixtureEnergy", "MLPDifferenceEnergy", "MLPScalarEnergy",
    "energy_model", "Corrector", "corrector", "compose", "sample_smc", "SMCInfo",
]
