"""posteriordb posteriors as samplax targets (Stan unconstrained space).

Registered as ``"pdb:<posterior_name>"`` (e.g.
``"pdb:eight_schools-eight_schools_noncentered"``, alias ``"eight_schools"``).
Each factory takes an optional ``data`` dict (same keys as posteriordb's
``data.json``); by default the bundled, checksum-verified data are used.
Ground truth: the posteriordb reference draws (10 chains x 1000 NUTS draws),
summarised in ``samplax/data/posteriordb/<name>/reference_summary.json``.

Reference: Magnusson, Bürkner, Vehtari (2022), "posteriordb: testing,
benchmarking and developing Bayesian inference algorithms", arXiv:2407.04967;
https://github.com/stan-dev/posteriordb.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from samplax.targets import register
from samplax.targets.posteriordb import _bundle, models
from samplax.targets.posteriordb.base import PosteriorDBTarget
from samplax.targets.posteriordb.bijectors import (  # noqa: F401
    Interval, Lower, Ordered, Param, PositiveOrdered, Real, Simplex, pack, unpack,
)

#: posterior name -> builder(posterior_name, data) for every bundled posterior.
#: The first block have Stan oracle files (log-density and gradient checked to
#: 1e-8); later blocks reuse an oracle-checked model program on other data.
POSTERIORS: Dict[str, Callable] = {
    "arK-arK": models.build_arK,
    "arma-arma11": models.build_arma11,
    "diamonds-diamonds": models.build_diamonds,
    "earnings-logearn_interaction": models.build_logearn_interaction,
    "eight_schools-eight_schools_noncentered": models.build_eight_schools_noncentered,
    "garch-garch11": models.build_garch11,
    "gp_pois_regr-gp_pois_regr": models.build_gp_pois_regr,
    "gp_pois_regr-gp_regr": models.build_gp_regr,
    "hmm_example-hmm_example": models.build_hmm_example,
    "kidiq-kidscore_interaction": models.build_kidscore_interaction,
    "kidiq-kidscore_momhsiq": models.build_kidscore_momhsiq,
    "kilpisjarvi_mod-kilpisjarvi": models.build_kilpisjarvi,
    "low_dim_gauss_mix-low_dim_gauss_mix": models.build_low_dim_gauss_mix,
    "mesquite-logmesquite_logvas": models.build_logmesquite_logvas,
    "nes2000-nes": models.build_nes,
    "sblrc-blr": models.build_blr,
    # the oracle-checked ``nes`` and ``blr`` programs on other data sets
    **{f"nes{year}-nes": models.build_nes for year in (1972, 1976, 1980, 1984, 1988, 1992, 1996)},
    "sblri-blr": models.build_blr,
    # other linear regressions of the oracle-checked LinearRegression family
    **{f"earnings-{m}": models.EXTRA_LINREG[m] for m in (
        "earn_height", "log10earn_height", "logearn_height", "logearn_height_male",
        "logearn_interaction_z", "logearn_logheight_male")},
    "kidiq-kidscore_momhs": models.EXTRA_LINREG["kidscore_momhs"],
    "kidiq-kidscore_momiq": models.EXTRA_LINREG["kidscore_momiq"],
    **{f"kidiq_with_mom_work-{m}": models.EXTRA_LINREG[m] for m in (
        "kidscore_interaction_c", "kidscore_interaction_c2", "kidscore_interaction_z", "kidscore_mom_work")},
    **{f"mesquite-{m}": models.EXTRA_LINREG[m] for m in (
        "mesquite", "logmesquite", "logmesquite_logva", "logmesquite_logvash", "logmesquite_logvolume")},
}

#: posteriors whose model program has a Stan oracle file in posteriordb's shared
#: reference folder (log-density, gradient and constrain checked against Stan).
ORACLE_CHECKED = (
    "arK-arK", "arma-arma11", "diamonds-diamonds", "earnings-logearn_interaction",
    "eight_schools-eight_schools_noncentered", "garch-garch11", "gp_pois_regr-gp_pois_regr",
    "gp_pois_regr-gp_regr", "hmm_example-hmm_example", "kidiq-kidscore_interaction",
    "kidiq-kidscore_momhsiq", "kilpisjarvi_mod-kilpisjarvi", "low_dim_gauss_mix-low_dim_gauss_mix",
    "mesquite-logmesquite_logvas", "nes2000-nes", "sblrc-blr",
)

ALIASES = {"eight_schools": "eight_schools-eight_schools_noncentered"}


def load(posterior_name: str, data: Optional[dict] = None) -> PosteriorDBTarget:
    """Build the posteriordb posterior ``posterior_name`` (bundled data unless ``data`` is given)."""
    posterior_name = ALIASES.get(posterior_name, posterior_name)
    if posterior_name not in POSTERIORS:
        raise KeyError(
            f"posteriordb: unknown posterior {posterior_name!r}; available: {', '.join(sorted(POSTERIORS))}"
        )
    if data is None:
        data = _bundle.load_data(posterior_name)
    elif not isinstance(data, dict):
        raise TypeError(f"posteriordb.load: data must be a dict like data.json, got {type(data).__name__}")
    return POSTERIORS[posterior_name](posterior_name, data)


def _factory(posterior_name: str) -> Callable:
    def factory(data: Optional[dict] = None) -> PosteriorDBTarget:
        return load(posterior_name, data)

    factory.__name__ = f"pdb_{posterior_name.replace('-', '_')}"
    factory.__doc__ = f"posteriordb posterior {posterior_name!r} on Stan's unconstrained space."
    return factory


for _name in POSTERIORS:
    register(f"pdb:{_name}")(_factory(_name))
for _alias, _name in ALIASES.items():
    register(_alias)(_factory(_name))
