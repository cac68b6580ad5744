"""iDEM: iterated denoising energy matching (Akhound-Sadegh, Rector-Brooks, Bose, Mittal, Lemos, Liu, Sendera,
Ravanbakhsh, Gidel, Bengio, Malkin & Tong 2024, ICML), as the run engine's
:class:`~samplax.core.method.TrainingPlan` (registered as the method ``idem``).

**Noising.**  The variance-exploding (VE) process ``x_u = x_0 + sigma(u) eps``, ``u in [0, 1]``, with the
geometric schedule ``sigma(u) = sigma_min^(1-u) sigma_max^u`` (:func:`samplax.neural.sde.ve_reference`).  The
score of the noised target ``pi_u = pi * N(0, sigma(u)^2 I)`` is ``grad log pi_u(x) = E[grad log pi(x + sigma u)]``
under the posterior of the noise, estimated with ``K`` draws ``u_i ~ N(0, I)`` (self-normalized importance
sampling, the paper's MC estimator):

``S_K(x, u) = sum_i softmax_i(log pi~(x + sigma(u) u_i)) grad log pi~(x + sigma(u) u_i)``

(``K`` value-and-gradient evaluations of the target), its Euclidean norm clipped to ``score_clip``
(the paper's clipping of the estimate; points where the target is not finite get zero weight).

**Training (DEM loss, the iterated scheme).**  A score network ``s_theta(x, u)`` is regressed onto ``S_K`` at
points of a replay buffer: every ``inner_steps`` training steps (starting at step 0: the *outer* loop) the
reverse VE SDE is simulated with the current ``s_theta`` (Euler-Maruyama, ``num_time_steps`` steps, no target
evaluations) for ``outer_paths`` paths whose endpoints enter the buffer (first in, first out, ``buffer_size``
points; a diverged path's non-finite endpoint is replaced by a finite one of the same batch and counted in
the step metric ``num_diverged_paths``); each training step (the *inner* loop) draws ``batch_size`` buffer
points ``x_0`` uniformly, noises them to ``x = x_0 + sigma(u) eps`` at ``u ~ U(0, 1)`` and takes one Adam step on

``L(theta) = mean sigma(u)^2 |s_theta(x, u) - S_K(x, u)|^2``

(the weight ``sigma^2`` balances the noise levels, Song et al. 2021; it does not change the minimizer).  The
network is preconditioned: ``s_theta(x, u) = NN(x / sqrt(1 + sigma^2), emb(u)) / sigma`` (``emb``: sinusoidal
features of ``u``), an MLP on ``[x, emb(u)]`` or, for particle systems, the E(n)-equivariant network of
:mod:`samplax.neural.egnn`.  Training evaluations: ``batch_size x K`` log-density and gradient evaluations per
step.  The whole state (parameters, optimizer, buffer, its fill count and write position, the step counter) is a
pytree of fixed-shape arrays, so the engine's checkpoints resume exactly.

**Particle systems** (targets with ``n_particles`` and ``spatial_dim``, e.g. DW-4 and LJ-13, whose energy is
translation invariant): everything lives in the centre-of-mass-free subspace, as in iDEM: the prior draw, the
SDE's noise, the MC estimator's noise and the score are projected to zero mean over particles.

**Sampling, log Z and weights.**  The reverse SDE with drift ``s_theta`` is a controlled forward process on the
path-measure core of :mod:`samplax.neural.sde`, and the VE noising steps are its backward reference
(:func:`~samplax.neural.sde.ve_reference`): ``x_0 ~ N(0, sigma_max^2 I)``,
``x_{k+1} = x_k + beta_k s_theta(x_k, u_k) + sqrt(beta_k) z_k`` with ``beta_k = sigma_k^2 - sigma_{k+1}^2``, and

``log w = log pi~(x_K) + sum_k log N(x_k; x_{k+1}, beta_k I) - log q_0(x_0) - sum_k log N(x_{k+1}; x_k +
beta_k s_theta, beta_k I)``

has ``E[w] = Z`` for any network (one log-density evaluation per draw).  On the centre-of-mass-free subspace of
dimension ``d' = (n - 1) D`` the Gaussian transition densities are taken with respect to that subspace's
Lebesgue measure (their normalizers cancel between the two directions; ``q_0``'s uses ``d'``), so ``Z`` is the
integral of ``pi~`` over the subspace.  ``log Z``, its standard error, the ELBO and the ESS come from
:func:`~samplax.neural.sde.estimates`; the returned draws are equal-weight (systematic resampling within each
chain, as :mod:`samplax.neural.plan`), the raw endpoints and their log weights are in
``extra["proposal_samples"]`` / ``extra["proposal_log_weights"]``.
"""
from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplax.core.method import PopulationOutput, TrainingContext, TrainingPlan
from samplax.neural.egnn import EGNN, remove_mean
from samplax.neural.sde import Reference, normal_logpdf, systematic_resample, ve_reference, weighted_output
from samplax.neural.checks import require_gradient

#: The paper's largest noise level per target (iDEM's experiments: GMM-40 70, DW-4 3, LJ-13 2); others get 70.
PAPER_SIGMA_MAX = {"dw4": 3.0, "lj13": 2.0}
DEFAULT_SIGMA_MAX = 70.0
#: The paper's smallest noise level where it is not 1e-5 (iDEM's LJ-13 configuration: 0.01).
PAPER_SIGMA_MIN = {"lj13": 0.01}
DEFAULT_SIGMA_MIN = 1e-5
#: The clip of the MC score estimate's norm: iDEM's configurations clip at 20 for every particle system (DW-4,
#: LJ-13, LJ-55), whose pair potentials have steep walls; other targets get 1000 (iDEM's GMM uses 70 on a
#: target rescaled by 1/50).  Measured: 1000 on DW-4 lets the first training steps diverge.
PARTICLE_SCORE_CLIP = 20.0
DEFAULT_SCORE_CLIP = 1000.0
NETWORKS = ("mlp", "egnn")


def particle_shape(target):
    """``(n_particles, spatial_dim)`` of a particle-system target, or None."""
    n, D = getattr(target, "n_particles", None), getattr(target, "spatial_dim", None)
    if n is None or D is None:
        return None
    return int(n), int(D)


def default_sigma_max(target) -> float:
    """The paper's ``sigma_max`` for ``target`` (:data:`PAPER_SIGMA_MAX`, else :data:`DEFAULT_SIGMA_MAX`)."""
    return PAPER_SIGMA_MAX.get(getattr(target, "name", None), DEFAULT_SIGMA_MAX)


def default_sigma_min(target) -> float:
    """The paper's ``sigma_min`` for ``target`` (:data:`PAPER_SIGMA_MIN`, else :data:`DEFAULT_SIGMA_MIN`)."""
    return PAPER_SIGMA_MIN.get(getattr(target, "name", None), DEFAULT_SIGMA_MIN)


def default_score_clip(target) -> float:
    """The paper's score clip for ``target``: :data:`PARTICLE_SCORE_CLIP` for particle systems, else
    :data:`DEFAULT_SCORE_CLIP`."""
    return PARTICLE_SCORE_CLIP if particle_shape(target) else DEFAULT_SCORE_CLIP


@dataclasses.dataclass(frozen=True)
class IDEMConfig:
    """What an iDEM run is (the options of the method ``idem``; see the module)."""

    training_evals: int = 32_000_000
    batch_size: int = 64
    num_mc_samples: int = 500
    buffer_size: int = 10_000
    inner_steps: int = 100
    outer_paths: int = 1000
    num_time_steps: int = 100
    sigma_min: float | None = None
    sigma_max: float | None = None
    score_clip: float | str | None = "auto"
    network: str | None = None
    width: int = 64
    depth: int = 3
    learning_rate: float = 1e-3
    grad_clip: float = 1.0

    def evals_per_step(self) -> int:
        """Target value-and-gradient evaluations of one training step: ``batch_size x num_mc_samples``."""
        return int(self.batch_size) * int(self.num_mc_samples)

    def num_training_steps(self) -> int:
        """Training steps the budget pays for: ``training_evals // (batch_size x num_mc_samples)``."""
        return int(self.training_evals) // self.evals_per_step()

    def resolve(self, target) -> "IDEMConfig":
        """The target-dependent defaults: ``network`` ("egnn" for particle systems, else "mlp"), the paper's
        ``sigma_min`` / ``sigma_max`` and its score clip (``score_clip="auto"``)."""
        net = self.network or ("egnn" if particle_shape(target) else "mlp")
        smax = default_sigma_max(target) if self.sigma_max is None else self.sigma_max
        smin = default_sigma_min(target) if self.sigma_min is None else self.sigma_min
        clip = default_score_clip(target) if self.score_clip == "auto" else self.score_clip
        return dataclasses.replace(self, network=net, sigma_max=float(smax), sigma_min=float(smin),
                                   score_clip=None if clip is None else float(clip))

    def make_reference(self) -> Reference:
        """The VE reference of the sampler (:func:`~samplax.neural.sde.ve_reference`; a resolved ``sigma_max``)."""
        return ve_reference(self.num_time_steps, float(self.sigma_min), float(self.sigma_max))


def check_config(target, cfg: IDEMConfig) -> None:
    """Clear errors naming the option: a budget too small for one step, ``outer_paths > buffer_size``, a sigma
    range that is not increasing, ``network="egnn"`` on a target that is not a particle system, a target
    without gradients."""
    if cfg.num_training_steps() < 1:
        raise ValueError(
            f"method 'idem': option training_evals={cfg.training_evals} is too small for one training step, which "
            f"evaluates the target's value and gradient {cfg.evals_per_step()} times (batch_size={cfg.batch_size} "
            f"points x num_mc_samples={cfg.num_mc_samples}); give training_evals >= {cfg.evals_per_step()} or a "
            "smaller batch_size / num_mc_samples")
    if cfg.outer_paths > cfg.buffer_size:
        raise ValueError(f"method 'idem': option outer_paths={cfg.outer_paths} exceeds buffer_size="
                         f"{cfg.buffer_size}: one outer iteration's endpoints must fit in the replay buffer")
    smax = default_sigma_max(target) if cfg.sigma_max is None else cfg.sigma_max
    smin = default_sigma_min(target) if cfg.sigma_min is None else cfg.sigma_min
    if not smin < smax:
        raise ValueError(f"method 'idem': options sigma_min={smin} and sigma_max={smax}: the noise range "
                         "needs sigma_min < sigma_max")
    if cfg.network == "egnn" and particle_shape(target) is None:
        raise ValueError(f"method 'idem': option network='egnn' needs a particle system (a target with n_particles "
                         f"and spatial_dim, e.g. dw4, lj13); {getattr(target, 'name', target)!r} is not one "
                         "(use network='mlp')")
    shape = particle_shape(target)
    if shape is not None and shape[0] * shape[1] != target.dim:
        raise ValueError(f"method 'idem': target {target.name!r} says n_particles x spatial_dim = {shape[0]} x "
                         f"{shape[1]}, but its dimension is {target.dim}")
    require_gradient("idem", target, "iDEM's score estimator (num_mc_samples) averages grad log pi")


def time_embedding(u, emb_dim: int, dtype):
    """Sinusoidal features ``[cos(w_j u), sin(w_j u)]``, ``w_j`` geometric from 1 to 100 (Vaswani et al. 2017)."""
    half = emb_dim // 2
    w = jnp.exp(jnp.linspace(0.0, math.log(100.0), half)).astype(dtype)
    u = jnp.asarray(u, dtype)
    return jnp.concatenate([jnp.cos(w * u), jnp.sin(w * u)])


class ScoreNet(eqx.Module):
    """The score network ``s_theta(x, u) = NN(x / sqrt(1 + sigma(u)^2), emb(u)) / sigma(u)`` (see the module):
    ``core`` an MLP on ``[x, emb(u)]`` (output projected to zero mean for particle systems) or an :class:`EGNN`.
    Called as ``net(x, u, score=None)`` (the drift signature of :mod:`samplax.neural.sde`; ``score`` unused).
    ``log_z`` only carries the dtype (the core's ``Path`` code reads it)."""

    core: eqx.Module
    log_z: jax.Array
    emb_dim: int = eqx.field(static=True)
    sigma_min: float = eqx.field(static=True)
    sigma_max: float = eqx.field(static=True)
    particles: tuple | None = eqx.field(static=True)
    egnn: bool = eqx.field(static=True)

    def __init__(self, key, dim: int, *, sigma_min: float, sigma_max: float, network: str = "mlp",
                 particles: tuple | None = None, width: int = 64, depth: int = 3, emb_dim: int = 16, dtype=None):
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.emb_dim, self.sigma_min, self.sigma_max = int(emb_dim), float(sigma_min), float(sigma_max)
        self.particles = None if particles is None else tuple(int(v) for v in particles)
        self.egnn = network == "egnn"
        if self.egnn:
            n, D = self.particles
            self.core = EGNN(key, n, D, emb_dim, width, depth, dtype=dtype)
        else:
            mlp = eqx.nn.MLP(dim + emb_dim, dim, width, depth, activation=jax.nn.silu, key=key, dtype=dtype)
            last = mlp.layers[-1]
            last = eqx.tree_at(lambda layer: (layer.weight, layer.bias), last,
                               (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
            self.core = eqx.tree_at(lambda m: m.layers[-1], mlp, last)
        self.log_z = jnp.zeros((), dtype)

    def sigma(self, u):
        """``sigma(u) = sigma_min^(1-u) sigma_max^u``."""
        return self.sigma_min ** (1.0 - u) * self.sigma_max ** u

    def __call__(self, x, u, score=None):
        dt = self.log_z.dtype
        u = jnp.asarray(u, dt)
        sig = self.sigma(u)
        e = time_embedding(u, self.emb_dim, dt)
        xin = x / jnp.sqrt(1.0 + sig**2)
        if self.egnn:
            out = self.core(xin, e)
        else:
            out = self.core(jnp.concatenate([xin, e]))
            if self.particles is not None:
                out = remove_mean(out, *self.particles)
        return out / sig


def _projector(particles):
    if particles is None:
        return lambda v: v
    return lambda v: remove_mean(v, *particles)


def mc_score(logdensity_fn, key, x, sigma, num_mc_samples: int, score_clip=None, particles=None):
    """iDEM's MC estimate of the noised target's score at ``x`` and noise level ``sigma`` (see the module):
    ``sum_i softmax_i(log pi~(x + sigma u_i)) grad log pi~(x + sigma u_i)``, ``u_i ~ N(0, I)`` (projected to the
    centre-of-mass-free subspace for ``particles = (n, D)``), ``num_mc_samples`` value-and-gradient
    evaluations; draws with a non-finite value or gradient get zero weight (all of them: the estimate is 0);
    the estimate's norm is clipped to ``score_clip`` (None: no clipping)."""
    proj = _projector(particles)
    u = jax.random.normal(key, (num_mc_samples,) + x.shape, x.dtype)
    u = jax.vmap(proj)(u)
    y = x + sigma * u
    lp, g = jax.vmap(jax.value_and_grad(logdensity_fn))(y)
    ok = jnp.isfinite(lp) & jnp.all(jnp.isfinite(g), axis=-1)
    lp = jnp.where(ok, lp, -jnp.inf)
    lp = jnp.where(jnp.any(ok), lp, 0.0)
    w = jax.nn.softmax(lp)
    s = proj(jnp.sum(w[:, None] * jnp.where(ok[:, None], g, 0.0), axis=0))
    if score_clip is not None:
        norm = jnp.sqrt(jnp.sum(s**2))
        s = s * jnp.minimum(1.0, score_clip / jnp.where(norm > 0, norm, 1.0))
    return s


def ve_simulate(model, ref: Reference, key, dim: int, particles=None):
    """One path of the reverse VE SDE driven by ``model`` (Euler-Maruyama on ``ref``, see the module):
    ``(x_K, log_b - log_q0 - log_q)``, the path's log weight without ``log pi~(x_K)`` (no target evaluations).
    Noise draws as :func:`samplax.neural.sde.simulate` (``k0, kn = split(key)``), projected to the
    centre-of-mass-free subspace for ``particles``, where ``q_0``'s normalizer counts ``(n - 1) D`` dimensions."""
    dtype = model.log_z.dtype
    proj = _projector(particles)
    k0, kn = jax.random.split(key)
    x0 = proj(ref.prior_std * jax.random.normal(k0, (dim,), dtype))
    log_q0 = normal_logpdf(x0, jnp.zeros_like(x0), ref.prior_std)
    if particles is not None:  # the density on the subspace of dimension d' = dim - D
        removed = particles[1]
        log_q0 = log_q0 + removed * (math.log(ref.prior_std) + 0.5 * math.log(2 * math.pi))
    noise = jax.vmap(proj)(jax.random.normal(kn, (ref.num_steps, dim), dtype))
    consts = tuple(jnp.asarray(v, dtype) for v in (ref.t, ref.a, ref.b, ref.s, ref.c, ref.r))

    def one(carry, inp):
        x, acc = carry
        t, a, b, s, c, r, eps = inp
        mean = a * x + b * model(x, t)
        x_next = mean + s * eps
        acc = acc + normal_logpdf(x, c * x_next, r) - normal_logpdf(x_next, mean, s)
        return (x_next, acc), None

    (xK, acc), _ = jax.lax.scan(one, (x0, jnp.zeros((), dtype)), consts + (noise,))
    return xK, acc - log_q0


def score_network(key, target, cfg: IDEMConfig) -> ScoreNet:
    """The score network of a resolved config (:meth:`IDEMConfig.resolve`) on ``target``, initialized from
    ``key`` in the default float dtype (what :func:`make_plan` trains)."""
    return ScoreNet(key, target.dim, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, network=cfg.network,
                    particles=particle_shape(target), width=cfg.width, depth=cfg.depth,
                    dtype=jnp.result_type(float))


def make_plan(target, ctx: TrainingContext, cfg: IDEMConfig) -> TrainingPlan:
    """The engine's :class:`~samplax.core.method.TrainingPlan` for iDEM (see the module)."""
    cfg = cfg.resolve(target)
    check_config(target, cfg)
    ref = cfg.make_reference()
    dim = target.dim
    particles = particle_shape(target)
    proj = _projector(particles)
    dtype = jnp.result_type(float)
    B, K, n_new = int(cfg.buffer_size), int(cfg.num_mc_samples), int(cfg.outer_paths)
    clip = None if cfg.score_clip is None else float(cfg.score_clip)

    def model_from(key):
        return score_network(key, target, cfg)

    static = eqx.partition(model_from(jax.random.key(0)), eqx.is_array)[1]
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.learning_rate))
    evals = cfg.evals_per_step()

    def init(key):
        params = eqx.filter(model_from(key), eqx.is_array)
        return {"params": params, "opt": opt.init(params), "buffer": jnp.zeros((B, dim), dtype),
                "count": jnp.zeros((), jnp.int32), "pos": jnp.zeros((), jnp.int32),
                "step": jnp.zeros((), jnp.int32)}

    def refill(key, model, buffer, count, pos):
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n_new))
        x_new, _ = jax.vmap(lambda k: ve_simulate(model, ref, k, dim, particles))(keys)
        # a path that diverged (non-finite endpoint) does not enter the buffer: the finite endpoints take its
        # place (repeated in order); when none is finite the buffer is left as it is
        valid = jnp.all(jnp.isfinite(x_new), axis=1)
        n_valid = jnp.sum(valid)
        order = jnp.argsort(~valid, stable=True)
        x_new = x_new[order[jnp.arange(n_new) % jnp.maximum(n_valid, 1)]]
        idx = (pos + jnp.arange(n_new, dtype=jnp.int32)) % B
        filled = (buffer.at[idx].set(jax.lax.stop_gradient(x_new)), jnp.minimum(count + n_new, B).astype(jnp.int32),
                  ((pos + n_new) % B).astype(jnp.int32))
        kept = (buffer, count, pos)
        return tuple(jnp.where(n_valid > 0, f, k) for f, k in zip(filled, kept)) + ((n_new - n_valid).astype(jnp.int32),)

    def step(key, state, tgt):
        logp = tgt.flat_logdensity()
        k_out, k_idx, k_u, k_eps, k_mc = jax.random.split(key, 5)
        params = state["params"]
        model = eqx.combine(params, static)
        buffer, count, pos, dropped = jax.lax.cond(
            state["step"] % cfg.inner_steps == 0,
            lambda: refill(k_out, model, state["buffer"], state["count"], state["pos"]),
            lambda: (state["buffer"], state["count"], state["pos"], jnp.zeros((), jnp.int32)))
        idx = jnp.minimum(jnp.floor(jax.random.uniform(k_idx, (cfg.batch_size,)) * count).astype(jnp.int32),
                          count - 1)
        u = jax.random.uniform(k_u, (cfg.batch_size,), dtype)
        sig = model.sigma(u)
        eps = jax.vmap(proj)(jax.random.normal(k_eps, (cfg.batch_size, dim), dtype))
        x = buffer[idx] + sig[:, None] * eps
        mc_keys = jax.vmap(lambda j: jax.random.fold_in(k_mc, j))(jnp.arange(cfg.batch_size))
        S = jax.vmap(lambda k, xx, s: mc_score(logp, k, xx, s, K, clip, particles))(mc_keys, x, sig)
        S = jax.lax.stop_gradient(S)

        def loss_fn(p):
            m = eqx.combine(p, static)
            pred = jax.vmap(m)(x, u)
            return jnp.mean(jnp.sum((sig[:, None] * (pred - S)) ** 2, axis=-1))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, state["opt"], params)
        new = {"params": optax.apply_updates(params, updates), "opt": opt_state, "buffer": buffer, "count": count,
               "pos": pos, "step": state["step"] + 1}
        metrics = {"loss": loss, "num_logdensity_evals": jnp.asarray(evals, jnp.int32),
                   "num_grad_evals": jnp.asarray(evals, jnp.int32), "num_diverged_paths": dropped}
        return new, metrics

    n = ctx.num_samples

    def sample(key, state, tgt):
        logp = tgt.flat_logdensity()
        model = eqx.combine(state["params"], static)
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n))
        x, partial = jax.vmap(lambda k: ve_simulate(model, ref, k, dim, particles))(keys)
        log_pi = jax.vmap(logp)(x)
        log_w = log_pi + partial
        idx = systematic_resample(jax.random.fold_in(key, n), log_w, n)
        return {"x": x, "log_w": log_w, "log_pi": log_pi, "draws": x[idx], "draws_lp": log_pi[idx]}

    def finish(state, out):
        num_chains = out["x"].shape[0]
        est, extra, warnings = weighted_output(out["x"], out["log_w"], "sampled paths of idem")
        extra.update({"network": cfg.network, "sigma_max": cfg.sigma_max,
                      "buffer_count": int(np.asarray(state["count"]))})
        total = num_chains * n
        return PopulationOutput(samples=out["draws"], stats={"lp": out["draws_lp"]},
                                num_logdensity_evals=total, num_grad_evals=0,
                                log_Z=est["log_Z"], log_Z_se=est["log_Z_se"],
                                log_weights=np.full((num_chains, n), -np.log(n)), extra=extra, warnings=warnings,
                                num_model_evals=total * ref.num_steps)

    return TrainingPlan(init=init, step=step, num_steps=cfg.num_training_steps(), sample=sample, finish=finish)
