"""Deterministic probability-flow ODE solvers in the VE convention.

The probability-flow ODE (Song et al. 2021; Karras et al. 2022 eq. 4) is
``dx/dsigma = (x - D(x, sigma)) / sigma``, equivalently with ``lambda = -log sigma``,
``dx/dlambda = D(x, e^-lambda) - x``, whose variation-of-constants form
``x_t = (sigma_t/sigma_s) x_s + int_{lambda_s}^{lambda_t} e^{lambda - lambda_t} D dlambda``
is the basis of the exponential integrators (DPM-Solver(++), UniPC). With
``alpha = 1`` their VP formulas become the ones below; ``ratio = sigma_t/sigma_s``
and ``h = lambda_t - lambda_s = log(1/ratio)``.

A step into ``sigma_t = 0`` (``h = inf``) is always taken at order 1, where every
data-prediction update reduces to ``x_t = D(x_s, sigma_s)``; no coefficient is
evaluated at ``h = inf``, so there is no NaN and no order switch that depends on
the number of steps (no "14 vs 15 steps" cliff).
"""
from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.solvers.base import Solver, lam, one_eval_per_step


class XCarry(NamedTuple):
    x: jax.Array


@jax.tree_util.register_pytree_node_class
class Ring:
    """Newest-first view of a circular buffer ``buf`` ``[H, ...]``: ``ring[k]`` is the k-th most recent entry.

    Pushing writes one slot in place (``dynamic_update_slice``) instead of shifting the whole
    history by a copy each step; ``ring[1:]`` is the view one step older (used by UniC).
    """

    def __init__(self, buf, ptr):
        self.buf, self.ptr = buf, ptr

    def tree_flatten(self):
        return (self.buf, self.ptr), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __getitem__(self, k):
        if isinstance(k, slice):
            if k != slice(1, None, None):
                raise TypeError(f"Ring: the history is read as ring[k] or ring[1:] only, got a slice {k}")
            return Ring(self.buf, self.ptr - 1)
        return jax.lax.dynamic_index_in_dim(self.buf, jnp.mod(self.ptr - k, self.buf.shape[0]), keepdims=False)

    def push(self, value):
        """The ring with ``value`` as its newest entry, written over the oldest slot (in place)."""
        ptr = self.ptr + 1
        return Ring(jax.lax.dynamic_update_index_in_dim(self.buf, value, jnp.mod(ptr, self.buf.shape[0]), 0), ptr)

    def with_newest(self, value):
        """The ring with its newest entry replaced by ``value`` (in place; DC-Solver's compensated model value)."""
        return Ring(jax.lax.dynamic_update_index_in_dim(self.buf, value, jnp.mod(self.ptr, self.buf.shape[0]), 0),
                    self.ptr)


class MultiCarry(NamedTuple):
    x: jax.Array
    hist_m: Ring  # H + 1 denoised values (or noise predictions), newest first: the last step's and the H before
    hist_s: jax.Array  # [H + 1] sigmas where they were evaluated
    x_prev: jax.Array  # start of the previous step (UniC)
    order_prev: jax.Array


class PackedCarry(NamedTuple):
    """A multistep carry with a one-entry history, packed with the state in one complex array ``z = x + i m``.

    A step reads ``x`` and ``m`` and writes the new state and the new ``m``: packed, that is one elementwise pass
    that XLA updates in place, where two separate arrays, each written from both, make it copy the loop-carried
    buffers every step. ``hist_m[0]`` is ``imag(z)``. The values are those of :class:`MultiCarry` (``real``,
    ``imag`` and ``complex`` are exact). For float32 / float64 states (complex64 / complex128).
    """

    z: jax.Array
    hist_s: jax.Array
    x_prev: jax.Array
    order_prev: jax.Array

    @property
    def x(self):
        return jnp.real(self.z)

    @property
    def hist_m(self):
        return jnp.imag(self.z)[None]

    def with_x(self, x):
        """The carry with the state replaced by ``x`` (the history kept)."""
        return self._replace(z=jax.lax.complex(x, jnp.imag(self.z)))


def _x_init(x, sigmas, plan):
    return XCarry(x)


# ---------------------------------------------------------------- Euler / DDIM
def _euler_step(c, i, ctx):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    d = ctx.denoise(c.x, s)
    return XCarry(c.x + (t - s) * (c.x - d) / s), 1


def _ddim_step(c, i, ctx):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    d = ctx.denoise(c.x, s)
    r = t / s
    return XCarry(r * c.x + (1.0 - r) * d), 1


def euler() -> Solver:
    """Euler on ``dx/dsigma = (x - D)/sigma``: ``x_t = x_s + (sigma_t - sigma_s)(x_s - D(x_s))/sigma_s``.

    Karras et al. (2022), Alg. 1 without the Heun correction. Order 1; 1 call per step.
    """
    pl, ev = one_eval_per_step(1)
    return Solver("euler", 1, False, _x_init, _euler_step, pl, ev, keeps_nonfinite=True)


def ddim() -> Solver:
    """DDIM, eta = 0 (Song, Meng & Ermon 2021): ``x_t = (sigma_t/sigma_s) x_s + (1 - sigma_t/sigma_s) D(x_s)``.

    In the VE convention this is algebraically Euler's update and DPM-Solver-1 (Lu et al. 2022).
    """
    pl, ev = one_eval_per_step(1)
    return Solver("ddim", 1, False, _x_init, _ddim_step, pl, ev, keeps_nonfinite=True)


# ---------------------------------------------------------------- conjugate integrator (lambda-DDIM)
def _conjugate_step(c, i, ctx, lam_):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    d = ctx.denoise(c.x, s)
    tt = jnp.where(t > 0, t, s)  # a finite stand-in where the step goes into sigma = 0 (that step is DDIM's)
    h = jnp.log(s / tt)
    k = lam_ + 1.0
    phi = h if k == 0.0 else jnp.expm1(k * h) / k  # int_0^h e^{k u} du
    a = jnp.exp(lam_ * h) * (1.0 - lam_ * h)
    w = tt * phi / s  # weight of (x_s - D_s) = sigma_s eps_s
    xn = a * c.x - w * (c.x - d)
    # into sigma = 0: D_s, plus 0 * x_s (zero where x_s is finite) so that a non-finite state stays non-finite, as in
    # DDIM's (t/s) x_s + (1 - t/s) D_s (keeps_nonfinite)
    return XCarry(jnp.where(t > 0, xn, d + 0.0 * c.x)), 1


def conjugate(lam: float = 0.0) -> Solver:
    """Conjugate integrator, lambda-DDIM (Pandey, Rudolph & Mandt, ICLR 2024, "Efficient integrators for
    diffusion generative models", Sec. 3, ``B_t = lambda I``), in the VE time ``tau = log sigma``.

    The probability-flow ODE ``dx/dtau = sigma eps(x, sigma)`` (``eps = (x - D)/sigma``; no linear part in the VE
    state, and the VP state's linear part is removed by the same map) is mapped to ``x_hat = A x`` with
    ``A = e^{lam tau} = sigma^lam`` (the paper's ``A_t = exp(int_0^t B_s - F_s ds)``, ``F = 0``), where it reads
    ``dx_hat/dtau = lam x_hat + dPhi/dtau eps`` with ``dPhi/dtau = A sigma = sigma^(lam + 1)``. One step from
    ``s`` to ``t < s`` takes the linear term by Euler in ``tau`` and integrates ``dPhi`` exactly with ``eps``
    frozen at ``s`` (the paper's Euler step in the conjugate space; the authors' later code for lambda-DDIM, in
    their conditional conjugate integrators, arXiv 2405.17673, updates ``x_hat`` the same way in the VP-SDE's time).
    Back in ``x``, with ``h = log(s/t)``::

        x_t = e^{lam h} (1 - lam h) x_s - t (e^{(lam + 1) h} - 1)/(lam + 1) eps_s

    (``(e^{(lam+1) h} - 1)/(lam + 1)`` is ``h`` at ``lam = -1``). ``lam = 0`` is DDIM (``x_t = x_s - (s - t)
    eps_s``; the same numbers to round-off: the weights come out of ``exp``/``expm1`` of ``h`` instead of the ratio
    ``t/s``); ``lam != 0`` moves part of the linear dynamics into the Euler term, which the paper finds helps
    with few steps. Order 1, 1 call per step. The step into ``sigma = 0`` (``tau = -inf``) is DDIM's,
    ``x_t = D(x_s, s)``.

    The paper sets ``B_t = lambda`` per unit of the VP-SDE's diffusion time ``t in [0, 1]``; here ``lam`` is per
    unit of ``log sigma``, which has no scale and no schedule, so the paper's values of ``lambda`` do not carry
    over (they differ by the factor ``d log sigma / dt`` of that schedule).
    """
    if isinstance(lam, (bool, np.bool_)) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise ValueError(f"conjugate: lam must be a finite real number, got {type(lam).__name__} {lam!r}")
    if not np.isfinite(lam):
        raise ValueError(f"conjugate: lam must be a finite real number, got {lam!r}")
    pl, ev = one_eval_per_step(1)
    return Solver("conjugate", 1, False, _x_init, partial(_conjugate_step, lam_=float(lam)), pl, ev,
                  keeps_nonfinite=True)


# ---------------------------------------------------------------- Heun (EDM)
def _heun_step(c, i, ctx):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    x = c.x
    d = (x - ctx.denoise(x, s)) / s
    xe = x + (t - s) * d

    def corrected(_):
        tt = jnp.where(t > 0, t, 1.0)
        d2 = (xe - ctx.denoise(xe, tt)) / tt
        return x + (t - s) * 0.5 * (d + d2)

    xn = jax.lax.cond(t > 0, corrected, lambda _: xe, None)
    return XCarry(xn), jnp.where(t > 0, 2, 1)


def heun() -> Solver:
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1, deterministic):

    ``d = (x - D(x, s))/s``, ``x' = x + (t - s) d``, ``x_t = x + (t - s)(d + d')/2`` with
    ``d' = (x' - D(x', t))/t``; the step into ``t = 0`` is Euler (1 call). 2 calls per step.
    """

    def plan(budget, ends_at_zero):
        n = int((budget + 1) // 2) if ends_at_zero else int(budget // 2)
        return {"order": np.full(n, 2, np.int32)}

    def evals(p, ends_at_zero):
        n = len(p["order"])
        return 2 * n - (1 if ends_at_zero else 0)

    return Solver("heun", 2, False, _x_init, _heun_step, plan, evals, keeps_nonfinite=True)


# ---------------------------------------------------------------- DPM-Solver single-step (noise prediction)
def _dpm_single_order(x, s, t, ctx, order):
    """One DPM-Solver-k step (Lu et al. 2022, Alg. 1/2 with r1 = 1/2; r1 = 1/3, r2 = 2/3), VE form."""
    eps_s = (x - ctx.denoise(x, s)) / s
    if order == 1:
        return x - (s - t) * eps_s
    tt = jnp.where(t > 0, t, 1e-30)
    h = jnp.log(s / tt)
    if order == 2:
        sm = jnp.sqrt(s * tt)  # lambda midpoint
        u = x - (s - sm) * eps_s
        eps_u = (u - ctx.denoise(u, sm)) / sm
        return x - (s - t) * eps_u
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    s1, s2 = s * jnp.exp(-r1 * h), s * jnp.exp(-r2 * h)
    u1 = x - (s - s1) * eps_s
    d1 = (u1 - ctx.denoise(u1, s1)) / s1 - eps_s
    u2 = x - (s - s2) * eps_s - (r2 / r1) * ((s - s2) / (r2 * h) - s2) * d1
    d2 = (u2 - ctx.denoise(u2, s2)) / s2 - eps_s
    return x - (s - t) * eps_s - (1.0 / r2) * ((s - t) / h - t) * d2


def _dpm_single_step(c, i, ctx):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    o = ctx.plan["order"][i]
    branches = [partial(_dpm_single_order, ctx=ctx, order=k) for k in (1, 2, 3)]
    xn = jax.lax.switch(o - 1, [lambda a, b, f=f: f(c.x, a, b) for f in branches], s, t)
    return XCarry(xn), o


def dpm_solver(order: int = 3) -> Solver:
    """DPM-Solver-1/2/3 single-step (Lu et al. 2022), noise prediction, in ``lambda``.

    Order k costs k calls per step. A call budget M is split as in the paper's
    "DPM-Solver-fast": ``M mod k`` calls go to one lower-order first step, the
    rest to order-k steps; a step into sigma = 0 is order 1.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"dpm_solver: order must be 1, 2 or 3, got {order!r}")

    def plan(budget, ends_at_zero):
        b = budget - 1 if ends_at_zero else budget
        q, r = divmod(b, order)
        orders = ([r] if r > 0 else []) + [order] * q + ([1] if ends_at_zero else [])
        return {"order": np.asarray(orders, np.int32)}

    def evals(p, ends_at_zero):
        return int(np.sum(p["order"]))

    return Solver(f"dpm_solver_{order}", order, False, _x_init, _dpm_single_step, plan, evals,
                  keeps_nonfinite=True)


# ---------------------------------------------------------------- multistep helpers
def _multi_init(history: int):
    """Carry of a multistep solver whose update reads the last ``history`` denoised values (or noise predictions).

    One entry: a :class:`PackedCarry` where the state's dtype has a complex counterpart (float32 / float64), so
    that a step is one in-place pass. Otherwise a :class:`MultiCarry` whose :class:`Ring` has ``history + 1`` slots:
    a step first pushes its new value (see :func:`_history`), so the ring holds it and the ``history`` before it.
    """
    def init(x, sigmas, plan):
        h = max(int(history), 1)
        if h == 1 and jnp.dtype(x.dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
            return PackedCarry(jax.lax.complex(x, jnp.zeros_like(x)), jnp.ones((1,), x.dtype) * sigmas[0], x,
                               jnp.asarray(1, jnp.int32))
        return MultiCarry(x, Ring(jnp.zeros((h + 1,) + x.shape, x.dtype), jnp.asarray(0, jnp.int32)),
                          jnp.ones((h + 1,), x.dtype) * sigmas[0], x, jnp.asarray(1, jnp.int32))
    return init


def _push_s(hist_s, s):
    return jnp.concatenate([jnp.reshape(s, (1,)), hist_s[:-1]], 0)


def _history(c, m, s):
    """``(hist_m, hist_s, pushed)``: the earlier denoised values (or noise predictions) and their noise levels,
    newest first, for this step's update, and the carry's history with this step's ``m`` (at ``s``) pushed.

    The push comes first, over the ring's oldest slot (one the update does not read), and the update reads the
    earlier values from the pushed ring: the update then depends on the push, so XLA writes ``m`` into the
    history in place before the update overwrites the state, and needs no copy of the loop-carried buffers (with
    the push after the update, XLA 0.10 copied the whole history twice per step to keep the old slots for a
    reader it could not order).
    """
    if isinstance(c, PackedCarry):
        return c.hist_m, c.hist_s, None
    ring, hs = c.hist_m.push(m), _push_s(c.hist_s, s)
    return ring[1:], hs[1:], (ring, hs)


def _advance(c, xn, m, s, x_prev, order, pushed):
    """The next multistep carry: state ``xn`` and the history with ``m`` (at ``s``), ``pushed`` by :func:`_history`."""
    if isinstance(c, PackedCarry):
        return PackedCarry(jax.lax.complex(xn, m), _push_s(c.hist_s, s), x_prev, order)
    return MultiCarry(xn, pushed[0], pushed[1], x_prev, order)


def _by_order(order, max_order, update, s, t, hist_s, active=None):
    """``update(k, t, hist_s)`` of the planned ``order`` (traced; clamped to ``1..max_order`` as ``lax.switch``
    does), without branching: every order's update is computed and the planned one selected, so that XLA fuses
    the step into one pass (a conditional keeps its branches apart from the rest of the step, and its operands
    and results in buffers of their own).

    The orders not taken see a safe ``t`` and history (``s/2`` and ``2s, 4s, ...``: finite coefficients), so that
    neither they nor their zero-weighted gradients are NaN (e.g. at ``t = 0``, where only order 1 is planned, or
    at the first step, where the history's noise levels all equal ``s``); the planned order sees the true ones,
    so its value is the branch's. With ``active`` (a traced bool) no order is taken where it is False (the
    caller then discards the result), and order 1 is guarded as well."""
    safe_t = 0.5 * s
    safe_hist = s * jnp.asarray(2.0, hist_s.dtype) ** jnp.arange(1, hist_s.shape[0] + 1, dtype=hist_s.dtype)
    out = None
    for k in range(1, max_order + 1):
        take = order >= k if k == max_order else (order <= k if k == 1 else order == k)
        if active is not None:
            take = take & active
        if k == 1 and active is None:
            out = update(1, t, hist_s)  # order 1 needs no guard: its coefficients are finite for every t >= 0
            continue
        v = update(k, jnp.where(take, t, safe_t), jnp.where(take, hist_s, safe_hist))
        out = v if out is None else jnp.where(take, v, out)
    return out


def _dpmpp_update(x, s, t, m, hist_m, hist_s, order):
    """DPM-Solver++(kM) data-prediction update (Lu et al. 2022b, Alg. 2; 3M as in their code)."""
    r = t / s
    if order == 1:
        return r * x + (1.0 - r) * m
    h = jnp.log(s / t)
    h0 = lam(s) - lam(hist_s[0])
    r0 = h0 / h
    d1_0 = (m - hist_m[0]) / r0
    if order == 2:
        return r * x + (1.0 - r) * (m + 0.5 * d1_0)
    h1 = lam(hist_s[0]) - lam(hist_s[1])
    r1 = h1 / h
    d1_1 = (hist_m[0] - hist_m[1]) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    em1 = r - 1.0  # e^{-h} - 1
    return r * x - em1 * m + (em1 / h + 1.0) * d1 - ((em1 + h) / h**2 - 0.5) * d2


def _dpmpp_step(c, i, ctx, max_order):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    x = c.x
    m = ctx.denoise(x, s)
    hist_m, hist_s, pushed = _history(c, m, s)
    o = ctx.plan["order"][i]
    xn = _by_order(o, max_order, lambda k, tk, hs: _dpmpp_update(x, s, tk, m, hist_m, hs, order=k), s, t, hist_s)
    return _advance(c, xn, m, s, x, o, pushed), 1


def dpmpp(order: int = 2) -> Solver:
    """DPM-Solver++(2M)/(3M) multistep (Lu et al. 2022b), data prediction, 1 call per step.

    2M: ``x_t = r x_s + (1 - r)(D_s + (D_s - D_prev)/(2 r0))`` with ``r = sigma_t/sigma_s``,
    ``r0 = h_prev/h``. Warm-up ramps the order 1, 2, (3); into sigma = 0 the order is 1.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"dpmpp: order must be 1, 2 or 3, got {order!r}")
    pl, ev = one_eval_per_step(order)
    return Solver(f"dpmpp_{order}m", order, False, _multi_init(order - 1),
                  partial(_dpmpp_step, max_order=order), pl, ev, keeps_nonfinite=True)


# ---------------------------------------------------------------- UniPC
def _unipc_system(s, h, hh, hist_s, order, bh1):
    """UniPC's ratios ``r_k = (lambda(hist_s[k]) - lambda(s))/h`` (then ``1``), ``h phi_1 = e^hh - 1``,
    ``B(h)`` (``hh`` for bh1, else ``e^hh - 1``) and its linear system ``R rho = b``, ``R[k-1] = r^(k-1)``,
    ``b[k-1] = h phi_k(hh) k! / B(h)`` (Zhao et al. 2023, Alg. 2/3); ``hh = -h`` for data prediction, ``h`` for
    noise prediction. Returns ``(r, h phi_1, B(h), R, b)``."""
    h_phi_1 = jnp.expm1(hh)
    b_h = hh if bh1 else jnp.expm1(hh)
    rks = jnp.stack([(lam(hist_s[k]) - lam(s)) / h for k in range(order - 1)] + [jnp.ones_like(h)])
    rows, b = [], []
    h_phi_k = h_phi_1 / hh - 1.0
    fact = 1.0
    for k in range(1, order + 1):
        rows.append(rks ** (k - 1))
        b.append(h_phi_k * fact / b_h)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return rks, h_phi_1, b_h, jnp.stack(rows), jnp.stack(b)


def _unipc_coeffs(s, t, hist_s, order, variant):
    """UniPC's ``rhos`` for predictor (UniP-p) and corrector (UniC-p) (Zhao et al. 2023, Alg. 2/3)."""
    h = jnp.log(s / t)
    rks, h_phi_1, b_h, R, b = _unipc_system(s, h, -h, hist_s, order, variant == "bh1")
    if order == 1:
        rho_p = jnp.zeros((0,))
        rho_c = jnp.asarray([0.5])
    elif order == 2:
        rho_p = jnp.asarray([0.5])
        rho_c = jnp.linalg.solve(R, b)
    else:
        rho_p = jnp.linalg.solve(R[:-1, :-1], b[:-1])
        rho_c = jnp.linalg.solve(R, b)
    return rks, h_phi_1, b_h, rho_p, rho_c


def _unipc_update(x, s, t, m, hist_m, hist_s, order, variant, m_t=None):
    r = t / s
    if order == 1 and m_t is None:
        return r * x + (1.0 - r) * m
    rks, h_phi_1, b_h, rho_p, rho_c = _unipc_coeffs(s, t, hist_s, order, variant)
    base = r * x - h_phi_1 * m
    d1s = [(hist_m[k] - m) / rks[k] for k in range(order - 1)]
    if m_t is None:
        corr = sum(rho_p[k] * d1s[k] for k in range(order - 1))
    else:
        corr = sum((rho_c[k] * d1s[k] for k in range(order - 1)), jnp.zeros_like(x)) + rho_c[-1] * (m_t - m)
    return base - b_h * corr


def _unipc_correct(c, i, ctx, max_order, variant, corrector=True):
    """The call ``m = D(x_i, sigma_i)`` at the predicted point and, with ``corrector``, UniC's correction of ``x_i``
    (from step 1 on); returns ``(m, x_i, hist_m, hist_s, pushed)`` with the earlier history and the carry's history
    with ``m`` pushed (:func:`_history`)."""
    s = ctx.sigmas[i]
    x = c.x
    m = ctx.denoise(x, s)
    hist_m, hist_s, pushed = _history(c, m, s)
    if corrector:  # UniC from the previous step's start, with this step's D
        sp, on = hist_s[0], i > 0
        xc = _by_order(c.order_prev, max_order,
                       lambda k, tk, hs: _unipc_update(c.x_prev, sp, tk, hist_m[0], hist_m[1:], hs, order=k,
                                                       variant=variant, m_t=m),
                       sp, s, hist_s[1:], active=on)
        x = jnp.where(on, xc, x)
    return m, x, hist_m, hist_s, pushed


def _unipc_predict(c, i, ctx, m, x, hist_m, hist_s, pushed, max_order, variant):
    """UniP's step from the (corrected) ``x_i`` with the model value ``m`` at ``sigma_i``, which is the newest entry
    of ``pushed`` (the history :func:`_unipc_correct` returned, whose newest entry a caller may have replaced)."""
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    o = ctx.plan["order"][i]
    xn = _by_order(o, max_order, lambda k, tk, hs: _unipc_update(x, s, tk, m, hist_m, hs, order=k, variant=variant),
                   s, t, hist_s)
    return _advance(c, xn, m, s, x, o, pushed)


def _unipc_step(c, i, ctx, max_order, variant, corrector):
    m, x, hist_m, hist_s, pushed = _unipc_correct(c, i, ctx, max_order, variant, corrector)
    return _unipc_predict(c, i, ctx, m, x, hist_m, hist_s, pushed, max_order, variant), 1


def unipc(order: int = 2, variant: str = "bh2", corrector: bool = True) -> Solver:
    """UniPC (Zhao et al. 2023): UniP-p predictor plus optional UniC corrector, data prediction.

    ``B(h) = h`` (``bh1``) or ``e^h - 1`` (``bh2``). The corrector at step i reuses
    the call ``D(x_i)`` (no extra call) and raises the order to p + 1.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc: order must be 1, 2 or 3, got {order!r}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unipc: variant must be 'bh1' or 'bh2', got {variant!r}")
    pl, ev = one_eval_per_step(order)
    step = partial(_unipc_step, max_order=order, variant=variant, corrector=corrector)
    # the history holds `order` past values: the corrector looks one step further back than the predictor
    init = _multi_init(order)
    name = f"unipc_{variant}" + ("" if corrector else "_nocorr") + (f"_{order}" if order != 2 else "")
    return Solver(name, order + (1 if corrector else 0), False, init, step, pl, ev, keeps_nonfinite=not corrector)


# ---------------------------------------------------------------- DEIS (rho-AB) and iPNDM
_GL_X, _GL_W = np.polynomial.legendre.leggauss(4)


def _deis_coeffs(s, t, nodes):
    """``c_j = int_s^t l_j(sigma) d sigma`` for the Lagrange basis on ``nodes`` (4-point Gauss-Legendre, exact)."""
    q = 0.5 * (s + t) + 0.5 * (t - s) * jnp.asarray(_GL_X)
    w = 0.5 * (t - s) * jnp.asarray(_GL_W)
    cs = []
    for j in range(len(nodes)):
        lj = jnp.ones_like(q)
        for k in range(len(nodes)):
            if k != j:
                lj = lj * (q - nodes[k]) / (nodes[j] - nodes[k])
        cs.append(jnp.sum(w * lj))
    return cs


def _deis_update(x, s, t, e, hist_e, hist_s, order):
    nodes = [s] + [hist_s[k] for k in range(order - 1)]
    vals = [e] + [hist_e[k] for k in range(order - 1)]
    cs = _deis_coeffs(s, t, nodes)
    return x + sum(c * v for c, v in zip(cs, vals))


def _eps_multistep_step(c, i, ctx, max_order, update):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    x = c.x
    e = (x - ctx.denoise(x, s)) / s
    hist_m, hist_s, pushed = _history(c, e, s)
    o = ctx.plan["order"][i]
    xn = _by_order(o, max_order, lambda k, tk, hs: update(x, s, tk, e, hist_m, hs, order=k), s, t, hist_s)
    return _advance(c, xn, e, s, x, o, pushed), 1


def deis(order: int = 3) -> Solver:
    """DEIS rho-AB (Zhang & Chen 2023): ``x_t = x_s + int_s^t P(sigma) d sigma`` in the VE noise level
    ``rho = sigma``, with ``P`` the Lagrange polynomial through the last k noise predictions
    ``eps = (x - D)/sigma``, integrated exactly. 1 call per step; the step into sigma = 0 keeps
    its full order (the polynomial is finite there).
    """
    if order not in (1, 2, 3, 4):
        raise ValueError(f"deis: order must be 1..4, got {order!r}")

    def plan(budget, ends_at_zero):
        return {"order": np.minimum(np.arange(int(budget)) + 1, order).astype(np.int32)}

    _, ev = one_eval_per_step(order)
    return Solver(f"deis_{order}" if order != 3 else "deis", order, False, _multi_init(order - 1),
                  partial(_eps_multistep_step, max_order=order, update=_deis_update), plan, ev,
                  keeps_nonfinite=True)


_AB = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def _ipndm_update(x, s, t, e, hist_e, hist_s, order):
    co = _AB[order]
    comb = co[0] * e + sum(co[k] * hist_e[k - 1] for k in range(1, order))
    return x + (t - s) * comb


def ipndm(order: int = 4) -> Solver:
    """iPNDM (Zhang & Chen 2023, after Liu et al. 2022's PNDM): Euler in sigma with the
    fixed Adams-Bashforth combination of the last k noise predictions (k <= 4, ramping up).

    The coefficients ignore non-uniform spacing, so on a non-uniform grid its order is below k.
    """
    if order not in (1, 2, 3, 4):
        raise ValueError(f"ipndm: order must be 1..4, got {order!r}")

    def plan(budget, ends_at_zero):
        return {"order": np.minimum(np.arange(int(budget)) + 1, order).astype(np.int32)}

    _, ev = one_eval_per_step(order)
    return Solver("ipndm", 1, False, _multi_init(order - 1),
                  partial(_ipndm_step, max_order=order), plan, ev,
                  keeps_nonfinite=True)


def _ab_combination(e, hist_m, order, max_order):
    """Adams-Bashforth combination of the planned ``order`` (traced) of ``e`` and the past noise predictions
    ``hist_m`` (newest first), without branching: the weights are a row of a padded table."""
    table = np.zeros((max_order, max_order))
    for k in range(1, max_order + 1):
        table[k - 1, :k] = _AB[k]
    w = jnp.asarray(table, e.dtype)[order - 1]
    comb = w[0] * e
    for k in range(1, max_order):
        comb = comb + w[k] * hist_m[k - 1]
    return comb


def _ipndm_step(c, i, ctx, max_order):
    """iPNDM step without branching: the AB weights of the planned order are a row of a padded table."""
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    x = c.x
    e = (x - ctx.denoise(x, s)) / s
    o = ctx.plan["order"][i]
    hist_m, _, pushed = _history(c, e, s)
    comb = _ab_combination(e if pushed is None else pushed[0][0], hist_m, o, max_order)
    return _advance(c, x + (t - s) * comb, e, s, x, o, pushed), 1


# ---------------------------------------------------------------- heavy-ball momentum (HB, GHVB)
class MomentumCarry(NamedTuple):
    x: jax.Array
    v: jax.Array  # the velocity (an averaged noise prediction)
    hist_m: Ring  # noise predictions, newest first (the last step's and the ones before)
    hist_s: jax.Array


def _momentum_init(order_max):
    def init(x, sigmas, plan):
        h = max(order_max - 1, 1) + 1  # a step pushes first and reads the earlier entries (see _history)
        return MomentumCarry(x, jnp.zeros_like(x), Ring(jnp.zeros((h,) + x.shape, x.dtype), jnp.asarray(0, jnp.int32)),
                             jnp.ones((h,), x.dtype) * sigmas[0])
    return init


def _momentum_step(c, i, ctx, max_order, beta):
    """One GHVB step: AB combination of the last noise predictions, averaged into the velocity, Euler in sigma."""
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    e = (c.x - ctx.denoise(c.x, s)) / s
    o = ctx.plan["order"][i]
    ring = c.hist_m.push(e)
    comb = _ab_combination(e, ring[1:], o, max_order)
    v = jnp.where(i == 0, comb, (1.0 - beta) * c.v + beta * comb)  # the first step starts the velocity at comb
    return MomentumCarry(c.x + (t - s) * v, v, ring, _push_s(c.hist_s, s)), 1


def ghvb(order: int = 2, beta: float = 0.8) -> Solver:
    """Generalized heavy-ball momentum (GHVB; Wizadwongsa, Chinchuthakun, Khungurn, Raj & Suwajanakorn 2024,
    "Diffusion sampling with momentum for mitigating divergence artifacts"), in the VE noise level ``sigma``.

    With ``eps_n = (x_n - D(x_n, sigma_n)) / sigma_n`` and the Adams-Bashforth combination of order ``k`` of the
    last ``k`` noise predictions ``A_n = sum_j a^(k)_j eps_{n-j}`` (iPNDM's weights, order ramping up):
    ``v_{n+1} = (1 - beta) v_n + beta A_n`` and ``x_{n+1} = x_n + (sigma_{n+1} - sigma_n) v_{n+1}``, with
    ``v_1 = A_0`` (the first step is DDIM's). ``beta = 1`` is iPNDM of order ``k`` (``k = 1``: DDIM / Euler);
    ``beta < 1`` damps the velocity, which keeps few-step sampling stable at high guidance scales at the price of
    a first-order lag: the method converges at order 1 for every ``k`` when ``beta < 1``. 1 call per step.
    """
    if order not in (1, 2, 3, 4):
        raise ValueError(f"ghvb: order must be 1..4, got {order!r}")
    if not (isinstance(beta, (int, float)) and 0.0 < float(beta) <= 1.0):
        raise ValueError(f"ghvb: beta must be in (0, 1], got {beta!r}")

    def plan(budget, ends_at_zero):
        return {"order": np.minimum(np.arange(int(budget)) + 1, order).astype(np.int32)}

    _, ev = one_eval_per_step(order)
    return Solver("ghvb", 1 if beta < 1 else order, False, _momentum_init(order),
                  partial(_momentum_step, max_order=order, beta=float(beta)), plan, ev, keeps_nonfinite=True)


# ---------------------------------------------------------------- epsilon scaling (exposure bias)
def eps_scaled(base: Solver, scale: float = 1.005, slope: float = 0.0) -> Solver:
    """Epsilon scaling (Ning, Li, Su, Salah & Ertugrul 2024, "Elucidating the exposure bias in diffusion models"):
    ``base`` run on the noise prediction divided by ``lambda(sigma) = scale + slope * sigma / sigma_max``.

    A network's noise prediction on its own (imperfect) samples is too large in norm (exposure bias); dividing
    it by ``lambda >= 1`` at sampling time compensates, without retraining. In the denoiser form: the steps use
    ``D'(x, sigma) = x - (x - D(x, sigma)) / lambda(sigma)`` (``eps' = eps / lambda``), so every update and the
    call count are ``base``'s, and ``scale = 1, slope = 0`` is ``base`` itself. (The paper's ``lambda_t = k t +
    b`` is linear in the timestep; here it is linear in ``sigma / sigma_max``.) For an exact model it only adds
    bias; it is meant for trained networks.
    """
    if "run" in base.params:
        raise ValueError(f"eps_scaling: base solver {base.name!r} has its own loop; choose a one-loop solver")
    for name, v in (("scale", scale), ("slope", slope)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
            raise ValueError(f"eps_scaling: {name} must be a finite number, got {v!r}")
    if scale <= 0 or scale + slope <= 0:
        raise ValueError(f"eps_scaling: lambda(sigma) = scale + slope * sigma/sigma_max must stay positive, got "
                         f"scale={scale}, slope={slope}")
    scale, slope = float(scale), float(slope)

    def step(c, i, ctx):
        s_max = ctx.sigmas[0]

        def denoise(x, sg):
            return x - (x - ctx.denoise(x, sg)) / (scale + slope * sg / s_max)

        return base.step(c, i, ctx._replace(denoise=denoise))

    return base._replace(name="eps_scaling", step=step)


# ---------------------------------------------------------------- bespoke (fitted) multistep weights
def _bespoke_step(c, i, ctx, max_order):
    """An iPNDM-form step whose weights of the last noise predictions are the plan's ``w0..w{k-1}`` at step i."""
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    x = c.x
    e = (x - ctx.denoise(x, s)) / s
    hist_m, _, pushed = _history(c, e, s)
    comb = ctx.plan["w0"][i].astype(x.dtype) * e
    for k in range(1, max_order):
        comb = comb + ctx.plan[f"w{k}"][i].astype(x.dtype) * hist_m[k - 1]
    return _advance(c, x + (t - s) * comb, e, s, x, ctx.plan["order"][i], pushed), 1


def bespoke(order: int = 4) -> Solver:
    """A linear multistep solver with per-step weights fitted to a model (bespoke coefficients, in the spirit of
    Shaul et al. 2024, "Bespoke solvers for generative flow models"): ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i)
    sum_j w_{i,j} eps_{i-j}`` with ``eps = (x - D)/sigma`` and ``j < min(i + 1, order)``.

    Its plan carries the weights as per-step arrays ``w0..w{order-1}`` (so new weights never recompile); as
    planned here they are iPNDM's Adams-Bashforth weights, so the solver is iPNDM (bit for bit the same updates up
    to the order of the sums). ``solver="auto"`` fits them, together with the grid, by gradient descent on the
    endpoint error against exact ODE solutions (:mod:`samplax.diffusion.auto`). 1 call per step.
    """
    if order not in (1, 2, 3, 4):
        raise ValueError(f"bespoke: order must be 1..4, got {order!r}")

    def plan(budget, ends_at_zero):
        orders = np.minimum(np.arange(int(budget)) + 1, order).astype(np.int32)
        out = {"order": orders}
        for k in range(order):
            out[f"w{k}"] = np.asarray([_AB[int(o)][k] if k < o else 0.0 for o in orders], np.float64)
        return out

    _, ev = one_eval_per_step(order)
    return Solver("bespoke", 2 if order >= 2 else 1, False, _multi_init(order - 1),
                  partial(_bespoke_step, max_order=order), plan, ev, keeps_nonfinite=True)


# ---------------------------------------------------------------- fitted per-step parameters (IIA, DC-Solver)
def _per_step_values(value, name, who, ndim):
    """``value`` as a finite float64 numpy array of ``ndim`` dimensions (a ValueError naming ``name`` otherwise)."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} must be an array of numbers, got {type(value).__name__}") from None
    if a.ndim != ndim or a.shape[0] < 1:
        want = "[num_steps]" if ndim == 1 else "[num_steps, num_terms]"
        raise ValueError(f"{who}: {name} must have shape {want}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{who}: {name} has non-finite values")
    return a


def _fitted_nodes(nodes, who):
    """The optional grid a solver's per-step parameters were fitted on, as a tuple of floats (or ``None``)."""
    if nodes is None:
        return None
    a = _per_step_values(nodes, "nodes", who, 1)
    if a.size < 2 or not (np.all(np.diff(a) < 0) and a[-1] > 0):
        raise ValueError(f"{who}: nodes must be the fit's strictly decreasing positive grid, got {a.tolist()}")
    return tuple(float(v) for v in a)


def _steps_check(rows, n, name, who, base_name):
    if rows != n:
        raise ValueError(f"{who}: {name} has values for {rows} steps, but this call plans {n} steps of {base_name!r} "
                         f"(the number of steps follows nfe and final_step); fit them for this nfe")


# ---------------------------------------------------------------- IIA: fitted corrections of a base solver's steps
#: Base solvers of IIA: deterministic, one call per step, and that call is ``D(x_i, sigma_i)`` at the step's start.
IIA_BASES = ("ddim", "euler", "dpmpp_2m", "dpmpp_3m", "deis", "ipndm", "unipc_bh2", "unipc_bh1")
IIA_MAX_TERMS = 4


class IIACarry(NamedTuple):
    x: jax.Array
    base: Any  # the base solver's carry; its own x is replaced by ``x`` at the start of each step
    hist_d: Ring  # denoised values D_{i-1}, D_{i-2}, ..., newest first (a step pushes D_i first; see _history)


def _iia_features(x, d, hist_d, i, num_terms):
    """``[D_i - x_i, D_i - D_{i-1}, D_{i-1} - D_{i-2}, ...]`` (``num_terms`` of them); a difference whose older
    value does not exist yet (step ``i < k``) is zero."""
    feats = [d - x]
    for k in range(1, num_terms):
        newer = d if k == 1 else hist_d[k - 2]
        feats.append(jnp.where(i >= k, newer - hist_d[k - 1], jnp.zeros_like(d)))
    return feats


def _iia_parts(c, i, ctx, base, num_terms):
    """Base step ``i`` from ``c.x`` (its one call ``D(x_i, sigma_i)`` is made here and handed to it) and the IIA
    features: ``(base carry after the step, calls, features, the history with D_i pushed)``. The push comes first
    and the features read the earlier values from the pushed ring (no copy of the loop-carried history; see
    :func:`_history`)."""
    d = ctx.denoise(c.x, ctx.sigmas[i])
    bcarry = c.base.with_x(c.x) if hasattr(c.base, "with_x") else c.base._replace(x=c.x)
    bc, k = base.step(bcarry, i, ctx._replace(denoise=lambda x, sg: d))
    ring = c.hist_d.push(d)
    return bc, k, _iia_features(c.x, d, ring[1:], i, num_terms), ring


def _iia_step(c, i, ctx, base, num_terms):
    bc, k, feats, ring = _iia_parts(c, i, ctx, base, num_terms)
    x = bc.x
    for j, f in enumerate(feats):
        x = x + ctx.plan[f"c{j}"][i].astype(x.dtype) * f
    return IIACarry(x, bc, ring), k


def iia_corrected(base: Solver, coefficients=None, num_terms: Optional[int] = None, nodes=None) -> Solver:
    """Improved integration approximation (IIA; Zhang, Niwa & Kleijn, ICLR 2024, "On accelerating diffusion-based
    sampling process via improved integration approximation") on the one-call solver ``base`` (one of
    :data:`IIA_BASES`).

    Step ``i`` of ``base`` (its update unchanged: ``x'_{i+1} = Phi(x_i, D_i, history)`` with its single call
    ``D_i = D(x_i, sigma_i)``) gets a linear combination of what the step already has::

        x_{i+1} = x'_{i+1} + c_{i,0} (D_i - x_i) + sum_{k=1}^{K-1} c_{i,k} (D_{i-k+1} - D_{i-k})

    (a difference enters from step ``k`` on; before that its term is zero). The paper fits such coefficients per
    step by minimising the mean squared distance between the coarse step and the base solver run over the same
    interval on a finer grid, over a batch of trajectories (its MMSE problem per timestep; IIA-DDIM,
    IIA-DPM-Solver); :func:`samplax.diffusion.fit_iia` does that by least squares. The terms here are samplax's
    choice: the step's own direction ``D_i - x_i`` (a fitted step length) and differences of consecutive denoised
    estimates (fitted higher-order corrections).

    Args:
      base: the base solver (its name must be in :data:`IIA_BASES`).
      coefficients: ``[num_steps, K]`` per-step coefficients, ``1 <= K <= 4`` (``None``: zeros, which is ``base``
        itself, bit for bit). The number of rows must be the number of steps the call plans (a ValueError
        otherwise).
      num_terms: ``K`` when ``coefficients`` is ``None`` (default 3); must agree with ``coefficients``.
      nodes: the positive grid the coefficients were fitted on; :func:`samplax.diffusion.sample` refuses another.

    The coefficients travel in the plan (``c0 .. c{K-1}``), so new values of the same shape never retrace the
    step. No extra denoiser call: 1 per step, as ``base``.
    """
    who = "iia"
    if base.name not in IIA_BASES:
        raise ValueError(f"{who}: base must be one of {IIA_BASES}, got {base.name!r}")
    coefs = None if coefficients is None else _per_step_values(coefficients, "coefficients", who, 2)
    if num_terms is not None and (not isinstance(num_terms, (int, np.integer)) or isinstance(num_terms, bool)
                                  or not 1 <= num_terms <= IIA_MAX_TERMS):
        raise ValueError(f"{who}: num_terms must be an int in 1..{IIA_MAX_TERMS}, got {num_terms!r}")
    if coefs is not None:
        if not 1 <= coefs.shape[1] <= IIA_MAX_TERMS:
            raise ValueError(f"{who}: coefficients must have 1..{IIA_MAX_TERMS} columns (terms), got shape "
                             f"{coefs.shape}")
        if num_terms is not None and num_terms != coefs.shape[1]:
            raise ValueError(f"{who}: num_terms={num_terms} but coefficients has {coefs.shape[1]} columns")
    k_terms = int(coefs.shape[1] if coefs is not None else (3 if num_terms is None else num_terms))
    fitted = _fitted_nodes(nodes, who)

    def init(x, sigmas, plan):
        h = max(k_terms - 1, 1) + 1  # D_i and the k_terms - 1 before it
        return IIACarry(x, base.init(x, sigmas, plan), Ring(jnp.zeros((h,) + x.shape, x.dtype),
                                                             jnp.asarray(0, jnp.int32)))

    def plan(budget, ends_at_zero):
        p = dict(base.plan(budget, ends_at_zero))
        n = len(p["order"])
        if coefs is not None:
            _steps_check(coefs.shape[0], n, "coefficients", who, base.name)
        cs = coefs if coefs is not None else np.zeros((n, k_terms))
        for j in range(k_terms):
            p[f"c{j}"] = np.asarray(cs[:, j], np.float64)
        return p

    # x_{i+1} = (base's update) + sum of terms: non-finite where the base's update is, so it keeps non-finite
    # states exactly when the base does
    return Solver("iia", base.order, False, init, partial(_iia_step, base=base, num_terms=k_terms), plan,
                  base.evals, keeps_nonfinite=base.keeps_nonfinite, fitted_nodes=fitted)


# ---------------------------------------------------------------- DC-Solver: UniPC with dynamic compensation
def _dc_lagrange(m, hist_m, hist_s, s, rho, dc_order):
    """The Lagrange polynomial through ``(lambda_{i-j}, m_{i-j})``, ``j = 0..dc_order``, at
    ``rho lambda_i + (1 - rho) lambda_{i-1}`` (``lambda = -log sigma``); exactly ``m`` at ``rho = 1``."""
    lams = [lam(s)] + [lam(hist_s[k]) for k in range(dc_order)]
    vals = [m] + [hist_m[k] for k in range(dc_order)]
    target = lams[0] * rho + lams[1] * (1.0 - rho)
    out = jnp.zeros_like(m)
    for j in range(dc_order + 1):
        w = jnp.ones_like(target)
        for k in range(dc_order + 1):
            if k != j:
                w = w * (target - lams[k]) / (lams[j] - lams[k])
        out = out + w * vals[j]
    return out


def _dc_compensated(i, ctx, m, hist_m, hist_s, dc_order):
    """``m_i`` replaced by its compensation with the plan's ratio ``rho_i`` (kept for steps ``i < dc_order``), from
    the earlier model values ``hist_m`` at ``hist_s`` (newest first)."""
    rho = ctx.plan["rho"][i].astype(m.dtype)
    return jnp.where(i >= dc_order, _dc_lagrange(m, hist_m, hist_s, ctx.sigmas[i], rho, dc_order), m)


def _dc_step(c, i, ctx, max_order, variant, dc_order):
    m, x, hist_m, hist_s, pushed = _unipc_correct(c, i, ctx, max_order, variant)
    m_dc = _dc_compensated(i, ctx, m, hist_m, hist_s, dc_order)
    if pushed is not None:  # the compensated value takes the raw one's place in the history (written in place)
        pushed = (pushed[0].with_newest(m_dc), pushed[1])
    return _unipc_predict(c, i, ctx, m_dc, x, hist_m, hist_s, pushed, max_order, variant), 1


def dc_solver(order: int = 2, variant: str = "bh2", dc_order: int = 2, ratios=None, nodes=None) -> Solver:
    """DC-Solver (Zhao, Wang, Zhou & Lu, ECCV 2024, "DC-Solver: Improving predictor-corrector diffusion sampler via
    dynamic compensation"): UniPC (UniP-``order`` with the UniC corrector, :func:`unipc`) whose newest model value
    is replaced, before the predictor uses it, by the Lagrange interpolation of the last ``q + 1 = dc_order + 1``
    model values at a shifted noise level::

        m'_i = sum_{j=0}^{q} m_{i-j} prod_{k != j} (l*_i - l_{i-k}) / (l_{i-j} - l_{i-k}),
        l*_i = rho_i l_i + (1 - rho_i) l_{i-1},   l = lambda = -log sigma.

    ``m_i = D(x_i, sigma_i)`` is evaluated at the predicted point, and the corrector then moves ``x_i`` (UniC uses
    ``m_i`` itself): the predictor that follows pairs the corrected state with a model value of another point.
    The ratio ``rho_i`` compensates that misalignment. ``m'_i`` drives UniP's step ``i`` and stays in the history
    (the corrector of step ``i + 1`` and later compensations use it), as in the paper's code. ``rho_i = 1`` gives
    ``m'_i = m_i`` exactly, i.e. UniPC bit for bit; steps ``i < dc_order`` keep ``m_i`` (too little history).
    The paper interpolates in the model's time ``t``; here in ``lambda``, UniPC's variable. The ratios are searched
    per step against exact PF-ODE states by :func:`samplax.diffusion.fit_dc` (the paper's cascade polynomial
    regression of the ratios is not implemented). 1 call per step.

    Args:
      order, variant: UniPC's predictor order (1..3) and ``B(h)`` (``"bh1"``, ``"bh2"``).
      dc_order: degree ``q`` of the compensating interpolation (1..3).
      ratios: ``[num_steps]`` compensation ratios (``None``: all 1, which is UniPC); one per planned step (a
        ValueError otherwise), and 1 at the first ``dc_order`` steps.
      nodes: the positive grid the ratios were fitted on; :func:`samplax.diffusion.sample` refuses another.
    """
    who = "dc_solver"
    if order not in (1, 2, 3):
        raise ValueError(f"{who}: order must be 1, 2 or 3, got {order!r}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"{who}: variant must be 'bh1' or 'bh2', got {variant!r}")
    if dc_order not in (1, 2, 3):
        raise ValueError(f"{who}: dc_order must be 1, 2 or 3, got {dc_order!r}")
    rhos = None if ratios is None else _per_step_values(ratios, "ratios", who, 1)
    if rhos is not None and np.any(rhos[:dc_order] != 1.0):
        raise ValueError(f"{who}: ratios of the first dc_order={dc_order} steps must be 1 (too little history to "
                         f"compensate there), got {rhos[:dc_order].tolist()}")
    fitted = _fitted_nodes(nodes, who)
    pl, ev = one_eval_per_step(order)

    def plan(budget, ends_at_zero):
        p = pl(budget, ends_at_zero)
        n = len(p["order"])
        if rhos is not None:
            _steps_check(rhos.shape[0], n, "ratios", who, f"unipc_{variant}")
        p["rho"] = np.asarray(rhos if rhos is not None else np.ones(n), np.float64)
        return p

    step = partial(_dc_step, max_order=order, variant=variant, dc_order=dc_order)
    # UniPC's history (order earlier values) and the compensation's (dc_order earlier values)
    init = _multi_init(max(order, dc_order))
    # keeps_nonfinite False: UniC's correction starts again from the previous step's corrected state (as UniPC)
    return Solver("dc_solver", order + 1, False, init, step, plan, ev, fitted_nodes=fitted)


# ---------------------------------------------------------------- USF: a per-step solver schedule (S^3)
#: The per-step choices of :func:`usf` (and of :func:`samplax.diffusion.search_schedule`).
USF_PREDICTIONS = ("data", "noise")
USF_VARIANTS = ("bh1", "bh2")
USF_MAX_ORDER = 3


class USFCarry(NamedTuple):
    x: jax.Array
    hist: Ring  # [D, eps] pairs of the model's calls ``[2, B, ...]``, newest first (the current one pushed first)
    hist_s: jax.Array  # [4] sigmas of those calls, newest first
    x_prev: jax.Array  # the (corrected) start of the previous step (UniC starts there)


def _cramer(R, b):
    """The solution of the 2x2 or 3x3 system ``R rho = b`` by Cramer's rule, as a list of scalars (a few scalar
    operations where ``jnp.linalg.solve``'s pivoted factorisation compiles to a much larger program)."""
    n = R.shape[0]

    def det(m):
        if n == 2:
            return m[0][0] * m[1][1] - m[0][1] * m[1][0]
        return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))

    rows = [[R[i, j] for j in range(n)] for i in range(n)]
    d = det(rows)
    return [det([[b[i] if j == k else rows[i][j] for j in range(n)] for i in range(n)]) / d for k in range(n)]


def _usf_weights(s, t, hist_s, order, bh1, noise, corrector):
    """Scalar weights of one UniP-``order`` predictor (or, ``corrector``, UniC-``order`` corrector) step from ``s`` to
    ``t`` with the model values ``f`` (``D`` for data prediction, ``eps = (x - D)/sigma`` for noise prediction)::

        x_t = a x_s + w_m f(s) + sum_k w_k f(hist_s[k]) [+ w_t f(t), corrector]

    returned as ``(a, w_m, [w_0, w_1], w_t)`` (``w_k`` zero where the order does not use ``hist_s[k]``). ``order``,
    ``bh1`` and ``noise`` are Python values. UniPC (Zhao et al. 2023) in the VE state (``alpha = 1``): with ``h =
    log(s/t)``, ``hh = -h`` (data) or ``h`` (noise), ``B(h) = hh`` (bh1) or ``e^hh - 1`` (bh2), ``r_k =
    (lambda(hist_s[k]) - lambda(s))/h`` and UniPC's ``rho`` from its linear system::

        data:  x_t = (t/s) x_s - (e^hh - 1) D_s - B(h) sum_k rho_k (D_k - D_s)/r_k
        noise: x_t = x_s - t (e^hh - 1) eps_s - t B(h) sum_k rho_k (eps_k - eps_s)/r_k

    (the corrector's last difference is ``f(t) - f(s)``, with ``r = 1``). The order-1 predictor is DDIM's
    ``(t/s) x_s + (1 - t/s) D_s`` / ``x_s - (s - t) eps_s``, finite at ``t = 0``."""
    zero = jnp.zeros_like(s)
    if order == 1 and not corrector:
        if noise:
            return jnp.ones_like(s), -(s - t), [zero, zero], zero
        r = t / s
        return r, 1.0 - r, [zero, zero], zero
    h = jnp.log(s / t)
    hh = h if noise else -h
    scale = t if noise else jnp.ones_like(s)
    a = jnp.ones_like(s) if noise else t / s
    rks, h_phi_1, b_h, R, b = _unipc_system(s, h, hh, hist_s, order, bh1)
    if corrector:
        rho = [jnp.asarray(0.5, s.dtype)] if order == 1 else _cramer(R, b)
        rho_d, rho_t = rho[:-1], rho[-1]
    else:
        rho_d = [jnp.asarray(0.5, s.dtype)] if order == 2 else _cramer(R[:-1, :-1], b[:-1])
        rho_t = zero
    w_m = -scale * h_phi_1 + scale * b_h * (sum((rho_d[k] / rks[k] for k in range(order - 1)), zero) + rho_t)
    w_h = [-scale * b_h * rho_d[k] / rks[k] if k < order - 1 else zero for k in range(2)]
    return a, w_m, w_h, -scale * b_h * rho_t


def _usf_select(order, noise, bh1, s, t, hist_s, corrector, active=None):
    """:func:`_usf_weights` of the planned (traced) ``order``, prediction ``noise`` and variant ``bh1``: every choice's
    scalar weights are computed and the planned ones selected (scalars only; the batch is combined once). As in
    :func:`_by_order`, the orders not taken (and every order where ``active`` is False) see a safe ``t`` and
    history, so that no weight, taken or not, is NaN. Returns ``(a, w_m, [w_0, w_1], w_t, is_noise)``."""
    safe_t = 0.5 * s
    safe_hist = s * jnp.asarray(2.0, hist_s.dtype) ** jnp.arange(1, hist_s.shape[0] + 1, dtype=hist_s.dtype)
    out = None
    for k in range(1, USF_MAX_ORDER + 1):
        take = order >= k if k == USF_MAX_ORDER else (order <= k if k == 1 else order == k)
        guard = take if active is None else take & active
        tk, hk = (t, hist_s) if (k == 1 and not corrector) else (jnp.where(guard, t, safe_t),
                                                                  jnp.where(guard, hist_s, safe_hist))
        for nz in (False, True):
            for b1 in (False, True):
                if k == 1 and not corrector and b1:
                    continue  # DDIM's step has no B(h)
                a, w_m, w_h, w_t = _usf_weights(s, tk, hk, k, b1, nz, corrector)
                vec = jnp.stack([a, w_m, w_h[0], w_h[1], w_t])
                sel = take & (noise == 1) if nz else take & (noise == 0)
                if (k > 1 or corrector):
                    sel = sel & ((bh1 == 1) if b1 else (bh1 == 0))
                out = vec if out is None else jnp.where(sel, vec, out)
    return out


def _usf_value(ring, k, noise):
    """The ``k``-th most recent model value of ``ring`` as D (``noise == 0``) or eps (``noise == 1``): one dynamic
    slice of the buffer, so only the planned representation is read."""
    buf = ring.buf
    z = jnp.zeros((), ring.ptr.dtype)
    start = (jnp.mod(ring.ptr - k, buf.shape[0]), noise.astype(ring.ptr.dtype)) + (z,) * (buf.ndim - 2)
    return jax.lax.dynamic_slice(buf, start, (1, 1) + buf.shape[2:])[0, 0]


def _usf_combine(vec, x, vals):
    """``a x + sum_j w_j v_j`` with the weights ``vec = [a, w_m, w_0, w_1, w_t]`` on ``vals`` (``None``: unused)."""
    out = vec[0].astype(x.dtype) * x
    for j, v in enumerate(vals):
        if v is not None:
            out = out + vec[1 + j].astype(x.dtype) * v
    return out


def _usf_step(c, i, ctx):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    x = c.x
    d = ctx.denoise(x, s)
    e = (x - d) / s
    ring = c.hist.push(jnp.stack([d, e]))
    hist_s = jnp.concatenate([jnp.reshape(s, (1,)), c.hist_s[:-1]], 0)
    p = ctx.plan
    # UniC of the previous step (its order, prediction and variant) from its start x_prev, with this call's value;
    # the earlier values are read from the pushed ring (see _history), in the prediction's representation only
    ip = jnp.maximum(i - 1, 0)
    nz_c, nz_p = p["noise"][ip], p["noise"][i]
    on = (i > 0) & (p["corrector"][i] == 1)
    vc = _usf_select(p["order"][ip], nz_c, p["bh1"][ip], hist_s[1], s, hist_s[2:], True, active=on)
    xc = _usf_combine(vc, c.x_prev, [_usf_value(ring, 1, nz_c), _usf_value(ring, 2, nz_c),
                                     _usf_value(ring, 3, nz_c), jnp.where(nz_c == 1, e, d)])
    x = jnp.where(on, xc, x)
    # UniP of this step's order, prediction and variant
    vp = _usf_select(p["order"][i], nz_p, p["bh1"][i], s, t, hist_s[1:], False)
    xn = _usf_combine(vp, x, [jnp.where(nz_p == 1, e, d), _usf_value(ring, 1, nz_p), _usf_value(ring, 2, nz_p)])
    return USFCarry(xn, ring, hist_s, x), 1


def _usf_choice_ok(v, name):
    if name == "order":
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and int(v) in (1, 2, 3)
    if name == "corrector":
        return isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and int(v) in (0, 1))
    return isinstance(v, str) and v in (USF_PREDICTIONS if name == "prediction" else USF_VARIANTS)


_USF_ALLOWED = {"order": "1, 2 or 3", "corrector": "a bool (or 0/1)", "prediction": f"one of {USF_PREDICTIONS}",
                "variant": f"one of {USF_VARIANTS}"}


def _usf_choices(value, name, who):
    """A per-step choice as ``(values, scalar)``: a scalar holds at every step, a sequence has one value per step;
    each value is checked (a ValueError naming ``name``)."""
    scalar = isinstance(value, (str, bool, int, np.integer, np.bool_))
    if scalar:
        seq = (value,)
    else:
        try:
            seq = tuple(np.asarray(value).tolist()) if isinstance(value, np.ndarray) else tuple(value)
        except TypeError:
            raise ValueError(f"{who}: {name} must be {_USF_ALLOWED[name]} or a sequence of them (one per step), got "
                             f"{type(value).__name__} {value!r}") from None
        if len(seq) < 1:
            raise ValueError(f"{who}: {name} must not be an empty sequence")
    for v in seq:
        if not _usf_choice_ok(v, name):
            raise ValueError(f"{who}: {name} must be {_USF_ALLOWED[name]} (per step), got {v!r}")
    return seq, scalar


def usf(order=2, prediction="data", corrector=True, variant="bh2", nodes=None) -> Solver:
    """A solver whose strategy varies per step: the unified sampling framework of Liu et al. (2023, "Enhancing
    diffusion model sampling via a unified sampling framework", USF; its searched schedules are S^3), built on
    UniPC's predictor-corrector (Zhao et al. 2023) in the exponential-integrator form of :func:`unipc` /
    :func:`dpmpp`.

    USF splits a multistep exponential-integrator step into independent decisions, one set per step: the
    timestep, the prediction type (integrate the data prediction ``D`` or the noise prediction ``eps``), the order
    of the Taylor expansion of that prediction in ``lambda = -log sigma`` (its derivatives estimated by finite
    differences of the last calls), how those derivatives are weighted, and whether a corrector is applied. Here,
    per step ``i`` (from ``sigma_i`` to ``sigma_{i+1}``, one call ``D(x_i, sigma_i)``):

    * ``order[i]`` in 1, 2, 3: UniP-``order`` (``order - 1`` earlier calls); the order used is ``min(order[i], i +
      1)`` (too little history before), and 1 on a step into ``sigma = 0``;
    * ``prediction[i]``: ``"data"`` (``x_t = (t/s) x_s - (e^-h - 1) D_s - B(h) sum_k rho_k (D_k - D_s)/r_k``) or
      ``"noise"`` (``x_t = x_s - t (e^h - 1) eps_s - t B(h) sum_k rho_k (eps_k - eps_s)/r_k``), ``h = log(s/t)``,
      ``r_k = (lambda(sigma_{i-k}) - lambda(sigma_i))/h`` and UniPC's ``rho_k`` (its linear system with ``e^hh``,
      ``hh = -h`` for data and ``h`` for noise);
    * ``variant[i]``: UniPC's ``B(h)``, ``"bh1"`` (``h``) or ``"bh2"`` (``e^h - 1``): the weighting of the
      finite-difference derivative estimates (samplax's stand-in for USF's choice of derivative estimate);
    * ``corrector[i]``: whether ``x_i`` (step ``i - 1``'s prediction) is corrected by UniC (of step ``i - 1``'s
      order, prediction and variant, raising its order by one) with this step's call ``D(x_i)`` before the
      predictor starts from it: no extra call (step 0 has nothing to correct).

    The timesteps are the grid of the call (``sample``'s ``grid``/``sigma_end``); a schedule fitted on one grid
    carries it in ``nodes`` (:attr:`Solver.fitted_nodes`). A scalar choice holds at every step; a sequence gives
    one value per planned step (its length must be the number of steps the call plans: a ValueError naming the
    argument otherwise). The choices travel in the plan (``order``, ``noise``, ``bh1``, ``corrector``) and every
    choice's scalar weights are computed and the planned one selected, so a new schedule never retraces the step
    and the batch is combined in one pass (no ``lax.cond``). Special cases (to round-off): all order 2, data,
    ``corrector=False``, bh2 is ``dpmpp_2m`` (= ``unip_bh2``); with ``corrector=True`` it is ``unipc_bh2`` (orders
    1..3 and both variants: ``unipc(order, variant)``). :func:`samplax.diffusion.search_schedule` searches a
    schedule for a model. 1 call per step.
    """
    who = "usf"
    choices = {name: _usf_choices(v, name, who) for name, v in
               (("order", order), ("prediction", prediction), ("corrector", corrector), ("variant", variant))}
    fitted = _fitted_nodes(nodes, who)

    def per_step(name, n):
        seq, scalar = choices[name]
        if scalar:
            return list(seq) * n
        _steps_check(len(seq), n, name, who, "usf")
        return list(seq)

    def plan(budget, ends_at_zero):
        n = int(budget)
        o = np.minimum(np.asarray(per_step("order", n), np.int32), np.arange(n, dtype=np.int32) + 1)
        if ends_at_zero and n > 0:
            o[-1] = 1
        return {"order": o.astype(np.int32),
                "noise": np.asarray([p == "noise" for p in per_step("prediction", n)], np.int32),
                "bh1": np.asarray([v == "bh1" for v in per_step("variant", n)], np.int32),
                "corrector": np.asarray([bool(v) for v in per_step("corrector", n)], np.int32)}

    def init(x, sigmas, plan_):
        return USFCarry(x, Ring(jnp.zeros((4, 2) + x.shape, x.dtype), jnp.asarray(0, jnp.int32)),
                        jnp.ones((4,), x.dtype) * sigmas[0], x)

    _, ev = one_eval_per_step(USF_MAX_ORDER)
    top = int(max(choices["order"][0])) + (1 if all(bool(v) for v in choices["corrector"][0]) else 0)
    # keeps_nonfinite False: UniC's correction starts again from the previous step's corrected state (as UniPC)
    return Solver("usf", min(top, 4), False, init, _usf_step, plan, ev, fitted_nodes=fitted)


# ---------------------------------------------------------------- DPM-Solver-v3: empirical model statistics
class V3Carry(NamedTuple):
    x: jax.Array
    hist_m: Ring  # G_j (the model values in the anchored frame, see _v3_step), newest first
    hist_s: jax.Array  # [H + 1] sigmas where they were evaluated
    anchor: jax.Array  # [3, *e] the running integrals (Lc, Sc, Bc) from the first node to the current one
    x_prev: jax.Array  # start of the previous step (the corrector)
    anchor_prev: jax.Array
    order_prev: jax.Array


def _v3_init(history: int):
    def init(x, sigmas, plan):
        h = max(int(history), 1) + 1
        e = jnp.zeros_like(plan["v3_l"][0, 0], dtype=x.dtype)
        a = jnp.stack([e, e, e])
        return V3Carry(x, Ring(jnp.zeros((h,) + x.shape, x.dtype), jnp.asarray(0, jnp.int32)),
                       jnp.ones((h,), x.dtype) * sigmas[0], a, x, a, jnp.asarray(1, jnp.int32))
    return init


def _cumtrapz(v, du):
    """Cumulative trapezoid of ``v`` ``[K+1, ...]`` on a uniform grid of spacing ``du``: ``[K+1, ...]``, first 0."""
    inc = 0.5 * du * (v[1:] + v[:-1])
    return jnp.concatenate([jnp.zeros_like(v[:1]), jnp.cumsum(inc, axis=0)], 0)


def _v3_taylor(deltas, diffs, n, pseudo):
    """Taylor coefficients ``a_k = g^(k)(lambda_s)/k!``, ``k = 1..n``, from ``n`` earlier values:
    ``diffs[j] = g(lambda_s + deltas[j]) - g(lambda_s)`` (nearest first). Full order: the ``n x n`` Vandermonde
    system ``diffs[j] = sum_k a_k deltas[j]^k``. Pseudo order: ``a_k`` is the last unknown of the ``k x k`` system on
    the ``k`` nearest values only (the paper's pseudo-order solver)."""
    q1 = diffs[0] / deltas[0]
    if n == 1:
        return [q1]
    d1, d2 = deltas[0], deltas[1]
    a2 = (q1 - diffs[1] / d2) / (d1 - d2)
    a1 = q1 if pseudo else q1 - a2 * d1
    return [a1, a2]


def _v3_update(x, nval, anchor, hist_g, s, t, hist_s, ems, order, pseudo):
    """One DPM-Solver-v3 step of ``order`` (1..3) from ``sigma_s`` to ``sigma_t > 0`` (see :func:`dpm_solver_v3`)."""
    lv, sv, bv = ems  # [K+1, *e'] on lambda_s + u_k, u_k = k h / K
    kk = lv.shape[0] - 1
    h = jnp.log(s / t)
    du = h / kk
    u = du * jnp.arange(kk + 1, dtype=x.dtype).reshape((kk + 1,) + (1,) * (lv.ndim - 1))
    lc, sc, bc = anchor[0], anchor[1], anchor[2]
    big_l = _cumtrapz(lv, du)  # L_s(lambda_s + u)
    big_s = _cumtrapz(sv, du)  # S_s
    big_b = _cumtrapz(jnp.exp(-big_s - big_l) * bv, du)  # B_s
    w = jnp.full((kk + 1,), du, x.dtype).at[0].set(0.5 * du).at[-1].set(0.5 * du)
    w = w.reshape(u.shape) * jnp.exp(u - h)  # trapezoid weights of e^{lambda - lambda_t}
    es1 = jnp.expm1(big_s)
    em1 = jnp.expm1(-h)
    exact = [-em1, h + em1, h * h - 2.0 * h - 2.0 * em1]  # int_0^h e^{u-h} u^k du

    def coef(k):  # int e^{lambda - lambda_t} e^{S_s} (lambda - lambda_s)^k
        return exact[k] + jnp.sum(w * es1 * u ** k, axis=0)

    amp = jnp.exp(big_l[-1])
    out = jnp.exp(-h) * x + coef(0) * nval + jnp.sum(w * jnp.exp(big_s) * big_b, axis=0)
    if order > 1:
        scale = jnp.exp(sc + lc)
        g_s = jnp.exp(-sc - lc) * nval - bc
        deltas = [lam(hist_s[j]) - lam(s) for j in range(order - 1)]
        diffs = [scale * (hist_g[j] - g_s) for j in range(order - 1)]
        for k, a in enumerate(_v3_taylor(deltas, diffs, order - 1, pseudo), start=1):
            out = out + coef(k) * a
    new_anchor = jnp.stack([lc + big_l[-1], sc + big_s[-1], bc + jnp.exp(-sc - lc) * big_b[-1]])
    return amp * out, new_anchor


def _v3_ems(ctx, i, x):
    """The plan's EMS of step ``i`` as ``[K+1, 1, *e]`` arrays that broadcast against a batch ``x`` ``[B, *e]``."""
    out = []
    for name in ("v3_l", "v3_s", "v3_b"):
        v = ctx.plan[name][i].astype(x.dtype)
        e = v.shape[1:]
        out.append(v.reshape((v.shape[0], 1) + (1,) * (x.ndim - 1 - len(e)) + e))
    return out


def _v3_anchor(a, x):
    """The carry's anchor ``[3, *e']`` as three arrays that broadcast against a batch ``x`` ``[B, *e]``."""
    b = a.astype(x.dtype).reshape((3, 1) + (1,) * (x.ndim - 1 - (a.ndim - 1)) + a.shape[1:])
    return b[0], b[1], b[2]


def _v3_step(c, i, ctx, max_order, pseudo, corrector):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    x = c.x
    d = ctx.denoise(x, s)
    ems = _v3_ems(ctx, i, x)
    anchor = _v3_anchor(c.anchor, x)
    nval = d - ems[0][0] * x  # N = D - l x at lambda_s, at the point where the model was evaluated
    g_new = jnp.exp(-anchor[1] - anchor[0]) * nval - anchor[2]
    ring = c.hist_m.push(g_new)
    hs = _push_s(c.hist_s, s)
    hist_g, hist_s = ring[1:], hs[1:]
    if corrector:  # step i - 1 again from its start, with this step's value as one more (later) point
        sp, on = hs[1], i > 0
        ap = _v3_anchor(c.anchor_prev, x)
        ems_p = _v3_ems(ctx, jnp.maximum(i - 1, 0), x)
        n_prev = jnp.exp(ap[1] + ap[0]) * (ring[1] + ap[2])  # N_{i-1}, from its anchored value
        pts, pts_s = [ring[0], ring[2]], jnp.stack([s, hs[2]])
        xc = _by_order(jnp.minimum(c.order_prev, 2), 2,
                       lambda k, tk, hsk: _v3_update(c.x_prev, n_prev, ap, pts, sp, tk, hsk, ems_p, k + 1, False)[0],
                       sp, s, pts_s, active=on)
        x = jnp.where(on, xc, x)
    o = ctx.plan["order"][i]
    pos = t > 0
    tt = jnp.where(pos, t, 0.5 * s)
    xn = _by_order(o, max_order,
                   lambda k, tk, hsk: _v3_update(x, nval, anchor, hist_g, s, tk, hsk, ems, k, pseudo)[0],
                   s, tt, hist_s)
    _, new_anchor = _v3_update(x, nval, anchor, hist_g, s, tt, hist_s, ems, 1, pseudo)
    xn = jnp.where(pos, xn, d + 0.0 * x)  # into sigma = 0: D(x_s)
    new_anchor = jnp.reshape(new_anchor, c.anchor.shape).astype(c.anchor.dtype)
    return V3Carry(xn, ring, hs, new_anchor, x, c.anchor, o), 1


def dpm_solver_v3(order: int = 3, pseudo: bool = False, corrector: bool = True, l=None, s=None, b=None,
                  nodes=None) -> Solver:
    """DPM-Solver-v3 (Zheng, Lu, Chen & Zhu, NeurIPS 2023, "DPM-Solver-v3: Improved diffusion ODE solver with
    empirical model statistics"), the multistep predictor (and corrector), in the VE convention (``alpha = 1``,
    ``lambda = -log sigma``).

    The PF-ODE ``dx/dlambda = D - x`` is rewritten with per-dimension empirical model statistics (EMS)
    ``l_lambda, s_lambda, b_lambda``: the linear part ``l x`` is taken out of the model, ``N = D - l x``, so that
    ``x_t = e^{-h} e^{L_t} x_s + int e^{lambda - lambda_t} e^{L_t - L(lambda)} N dlambda`` with
    ``L(lambda) = int_{lambda_s}^lambda l``; then ``f = e^{-L} N`` and ``g = e^{-S} f - int e^{-S} e^{-L} b`` with
    ``S = int_{lambda_s} s``, whose derivative vanishes where ``f' = s f + e^{-L} b`` (the EMS fit of
    :func:`samplax.diffusion.fit_v3`). The step (``h = lambda_t - lambda_s``, ``B(lambda) = int_{lambda_s}^lambda
    e^{-S-L} b``)::

        x_t = e^{L_t} [ e^{-h} x_s + int e^{lambda - lambda_t} e^{S(lambda)} (g(lambda) + B(lambda)) dlambda ]

    with ``g`` replaced by its Taylor polynomial at ``lambda_s`` of degree ``order - 1``, whose derivatives come from
    the earlier values of ``g`` (multistep; with ``pseudo=True``, the paper's pseudo-order solver: the k-th
    derivative from the k nearest earlier values only). The integrals of ``e^{lambda - lambda_t} u^k`` are exact;
    the parts with ``e^{S} - 1`` and ``B`` use the trapezoid rule on the EMS's own ``K + 1`` points per step
    (uniform in ``lambda``). The earlier values are kept in one frame anchored at the first node (running integrals
    of ``l, s, b`` in the carry), which differs from each step's frame by a per-dimension affine map, under which
    the interpolation is invariant. With ``l = s = b = 0`` the predictor's step is DPM-Solver++'s multistep data-prediction
    update in its exponential-integrator (Taylor) form (Lu et al. 2022b): order 2 is
    ``x_t = e^{-h} x_s + (1 - e^{-h}) D_s + (h - 1 + e^{-h}) (D_s - D_prev)/h_prev``. Orders ramp 1, 2, 3 (warm-up);
    a step into ``sigma = 0`` is ``D(x_s)``. 1 call per step. That is the predictor alone (``corrector=False``).

    With ``corrector=True`` (the paper's multistep predictor-corrector, like UniC): the model value at the predicted
    ``x_i`` (the call step ``i`` makes anyway) is added as a later point to the polynomial of step ``i - 1``, which
    is taken again from ``x_{i-1}`` (interpolation with the new value and ``min(order_{i-1}, 2) - 1`` earlier ones,
    full derivative estimates); the corrected ``x_i`` starts the predictor, with ``N_i`` of the predicted point.
    No extra call; the order rises by one (at most 3).

    Args:
      order: 1..3 (predictor order with ``pseudo=False``; pseudo orders above 2 converge at order 2).
      pseudo: use the pseudo-order derivative estimates (the paper uses them at small NFE).
      corrector: add the corrector (default, as in the paper).
      l, s, b: ``[num_steps, K + 1, *event_shape]`` EMS at ``K + 1`` points uniform in ``lambda`` over each step
        (both nodes included), as :func:`samplax.diffusion.fit_v3` returns them; all three or none (``None``:
        zeros). One row per planned step (a ValueError otherwise).
      nodes: the positive grid the EMS were fitted on; :func:`samplax.diffusion.sample` refuses another.

    The EMS travel in the plan (``v3_l``, ``v3_s``, ``v3_b``), so new values of one shape never retrace the step.

    Precision: at high noise the fitted ``s`` is about 3 (``N = D - l x`` is the small nonlinear remainder of ``D``,
    which grows like ``e^{3 lambda}``), so a long first step extrapolates ``N_s`` by up to ``e^{3h}``, and with it
    the rounding of ``D - l x``. Measured on ring8 (``sigma_max = 157.4``, NFE 5, ``h = 2.8``): float32 0.57 against
    float64 0.22 (mean endpoint error); at NFE 10 and 20 the two agree. Prefer float64 at very small NFE.
    """
    who = "dpm_solver_v3"
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"{who}: order must be 1, 2 or 3, got {order!r}")
    if not isinstance(pseudo, (bool, np.bool_)):
        raise ValueError(f"{who}: pseudo must be a bool, got {pseudo!r}")
    if not isinstance(corrector, (bool, np.bool_)):
        raise ValueError(f"{who}: corrector must be a bool, got {corrector!r}")
    given = [v is not None for v in (l, s, b)]
    if any(given) and not all(given):
        raise ValueError(f"{who}: l, s and b (the EMS) must be given together, got "
                         f"{[n for n, g in zip('lsb', given) if g]} only")
    ems = None
    if all(given):
        ems = []
        for name, v in (("l", l), ("s", s), ("b", b)):
            try:
                a = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{who}: {name} must be an array of numbers, got {type(v).__name__}") from None
            if a.ndim < 2 or a.shape[0] < 1 or a.shape[1] < 2:
                raise ValueError(f"{who}: {name} must have shape [num_steps, K + 1, *event_shape] with K + 1 >= 2, "
                                 f"got shape {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{who}: {name} has non-finite values")
            ems.append(a)
        if not (ems[0].shape == ems[1].shape == ems[2].shape):
            raise ValueError(f"{who}: l, s and b must have one shape, got {ems[0].shape}, {ems[1].shape}, "
                             f"{ems[2].shape}")
    fitted = _fitted_nodes(nodes, who)
    if fitted is not None and ems is not None and len(fitted) - 1 != ems[0].shape[0]:
        raise ValueError(f"{who}: nodes has {len(fitted) - 1} intervals but the EMS have {ems[0].shape[0]} steps")
    pl, ev = one_eval_per_step(order)

    def plan(budget, ends_at_zero):
        p = pl(budget, ends_at_zero)
        n = len(p["order"])
        if ems is not None:
            _steps_check(ems[0].shape[0], n, "l", who, who)
            for name, a in zip(("v3_l", "v3_s", "v3_b"), ems):
                p[name] = a
        else:
            for name in ("v3_l", "v3_s", "v3_b"):
                p[name] = np.zeros((n, 2), np.float64)
        return p

    conv = order if not (pseudo and order > 2) else 2
    if corrector:
        conv = min(conv + 1, 3)
    # the corrector starts again from the previous step's start (as UniC): then a non-finite state may not stay so
    return Solver(who, conv, False, _v3_init(max(order - 1, 2) if corrector else order - 1),
                  partial(_v3_step, max_order=order, pseudo=bool(pseudo), corrector=bool(corrector)), plan, ev,
                  keeps_nonfinite=not corrector, fitted_nodes=fitted)
