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
from typing import NamedTuple

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
                raise NotImplementedError("Ring supports only [k] and [1:]")
            return Ring(self.buf, self.ptr - 1)
        return jax.lax.dynamic_index_in_dim(self.buf, jnp.mod(self.ptr - k, self.buf.shape[0]), keepdims=False)

    def push(self, value):
        """The ring with ``value`` as its newest entry, written over the oldest slot (in place)."""
        ptr = self.ptr + 1
        return Ring(jax.lax.dynamic_update_index_in_dim(self.buf, value, jnp.mod(ptr, self.buf.shape[0]), 0), ptr)


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
def _unipc_coeffs(s, t, hist_s, order, variant):
    """UniPC's ``rhos`` for predictor (UniP-p) and corrector (UniC-p) (Zhao et al. 2023, Alg. 2/3)."""
    h = jnp.log(s / t)
    hh = -h
    h_phi_1 = jnp.expm1(hh)
    b_h = hh if variant == "bh1" else jnp.expm1(hh)
    rks = [(lam(hist_s[k]) - lam(s)) / h for k in range(order - 1)] + [jnp.ones_like(h)]
    rks = jnp.stack(rks)
    rows, b = [], []
    h_phi_k = h_phi_1 / hh - 1.0
    fact = 1.0
    for k in range(1, order + 1):
        rows.append(rks ** (k - 1))
        b.append(h_phi_k * fact / b_h)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    R, b = jnp.stack(rows), jnp.stack(b)
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


def _unipc_step(c, i, ctx, max_order, variant, corrector):
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    x = c.x
    m = ctx.denoise(x, s)
    hist_m, hist_s, pushed = _history(c, m, s)
    if corrector:  # UniC from the previous step's start, with this step's D (from step 1 on)
        sp, on = hist_s[0], i > 0
        xc = _by_order(c.order_prev, max_order,
                       lambda k, tk, hs: _unipc_update(c.x_prev, sp, tk, hist_m[0], hist_m[1:], hs, order=k,
                                                       variant=variant, m_t=m),
                       sp, s, hist_s[1:], active=on)
        x = jnp.where(on, xc, x)
    o = ctx.plan["order"][i]
    xn = _by_order(o, max_order, lambda k, tk, hs: _unipc_update(x, s, tk, m, hist_m, hs, order=k, variant=variant),
                   s, t, hist_s)
    return _advance(c, xn, m, s, x, o, pushed), 1


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
