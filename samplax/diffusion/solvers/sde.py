"""Stochastic samplers of the reverse diffusion in the VE convention.

The reverse SDE in ``tau = sigma^2`` is ``dx = -grad log p_sigma(x) dtau + dW`` run
backwards (Song et al. 2021), with ``grad log p_sigma(x) = (D(x, sigma) - x)/sigma^2``.
Noise is batch-size invariant (see :mod:`samplax.diffusion.solvers.base`).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.solvers.base import Solver, lam, no_nonfinite, one_eval_per_step, run_solver
from samplax.diffusion.solvers.ode import XCarry, _advance, _by_order, _history, _multi_init, _x_init, _heun_step


def _em_step(c, i, ctx):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    m = ctx.denoise(c.x, s)
    dtau = s * s - t * t
    return XCarry(c.x + dtau * (m - c.x) / (s * s) + jnp.sqrt(dtau) * ctx.noise(i, 0)), 1


def euler_maruyama() -> Solver:
    """Euler-Maruyama on the reverse VE SDE in ``tau = sigma^2``:

    ``x_t = x_s + (s^2 - t^2) (D(x_s, s) - x_s)/s^2 + sqrt(s^2 - t^2) z`` (Song et al. 2021). 1 call per step.
    """
    pl, ev = one_eval_per_step(1)
    return Solver("euler_maruyama", 0, True, _x_init, _em_step, pl, ev, keeps_nonfinite=True)


def _ddpm_step(c, i, ctx):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    m = ctx.denoise(c.x, s)
    r2 = (t / s) ** 2
    return XCarry(r2 * c.x + (1.0 - r2) * m + t * jnp.sqrt(1.0 - r2) * ctx.noise(i, 0)), 1


def ddpm() -> Solver:
    """DDPM ancestral sampling (Ho et al. 2020) as the exact Gaussian posterior ``q(x_t | x_s, x0 = D(x_s))``:

    ``x_t = (t/s)^2 x_s + (1 - (t/s)^2) D(x_s, s) + t sqrt(1 - (t/s)^2) z``. 1 call per step.
    (This is also SDE-DPM-Solver++(1).)
    """
    pl, ev = one_eval_per_step(1)
    return Solver("ddpm", 0, True, _x_init, _ddpm_step, pl, ev, keeps_nonfinite=True)


def _sde_dpmpp_update(x, s, t, m, hist_m, hist_s, z, order):
    r = t / s
    r2 = r * r
    base = r2 * x + (1.0 - r2) * m + t * jnp.sqrt(1.0 - r2) * z
    if order == 1:
        return base
    h = jnp.log(s / t)
    r0 = (lam(s) - lam(hist_s[0])) / h
    return base + 0.5 * (1.0 - r2) * (m - hist_m[0]) / r0


def _sde_dpmpp_step(c, i, ctx):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    m = ctx.denoise(c.x, s)
    z = ctx.noise(i, 0)
    o = ctx.plan["order"][i]
    x = c.x
    hist_m, hist_s, pushed = _history(c, m, s)
    xn = _by_order(o, 2, lambda k, tk, hs: _sde_dpmpp_update(x, s, tk, m, hist_m, hs, z, order=k), s, t, hist_s)
    return _advance(c, xn, m, s, x, o, pushed), 1


def sde_dpmpp_2m() -> Solver:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, midpoint form), data prediction:

    ``x_t = r^2 x_s + (1 - r^2)(D_s + (D_s - D_prev)/(2 r0)) + t sqrt(1 - r^2) z``, ``r = t/s``. 1 call per step.
    """
    pl, ev = one_eval_per_step(2)
    return Solver("sde_dpmpp_2m", 0, True, _multi_init(1), _sde_dpmpp_step, pl, ev, keeps_nonfinite=True)


_HEUN = Solver("heun", 2, False, _x_init, _heun_step, None, None)


@partial(jax.jit, static_argnums=(0, 7))
def _restart_run(denoise_batched, x, sig_p, rs, j, n, sample_keys, num_restarts):
    """Heun to node ``j``, the restarts, Heun from ``j`` to ``n``; steps are numbered in that order
    (main steps ``0..j-1``, restart ``k``'s steps, then the main steps from ``j``) for the non-finite tracker."""
    restart_steps = rs.shape[0] - 1
    nf = no_nonfinite(x)
    x, ne, nf = run_solver(_HEUN, denoise_batched, x, sig_p, {}, None, {}, num_steps=j, nonfinite=nf)
    lo, hi = sig_p[j], rs[0]
    for k in range(num_restarts):
        z = jax.vmap(lambda kk: jax.random.normal(jax.random.fold_in(jax.random.fold_in(kk, 1_000_000), k),
                                                  x.shape[1:], x.dtype))(sample_keys)
        x = x + jnp.sqrt(hi**2 - lo**2) * z
        x, ne_k, nf = run_solver(_HEUN, denoise_batched, x, rs, {}, None, {}, nonfinite=nf,
                                 step_offset=j + k * restart_steps)
        ne = ne + ne_k
    x, ne_k, nf = run_solver(_HEUN, denoise_batched, x, sig_p, {}, None, {}, num_steps=n, start=j, nonfinite=nf,
                             step_offset=num_restarts * restart_steps)
    return x, ne + ne_k, nf


def restart(t_min: float = 0.06, t_max: float = 0.30, num_restarts: int = 2, restart_steps: int = 2) -> Solver:
    """Restart sampling (Xu et al. 2023): Heun ODE steps on the main grid; at the grid node
    nearest ``t_min`` it ``num_restarts`` times adds noise back up to ``t_max``
    (``x += sqrt(t_max^2 - t_min^2) z``) and re-integrates down with ``restart_steps``
    Heun steps on a Karras grid. Costs ``num_restarts * 2 * restart_steps`` calls on top of
    the main Heun steps.
    """
    if not (0 < t_min < t_max):
        raise ValueError(f"restart: need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
    extra = num_restarts * 2 * restart_steps

    def plan(budget, ends_at_zero):
        b = budget - extra
        if b < 1:
            raise ValueError(f"restart: nfe budget {budget} too small; the restarts alone cost {extra} calls")
        n = int((b + 1) // 2) if ends_at_zero else int(b // 2)
        return {"order": np.full(n, 2, np.int32)}

    def evals(p, ends_at_zero):
        n = len(p["order"])
        return 2 * n - (1 if ends_at_zero else 0) + extra

    def run(denoise_batched, x, sigmas_np, plan_, sample_keys, params, call=None):
        """The sampling loop; ``call(jitted, args, static_argnums)``, when given, runs the jitted core (timing).

        Returns ``(x, num_evals, nonfinite)`` (:class:`~samplax.diffusion.solvers.base.NonFinite`; the
        ``len(sigmas) - 1 + num_restarts * restart_steps`` Heun steps numbered in the order they run)."""
        sig = np.asarray(sigmas_np)
        pos = np.where(sig > 0)[0]
        j = int(pos[np.argmin(np.abs(np.log(sig[pos]) - np.log(t_min)))])
        lo = sig[j]
        hi = max(t_max, lo * 1.5)
        rho = 7.0
        rs = (hi ** (1 / rho) + np.linspace(0, 1, restart_steps + 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        length = max(256, 1 << int(np.ceil(np.log2(len(sig) + 1))))
        sig_p = np.concatenate([sig, np.full(length - len(sig), sig[-1])])
        args = (denoise_batched, x, jnp.asarray(sig_p, x.dtype), jnp.asarray(rs, x.dtype),
                jnp.asarray(j), jnp.asarray(len(sig) - 1), sample_keys, num_restarts)
        if call is not None:
            return call(_restart_run, args, (0, 7))
        return _restart_run(*args)

    s = Solver("restart", 0, True, _x_init, None, plan, evals,
               {"run": run, "extra_steps": num_restarts * restart_steps})
    return s


# ---------------------------------------------------------------- ER-SDE-Solver
_GL16_X, _GL16_W = np.polynomial.legendre.leggauss(16)


def phi_er_sde(sigma):
    """Default ER-SDE noise-scale function ``phi(sigma) = sigma (exp(sigma^0.3) + 10)`` (Cui et al. 2023)."""
    return sigma * (jnp.exp(sigma**0.3) + 10.0)


NOISE_SCALES = {
    "er_sde": phi_er_sde,
    "ode": lambda sigma: sigma,  # phi = sigma: the probability-flow ODE (DDIM / DPM-Solver++ family)
    "sde": lambda sigma: sigma**2,  # phi = sigma^2: the reverse SDE (DDPM-like)
}


def _er_weights(phi, s, t, sp1):
    """``I_k = phi(t) int_t^s phi'(r)/phi(r)^2 q_k(r) dr`` for ``q_1 = r - s``, ``q_2 = (r - s)(r - sp1)``.

    16-point Gauss-Legendre in ``u = log r`` (the integrand is smooth on a log scale).
    """
    lt, ls = jnp.log(t), jnp.log(s)
    u = 0.5 * (lt + ls) + 0.5 * (ls - lt) * jnp.asarray(_GL16_X, s.dtype)
    w = 0.5 * (ls - lt) * jnp.asarray(_GL16_W, s.dtype)
    r = jnp.exp(u)
    dphi = jax.vmap(jax.grad(phi))(r)
    g = w * r * dphi / phi(r) ** 2
    pt = phi(t)
    return pt * jnp.sum(g * (r - s)), pt * jnp.sum(g * (r - s) * (r - sp1))


def _er_sde_step(c, i, ctx, phi):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    m = ctx.denoise(c.x, s)
    hist_m, hist_s, pushed = _history(c, m, s)
    o = ctx.plan["order"][i]
    ps = phi(s)
    pt = jnp.where(t > 0, phi(jnp.where(t > 0, t, 1.0)), 0.0)
    r = pt / ps
    x = r * c.x + (1.0 - r) * m
    sp1, sp2 = hist_s[0], hist_s[1]
    # Newton divided differences of the denoiser in sigma (guarded: unused at the ramp-up steps)
    safe = lambda d: jnp.where(d != 0, d, 1.0)  # noqa: E731
    f1 = (hist_m[0] - m) / safe(sp1 - s)
    f12 = (hist_m[1] - hist_m[0]) / safe(sp2 - sp1)
    f2 = (f12 - f1) / safe(sp2 - s)
    tt = jnp.where(t > 0, t, 0.5 * s)
    i1, i2 = _er_weights(phi, s, tt, sp1)
    x = x + jnp.where(o >= 2, i1, 0.0) * f1 + jnp.where(o >= 3, i2, 0.0) * f2
    var = jnp.maximum(t * t - (s * r) ** 2, 0.0)
    x = x + jnp.sqrt(var) * ctx.noise(i, 0)
    return _advance(c, x, m, s, c.x, o, pushed), 1


def er_sde(order: int = 3, noise_scale: str = "er_sde") -> Solver:
    """ER-SDE-Solver (Cui et al. 2023, "Elucidating the solution space of extended reverse-time SDE
    for diffusion models"), VE form, data prediction, multistep, 1 call per step.

    For a noise-scale function ``phi`` (``phi(sigma)/sigma`` non-decreasing) the extended reverse
    SDE's solution from ``s`` to ``t`` is
    ``x_t = (phi_t/phi_s) x_s + phi_t int_t^s phi'(r)/phi(r)^2 D(x_r, r) dr + sqrt(t^2 - s^2 (phi_t/phi_s)^2) z``.
    Replacing ``D`` by its Newton interpolant in ``sigma`` through the last ``order`` denoiser values
    gives ``x_t = r x_s + (1 - r) D_s + I_1 D[s, s1] + I_2 D[s, s1, s2] + noise``, ``r = phi_t/phi_s``,
    with ``I_k`` computed by quadrature (:func:`_er_weights`). ``phi = sigma`` is the ODE (DDIM at
    order 1), ``phi = sigma^2`` the reverse SDE (DDPM ancestral at order 1); the default is the
    paper's ``sigma (exp(sigma^0.3) + 10)``. Orders ramp up 1, 2, 3; the step into sigma = 0 is order 1.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"er_sde: order must be 1, 2 or 3, got {order!r}")
    if noise_scale not in NOISE_SCALES:
        raise ValueError(f"er_sde: noise_scale must be one of {sorted(NOISE_SCALES)}, got {noise_scale!r}")
    pl, ev = one_eval_per_step(order)
    return Solver("er_sde", 0, noise_scale != "ode", _multi_init(2),
                  partial(_er_sde_step, phi=NOISE_SCALES[noise_scale]), pl, ev, keeps_nonfinite=True)
