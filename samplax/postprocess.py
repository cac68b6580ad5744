"""Turn raw draws into a :class:`~samplax.core.result.Result`: quantities, diagnostics, warnings.

Warnings follow Stan's and ArviZ's rules of thumb (Vehtari et al. 2021;
Betancourt 2017): rank-normalized R-hat > 1.01, bulk or tail ESS below 100 per
chain, any divergence after warm-up, transitions that hit the maximum tree
depth, E-BFMI < 0.3, non-finite log-densities at proposals.  Given the draws,
also: divergences concentrated in one region of a quantity (e.g. small ``tau``
in a centred hierarchical model), and a chain whose ESS is far below the others'.
"""
from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.result import Result
from samplax.core.target import Target, flatten_quantities

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
EBFMI_MIN = 0.3
REFERENCE_DRAWS = 4000


@eqx.filter_jit
def _constrain_all(target, flat):
    shape = tuple(target.event_shape)
    return jax.vmap(lambda x: flatten_quantities(target.constrain(jnp.reshape(x, shape))))(flat)


@eqx.filter_jit
def _exact_draws(target, key, n: int):
    return target.sample(key, n)


def quantities_of(target: Target, samples: np.ndarray) -> np.ndarray:
    """``target.constrain`` applied to draws ``[chains, draws, d]`` -> ``[chains, draws, k]`` (named variables
    flattened by :func:`~samplax.core.target.flatten_quantities`)."""
    c, n = samples.shape[:2]
    if type(target).constrain is Target.constrain:
        return samples.reshape(c, n, int(np.prod(samples.shape[2:])))
    if n == 0:
        point = jax.ShapeDtypeStruct(tuple(target.event_shape), jnp.result_type(float))
        k = jax.eval_shape(lambda x: flatten_quantities(target.constrain(x)), point).shape[0]
        return np.zeros((c, 0, k), samples.dtype)
    flat = samples.reshape(c * n, -1)
    q = _constrain_all(target, jnp.asarray(flat))
    return np.asarray(q).reshape(c, n, -1)


DIVERGENCE_MIN = 5
DIVERGENCE_Z = 4.0
DIVERGENCE_SHIFT = 0.15
CHAIN_ESS_RATIO = 0.2


def divergence_concentration(quantities, diverging, names=None):
    """Where divergent transitions cluster, per quantity.

    For quantity ``j`` let ``u`` be the mid-rank percentile, in ``(0, 1)``, of every
    draw among all draws and ``u_bar`` its mean over the ``m`` divergent draws.
    Without concentration ``u_bar`` has mean 1/2 and standard deviation about
    ``sqrt((1 - m/N) / (12 m))`` (sampling ``m`` of ``N`` ranks without
    replacement), so ``z = (u_bar - 1/2) / sd``.  Returns one dict per quantity
    with ``|z| > 4`` and ``|u_bar - 1/2| > 0.15`` (largest ``|z|`` first):
    ``{"index", "name", "z", "percentile", "side"}`` (side ``"small"`` or
    ``"large"``).  Needs at least 5 divergences.
    """
    q = np.asarray(quantities, dtype=float)
    q = q.reshape(-1, q.shape[-1])
    div = np.asarray(diverging).reshape(-1).astype(bool)
    m, n = int(div.sum()), div.size
    if m < DIVERGENCE_MIN or m == n:
        return []
    u = (np.argsort(np.argsort(q, axis=0, kind="stable"), axis=0) + 0.5) / n  # ties: order of appearance
    u_bar = u[div].mean(axis=0)
    sd = np.sqrt((1.0 - m / n) / (12.0 * m))
    z = (u_bar - 0.5) / sd
    out = []
    for j in np.argsort(-np.abs(z)):
        if np.isfinite(z[j]) and abs(z[j]) > DIVERGENCE_Z and abs(u_bar[j] - 0.5) > DIVERGENCE_SHIFT:
            out.append({"index": int(j), "name": names[j] if names else f"x[{j}]", "z": float(z[j]),
                        "percentile": float(u_bar[j]), "side": "small" if z[j] < 0 else "large"})
    return out


def concentration_warning(quantities, diverging, names=None, noncentred: bool = False,
                          consequence: str | None = None) -> dict | None:
    """The ``divergence_concentration`` warning (None when :func:`divergence_concentration`
    finds no cluster).  ``consequence`` replaces the default "the sampler cannot enter
    that region, so estimates there are biased" (``auto`` says what it did about it)."""
    conc = divergence_concentration(quantities, diverging, list(names) if names else None)
    if not conc:
        return None
    c0 = conc[0]
    consequence = consequence or "the sampler cannot enter that region, so estimates there are biased"
    return {"code": "divergence_concentration", "value": c0["name"], "details": conc,
            "message": f"divergences concentrate at {c0['side']} values of {c0['name']} (divergent draws' mean "
                       f"percentile {100 * c0['percentile']:.0f}%, z = {c0['z']:.1f}): {consequence} "
                       f"({_reparam_hint(noncentred)})"}


def quantity_names(target, k: int) -> tuple:
    """The names of ``target``'s ``k`` flattened quantities (``x[i]`` when it names none or
    its names do not number ``k``)."""
    names = tuple(target.quantity_names()) if hasattr(target, "quantity_names") else None
    if names is None or len(names) != k:
        names = tuple(f"x[{i}]" for i in range(k))
    return names


def is_noncentred(target) -> bool:
    """Whether ``target``'s name or provenance says it is a non-centred parameterization
    (e.g. posteriordb's ``eight_schools_noncentered``): then a divergence hint does not
    suggest non-centring it."""
    if target is None:
        return False
    prov = target.provenance() if hasattr(target, "provenance") else {}
    text = " ".join([str(getattr(target, "name", ""))] + [str(v) for v in prov.values()])
    return re.search(r"non-?cent(er|re)", text, re.IGNORECASE) is not None


def _reparam_hint(noncentred: bool) -> str:
    if noncentred:
        return "the target is already non-centred, so non-centring is no remedy here: raise target_accept"
    return "raise target_accept; if a hierarchical scale is centred, a non-centred parameterization usually helps"


def _nan_reduce(fn, a):
    """``fn`` over the non-NaN entries of ``a``; NaN when there are none (``np.nanmin`` & co. would warn)."""
    a = np.asarray(a, dtype=float)
    a = a[~np.isnan(a)]
    return fn(a) if a.size else float("nan")


def run_warnings(diagnostics: dict, stats: dict, num_chains: int, options: dict | None = None,
                 quantities=None, noncentred: bool = False) -> list:
    """Structured warnings for a run that should not be trusted as is.

    ``quantities`` (``[chains, draws, k]``, optional) enables the draw-based
    checks: divergence concentration (:func:`divergence_concentration`) and a
    chain whose minimum bulk ESS is below 0.2 times the median chain's.
    ``noncentred`` (:func:`is_noncentred` of the target): the divergence hints
    then say the model is already non-centred instead of suggesting it.
    """
    out = []
    names = diagnostics.get("names")
    rhat = np.asarray(diagnostics.get("rhat", []), dtype=float)
    if rhat.size and _nan_reduce(np.max, rhat) > RHAT_MAX:
        i = int(np.nanargmax(rhat))
        out.append({"code": "rhat", "value": float(rhat[i]),
                    "message": f"max rank-normalized R-hat {rhat[i]:.3f} > {RHAT_MAX} "
                               f"({names[i] if names else i}): chains disagree"})
    elif rhat.size and np.all(np.isnan(rhat)) and num_chains > 1:
        out.append({"code": "rhat", "value": float("nan"), "message": "R-hat is undefined (constant draws?)"})
    for kind in ("ess_bulk", "ess_tail"):
        ess = np.asarray(diagnostics.get(kind, []), dtype=float)
        if ess.size and _nan_reduce(np.min, ess) < ESS_PER_CHAIN_MIN * num_chains:
            i = int(np.nanargmin(ess))
            chains = f"{num_chains} chain{'s' if num_chains != 1 else ''}"
            out.append({"code": kind, "value": float(ess[i]),
                        "message": f"{kind.split('_')[1]} ESS {ess[i]:.0f} of {names[i] if names else i} over "
                                   f"{chains} is below {ESS_PER_CHAIN_MIN} per chain "
                                   f"({ESS_PER_CHAIN_MIN * num_chains}): estimates may be unreliable"})
    if "diverging" in stats:
        n_div = int(np.sum(stats["diverging"]))
        if n_div:
            frac = n_div / stats["diverging"].size
            per_chain = np.sum(stats["diverging"], axis=1)
            out.append({"code": "divergences", "value": n_div,
                        "message": f"{n_div} divergent transitions after warm-up ({100 * frac:.2f}%; per chain "
                                   f"{per_chain.tolist()}): the sampler may miss part of the posterior "
                                   f"({_reparam_hint(noncentred)})"})
    if "diverging" in stats and quantities is not None:
        w = concentration_warning(quantities, stats["diverging"], names, noncentred)
        if w:
            out.append(w)
    if quantities is not None and num_chains > 1 and np.asarray(quantities).shape[1] >= 20:
        from samplax.diagnostics import ess_bulk

        with np.errstate(all="ignore"):
            per = np.array([_nan_reduce(np.min, ess_bulk(np.asarray(quantities)[c:c + 1]))
                            for c in range(num_chains)])
        med = float(_nan_reduce(np.median, per))
        bad = [int(c) for c in np.flatnonzero(per < CHAIN_ESS_RATIO * med)]
        if bad and med > 0:
            out.append({"code": "chain_ess", "value": bad,
                        "message": f"chain(s) {bad} have min bulk ESS {[round(float(per[c]), 1) for c in bad]} < "
                                   f"{CHAIN_ESS_RATIO} x the median chain's {med:.0f}: a chain is stuck or mixes "
                                   "far worse than the others"})
    if "tree_depth" in stats and options and "max_tree_depth" in options:
        hit = int(np.sum(np.asarray(stats["tree_depth"]) >= options["max_tree_depth"]))
        if hit:
            out.append({"code": "max_tree_depth", "value": hit,
                        "message": f"{hit} transitions hit max_tree_depth={options['max_tree_depth']}"})
    if "energy" in stats and stats["energy"].shape[1] > 2:
        from samplax.diagnostics import ebfmi

        e = ebfmi(stats["energy"])
        if np.nanmin(e) < EBFMI_MIN:
            out.append({"code": "ebfmi", "value": float(np.nanmin(e)),
                        "message": f"E-BFMI {np.nanmin(e):.2f} < {EBFMI_MIN} in some chain: "
                                   "momentum resampling explores the energy poorly (heavy tails / funnel?)"})
    if "nonfinite" in stats:
        n_nf = int(np.sum(stats["nonfinite"]))
        if n_nf:
            out.append({"code": "nonfinite", "value": n_nf,
                        "message": f"{n_nf} proposals had a non-finite log-density or gradient and were rejected"})
    return out


def nonfinite_warmup_warning(count: int, num_warmup_steps: int) -> dict | None:
    """The ``nonfinite_warmup`` run warning: ``count`` proposals (summed over chains) during the
    ``num_warmup_steps`` warm-up iterations had a non-finite log-density or gradient and were rejected.
    The warm-up draws are not returned, so the ``nonfinite`` warning (kept draws) cannot see them.
    ``None`` when ``count`` is 0."""
    if not count:
        return None
    return {"code": "nonfinite_warmup", "value": int(count),
            "message": f"{int(count)} proposals during the {int(num_warmup_steps)} warm-up iterations (all chains) "
                       "had a non-finite log-density or gradient and were rejected (not in the returned draws; "
                       "the 'nonfinite' warning counts those after warm-up): check the target where it is "
                       "evaluated, or lower the initial step size"}


def named_variables(target: Target, k: int):
    """``(variables, coords, dims)`` of a target whose :meth:`~samplax.core.target.Target.constrain` returns
    named variables (``variables`` None otherwise, or when their sizes do not add up to the ``k`` quantities)."""
    variables = target.variables() if hasattr(target, "variables") else None
    if variables is None or sum(int(np.prod(s)) for s in variables.values()) != k:
        return None, {}, {}
    coords, dims = target.coords_and_dims()
    return ({n: tuple(s) for n, s in variables.items()}, dict(coords),
            {n: tuple(d) for n, d in dims.items() if n in variables})


def finish_result(target: Target, method: str, samples: np.ndarray, stats: dict, cost: dict, config: dict,
                  *, complete: bool = True, extra: dict | None = None, log_Z=None, log_Z_se=None,
                  log_weights=None, extra_warnings: list | None = None, warmup_samples: np.ndarray | None = None,
                  warmup_stats: dict | None = None) -> Result:
    """Assemble a Result from flat draws ``[chains, draws, d]`` (and the kept warm-up draws
    ``[chains, warm-up draws, d]`` with their per-draw stats, when the run kept them)."""
    from samplax.diagnostics import summarize

    c, n = samples.shape[:2]
    quantities = quantities_of(target, samples)
    names = quantity_names(target, quantities.shape[-1])
    variables, coords, dims = named_variables(target, quantities.shape[-1])
    warmup_quantities = None
    if warmup_samples is not None:
        warmup_quantities = quantities_of(target, warmup_samples)
        warmup_samples = warmup_samples.reshape(warmup_samples.shape[:2] + tuple(target.event_shape))
    if n >= 4:
        diagnostics = summarize(quantities, names=list(names))
    else:
        k = quantities.shape[-1]
        nan = np.full(k, np.nan)
        diagnostics = {key: nan for key in ("mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "rhat")}
    diagnostics = {k: np.asarray(v) for k, v in diagnostics.items() if k != "names"}
    warnings = [] if n < 4 else run_warnings({**diagnostics, "names": names}, stats, c, config.get("options"),
                                             quantities=quantities, noncentred=is_noncentred(target))
    warnings += list(extra_warnings or [])
    if not complete:
        warnings.append({"code": "interrupted", "value": int(n),
                         "message": f"run interrupted after {n} post-warm-up draws per chain"})
    extra = dict(extra or {})
    gt = target.ground_truth()
    if gt is not None:
        extra.setdefault("ground_truth", gt.to_dict())
    reference = None
    if target.has_exact_sampler:
        # ground truth for plots; not a cost of the sampler
        exact = _exact_draws(target, jax.random.key(20261129), REFERENCE_DRAWS)
        reference = quantities_of(target, np.asarray(exact).reshape(1, REFERENCE_DRAWS, -1))[0]
    return Result(
        samples=samples.reshape((c, n) + tuple(target.event_shape)), quantities=quantities,
        quantity_names=names, stats=stats, diagnostics=diagnostics, cost=cost, warnings=warnings,
        method=method, target=target.name, config=config, log_Z=log_Z, log_Z_se=log_Z_se,
        log_weights=log_weights, complete=complete, extra=extra, reference_draws=reference,
        variables=variables, coords=coords, dims=dims, warmup_samples=warmup_samples,
        warmup_quantities=warmup_quantities, warmup_stats=None if warmup_samples is None else dict(warmup_stats or {}))
