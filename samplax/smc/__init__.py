"""Sequential Monte Carlo, annealing and nested sampling with log Z estimates.

One generic Feynman–Kac step (:func:`samplax.smc.base.fk_step`: reweight,
ESS-triggered resample, mutate) configured into adaptive tempered SMC,
waste-free SMC, AIS and population annealing (:mod:`samplax.smc.tempered`);
parallel tempering (:mod:`samplax.smc.parallel_tempering`) and nested sampling
(:mod:`samplax.smc.nested`) share its resampling and paths.
"""
from samplax.smc import base, paths, resampling  # noqa: F401
from samplax.smc.base import SMCState, fk_step, lee_whiteley_relative_variance  # noqa: F401
from samplax.smc.resampling import (conditional_ess, ess, multinomial, residual, stratified,  # noqa: F401
                                    systematic)
