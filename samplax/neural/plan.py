"""A learned diffusion sampler as a run of the engine: checks, the training budget, and the
:class:`~samplax.core.method.TrainingPlan` (initial state, training step, sampling, results).

The training state is ``{"params": ..., "opt": ...}``: the arrays of the :class:`~samplax.neural.sde.DriftNet`
(its structure is rebuilt from the options) and the optimizer's state: global-norm clipping, then Adam
(Kingma & Ba 2015), with its own learning rate for the learned ``log Z`` of trajectory balance.

A training step draws ``batch_size`` paths (path ``j`` from ``fold_in(key, j)``) and takes one
optimizer step on the loss (:mod:`samplax.neural.losses`).  Sampling draws ``num_samples`` paths per
chain from the trained drift (no exploration), their log importance weights, and equal-weight draws by
systematic resampling within the chain (the result's ``samples``); the raw draws and weights are in
``extra["proposal_samples"]`` / ``extra["proposal_log_weights"]``, and ``log Z``, its standard error,
the ELBO and the ESS are computed over all chains' weights (:func:`samplax.neural.sde.estimates`).
With ``eubo=True`` (targets with an exact sampler) each chain also draws ``num_samples`` exact target
points and their reverse paths (:func:`samplax.neural.sde.reverse_simulate`): ``extra["eubo"]`` is the
mean log weight of those paths, an upper bound on ``log Z`` in expectation.  These evaluation-only target
evaluations are not in the cost (they measure the sampler; they do not produce its draws).
"""
from __future__ import annotations

import dataclasses
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplax.core.method import PopulationOutput, TrainingContext, TrainingPlan
from samplax.neural.gfn import (
    adapt_step_size, buffer_insert, buffer_sample, init_buffer, mala, mala_chain, subtb_loss,
)
from samplax.neural.losses import kl_loss, logvar_loss, off_policy_paths, tb_loss
from samplax.neural.sde import (
    SCORE_CLIP, DriftNet, Reference, cmcd_reference, dds_reference, dis_reference, log_weight, logmeanexp,
    pis_reference, reverse_simulate, simulate, systematic_resample, weighted_output,
)
from samplax.neural.checks import require_gradient

#: The configurations: ``reference(num_time_steps, sigma) -> Reference`` by name.
CONFIGURATIONS = {"pis": pis_reference, "dds": dds_reference, "cmcd": cmcd_reference, "dis": dis_reference}


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """What a learned diffusion sampler is (the options of ``pis`` / ``dds``, see :data:`samplax.methods`)."""

    reference: str = "pis"
    loss: str = "kl"
    training_evals: int = 1_000_000
    batch_size: int = 64
    num_time_steps: int = 32
    sigma: float = 1.0
    width: int = 64
    depth: int = 2
    langevin: bool = True
    learning_rate: float = 1e-3
    log_z_learning_rate: float = 1e-1
    grad_clip: float = 1.0
    exploration: float = 0.0
    eubo: bool = False
    score_clip: float = SCORE_CLIP
    #: replay buffer and local search (:mod:`samplax.neural.gfn`); off by default
    replay: int = 0
    replay_fraction: float = 0.0
    local_search_steps: int = 0
    local_search_step_size: float = 0.01
    #: the long schedule of Sendera et al.'s code: a local search every ``local_search_every`` steps, whose
    #: chains' states after ``local_search_burn_in`` steps fill a second buffer the backward paths start from
    local_search_every: int = 1
    local_search_burn_in: int = 0
    #: ``lambda`` of sub-trajectory balance (``loss="subtb"``)
    subtb_lambda: float = 2.0

    def make_reference(self) -> Reference:
        ref = CONFIGURATIONS[self.reference](self.num_time_steps, self.sigma)
        return ref._replace(score_clip=float(self.score_clip))

    @property
    def annealed(self) -> bool:
        """CMCD: Langevin transitions along the annealing path (the target's gradient at every point)."""
        return self.reference == "cmcd"

    @property
    def needs_gradient(self) -> bool:
        """The KL loss differentiates ``log pi~(x_K)``; the Langevin drift, CMCD's transitions and the local
        search evaluate the target's gradient."""
        return self.loss == "kl" or self.langevin or self.annealed or self.local_search

    @property
    def local_search(self) -> bool:
        """Whether the replay buffer's states are improved by MALA steps."""
        return self.num_backward > 0 and self.local_search_steps > 0

    @property
    def periodic_local_search(self) -> bool:
        """The long schedule: chains every ``local_search_every`` steps into a local-search buffer."""
        return self.local_search and (self.local_search_every > 1 or self.local_search_burn_in > 0)

    def local_search_buffer_size(self) -> int:
        """Slots of the long schedule's second buffer: ``replay``, or one search's kept states if more
        (``num_backward x (local_search_steps - local_search_burn_in)``)."""
        return max(int(self.replay), self.num_backward * (self.local_search_steps - self.local_search_burn_in))

    def local_search_evals(self) -> int:
        """Value-and-gradients of one local search: ``num_backward x (local_search_steps + 1)``."""
        return self.num_backward * (self.local_search_steps + 1) if self.local_search else 0

    @property
    def num_backward(self) -> int:
        """Paths per training step that start at buffer states and run backward: ``round(replay_fraction x
        batch_size)`` with a replay buffer, else 0."""
        return int(round(self.replay_fraction * self.batch_size)) if self.replay > 0 else 0

    def evals_per_path(self, training: bool = True) -> tuple:
        """``(log-density, gradient)`` evaluations of one path (in training, else in sampling): ``K`` scores with
        ``langevin`` or CMCD (one of each), CMCD's score at ``x_K`` (which gives ``log pi~(x_K)``), else
        ``log pi~(x_K)``; the KL loss differentiates ``log pi~(x_K)`` once more (PIS, DDS: its gradient;
        CMCD: a value and gradient).  Sub-trajectory balance in training needs ``log pi~`` at every point: free
        with the scores, else ``K`` more log-densities."""
        kl = training and self.loss == "kl"
        if self.annealed:
            n = self.num_time_steps + 1 + (1 if kl else 0)
            return n, n
        k = self.num_time_steps if self.langevin else 0
        extra = self.num_time_steps if (training and self.loss == "subtb" and not self.langevin) else 0
        return k + 1 + extra, k + (1 if kl else 0)

    def evals_per_backward_path(self) -> tuple:
        """``(log-density, gradient)`` evaluations of one training path run backward from a buffer state
        (:func:`~samplax.neural.sde.reverse_simulate`): those of a forward one, and for CMCD one more
        ``log pi~(x_K)``."""
        lp, grad = self.evals_per_path()
        return lp + (1 if self.annealed else 0), grad

    def evals_per_step(self, with_local_search: bool = True) -> tuple:
        """``(log-density, gradient)`` evaluations of one training step: ``batch_size - num_backward`` forward paths,
        ``num_backward`` backward paths and, with local search, ``num_backward x (local_search_steps + 1)``
        value-and-gradients (:func:`~samplax.neural.gfn.mala`; with the long schedule only every
        ``local_search_every``-th step, from step 0, has them: ``with_local_search=False`` gives the others)."""
        lp, grad = self.evals_per_path()
        nb = self.num_backward
        if not nb:
            return self.batch_size * lp, self.batch_size * grad
        blp, bgrad = self.evals_per_backward_path()
        ls = self.local_search_evals() if with_local_search else 0
        nf = self.batch_size - nb
        return nf * lp + nb * blp + ls, nf * grad + nb * bgrad + ls

    def training_evals_for(self, steps: int) -> int:
        """The log-density evaluations of ``steps`` training steps (the smallest ``training_evals`` that pays for
        them): ``steps x evals_per_step()``, or with the long schedule ``steps x base + ceil(steps / every) x
        search``."""
        if not self.periodic_local_search:
            return int(steps) * self.evals_per_step()[0]
        return int(steps) * self.evals_per_step(False)[0] + -(-int(steps) // int(self.local_search_every)) * \
            self.local_search_evals()

    def num_training_steps(self) -> int:
        """Training steps the budget pays for: ``training_evals // (log-density evaluations per step)``; with the
        long local-search schedule the most steps ``n`` with ``n x base + ceil(n / every) x search <=
        training_evals``."""
        budget = int(self.training_evals)
        if not self.periodic_local_search:
            return budget // self.evals_per_step()[0]
        base, ls, every = self.evals_per_step(False)[0], self.local_search_evals(), int(self.local_search_every)
        n = max(budget * every // (base * every + ls), 0)

        while self.training_evals_for(n + 1) <= budget:
            n += 1
        while n > 0 and self.training_evals_for(n) > budget:
            n -= 1
        return n


def check_config(name: str, target, cfg: SamplerConfig, defaults: dict | None = None) -> None:
    """Clear errors (naming the option) for a budget too small for one step, a target without gradients for a
    gradient-needing configuration, and incompatible options.  ``defaults``: the method's own option defaults
    (an option left at its default is not reported as ignored)."""
    _check_local_search_schedule(name, cfg, defaults or {})
    if cfg.num_training_steps() < 1:
        lp, _ = cfg.evals_per_step()
        ls = (f" + a local search of {cfg.local_search_evals()} value-and-gradients (local_search_steps="
              f"{cfg.local_search_steps} x {cfg.num_backward} states)" if cfg.local_search else "")
        raise ValueError(
            f"method {name!r}: option training_evals={cfg.training_evals} is too small for one training step, "
            f"which evaluates the target {lp} times (batch_size={cfg.batch_size} paths x "
            f"{cfg.evals_per_path()[0]} evaluations per path with num_time_steps={cfg.num_time_steps}, "
            f"langevin={cfg.langevin}{ls}); give training_evals >= {lp} or a smaller batch_size / num_time_steps"
            + (" / local_search_steps" if ls else ""))
    if cfg.annealed and cfg.langevin:
        raise ValueError(f"method {name!r}: option langevin=True does not apply: CMCD's transitions already follow "
                         "the annealed target's gradient (leave langevin=False)")
    if cfg.exploration > 0 and cfg.loss == "kl":
        raise ValueError(f"method {name!r}: option exploration={cfg.exploration} needs an off-policy loss "
                         "(loss='logvar' or 'tb'); loss='kl' trains on its own reparameterized paths")
    _check_replay(name, cfg)
    try:
        cfg.make_reference()
    except ValueError as e:
        raise ValueError(f"method {name!r}: option num_time_steps={cfg.num_time_steps} does not fit the reference "
                         f"{cfg.reference!r}: {e}") from None
    if cfg.eubo and not target.has_exact_sampler:
        raise ValueError(f"method {name!r}: option eubo=True needs exact draws of the target, but "
                         f"{target.name!r} has no exact sampler (leave eubo=False)")
    if cfg.needs_gradient:
        why = "loss='kl' differentiates log pi(x_T)" if cfg.loss == "kl" else ""
        why += (" and " if why else "") + ("langevin=True feeds grad log pi to the drift" if cfg.langevin else "")
        if cfg.annealed:
            why += (" and " if why else "") + "CMCD's Langevin transitions follow grad log pi"
        if cfg.local_search:
            why += ((" and " if why else "") + f"local_search_steps={cfg.local_search_steps} runs MALA "
                    "(leave local_search_steps=0)")
        require_gradient(name, target, why, "use loss='logvar' or loss='tb' with langevin=False for a target "
                         "without gradients")


def _check_replay(name: str, cfg: SamplerConfig) -> None:
    """The replay buffer's options: a fraction in ``[0, 1]`` that leaves forward paths, a buffer that holds a
    step's insertions, an off-policy loss, and no option that would be silently ignored."""
    f = cfg.replay_fraction
    if not (isinstance(f, (int, float)) and not isinstance(f, bool) and 0.0 <= f <= 1.0):
        raise ValueError(f"method {name!r}: option replay_fraction={f!r} is invalid: the share of each batch that "
                         "are backward paths from buffer states must be a number in [0, 1]")
    if cfg.replay > 0:
        if cfg.loss == "kl":
            raise ValueError(f"method {name!r}: option replay={cfg.replay} needs an off-policy loss (loss='logvar', "
                             "'tb' or 'subtb'): loss='kl' trains on its own reparameterized paths, not on paths "
                             "from buffer states")
        if cfg.replay < cfg.batch_size:
            raise ValueError(f"method {name!r}: option replay={cfg.replay} is smaller than batch_size="
                             f"{cfg.batch_size}; the buffer must hold one step's insertions (replay >= batch_size)")
        if cfg.num_backward < 1:
            raise ValueError(f"method {name!r}: option replay={cfg.replay} has no effect with replay_fraction="
                             f"{f} (round(replay_fraction x batch_size) = 0 backward paths); give replay_fraction "
                             f">= {0.5 / cfg.batch_size:.3g} or replay=0")
        if cfg.num_backward >= cfg.batch_size:
            raise ValueError(f"method {name!r}: option replay_fraction={f} leaves no forward paths in a batch of "
                             f"batch_size={cfg.batch_size} (the buffer is filled from them); give replay_fraction "
                             "< 1")
    else:
        if f > 0:
            raise ValueError(f"method {name!r}: option replay_fraction={f} needs a replay buffer (replay > 0)")
        if cfg.local_search_steps > 0:
            raise ValueError(f"method {name!r}: option local_search_steps={cfg.local_search_steps} needs a replay "
                             "buffer (replay > 0 and replay_fraction > 0): the local search improves buffer states")


def _check_local_search_schedule(name: str, cfg: SamplerConfig, defaults: dict) -> None:
    """``local_search_every >= 1``, ``local_search_burn_in >= 0`` and below ``local_search_steps``, and neither
    changed from the method's default without a local search to apply to."""
    for opt, least in (("local_search_every", 1), ("local_search_burn_in", 0)):
        v = getattr(cfg, opt)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < least:
            raise ValueError(f"method {name!r}: option {opt}={v!r} must be an int >= {least}")
        if not cfg.local_search and v != defaults.get(opt, getattr(SamplerConfig, opt)):
            raise ValueError(f"method {name!r}: option {opt}={v} has no effect without a local search "
                             "(local_search_steps > 0 and a replay buffer)")
    if cfg.periodic_local_search and cfg.local_search_burn_in >= cfg.local_search_steps:
        raise ValueError(f"method {name!r}: option local_search_burn_in={cfg.local_search_burn_in} leaves no "
                         f"draws of local_search_steps={cfg.local_search_steps} MALA steps (burn_in < steps)")


def make_plan(name: str, target, ctx: TrainingContext, cfg: SamplerConfig,
              defaults: dict | None = None) -> TrainingPlan:
    """The engine's :class:`~samplax.core.method.TrainingPlan` for a learned diffusion sampler (see the module;
    ``defaults``: the method's option defaults, as for :func:`check_config`)."""
    check_config(name, target, cfg, defaults)
    ref = cfg.make_reference()
    dim = target.dim
    dtype = jnp.result_type(float)

    def model_from(key):
        return DriftNet(key, dim, cfg.width, cfg.depth, langevin=cfg.langevin, dtype=dtype, flow=cfg.loss == "subtb")

    static = eqx.partition(model_from(jax.random.key(0)), eqx.is_array)[1]
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                      optax.multi_transform({"net": optax.adam(cfg.learning_rate),
                                             "log_z": optax.adam(cfg.log_z_learning_rate)},
                                            lambda p: _labels(p)))
    lp_step, grad_step = cfg.evals_per_step()

    def init(key):
        params = eqx.filter(model_from(key), eqx.is_array)
        state = {"params": params, "opt": opt.init(params)}
        if cfg.replay > 0:
            state["buffer"] = init_buffer(cfg.replay, dim, cfg.local_search_step_size, dtype)
        if cfg.periodic_local_search:
            state["ls_buffer"] = init_buffer(cfg.local_search_buffer_size(), dim, cfg.local_search_step_size, dtype)
            state["ls_step"] = jnp.zeros((), jnp.int32)
            state["ls_acceptance"] = jnp.zeros((), dtype)
        return state

    gfn_step = cfg.replay > 0 or cfg.loss == "subtb"

    def step(key, state, tgt):
        if gfn_step:
            return _gfn_step(key, state, tgt, cfg, ref, static, opt, dim)
        logp = tgt.flat_logdensity()
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(cfg.batch_size))
        params = state["params"]
        if cfg.loss == "kl":
            def loss_fn(p):
                return kl_loss(eqx.combine(p, static), ref, logp, keys, dim, langevin=cfg.langevin)
        else:
            paths = off_policy_paths(eqx.combine(params, static), ref, logp, keys, dim, langevin=cfg.langevin,
                                     exploration=cfg.exploration)
            fn = logvar_loss if cfg.loss == "logvar" else tb_loss

            def loss_fn(p):
                return fn(eqx.combine(p, static), ref, paths), log_weight(paths)
        (loss, log_w), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, state["opt"], params)
        new = {"params": optax.apply_updates(params, updates), "opt": opt_state}
        metrics = {"loss": loss, "log_Z": logmeanexp(log_w), "elbo": jnp.mean(log_w),
                   "num_logdensity_evals": jnp.asarray(lp_step, jnp.int32),
                   "num_grad_evals": jnp.asarray(grad_step, jnp.int32)}
        return new, metrics

    n = ctx.num_samples

    def sample(key, state, tgt):
        logp = tgt.flat_logdensity()
        model = eqx.combine(state["params"], static)
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n))
        paths = jax.vmap(lambda k: simulate(model, ref, logp, k, dim, langevin=cfg.langevin))(keys)
        log_w = log_weight(paths)
        x = paths.xs[:, -1]
        idx = systematic_resample(jax.random.fold_in(key, n), log_w, n)
        out = {"x": x, "log_w": log_w, "log_pi": paths.log_pi, "draws": x[idx], "draws_lp": paths.log_pi[idx]}
        if cfg.eubo:  # reverse paths from exact target draws (their own keys: the draws above are unchanged)
            ke = jax.random.fold_in(key, n + 1)
            exact = jnp.reshape(tgt.sample(jax.random.fold_in(ke, 0), n), (n, dim)).astype(x.dtype)
            rkeys = jax.vmap(lambda j: jax.random.fold_in(ke, j + 1))(jnp.arange(n))
            rev = jax.vmap(lambda k, xk: reverse_simulate(model, ref, logp, k, xk, langevin=cfg.langevin))(
                rkeys, exact)
            out["eubo_log_w"] = log_weight(rev)
        return out

    lp_path, grad_path = cfg.evals_per_path(training=False)

    def finish(state, out):
        num_chains = out["x"].shape[0]
        est, extra, warnings = weighted_output(out["x"], out["log_w"], f"sampled paths of {name}")
        if cfg.eubo:
            lw_rev = np.asarray(out["eubo_log_w"], np.float64).reshape(-1)
            finite = np.isfinite(lw_rev)
            extra["eubo"] = float(np.mean(lw_rev[finite])) if finite.any() else float("nan")
            extra["eubo_num_paths"] = int(finite.sum())
        if cfg.loss in ("tb", "subtb"):
            extra["learned_log_Z"] = float(np.asarray(state["params"].log_z))
        total = num_chains * n
        return PopulationOutput(samples=out["draws"], stats={"lp": out["draws_lp"]},
                                num_logdensity_evals=total * lp_path, num_grad_evals=total * grad_path,
                                log_Z=est["log_Z"], log_Z_se=est["log_Z_se"],
                                log_weights=np.full((num_chains, n), -np.log(n)), extra=extra, warnings=warnings)

    return TrainingPlan(init=init, step=step, num_steps=cfg.num_training_steps(), sample=sample, finish=finish)


def _labels(params):
    """Optimizer groups: ``"log_z"`` for the learned log normalizing constant, ``"net"`` for the rest."""
    labels = jax.tree.map(lambda _: "net", params)
    return eqx.tree_at(lambda m: m.log_z, labels, "log_z")



def _long_local_search(key, state, buf, logp, cfg: SamplerConfig, ref: Reference, new_state: dict):
    """The long local-search schedule (Sendera et al.'s code: 200 MALA steps every 100 iterations, the states after
    a burn-in of 100 kept in a second buffer): at every ``local_search_every``-th step (from step 0)
    ``num_backward`` states drawn by rank from the main buffer run :func:`~samplax.neural.gfn.mala_chain` (key
    ``fold_in(key, batch_size + 1)``, the start states ``fold_in(key, batch_size + 3)``) and its later states go
    into ``state["ls_buffer"]``; every step's backward paths start from states drawn by rank from that buffer
    (key ``fold_in(key, batch_size)``).  Fills ``new_state``; returns ``(backward start states, main buffer,
    log-density evaluations of the step, gradient evaluations, metrics)``."""
    nb = cfg.num_backward
    do = state["ls_step"] % cfg.local_search_every == 0

    def search(args):
        main, ls_buf, _ = args
        start = main.x[buffer_sample(jax.random.fold_in(key, cfg.batch_size + 3), main, nb)]
        xs, lps, eps, acc = mala_chain(jax.random.fold_in(key, cfg.batch_size + 1), logp, start, main.step_size,
                                       cfg.local_search_steps, cfg.local_search_burn_in, clip=ref.score_clip)
        if cfg.local_search_burn_in == 0:  # no burn-in to adapt in: adapt between searches
            eps = adapt_step_size(eps, acc)
        return main._replace(step_size=eps.astype(main.step_size.dtype)), buffer_insert(ls_buf, xs, lps), \
            acc.astype(state["ls_acceptance"].dtype)

    buf, ls_buf, acc = jax.lax.cond(do, search, lambda a: a, (buf, state["ls_buffer"], state["ls_acceptance"]))
    x = ls_buf.x[buffer_sample(jax.random.fold_in(key, cfg.batch_size), ls_buf, nb)]
    new_state.update(ls_buffer=ls_buf, ls_step=state["ls_step"] + 1, ls_acceptance=acc)
    lp0, grad0 = cfg.evals_per_step(False)
    ls = jnp.where(do, cfg.local_search_evals(), 0).astype(jnp.int32)
    metrics = {"local_search_acceptance": acc, "local_search_step_size": buf.step_size,
               "local_search_ran": do.astype(jnp.int32)}
    return x, buf, lp0 + ls, grad0 + ls, metrics


def _gfn_step(key, state, tgt, cfg: SamplerConfig, ref: Reference, static, opt, dim: int):
    """A training step with a replay buffer and / or sub-trajectory balance (see :mod:`samplax.neural.gfn`):
    ``batch_size - num_backward`` forward paths (keys ``fold_in(key, j)``, with ``exploration``); with a buffer,
    their end points are inserted, ``num_backward`` states drawn by rank (key ``fold_in(key, batch_size)``),
    improved by MALA (``fold_in(key, batch_size + 1)``) and inserted, and backward paths run from them (keys
    ``fold_in(fold_in(key, batch_size + 2), j)``); then one optimizer step on the loss over all paths.  The
    step's ``log_Z`` / ``elbo`` metrics are the forward paths'."""
    logp = tgt.flat_logdensity()
    params = state["params"]
    nb = cfg.num_backward
    nf = cfg.batch_size - nb
    subtb = cfg.loss == "subtb"
    model = eqx.combine(jax.lax.stop_gradient(params), static)
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(nf))
    paths = off_policy_paths(model, ref, logp, keys, dim, langevin=cfg.langevin, exploration=cfg.exploration,
                             with_log_pis=subtb)
    log_w = log_weight(paths)
    new_state = {}
    extra_metrics = {}
    lp_step, grad_step = cfg.evals_per_step()
    if nb:
        buf = buffer_insert(state["buffer"], paths.xs[:, -1], paths.log_pi)
        if cfg.periodic_local_search:  # the backward paths start from the local-search buffer
            x, buf, lp_step, grad_step, extra_metrics = _long_local_search(key, state, buf, logp, cfg, ref, new_state)
        else:
            x = buf.x[buffer_sample(jax.random.fold_in(key, cfg.batch_size), buf, nb)]
            if cfg.local_search:
                x, lp, acc = mala(jax.random.fold_in(key, cfg.batch_size + 1), logp, x, buf.step_size,
                                  cfg.local_search_steps, clip=ref.score_clip)
                buf = buffer_insert(buf, x, lp)._replace(step_size=adapt_step_size(buf.step_size, acc))
                extra_metrics = {"local_search_acceptance": acc, "local_search_step_size": buf.step_size}
        kb = jax.random.fold_in(key, cfg.batch_size + 2)
        bkeys = jax.vmap(lambda j: jax.random.fold_in(kb, j))(jnp.arange(nb))
        back = jax.lax.stop_gradient(jax.vmap(
            lambda k, xk: reverse_simulate(model, ref, logp, k, xk, langevin=cfg.langevin, with_log_pis=subtb))(
            bkeys, x))
        paths = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), paths, back)
        new_state["buffer"] = buf

    def loss_fn(p):
        m = eqx.combine(p, static)
        if subtb:
            return subtb_loss(m, ref, paths, cfg.subtb_lambda)
        return (logvar_loss if cfg.loss == "logvar" else tb_loss)(m, ref, paths)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, state["opt"], params)
    new_state = {"params": optax.apply_updates(params, updates), "opt": opt_state, **new_state}
    metrics = {"loss": loss, "log_Z": logmeanexp(log_w), "elbo": jnp.mean(log_w),
               "num_logdensity_evals": jnp.asarray(lp_step, jnp.int32),
               "num_grad_evals": jnp.asarray(grad_step, jnp.int32), **extra_metrics}
    return new_state, metrics
