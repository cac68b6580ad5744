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
from samplax.neural.losses import kl_loss, logvar_loss, off_policy_paths, tb_loss
from samplax.neural.sde import (
    SCORE_CLIP, DriftNet, Reference, cmcd_reference, dds_reference, estimates, log_weight, logmeanexp, pis_reference,
    reverse_simulate, simulate, systematic_resample,
)

#: The configurations: ``reference(num_time_steps, sigma) -> Reference`` by name.
CONFIGURATIONS = {"pis": pis_reference, "dds": dds_reference, "cmcd": cmcd_reference}


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

    def make_reference(self) -> Reference:
        ref = CONFIGURATIONS[self.reference](self.num_time_steps, self.sigma)
        return ref._replace(score_clip=float(self.score_clip))

    @property
    def annealed(self) -> bool:
        """CMCD: Langevin transitions along the annealing path (the target's gradient at every point)."""
        return self.reference == "cmcd"

    @property
    def needs_gradient(self) -> bool:
        """The KL loss differentiates ``log pi~(x_K)``; the Langevin drift and CMCD's transitions evaluate the
        target's gradient."""
        return self.loss == "kl" or self.langevin or self.annealed

    def evals_per_path(self, training: bool = True) -> tuple:
        """``(log-density, gradient)`` evaluations of one path (in training, else in sampling): ``K`` scores with
        ``langevin`` or CMCD (one of each), CMCD's score at ``x_K`` (which gives ``log pi~(x_K)``), else
        ``log pi~(x_K)``; the KL loss differentiates ``log pi~(x_K)`` once more (PIS, DDS: its gradient;
        CMCD: a value and gradient)."""
        kl = training and self.loss == "kl"
        if self.annealed:
            n = self.num_time_steps + 1 + (1 if kl else 0)
            return n, n
        k = self.num_time_steps if self.langevin else 0
        return k + 1, k + (1 if kl else 0)

    def evals_per_step(self) -> tuple:
        lp, grad = self.evals_per_path()
        return self.batch_size * lp, self.batch_size * grad

    def num_training_steps(self) -> int:
        """Training steps the budget pays for: ``training_evals // (batch_size * log-density evaluations per path)``."""
        return int(self.training_evals) // self.evals_per_step()[0]


def check_config(name: str, target, cfg: SamplerConfig) -> None:
    """Clear errors (naming the option) for a budget too small for one step, a target without gradients for a
    gradient-needing configuration, and incompatible options."""
    if cfg.num_training_steps() < 1:
        lp, _ = cfg.evals_per_step()
        raise ValueError(
            f"method {name!r}: option training_evals={cfg.training_evals} is too small for one training step, "
            f"which evaluates the target {lp} times (batch_size={cfg.batch_size} paths x "
            f"{cfg.evals_per_path()[0]} evaluations per path with num_time_steps={cfg.num_time_steps}, "
            f"langevin={cfg.langevin}); give training_evals >= {lp} or a smaller batch_size / num_time_steps")
    if cfg.annealed and cfg.langevin:
        raise ValueError(f"method {name!r}: option langevin=True does not apply: CMCD's transitions already follow "
                         "the annealed target's gradient (leave langevin=False)")
    if cfg.exploration > 0 and cfg.loss == "kl":
        raise ValueError(f"method {name!r}: option exploration={cfg.exploration} needs an off-policy loss "
                         "(loss='logvar' or 'tb'); loss='kl' trains on its own reparameterized paths")
    if cfg.eubo and not target.has_exact_sampler:
        raise ValueError(f"method {name!r}: option eubo=True needs exact draws of the target, but "
                         f"{target.name!r} has no exact sampler (leave eubo=False)")
    if cfg.needs_gradient:
        lp = target.flat_logdensity()
        x = jnp.zeros((target.dim,), jnp.result_type(float))
        try:
            jax.eval_shape(jax.grad(lp), x)
        except Exception as e:  # noqa: BLE001 - any failure to trace the gradient
            why = "loss='kl' differentiates log pi(x_T)" if cfg.loss == "kl" else ""
            why += (" and " if why else "") + ("langevin=True feeds grad log pi to the drift" if cfg.langevin else "")
            if cfg.annealed:
                why += (" and " if why else "") + "CMCD's Langevin transitions follow grad log pi"
            raise ValueError(
                f"method {name!r}: the target {target.name!r} has no gradient JAX can compute "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}), but {why}; use "
                "loss='logvar' or loss='tb' with langevin=False for a target without gradients") from None


def make_plan(name: str, target, ctx: TrainingContext, cfg: SamplerConfig) -> TrainingPlan:
    """The engine's :class:`~samplax.core.method.TrainingPlan` for a learned diffusion sampler (see the module)."""
    check_config(name, target, cfg)
    ref = cfg.make_reference()
    dim = target.dim
    dtype = jnp.result_type(float)

    def model_from(key):
        return DriftNet(key, dim, cfg.width, cfg.depth, langevin=cfg.langevin, dtype=dtype)

    static = eqx.partition(model_from(jax.random.key(0)), eqx.is_array)[1]
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                      optax.multi_transform({"net": optax.adam(cfg.learning_rate),
                                             "log_z": optax.adam(cfg.log_z_learning_rate)},
                                            lambda p: _labels(p)))
    lp_step, grad_step = cfg.evals_per_step()

    def init(key):
        params = eqx.filter(model_from(key), eqx.is_array)
        return {"params": params, "opt": opt.init(params)}

    def step(key, state, tgt):
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
        est = estimates(out["log_w"])
        extra = {"elbo": est["elbo"], "ess": est["ess"], "ess_fraction": est["ess_fraction"],
                 "proposal_samples": out["x"], "proposal_log_weights": out["log_w"],
                 "num_nonfinite": est["num_nonfinite"]}
        if cfg.eubo:
            lw_rev = np.asarray(out["eubo_log_w"], np.float64).reshape(-1)
            finite = np.isfinite(lw_rev)
            extra["eubo"] = float(np.mean(lw_rev[finite])) if finite.any() else float("nan")
            extra["eubo_num_paths"] = int(finite.sum())
        if cfg.loss == "tb":
            extra["learned_log_Z"] = float(np.asarray(state["params"].log_z))
        warnings = []
        if est["num_nonfinite"]:
            warnings.append({"code": "nonfinite", "value": est["num_nonfinite"],
                             "message": f"{est['num_nonfinite']} of the {out['log_w'].size} sampled paths of {name} "
                                        "ended where the target's log-density is NaN or +inf; they have zero "
                                        "weight"})
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

