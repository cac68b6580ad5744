"""Training objectives of the path-measure core (:mod:`samplax.neural.sde`), on a batch of paths.

Each takes the drift ``model``, the reference, the target's log-density and a batch of path keys and
returns ``(loss, aux)``; ``aux`` holds the batch's log importance weights under the sampling policy
(``log_w``: their ``log mean exp`` is an unbiased-in-``Z`` estimate of ``log Z`` shown during training).

* ``"kl"``: the reparameterized reverse KL of PIS and DDS (Zhang & Chen 2022; Vargas et al. 2023):
  ``E_Q[log Q - log P~] = KL(Q || P) - log Z``, on paths sampled from the drift being trained and
  differentiated through (needs the target's gradient at ``x_K``).
* ``"logvar"``: the log-variance divergence (Richter, Boustati, Nusken, Ruiz & Akyildiz 2020, VarGrad;
  Richter & Berner 2023): ``Var(log P~ - log Q_theta)`` over paths drawn from a fixed sampling policy
  (the current drift with ``stop_gradient``, plus ``exploration`` noise: off-policy), whose own density
  does not enter; the paths are not differentiated (no target gradient needed beyond the drift's).
* ``"tb"``: trajectory balance (Malkin, Jain, Bengio, Sun & Bengio 2022):
  ``mean (log Z_theta + log Q_theta - log P~)^2`` with a learned scalar ``log Z_theta``, on the same
  off-policy, non-differentiated paths.
* ``"subtb"``: sub-trajectory balance with a learned log-flow (Madan et al. 2023; DGFS, Zhang et al. 2024):
  :func:`samplax.neural.gfn.subtb_loss` on the same off-policy paths (with ``log pi~`` at every point).
"""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from samplax.neural.sde import Path, log_weight, path_log_b, path_log_q, simulate

LOSSES = ("kl", "logvar", "tb", "subtb")


def _paths(model, ref, logdensity_fn, keys, dim, langevin, exploration, differentiable, with_log_pis=False):
    return jax.vmap(lambda k: simulate(model, ref, logdensity_fn, k, dim, langevin=langevin,
                                       exploration=exploration, differentiable=differentiable,
                                       with_log_pis=with_log_pis))(keys)


def kl_loss(model, ref, logdensity_fn, keys, dim, *, langevin):
    """``mean(log q - log P~)`` over reparameterized on-policy paths (see the module)."""
    p: Path = _paths(model, ref, logdensity_fn, keys, dim, langevin, 0.0, True)
    log_w = log_weight(p)
    return -jnp.mean(log_w), jax.lax.stop_gradient(log_w)


def off_policy_paths(model, ref, logdensity_fn, keys, dim, *, langevin, exploration, with_log_pis=False) -> Path:
    """A batch of paths from the sampling policy (``model`` with ``stop_gradient``, plus ``exploration``);
    ``with_log_pis``: with ``log pi~`` at every point (sub-trajectory balance)."""
    params, static = eqx.partition(model, eqx.is_array)
    fixed = eqx.combine(jax.lax.stop_gradient(params), static)
    return jax.lax.stop_gradient(_paths(fixed, ref, logdensity_fn, keys, dim, langevin, exploration, False,
                                        with_log_pis))


def path_residuals(model, ref, paths: Path):
    """``log P~ - log Q_theta`` of each path under the drift ``model`` (the log weights ``model`` would give;
    for CMCD the backward transitions are the model's too)."""
    log_q = jax.vmap(lambda p: path_log_q(model, ref, p))(paths)
    log_b = jax.vmap(lambda p: path_log_b(model, ref, p))(paths)
    return paths.log_pi + log_b - paths.log_q0 - log_q


def logvar_loss(model, ref, paths: Path):
    """The log-variance loss: the batch variance of :func:`path_residuals`."""
    res = path_residuals(model, ref, paths)
    return jnp.mean((res - jnp.mean(res)) ** 2)


def tb_loss(model, ref, paths: Path):
    """Trajectory balance: ``mean (log Z_theta - (log P~ - log Q_theta))^2`` (``model.log_z`` is learned)."""
    res = path_residuals(model, ref, paths)
    return jnp.mean((model.log_z - res) ** 2)
