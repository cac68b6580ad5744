"""Population samplers: ensembles, interacting particle systems and ensemble/Monte-Carlo reverse diffusions.

Method family ``"interacting"``.  Named so to keep three things apart: these
samplers (a population of interacting walkers/particles), the particle-system
*targets* DW-4 and LJ-13 (:mod:`samplax.targets.molecular`), and the weighted
particle population of SMC (:class:`samplax.smc.mutation.Particles`,
``Result.extra["particles"]``), which alone keeps the name "particles".

Modules: :mod:`ensemble` (stretch and differential-evolution ensembles),
:mod:`stein` (SVGD, mirrored SVGD), :mod:`mmd_flow`, :mod:`walk_jump`,
:mod:`rdmc`, :mod:`score_ensemble`.  They are reached through
``samplax.sample(target, method=NAME)`` (registrations in
:mod:`samplax.methods.interacting`).
"""
