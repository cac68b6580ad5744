"""Population samplers: ensembles, interacting particle systems and ensemble/Monte-Carlo reverse diffusions.

Modules: :mod:`ensemble` (stretch and differential-evolution ensembles),
:mod:`stein` (SVGD, mirrored SVGD), :mod:`mmd_flow`, :mod:`walk_jump`,
:mod:`rdmc`, :mod:`score_ensemble`.  They are reached through
``samplax.sample(target, method=NAME)`` (registrations in
:mod:`samplax.methods.particles`).
"""
