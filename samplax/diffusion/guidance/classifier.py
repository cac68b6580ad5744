"""Guidance from classifiers: noise-aware classifier guidance, gradient-free classifier guidance on the clean
estimate, and minority guidance from the Tweedie reconstruction loss.

All are denoisers ``D(x, sigma)`` for one point (VE convention, ``x = x0 + sigma * noise``); a term added to the
score ``s`` becomes ``sigma^2 s`` on the denoiser (``D = x + sigma^2 grad log p_sigma``, Tweedie).
"""
from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from samplax.diffusion.guidance._base import (
    Guided, as_key, call_denoiser, check_callable, check_interval, check_nonneg, check_positive_int, check_scale, checked_call,
    compose_cost, in_interval, inner_cost, point_key,
)


# ---------------------------------------------------------------- classifier guidance
class ClassifierGuidance(Guided):
    """Classifier guidance as a denoiser (built by :func:`classifier`)."""

    denoiser: Callable
    log_prob_fn: Callable
    scale: jax.Array
    interval: Optional[jax.Array]

    fixed_cost = (1, 0, {"guide_evals": 1, "guide_grads": 1})

    def __call__(self, x, sigma):
        d = call_denoiser(self.denoiser, x, sigma, who="classifier")

        def logp(z):
            return checked_call(self.log_prob_fn, (z, sigma), who="classifier", name="log_prob_fn", shape=(),
                                returns="a scalar log p(y | x_sigma)")

        g = jax.grad(logp)(x)
        w = jnp.where(in_interval(sigma, self.interval), self.scale, 0.0).astype(x.dtype)
        return d + w * sigma**2 * g


def classifier(denoiser: Callable, log_prob_fn: Callable, scale=1.0, *, interval=None) -> ClassifierGuidance:
    """Classifier guidance (Dhariwal & Nichol 2021; Song et al. 2021) with a noise-aware classifier.

    Update rule: ``D_guided(x, sigma) = D(x, sigma) + scale * sigma^2 * grad_x log p(y | x_sigma = x)``, the
    denoiser of the score ``grad log p_sigma(x) + scale * grad log p_sigma(y | x)``. With the exact noised
    classifier and ``scale = 1`` it is exactly the denoiser of the conditional model ``p(x0 | y)`` (Bayes'
    rule at every noise level); other scales target no diffused distribution in general (the tilted
    marginals ``p_sigma(x) p_sigma(y | x)^scale`` are not the noising of one distribution).

    Cost per call: 1 denoiser evaluation, 1 classifier gradient (no VJP through the denoiser).

    Args:
      denoiser: ``D(x, sigma)`` of the unconditional model.
      log_prob_fn: ``log_prob_fn(x, sigma) -> log p(y | x_sigma = x)``, a scalar, for one point.
      scale: guidance scale (finite).
      interval: optional ``(sigma_lo, sigma_hi)``: guidance only for ``sigma_lo < sigma <= sigma_hi``.
    """
    check_callable(denoiser, "classifier", "denoiser", "D(x, sigma)")
    check_callable(log_prob_fn, "classifier", "log_prob_fn", "log p(y | x_sigma) = log_prob_fn(x, sigma)")
    return ClassifierGuidance(denoiser, log_prob_fn, check_scale(scale, "classifier"),
                              check_interval(interval, "classifier"))


# ---------------------------------------------------------------- gradient-free classifier guidance
def confusion_ratio_scale(log_probs, target, reference, scale):
    """GFCG's adaptive scale (our reading of Shenoy et al. 2024):
    ``scale * min(1, p(reference | x0_hat) / p(target | x0_hat))``: no guidance while the clean estimate is
    classified as the target with a clear margin, the full ``scale`` once the reference class is as likely."""
    return scale * jnp.minimum(1.0, jnp.exp(log_probs[reference] - log_probs[target]))


class GradientFreeClassifier(Guided):
    """Gradient-free classifier guidance as a denoiser (built by :func:`gradient_free_classifier`)."""

    denoiser: Callable
    clean_log_prob_fn: Callable
    scale: jax.Array
    uncond: Optional[Callable]
    cfg_scale: jax.Array
    target: int = eqx.field(static=True)
    scale_fn: Callable = eqx.field(static=True)

    @property
    def cost_per_call(self) -> dict:
        c = compose_cost(inner_cost(self.denoiser), 2, 0, guide_evals=1)
        if self.uncond is not None:
            u = compose_cost(inner_cost(self.uncond), 1, 0)
            c = {k: c.get(k, 0) + u.get(k, 0) for k in set(c) | set(u)}
        return c

    def _cond(self, x, sigma, label):
        return checked_call(self.denoiser, (x, sigma, label), who="gradient_free_classifier", name="denoiser",
                            shape=x.shape, returns="E[x0 | x, label] = denoiser(x, sigma, label), the point's shape")

    def __call__(self, x, sigma):
        target = jnp.asarray(self.target, jnp.int32)
        dc = self._cond(x, sigma, target)
        who = "gradient_free_classifier"
        try:
            spec = jax.eval_shape(self.clean_log_prob_fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
        except Exception as e:  # noqa: BLE001 - re-raised with the argument named
            raise ValueError(f"{who}: clean_log_prob_fn fails on one clean point of shape {x.shape}: "
                             f"{type(e).__name__}: {e}") from None
        if getattr(spec, "ndim", None) != 1 or spec.shape[0] < 2:
            raise ValueError(f"{who}: clean_log_prob_fn(x0) must return the class log-probabilities (or logits) "
                             f"[num_classes >= 2] of one clean point; it returned "
                             f"{getattr(spec, 'shape', type(spec).__name__)}")
        if self.target >= spec.shape[0]:
            raise ValueError(f"{who}: target={self.target} is not a class of clean_log_prob_fn, which returns "
                             f"{spec.shape[0]} classes")
        logp = jax.nn.log_softmax(self.clean_log_prob_fn(dc))
        others = jnp.where(jnp.arange(logp.shape[0]) == target, -jnp.inf, logp)
        ref = jnp.argmax(others)
        w = self.scale_fn(logp, target, ref, self.scale.astype(x.dtype)).astype(x.dtype)
        dref = self._cond(x, sigma, ref)
        base = dc
        if self.uncond is not None:
            du = checked_call(self.uncond, (x, sigma), who="gradient_free_classifier", name="uncond_denoiser",
                              shape=x.shape, returns="E[x0 | x], the point's shape")
            base = du + self.cfg_scale.astype(x.dtype) * (dc - du)
        return base + w * (dc - dref)


def gradient_free_classifier(denoiser: Callable, clean_log_prob_fn: Callable, target, scale=1.0, *,
                             uncond_denoiser: Optional[Callable] = None, cfg_scale=1.0,
                             scale_fn: Callable = confusion_ratio_scale) -> GradientFreeClassifier:
    """Gradient-free classifier guidance (GFCG, Shenoy et al. 2024): a clean classifier, in inference mode only,
    picks a reference class and the guidance scale at each call.

    Update rule, for target class ``c``:

    1. ``x0_c = D(x, sigma, c)`` (the class-conditional denoiser), ``log p = log_softmax(clean_log_prob_fn(x0_c))``;
    2. reference class ``r = argmax_{k != c} log p_k`` (the class the estimate is most confused with);
    3. adaptive scale ``w = scale_fn(log p, c, r, scale)``, by default
       ``scale * min(1, p_r / p_c)`` (:func:`confusion_ratio_scale`);
    4. ``D_guided = B + w (D(x, sigma, c) - D(x, sigma, r))`` with ``B = D(x, sigma, c)``, or with an
       unconditional model the CFG base ``B = D_u + cfg_scale (D_c - D_u)`` (GFCG combined with CFG).

    The guidance pushes away from the reference class's conditional prediction (a CFG whose negative is the most
    confusable class instead of the unconditional model); no gradient is taken. Known bias: it sharpens the
    class (higher classifier accuracy than the conditional model) and so departs from ``p(x0 | c)``.

    The paper's text was not available to us; steps 1, 2 and 4 follow its abstract and summary (time-adaptive
    reference class and scale from a clean classifier, no gradients, complementary to CFG); the scale rule of
    step 3 is our reading of "scale from the classifier's confidence" -- pass ``scale_fn`` to use another.

    Cost per call: 2 denoiser evaluations (3 with ``uncond_denoiser``), 1 classifier evaluation, no VJP.

    Args:
      denoiser: class-conditional ``D(x, sigma, label)`` (``label`` an int32 scalar).
      clean_log_prob_fn: ``clean_log_prob_fn(x0) -> [num_classes]`` log-probabilities or logits of a clean point.
      target: the target class ``c`` (int).
      scale: the largest guidance scale (finite).
      uncond_denoiser, cfg_scale: optional unconditional ``D_u(x, sigma)`` and the CFG scale of the base.
      scale_fn: ``scale_fn(log_probs, target, reference, scale) -> w``.
    """
    who = "gradient_free_classifier"
    check_callable(denoiser, who, "denoiser", "a class-conditional D(x, sigma, label)")
    check_callable(clean_log_prob_fn, who, "clean_log_prob_fn", "clean_log_prob_fn(x0) -> class log-probabilities")
    check_callable(scale_fn, who, "scale_fn", "scale_fn(log_probs, target, reference, scale) -> w")
    if uncond_denoiser is not None:
        check_callable(uncond_denoiser, who, "uncond_denoiser", "D(x, sigma)")
    try:
        t = int(target)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: target must be a class index (int), got {target!r}") from None
    if t < 0 or t != target:
        raise ValueError(f"{who}: target must be a non-negative class index, got {target!r}")
    return GradientFreeClassifier(denoiser, clean_log_prob_fn, check_scale(scale, who), uncond_denoiser,
                                  check_scale(cfg_scale, who, "cfg_scale"), t, scale_fn)


# ---------------------------------------------------------------- minority guidance
class Minority(Guided):
    """Minority guidance as a denoiser (built by :func:`minority`)."""

    denoiser: Callable
    scale: jax.Array
    sigma_perturb: jax.Array
    key: jax.Array
    interval: Optional[jax.Array]
    num_mc: int = eqx.field(static=True, default=1)
    norm_order: float = eqx.field(static=True, default=2.0)
    normalize: bool = eqx.field(static=True, default=False)

    @property
    def cost_per_call(self) -> dict:
        return compose_cost(inner_cost(self.denoiser), 1 + self.num_mc, 1)

    def _loss(self, z, sigma, k):
        sp = self.sigma_perturb.astype(z.dtype)
        d = call_denoiser(self.denoiser, z, sigma, who="minority")
        d0 = jax.lax.stop_gradient(d)
        eps = jax.random.normal(k, (self.num_mc,) + z.shape, z.dtype)
        recon = jax.lax.stop_gradient(jax.vmap(lambda e: self.denoiser(d0 + sp * e, sp))(eps))
        diff = (d[None] - recon).reshape(self.num_mc, -1)
        # sqrt(sum |v|^p + tiny): the gradient stays finite where the reconstruction is exact
        tiny = jnp.finfo(z.dtype).tiny
        dist = (jnp.sum(jnp.abs(diff) ** self.norm_order, axis=1) + tiny) ** (1.0 / self.norm_order)
        return jnp.mean(dist), d

    def minority_score(self, x, sigma):
        """The minority score ``L(x)`` of one point at ``sigma`` (see :func:`minority`), with this wrapper's draws."""
        return self._loss(x, sigma, point_key(self.key, x, sigma))[0]

    def __call__(self, x, sigma):
        k = point_key(self.key, x, sigma)
        (_, d), g = jax.value_and_grad(self._loss, has_aux=True)(x, sigma, k)
        if self.normalize:
            m = jnp.max(jnp.abs(g))
            g = g / jnp.where(m > 0, m, 1.0)
        w = jnp.where(in_interval(sigma, self.interval), self.scale, 0.0).astype(x.dtype)
        return d + w * sigma**2 * g


def minority(denoiser: Callable, scale, *, key, sigma_perturb=1.0, num_mc: int = 1, norm_order: float = 2.0,
             normalize: bool = False, interval=None) -> Minority:
    """Minority guidance toward low-likelihood regions through the Tweedie reconstruction loss, self-guided
    (Um & Ye 2024, "Self-guided generation of minority samples in diffusion models"; the minority score of
    Um, Lee & Ye 2024, "Don't play favorites").

    Update rule, per call at ``(x, sigma)``:

    * clean estimate ``x0 = D(x, sigma)``; re-noise it to the fixed level ``sigma_p = sigma_perturb``:
      ``x_p = x0 + sigma_p eps_j`` (``j = 1..num_mc``) and reconstruct ``r_j = D(x_p, sigma_p)`` (held constant);
    * minority score ``L(x) = mean_j ||x0(x) - r_j||_p`` -- large where the model's reconstruction fails, i.e.
      at low-density (minority) features;
    * ``D_guided = D(x, sigma) + scale * sigma^2 * grad_x L(x)`` (the score plus ``scale * grad L``, the paper's
      "var" scaling), optionally with ``grad L`` divided by its largest absolute entry (``normalize=True``, the
      reference code's default) and only for ``sigma`` inside ``interval``.

    The noise ``eps_j`` is drawn from :func:`~samplax.diffusion.guidance._base.point_key` of ``key``, the point and
    ``sigma``, so the wrapper is a deterministic function that any solver can run. Known bias, by design: the
    samples leave ``p(x0)`` toward its low-density parts (the test measures the minority-mode mass).

    Cost per call: ``1 + num_mc`` denoiser evaluations, 1 VJP through the denoiser.

    Args:
      denoiser: ``D(x, sigma)``.
      scale: guidance scale (finite; 0 is the unguided model).
      key: a typed PRNG key for the re-noising.
      sigma_perturb: the re-noising level ``sigma_p > 0`` (the paper uses a fixed, fairly high level; here in
        the model's VE units).
      num_mc: Monte-Carlo draws of the re-noising per call.
      norm_order: ``p`` of the distance (2: Euclidean).
      normalize: divide the gradient by its max-abs entry.
      interval: optional ``(sigma_lo, sigma_hi)``.
    """
    check_callable(denoiser, "minority", "denoiser", "D(x, sigma)")
    sp = check_scale(sigma_perturb, "minority", "sigma_perturb")
    if not isinstance(sp, jax.core.Tracer) and float(sp) <= 0:
        raise ValueError(f"minority: sigma_perturb must be > 0, got {sigma_perturb!r}")
    p = float(check_nonneg(norm_order, "minority", "norm_order"))
    if p < 1:
        raise ValueError(f"minority: norm_order must be >= 1, got {norm_order!r}")
    return Minority(denoiser, check_scale(scale, "minority"), sp, as_key(key, "minority"),
                    check_interval(interval, "minority"), check_positive_int(num_mc, "minority", "num_mc"), p,
                    bool(normalize))
