"""Non-finite log-densities in population methods: counting inside the compiled run, reporting after it.

A log-density of ``NaN`` or ``+inf`` (or a non-finite gradient where the
log-density is finite) is a broken evaluation, not a density: the population
methods (the SMC family, nested sampling, parallel tempering, the reverse
diffusions and walk-jump) treat it as zero density (a zero weight, a rejected
move, a point outside the likelihood constraint), as the chain methods reject
such a proposal.  ``-inf`` is a legitimate zero density (outside a support) and
is not counted.  The MCMC moves inside a population count their proposals the
way the chain methods do (the kernel's ``is_nonfinite``: a proposal whose
log-density, gradient or energy is not finite).

Inside the program (jittable): :func:`is_nonfinite` and :func:`count_nonfinite`.
On the host: :func:`report` turns the per-run counts into ``extra`` entries and
the run warning ``{"code": "nonfinite", "value": count, "message": ...}`` (the
chain methods' code), and :func:`everywhere_error` is the ``ValueError`` of a
run in which nothing finite was left.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def is_nonfinite(logdensity, grad=None):
    """Elementwise: ``logdensity`` is NaN or ``+inf``, or (``grad [..., d]`` given) finite with a non-finite gradient."""
    bad = jnp.isnan(logdensity) | (logdensity == jnp.inf)
    if grad is not None:
        bad = bad | (jnp.isfinite(logdensity) & ~jnp.all(jnp.isfinite(grad), axis=-1))
    return bad


def is_broken_proposal(position, logdensity, grad=None):
    """A kernel's proposal that counts as a broken evaluation: :func:`is_nonfinite` at a finite ``position``.

    A proposal whose position itself overflowed (an integrator that blew up with too large a
    step, e.g. on a Gaussian) is a divergence of the sampler, not a broken log-density: it
    is rejected, but not counted as non-finite.  ``position [..., d]``.
    """
    return jnp.all(jnp.isfinite(position), axis=-1) & is_nonfinite(logdensity, grad)


def count_nonfinite(logdensity, grad=None, axis=None):
    """Number of :func:`is_nonfinite` evaluations (``int32``; summed over ``axis``, all axes by default)."""
    return jnp.sum(is_nonfinite(logdensity, grad), axis=axis, dtype=jnp.int32)


def report(method: str, counts_per_run, extra: dict, warnings: list) -> int:
    """Put the per-run counts in ``extra`` (``num_nonfinite``, ``num_nonfinite_runs``) and, when any
    evaluation was non-finite, append the ``nonfinite`` warning to ``warnings``; returns the total."""
    per_run = np.asarray(counts_per_run, dtype=np.int64).reshape(-1)
    total = int(per_run.sum())
    extra["num_nonfinite"] = total
    extra["num_nonfinite_runs"] = per_run.tolist()
    if total:
        warnings.append({"code": "nonfinite", "value": total,
                         "message": f"{total} evaluations of {method} had a non-finite log-density or gradient "
                                    f"(NaN or +inf) and were treated as zero density (zero weight or rejected "
                                    f"move); per run: {per_run.tolist()}"})
    return total


def everywhere_error(method: str, target_name: str, tried: str, runs, num_runs: int, hint: str = "") -> ValueError:
    """The error of runs with nothing finite left: ``tried`` says what was evaluated (e.g. "all 20 initial
    particles"), ``runs`` the indices of the runs concerned."""
    runs = [int(r) for r in np.asarray(runs).reshape(-1)]
    return ValueError(f"{method}: the log-density of target {target_name!r} is non-finite (NaN or +inf) everywhere "
                      f"it was tried: {tried} in {len(runs)} of {num_runs} run(s) (runs {runs}); check the target "
                      "for NaN (e.g. log of a negative number, 0 * inf) or its support" + (f"; {hint}" if hint else ""))
