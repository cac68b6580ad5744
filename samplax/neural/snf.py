"""Stochastic Normalizing Flows (Wu, Kohler & Noe 2020, NeurIPS, "Stochastic Normalizing Flows").

A sample is a path ``x_0 -> x_1 -> ... -> x_T`` through a sequence of layers, from the base
``q_0 = N(0, s^2 I)`` (``s`` = ``base_std``):

* ``"flow"``: a deterministic, invertible layer ``x_t = f_t(x_{t-1})`` (a rational-quadratic spline
  coupling layer, Durkan et al. 2019, built from :mod:`flowjax`'s ``Coupling`` and
  ``RationalQuadraticSpline``, followed by a flip of the coordinates), with ``log |det df_t/dx|``;
* ``"mala"``: one Metropolis-adjusted Langevin step (MALA) whose invariant density is the ``k``-th of the
  interpolated densities ``pi_k(x) ∝ q_0(x)^(1 - beta_k) pi~(x)^beta_k``, ``beta_k = k / M`` for the
  ``k``-th of the ``M`` stochastic layers (the last one targets ``pi~`` itself): proposal
  ``x' = x + h grad log pi_k(x) + sqrt(2 h) xi``, accepted when ``log u < log pi_k(x') - log pi_k(x)
  + log N(x; x' + h grad log pi_k(x'), 2h) - log N(x'; x + h grad log pi_k(x), 2h)``;
* ``"langevin"``: one unadjusted Langevin step (ULA) ``x' = x + h grad log pi_k(x) + sqrt(2 h) xi``
  on the same path of densities.

Each stochastic layer's step size ``h`` is a trained parameter (``log h``, initial ``step_size``).  The option
``layers`` names the sequence, e.g. ``"flow,mala*4,flow,mala*4"`` (``kind*count`` repeats a layer); a run of
equal stochastic layers is one ``lax.scan``.

The path weight (the paper's importance weight of a path, forward path measure over the backward one):

``log w = log pi~(x_T) - log q_0(x_0) + sum_flow log |det df_t/dx(x_{t-1})|
+ sum_stochastic log [q_t^back(x_t -> x_{t-1}) / q_t(x_{t-1} -> x_t)]``

where the backward kernel of a stochastic layer is the same kernel run backwards: for ULA the ratio of
the two Gaussian transition densities; for MALA, a kernel in detailed balance with ``pi_k``, the ratio is
``pi_k(x_{t-1}) / pi_k(x_t)`` (the paper's result; 1 at a rejection).  ``E[w] = Z`` for any parameters,
so ``log Z = log mean w`` with the delta-method standard error, the ELBO ``mean log w`` and the ESS
(:func:`samplax.neural.sde.estimates`).  (With the flow's Jacobian written for the forward map, as
here, its log-determinant enters with a plus sign; it is ``- log |det|`` of the inverse map.)

Training minimizes the KL divergence of the forward path measure to the backward one,
``E[-log w] = KL - log Z``, by reparameterization: the base draw and every stochastic layer's noise
(``xi`` and the MH uniform ``u``) are fixed per path, and the loss is differentiated through the flow
layers, the Langevin proposals and the step sizes.  The MH accept/reject decision is a step function of the
parameters at fixed noise: as in the paper, it is held fixed in the derivative (the gradient flows through
the accepted proposal, or through the kept point at a rejection), and the derivative of the decision
boundary itself is left out.  The values ``log pi~`` are differentiated exactly (by their gradient, which
each point evaluates anyway), but the target's gradient where it enters a Langevin drift is held fixed in
the derivative (no second derivatives of the target, as for the Langevin drift of ``pis`` / ``dds``); the
paper differentiates through it too.  The weights, and so ``log Z``, are exact either way.

Target evaluations (a value and gradient count one): a stochastic layer evaluates ``log pi~`` and its
gradient at its proposal, and at its starting point unless the layer before it was stochastic (the
value there is carried); ``log pi~(x_T)`` is one more evaluation when the last layer is a flow (in
training with its gradient, which the loss needs).
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
from samplax.neural.sde import logmeanexp, normal_logpdf, systematic_resample, weighted_output
from samplax.neural.checks import require_gradient

#: The layer kinds of an SNF: a deterministic flow layer and the two stochastic (Langevin) layers.
LAYER_KINDS = ("flow", "mala", "langevin")
STOCHASTIC = ("mala", "langevin")


def parse_layers(layers) -> tuple:
    """The layer sequence from a comma-separated string (``"flow,mala*4,flow,mala*4"``: ``kind*count`` repeats a
    kind) or a sequence of names; ``ValueError`` naming the option ``layers`` for an empty sequence, an unknown
    kind or a bad repeat count."""
    if isinstance(layers, str):
        tokens = [t.strip() for t in layers.split(",")]
    elif isinstance(layers, (tuple, list)):
        tokens = list(layers)
    else:
        raise TypeError(f"option layers must be a comma-separated string or a sequence of layer kinds "
                        f"{list(LAYER_KINDS)}; got {type(layers).__name__}")
    names = []
    for t in tokens:
        if not isinstance(t, str):
            raise ValueError(f"option layers={layers!r}: {t!r} is not a layer kind; each layer is one of "
                             f"{list(LAYER_KINDS)}")
        kind, _, count = t.partition("*")
        kind = kind.strip()
        if count:
            if not count.strip().isdigit() or int(count) < 1:
                raise ValueError(f"option layers={layers!r}: the repeat count in {t!r} must be an int >= 1")
            names += [kind] * int(count)
        elif kind:
            names.append(kind)
    if not names:
        raise ValueError(f"option layers={layers!r} is empty; give at least one of {list(LAYER_KINDS)}")
    bad = sorted({n for n in names if n not in LAYER_KINDS})
    if bad:
        raise ValueError(f"option layers={layers!r} has unknown layer kind(s) {bad}; each layer is one of "
                         f"{list(LAYER_KINDS)}")
    return tuple(names)


def blocks(kinds) -> list:
    """Runs of the layer sequence: ``("flow", flow_index)`` per flow layer and ``(kind, first, count)`` for each
    run of equal stochastic layers (``first``: the index of its first stochastic layer); a run is one scan."""
    out, flow_i, stoch_i = [], 0, 0
    for k in kinds:
        if k == "flow":
            out.append(("flow", flow_i))
            flow_i += 1
        elif out and out[-1][0] == k:
            out[-1] = (k, out[-1][1], out[-1][2] + 1)
            stoch_i += 1
        else:
            out.append((k, stoch_i, 1))
            stoch_i += 1
    return out


@dataclasses.dataclass(frozen=True)
class SNFConfig:
    """The options of the method ``snf`` (see :data:`samplax.methods`)."""

    layers: object = "flow,mala,flow,mala,flow,mala"
    training_evals: int = 1_000_000
    batch_size: int = 64
    base_std: float = 1.0
    step_size: float = 0.05
    knots: int = 8
    spline_interval: float | None = None
    width: int = 64
    depth: int = 2
    learning_rate: float = 1e-3
    grad_clip: float = 10.0

    @property
    def interval(self) -> float:
        """The splines' interval ``[-B, B]``: ``spline_interval``, or ``5 base_std`` when None."""
        return float(self.spline_interval) if self.spline_interval is not None else 5.0 * float(self.base_std)

    @property
    def kinds(self) -> tuple:
        return parse_layers(self.layers)

    @property
    def num_stochastic(self) -> int:
        return sum(k in STOCHASTIC for k in self.kinds)

    def evaluation_points(self) -> tuple:
        """``(points, final_extra)``: value-and-gradient evaluations of the stochastic layers per path, and
        whether ``log pi~(x_T)`` needs one more evaluation (the last layer is a flow)."""
        points, cached = 0, False
        for k in self.kinds:
            if k in STOCHASTIC:
                points += 1 if cached else 2
                cached = True
            else:
                cached = False
        return points, not cached

    def evals_per_path(self, training: bool = True) -> tuple:
        """``(log-density, gradient)`` evaluations of one path (see the module)."""
        points, extra = self.evaluation_points()
        lp = points + int(extra)
        return lp, (lp if training else points)

    def num_training_steps(self) -> int:
        return int(self.training_evals) // (self.batch_size * self.evals_per_path()[0])


class SNFModel(eqx.Module):
    """The trained parameters of an SNF: one :mod:`flowjax` bijection per flow layer (a spline coupling layer
    then a flip; the conditioner's last layer starts at zero, so each flow layer starts as the identity) and
    ``log_step [M]``, the log step sizes of the stochastic layers."""

    flows: tuple
    log_step: jax.Array

    def __init__(self, key, dim: int, cfg: SNFConfig, dtype=None):
        # imported here: flowjax adds about a second to ``import samplax``, which registers this method
        from flowjax.bijections import Chain, Coupling, Flip, RationalQuadraticSpline

        dtype = jnp.result_type(float) if dtype is None else dtype
        flows = []
        n_flow = sum(k == "flow" for k in cfg.kinds)
        for k in jax.random.split(key, max(n_flow, 1))[:n_flow]:
            c = Coupling(k, transformer=RationalQuadraticSpline(knots=cfg.knots, interval=cfg.interval),
                         untransformed_dim=dim // 2, dim=dim, nn_width=cfg.width, nn_depth=cfg.depth,
                         nn_activation=jax.nn.relu)
            last = c.conditioner.layers[-1]
            last = eqx.tree_at(lambda layer: (layer.weight, layer.bias), last,
                               (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
            c = eqx.tree_at(lambda m: m.conditioner.layers[-1], c, last)
            flows.append(Chain([c, Flip(shape=(dim,))]))
        flows = jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, flows)
        self.flows = tuple(flows)
        self.log_step = jnp.full((cfg.num_stochastic,), math.log(cfg.step_size), dtype)


class SNFPath(eqx.Module):
    """One path's end point ``x``, ``log pi~(x)``, its log weight and the MH acceptances ``[M]`` (1 for ULA)."""

    x: jax.Array
    log_pi: jax.Array
    log_w: jax.Array
    accepted: jax.Array


def _value_and_fixed_grad(logdensity_fn, x):
    """``(log pi~(x), grad log pi~(x))`` from one evaluation at ``stop_gradient(x)``: the value carries its exact
    first derivative in ``x`` (``g . (x - stop_gradient(x))``), the gradient is a constant of the derivative."""
    x0 = jax.lax.stop_gradient(x)
    lp, g = jax.value_and_grad(logdensity_fn)(x0)
    g = jax.lax.stop_gradient(g)
    return lp + jnp.sum(g * (x - x0)), g


def _interp(lp, grad, x, beta, s):
    """``log pi_beta`` (up to a constant) and its gradient: ``(1 - beta) log N(x; 0, s^2) + beta log pi~``."""
    lq = -0.5 * jnp.sum(x * x) / s**2
    return (1.0 - beta) * lq + beta * lp, (1.0 - beta) * (-x / s**2) + beta * grad


def simulate(model: SNFModel, cfg: SNFConfig, logdensity_fn, key, dim: int, *, differentiable: bool = False) -> SNFPath:
    """One path through the layers from ``x_0 ~ N(0, base_std^2 I)`` and its log weight (see the module).

    Every random number of the path comes from ``key`` (fixed noise: the path is a reparameterized function
    of the parameters, except for the MH decisions, held fixed in the derivative).  ``differentiable``: the
    end point's ``log pi~`` after a flow layer is evaluated with its gradient (training)."""
    dtype = model.log_step.dtype
    s = jnp.asarray(cfg.base_std, dtype)
    M = cfg.num_stochastic
    k0, kn, ku = jax.random.split(key, 3)
    x = s * jax.random.normal(k0, (dim,), dtype)
    log_w = -normal_logpdf(x, jnp.zeros_like(x), s)
    noise = jax.random.normal(kn, (max(M, 1), dim), dtype)
    log_u = jnp.log(jax.random.uniform(ku, (max(M, 1),), dtype))
    betas = jnp.arange(1, max(M, 1) + 1, dtype=dtype) / max(M, 1)

    def vg(y):
        return _value_and_fixed_grad(logdensity_fn, y)

    cache = None  # (log pi~(x), grad log pi~(x)) at the current x, when known
    accepted = []
    for block in blocks(cfg.kinds):
        if block[0] == "flow":
            x, ld = model.flows[block[1]].transform_and_log_det(x)
            log_w = log_w + ld
            cache = None
            continue
        kind, first, count = block
        if cache is None:
            cache = vg(x)
        mala = kind == "mala"

        def layer(carry, inp, mala=mala):
            x, lp, g, log_w = carry
            beta, log_h, xi, lu = inp
            h = jnp.exp(log_h)
            lpk, gk = _interp(lp, g, x, beta, s)
            prop = x + h * gk + jnp.sqrt(2 * h) * xi
            lp_p, g_p = vg(prop)
            lpk_p, gk_p = _interp(lp_p, g_p, prop, beta, s)
            log_fwd = normal_logpdf(prop, x + h * gk, jnp.sqrt(2 * h))
            log_bwd = normal_logpdf(x, prop + h * gk_p, jnp.sqrt(2 * h))
            if not mala:
                return (prop, lp_p, g_p, log_w + log_bwd - log_fwd), jnp.ones((), dtype)
            log_alpha = lpk_p - lpk + log_bwd - log_fwd
            acc = jax.lax.stop_gradient(lu < jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha))
            new = (jnp.where(acc, prop, x), jnp.where(acc, lp_p, lp), jnp.where(acc, g_p, g),
                   log_w + jnp.where(acc, lpk - lpk_p, jnp.zeros_like(lpk)))
            return new, acc.astype(dtype)

        sl = slice(first, first + count)
        (x, lp, g, log_w), acc = jax.lax.scan(layer, (x, cache[0], cache[1], log_w),
                                              (betas[sl], model.log_step[sl], noise[sl], log_u[sl]))
        cache = (lp, g)
        accepted.append(acc)
    if cache is not None:
        log_pi = cache[0]
    elif differentiable:
        log_pi = vg(x)[0]
    else:
        log_pi = logdensity_fn(x)
    acc = jnp.concatenate(accepted) if accepted else jnp.zeros((0,), dtype)
    return SNFPath(x, log_pi, log_w + log_pi, acc)


def check_config(name: str, target, cfg: SNFConfig) -> None:
    """Clear errors (naming the option) for a budget too small for one step and a target without gradients (the
    KL loss and the Langevin layers need it); unknown layer kinds are refused by :func:`parse_layers`."""
    kinds = cfg.kinds
    if cfg.num_training_steps() < 1:
        lp = cfg.batch_size * cfg.evals_per_path()[0]
        raise ValueError(
            f"method {name!r}: option training_evals={cfg.training_evals} is too small for one training step, "
            f"which evaluates the target {lp} times (batch_size={cfg.batch_size} paths x "
            f"{cfg.evals_per_path()[0]} evaluations per path with layers={cfg.layers!r}); give "
            f"training_evals >= {lp} or a smaller batch_size / fewer stochastic layers")
    why = "the KL loss differentiates log pi(x_T)"
    st = sorted({k for k in kinds if k in STOCHASTIC})
    if st:
        why = f"the layers {st} in option layers={cfg.layers!r} follow grad log pi, and " + why
    require_gradient(name, target, why)


def make_plan(name: str, target, ctx: TrainingContext, cfg: SNFConfig) -> TrainingPlan:
    """The engine's :class:`~samplax.core.method.TrainingPlan` for an SNF: the state ``{"params", "opt"}``
    (the :class:`SNFModel`'s arrays and Adam's state after global-norm clipping); a step draws ``batch_size``
    paths (path ``j`` from ``fold_in(key, j)``) and takes one step on ``mean(-log w)``; sampling draws
    ``num_samples`` paths per chain, their log weights, and equal-weight draws by systematic resampling."""
    check_config(name, target, cfg)
    dim = target.dim
    dtype = jnp.result_type(float)
    static = eqx.partition(SNFModel(jax.random.key(0), dim, cfg, dtype), eqx.is_inexact_array)[1]
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.learning_rate))
    lp_path, grad_path = cfg.evals_per_path(training=True)

    def init(key):
        params = eqx.filter(SNFModel(key, dim, cfg, dtype), eqx.is_inexact_array)
        return {"params": params, "opt": opt.init(params)}

    def step(key, state, tgt):
        logp = tgt.flat_logdensity()
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(cfg.batch_size))

        def loss_fn(p):
            model = eqx.combine(p, static)
            paths = jax.vmap(lambda k: simulate(model, cfg, logp, k, dim, differentiable=True))(keys)
            return -jnp.mean(paths.log_w), paths

        (loss, paths), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = opt.update(grads, state["opt"], state["params"])
        new = {"params": optax.apply_updates(state["params"], updates), "opt": opt_state}
        log_w = jax.lax.stop_gradient(paths.log_w)
        metrics = {"loss": loss, "log_Z": logmeanexp(log_w), "elbo": jnp.mean(log_w),
                   "num_logdensity_evals": jnp.asarray(cfg.batch_size * lp_path, jnp.int32),
                   "num_grad_evals": jnp.asarray(cfg.batch_size * grad_path, jnp.int32)}
        if cfg.num_stochastic:
            metrics["acceptance"] = jnp.mean(paths.accepted)
        return new, metrics

    n = ctx.num_samples
    lp_s, grad_s = cfg.evals_per_path(training=False)

    def sample(key, state, tgt):
        logp = tgt.flat_logdensity()
        model = eqx.combine(state["params"], static)
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n))
        paths = jax.vmap(lambda k: simulate(model, cfg, logp, k, dim))(keys)
        idx = systematic_resample(jax.random.fold_in(key, n), paths.log_w, n)
        return {"x": paths.x, "log_w": paths.log_w, "draws": paths.x[idx], "draws_lp": paths.log_pi[idx],
                "accepted": paths.accepted}

    def finish(state, out):
        num_chains = out["x"].shape[0]
        est, extra, warnings = weighted_output(out["x"], out["log_w"], f"sampled paths of {name}",
                                               "the target's or a layer's log-density is not finite")
        extra.update({"layers": ",".join(cfg.kinds),
                      "step_sizes": np.exp(np.asarray(state["params"].log_step, np.float64))})
        if cfg.num_stochastic:
            extra["acceptance"] = np.asarray(out["accepted"], np.float64).reshape(-1, cfg.num_stochastic).mean(0)
        total = num_chains * n
        return PopulationOutput(samples=out["draws"], stats={"lp": out["draws_lp"]},
                                num_logdensity_evals=total * lp_s, num_grad_evals=total * grad_s,
                                log_Z=est["log_Z"], log_Z_se=est["log_Z_se"],
                                log_weights=np.full((num_chains, n), -np.log(n)), extra=extra, warnings=warnings)

    return TrainingPlan(init=init, step=step, num_steps=cfg.num_training_steps(), sample=sample, finish=finish)
