"""Normalizing-flow samplers as runs of the engine (:class:`~samplax.core.method.TrainingPlan`): ``flow``
(reverse KL, reparameterized) and ``fab`` (Flow Annealed importance sampling
Bootstrap).  The flows are :func:`samplax.neural.flows.make_flow`; ``neutra`` (``samplax.methods.flows``)
trains the ``flow`` plan and runs a chain kernel in the flow's latent space.

The training state is ``{"params", "opt"}`` (the flow's trainable arrays and the optimizer's state:
global-norm clipping, then Adam, Kingma & Ba 2015); ``fab`` adds its HMC step sizes and, with
``buffer=True``, the prioritised replay buffer, all fixed-shape arrays (checkpoints resume bit for bit).

``flow``, a training step: ``batch_size`` draws ``x_i = T_theta(z_i)``, ``z_i ~ N(0, I)``, log weights
``log w_i = log pi~(x_i) - log q_theta(x_i)``, and the loss ``-mean log w`` = ``KL(q || pi) - log Z``
(``loss="kl"``; Rezende & Mohamed 2015; Papamakarios et al. 2021, sec. 2.3.3), differentiated through the
draws (the target's gradient).  Reverse KL is mode-seeking: a flow that misses modes gives a ``log Z`` biased
low that its standard error does not show; ``fab`` minimises the mass-covering alpha = 2 divergence instead.
(Its reparameterized estimate ``log mean w^2`` was tried as a loss here: dominated by the largest weight of
the batch it collapsed the flow on a 4-D Gaussian and on gmm25, so it is not offered.)

``fab`` (Midgley, Stimper, Simm, Schoelkopf & Hernandez-Lobato 2023, ICLR), a training step: ``batch_size``
flow draws ``x_0 ~ q_theta`` start annealed importance sampling (Neal 2001) along the geometric path
``log f_b = (1 - b) log q + b log g`` from ``q`` to ``g = pi~^2 / q`` (the optimal proposal of the alpha = 2
divergence), ``b = b_1 < ... < b_K = 1`` (``b_k = k / K``); at each ``b_k`` the AIS log weight gains
``log f_{b_k}(x) - log f_{b_{k-1}}(x) = (b_k - b_{k-1}) (2 log pi~(x) - 2 log q(x))``, then one HMC step
(``num_leapfrog_steps`` leapfrog steps, identity mass, step size ``eps_k``) leaves ``f_{b_k}`` invariant.
The gradient of ``D_2`` is ``-E_g[grad log q_theta] / Z_g`` (up to a positive factor), so the loss is
``-sum_i wbar_i log q_theta(x_K^i)`` with the self-normalized AIS weights ``wbar`` (no gradient through
them).  Each ``eps_k`` adapts to ``target_accept`` by ``log eps_k += 0.05 (mean acceptance - target_accept)``
(Robbins-Monro).  With ``buffer=True`` (the paper's prioritised replay, its Algorithm 2) the AIS points, their
log weights and ``log q_theta`` at insertion go into a ring buffer of ``buffer_size``; then
``updates_per_step`` times a batch is drawn from the buffer with probability proportional to its weights
(with replacement; the paper draws without), the loss is ``-mean log q_theta(x)`` over it, and the drawn
points' log weights are corrected for the new flow, ``log w += log q_old(x) - log q_new(x)`` (the target
``pi~^2 / q`` changes with ``theta``), with ``log q`` stored anew.  Every AIS evaluation of the target is a
training evaluation.

Sampling (both): ``num_samples`` flow draws per chain, ``log w = log pi~(x) - log q(x)``,
``log Z = log mean w`` with its delta-method standard error, the ELBO and the ESS
(:func:`samplax.neural.sde.estimates`) and equal-weight draws by systematic resampling within the chain;
``fab`` with ``sample_with_ais=True`` runs AIS from ``q`` to ``pi~`` from each flow draw (the same HMC
steps, the step sizes of the ``g`` path at ``b / 2``) and uses the AIS weights instead.  The raw draws and
weights are ``extra["proposal_samples"]`` / ``extra["proposal_log_weights"]``; the trained flow (a flowjax
distribution) is ``extra["flow"]``, usable as the reference of ``smc`` / ``nested_sampling``.
"""
from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplax.core.method import PopulationOutput, TrainingContext, TrainingPlan
from samplax.neural.flows import FLOW_KINDS, log_q, make_flow, sample_and_log_q, split_flow
from samplax.neural.sde import logmeanexp, systematic_resample, weighted_output
from samplax.neural.checks import require_gradient

FLOW_LOSSES = ("kl",)

#: The log weight of an empty buffer slot or of a point where the target is not finite: finite (the engine
#: stops at a non-finite training state) and far below any real log weight, so it is never drawn while a
#: real point is in the buffer.
EMPTY_LOG_W = -1e30


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """The options of ``flow``, ``fab`` and ``neutra``'s flow (see :data:`samplax.methods`)."""

    method: str = "flow"
    loss: str = "kl"
    training_evals: int = 1_000_000
    batch_size: int = 256
    kind: str = "maf"
    layers: int = 4
    knots: int = 8
    width: int = 64
    depth: int = 1
    interval: float = 4.0
    base_scale: float = 1.0
    base_loc: float = 0.0
    learning_rate: float = 1e-3
    grad_clip: float = 10.0
    # fab
    num_ais_steps: int = 8
    num_leapfrog_steps: int = 4
    step_size: float = 0.5
    target_accept: float = 0.65
    buffer: bool = False
    buffer_size: int = 8192
    updates_per_step: int = 4
    sample_with_ais: bool = False

    @property
    def fab(self) -> bool:
        return self.method == "fab"

    def ais_evals_per_path(self) -> int:
        """Value-and-gradient evaluations of one AIS path: the start, then ``num_leapfrog_steps`` per HMC step."""
        return 1 + self.num_ais_steps * self.num_leapfrog_steps

    def evals_per_step(self) -> tuple:
        """``(log-density, gradient)`` evaluations of one training step."""
        n = self.batch_size * (self.ais_evals_per_path() if self.fab else 1)
        return n, n

    def evals_per_draw(self) -> tuple:
        """``(log-density, gradient)`` evaluations of one returned draw."""
        if self.fab and self.sample_with_ais:
            n = self.ais_evals_per_path()
            return n, n
        return 1, 0

    def num_training_steps(self) -> int:
        return int(self.training_evals) // self.evals_per_step()[0]

    def flow_spec(self, dim: int) -> dict:
        """:func:`~samplax.neural.flows.make_flow`'s arguments of this flow (JSON-able; ``extra["flow_spec"]``)."""
        def plain(v):
            return np.asarray(v).tolist() if np.ndim(v) else float(v)

        return {"dim": int(dim), "kind": self.kind, "layers": int(self.layers), "knots": int(self.knots),
                "width": int(self.width), "depth": int(self.depth), "interval": float(self.interval),
                "scale": plain(self.base_scale), "loc": plain(self.base_loc)}

    def flow(self, key, dim: int):
        return make_flow(key, **self.flow_spec(dim))


def check_flow_config(name: str, target, cfg: FlowConfig) -> None:
    """Clear errors (naming the option) for a budget too small for one step, a target without gradients, a
    flow kind that does not fit the dimension and incompatible options."""
    lp, _ = cfg.evals_per_step()
    if cfg.num_training_steps() < 1:
        per = (f"batch_size={cfg.batch_size} AIS paths x {cfg.ais_evals_per_path()} evaluations (num_ais_steps="
               f"{cfg.num_ais_steps} x num_leapfrog_steps={cfg.num_leapfrog_steps} + 1)" if cfg.fab
               else f"batch_size={cfg.batch_size} flow draws")
        raise ValueError(f"method {name!r}: option training_evals={cfg.training_evals} is too small for one "
                         f"training step, which evaluates the target {lp} times ({per}); give training_evals >= "
                         f"{lp} or a smaller batch_size")
    if cfg.kind not in FLOW_KINDS:
        raise ValueError(f"method {name!r}: option kind={cfg.kind!r} is not one of {list(FLOW_KINDS)}")
    if cfg.kind != "maf" and target.dim < 2:
        raise ValueError(f"method {name!r}: option kind={cfg.kind!r} needs a target of dimension >= 2 (a coupling "
                         f"layer splits the coordinates); {target.name!r} has dimension {target.dim}: use "
                         "kind='maf'")
    if cfg.fab and cfg.buffer and cfg.buffer_size < cfg.batch_size:
        raise ValueError(f"method {name!r}: option buffer_size={cfg.buffer_size} must be >= batch_size="
                         f"{cfg.batch_size} (one AIS batch goes into the buffer at each step)")
    require_gradient(name, target, "fab's AIS moves are HMC steps that follow grad log pi" if cfg.fab else
                     f"loss={cfg.loss!r} differentiates log pi(x) through the flow's draws (reparameterization)")


def _optimizer(cfg: FlowConfig):
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.learning_rate))


# ---------------------------------------------------------------------------------------------- AIS with HMC
def _ais(key, x0, lq0, logp, flow, betas, eps, num_leapfrog: int, g_path: bool):
    """AIS from ``q`` (the flow, no gradient to its parameters) along ``log f_b = (1 - b) log q + b c log pi~
    - b (c - 1) log q`` with ``c = 2`` (``g = pi~^2 / q``, ``g_path``) or ``c = 1`` (``pi~``), one HMC step per
    ``b`` in ``betas`` (step sizes ``eps``).  One path from ``x0`` (``lq0 = log q(x0)``).  Returns the end point,
    its ``log q``, the log AIS weight (relative to ``q``, normalized), the acceptance probabilities ``[K]``, the
    end point's ``log pi~`` and the start's ``log pi~``."""
    c = 2.0 if g_path else 1.0

    def both(x):
        lq, gq = jax.value_and_grad(lambda y: log_q(flow, y))(x)
        lp, gp = jax.value_and_grad(logp)(x)
        return lq, lp, gq, gp

    def logf(b, lq, lp):
        return (1.0 - c * b) * lq + c * b * lp

    def grad_f(b, gq, gp):
        return (1.0 - c * b) * gq + c * b * gp

    _, lp0, gq, gp = both(x0)  # log q(x0) is lq0 (recomputed here with its gradient)
    b_prev = jnp.zeros((), x0.dtype)

    def step(carry, inp):
        x, lq, lp, gq, gp, b_prev, log_w = carry
        k, b, e = inp
        log_w = log_w + (b - b_prev) * c * (lp - lq)
        kp, ku = jax.random.split(k)
        p0 = jax.random.normal(kp, x.shape, x.dtype)

        def leap(st, _):
            y, p, yq, yp, ygq, ygp = st
            p = p + 0.5 * e * grad_f(b, ygq, ygp)
            y = y + e * p
            nq, np_, ngq, ngp = both(y)
            p = p + 0.5 * e * grad_f(b, ngq, ngp)
            return (y, p, nq, np_, ngq, ngp), None

        (y, p, yq, yp, ygq, ygp), _ = jax.lax.scan(leap, (x, p0, lq, lp, gq, gp), None, length=num_leapfrog)
        h0 = logf(b, lq, lp) - 0.5 * jnp.sum(p0**2)
        h1 = logf(b, yq, yp) - 0.5 * jnp.sum(p**2)
        log_acc = jnp.where(jnp.isfinite(h1), jnp.minimum(h1 - h0, 0.0), -jnp.inf)
        accept = jnp.log(jax.random.uniform(ku, (), x.dtype)) < log_acc
        sel = lambda a, b_: jnp.where(accept, a, b_)  # noqa: E731
        new = (sel(y, x), sel(yq, lq), sel(yp, lp), sel(ygq, gq), sel(ygp, gp), b, log_w)
        return new, jnp.exp(log_acc)

    K = betas.shape[0]
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(K))
    init = (x0, lq0, lp0, gq, gp, b_prev, jnp.zeros((), x0.dtype))
    (x, lq, lp, _, _, _, log_w), acc = jax.lax.scan(step, init, (keys, betas, eps))
    return x, lq, log_w, acc, lp, lp0


def _betas(cfg: FlowConfig, dtype):
    return jnp.arange(1, cfg.num_ais_steps + 1, dtype=dtype) / cfg.num_ais_steps


# ------------------------------------------------------------------------------------------------- the plans
def make_flow_plan(name: str, target, ctx: TrainingContext, cfg: FlowConfig) -> TrainingPlan:
    """The :class:`~samplax.core.method.TrainingPlan` of ``flow`` or ``fab`` (see the module)."""
    check_flow_config(name, target, cfg)
    dim = target.dim
    dtype = jnp.result_type(float)
    static = split_flow(cfg.flow(jax.random.key(0), dim))[1]
    opt = _optimizer(cfg)
    lp_step, grad_step = cfg.evals_per_step()
    B = cfg.batch_size
    betas = _betas(cfg, dtype)

    def init(key):
        params = split_flow(cfg.flow(key, dim))[0]
        state = {"params": params, "opt": opt.init(params)}
        if cfg.fab:
            state["log_step_size"] = jnp.full((cfg.num_ais_steps,), np.log(cfg.step_size), dtype)
            if cfg.buffer:
                n = cfg.buffer_size
                state["buffer"] = {"x": jnp.zeros((n, dim), dtype), "log_w": jnp.full((n,), EMPTY_LOG_W, dtype),
                                   "log_q": jnp.zeros((n,), dtype), "next": jnp.zeros((), jnp.int32)}
        return state

    def counts():
        return {"num_logdensity_evals": jnp.asarray(lp_step, jnp.int32),
                "num_grad_evals": jnp.asarray(grad_step, jnp.int32)}

    def flow_step(key, state, tgt):
        logp = tgt.flat_logdensity()

        def loss_fn(p):
            x, lq = sample_and_log_q(eqx.combine(p, static), key, B)
            log_w = jax.vmap(logp)(x) - lq
            return -jnp.mean(log_w), jax.lax.stop_gradient(log_w)

        (loss, log_w), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = opt.update(grads, state["opt"], state["params"])
        new = {"params": optax.apply_updates(state["params"], updates), "opt": opt_state}
        return new, {"loss": loss, "log_Z": logmeanexp(log_w), "elbo": jnp.mean(log_w), **counts()}

    def fab_step(key, state, tgt):
        logp = tgt.flat_logdensity()
        params = state["params"]
        flow = eqx.combine(jax.lax.stop_gradient(params), static)
        k0, k1, k2 = jax.random.split(key, 3)
        x0, lq0 = sample_and_log_q(flow, k0, B)
        eps = jnp.exp(state["log_step_size"])
        keys = jax.vmap(lambda j: jax.random.fold_in(k1, j))(jnp.arange(B))
        x, lq, log_w, acc, _, lp0 = jax.vmap(
            lambda k, a, b: _ais(k, a, b, logp, flow, betas, eps, cfg.num_leapfrog_steps, True))(keys, x0, lq0)
        # the flow's own importance weights at its draws (the AIS start): log Z's estimate shown in training
        log_w_is = lp0 - lq0
        mean_acc = jnp.mean(jnp.where(jnp.isfinite(acc), acc, 0.0), axis=0)
        new = dict(state)
        new["log_step_size"] = state["log_step_size"] + 0.05 * (mean_acc - cfg.target_accept)
        log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
        if not cfg.buffer:
            wbar = jax.nn.softmax(log_w)

            def loss_fn(p):
                lqx = jax.vmap(lambda y: log_q(eqx.combine(p, static), y))(x)
                return -jnp.sum(wbar * lqx)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = opt.update(grads, state["opt"], params)
            new["params"], new["opt"] = optax.apply_updates(params, updates), opt_state
        else:
            buf = state["buffer"]
            n = cfg.buffer_size
            log_w = jnp.maximum(log_w, EMPTY_LOG_W)
            idx = (buf["next"] + jnp.arange(B)) % n
            buf = {"x": buf["x"].at[idx].set(x), "log_w": buf["log_w"].at[idx].set(log_w),
                   "log_q": buf["log_q"].at[idx].set(lq), "next": (buf["next"] + B) % n}

            def update(carry, k):
                p, o, bf = carry
                j = jax.random.categorical(k, bf["log_w"], shape=(B,))
                xs = bf["x"][j]

                def loss_fn(p_):
                    return -jnp.mean(jax.vmap(lambda y: log_q(eqx.combine(p_, static), y))(xs))

                loss, grads = jax.value_and_grad(loss_fn)(p)
                upd, o = opt.update(grads, o, p)
                p = optax.apply_updates(p, upd)
                lq_new = jax.vmap(lambda y: log_q(eqx.combine(p, static), y))(xs)
                lw_new = bf["log_w"][j] + bf["log_q"][j] - lq_new
                lw_new = jnp.maximum(jnp.where(jnp.isfinite(lw_new), lw_new, EMPTY_LOG_W), EMPTY_LOG_W)
                bf = {**bf, "log_w": bf["log_w"].at[j].set(lw_new), "log_q": bf["log_q"].at[j].set(lq_new)}
                return (p, o, bf), loss

            ks = jax.random.split(k2, cfg.updates_per_step)
            (p, o, buf), losses = jax.lax.scan(update, (params, state["opt"], buf), ks)
            new["params"], new["opt"], new["buffer"] = p, o, buf
            loss = jnp.mean(losses)
        return new, {"loss": loss, "log_Z": logmeanexp(log_w_is), "elbo": jnp.mean(log_w_is),
                     "ais_log_Z_g": logmeanexp(log_w), "acceptance": jnp.mean(mean_acc), **counts()}

    n = ctx.num_samples

    def sample(key, state, tgt):
        logp = tgt.flat_logdensity()
        flow = eqx.combine(state["params"], static)
        x, lq = sample_and_log_q(flow, key, n)
        if cfg.fab and cfg.sample_with_ais:
            eps_g = jnp.exp(state["log_step_size"])
            # the p path's b is the g path's b / 2 (both give (1 - 2 b') log q + 2 b' log pi~ at b' = b / 2)
            eps = jnp.interp(betas / 2, betas, eps_g, left=eps_g[0])
            keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.fold_in(key, n + 1), j))(jnp.arange(n))
            x, _, log_w, _, lp, _ = jax.vmap(
                lambda k, a, b: _ais(k, a, b, logp, flow, betas, eps, cfg.num_leapfrog_steps, False))(keys, x, lq)
        else:
            lp = jax.vmap(logp)(x)
            log_w = lp - lq
        idx = systematic_resample(jax.random.fold_in(key, n), log_w, n)
        return {"x": x, "log_w": log_w, "draws": x[idx], "draws_lp": lp[idx]}

    lp_draw, grad_draw = cfg.evals_per_draw()

    def finish(state, out):
        num_chains = out["x"].shape[0]
        est, extra, warnings = weighted_output(out["x"], out["log_w"], f"draws of {name}")
        extra.update({"flow": eqx.combine(state["params"], static),
                      "flow_spec": cfg.flow_spec(target.dim),
                      "log_Z_method": ("AIS from the flow to the target (sample_with_ais=True)"
                      if cfg.fab and cfg.sample_with_ais else "importance sampling with the flow")})
        if cfg.fab:
            extra["ais_step_sizes"] = np.exp(np.asarray(state["log_step_size"])).tolist()
        total = num_chains * n
        return PopulationOutput(samples=out["draws"], stats={"lp": out["draws_lp"]},
                                num_logdensity_evals=total * lp_draw, num_grad_evals=total * grad_draw,
                                log_Z=est["log_Z"], log_Z_se=est["log_Z_se"],
                                log_weights=np.full((num_chains, n), -np.log(n)), extra=extra, warnings=warnings)

    return TrainingPlan(init=init, step=fab_step if cfg.fab else flow_step, num_steps=cfg.num_training_steps(),
                        sample=sample, finish=finish)
