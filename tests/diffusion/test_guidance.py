"""Guidance wrappers (samplax.diffusion.guidance) against exact Gaussian-mixture models.

Exactness where a closed form exists (CFG at scale 1 is the conditional model; classifier guidance with the
exact noise-aware classifier at scale 1 is the conditional model, pointwise and in distribution; the exact
noisy likelihood turns the prior's denoiser into the exact posterior's), hand computations of every update rule,
argument checks, the cost records, and (slow tier) the measured biases of the approximate methods against exact
posterior mixtures, each asserted inside a documented range.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as sd
from samplax.diffusion import guidance as G
from samplax.diffusion.guidance import exact as E
from samplax.diffusion.guidance._base import point_key
from samplax.diffusion.guidance.stepwise import select_candidate
from samplax.metrics import energy_distance

SIGMAS = (0.003, 0.05, 0.3, 1.0, 4.0, 40.0)


def labelled():
    """Three overlapping classes in 2-D (components 0,1 -> class 0; 2 -> class 1; 3,4 -> class 2)."""
    return E.LabelledMixture([0.25, 0.15, 0.25, 0.2, 0.15],
                             [[-1.0, 0.0], [-0.3, 1.0], [1.0, 0.2], [0.2, -1.0], [0.8, -0.6]],
                             [[0.35, 0.3], [0.4, 0.3], [0.3, 0.4], [0.35, 0.35], [0.3, 0.3]], [0, 0, 1, 2, 2])


def points(n=24, seed=0, scale=1.5):
    return scale * jax.random.normal(jax.random.key(seed), (n, 2))


def on_grid(fn, xs, sigmas=SIGMAS):
    """``fn`` at every point and noise level: ``[len(sigmas), n, ...]`` (one compiled program)."""
    f = jax.jit(jax.vmap(jax.vmap(fn, in_axes=(0, None)), in_axes=(None, 0)))
    return jax.tree.map(np.asarray, f(jnp.asarray(xs), jnp.asarray(sigmas, jnp.float64)))


def each(*fns):
    """One function returning every ``fn(x, sigma)`` (so that :func:`on_grid` compiles them together)."""
    return lambda x, s: tuple(f(x, s) for f in fns)


def np_denoise(model, x, s):
    """The exact mixture denoiser written in numpy (an independent implementation): ``x`` ``[n, D]``."""
    w, mu, v = (np.asarray(a) for a in (model.weights, model.means, model.variances))
    var = v + s**2
    diff = x[:, None, :] - mu[None]
    logp = np.log(w) - 0.5 * np.sum(diff**2 / var + np.log(2 * np.pi * var), axis=-1)
    r = np.exp(logp - logp.max(axis=1, keepdims=True))
    r /= r.sum(axis=1, keepdims=True)
    return np.sum(r[:, :, None] * (mu[None] + (v / var)[None] * diff), axis=1)


# ---------------------------------------------------------------- CFG
def test_cfg_scale_one_is_the_conditional_model():
    lm = labelled()
    cond = lm.conditional(2)
    xs = points()
    got, want = on_grid(each(G.cfg(cond, lm, 1.0), cond), xs)
    assert np.max(np.abs(got - want)) < 1e-13


@pytest.mark.parametrize("w", [0.0, 2.5, -0.5])
def test_cfg_is_its_definition_on_the_exact_mixture(w):
    """D = x + sigma^2 [(1 - w) grad log p_sigma(x) + w grad log p_sigma(x | c)], the scores by autodiff of the
    exact log-densities (an independent computation from the denoisers)."""
    lm = labelled()
    cond = lm.conditional(0)
    xs = points(seed=1)
    got, su, sc = on_grid(each(G.cfg(cond, lm, w), jax.grad(lm.model.log_prob), jax.grad(cond.log_prob)), xs)
    for s, row, a, b in zip(SIGMAS, got, su, sc):
        want = np.asarray(xs) + s**2 * ((1 - w) * a + w * b)
        assert np.max(np.abs(row - want)) < 1e-10 * max(1.0, s**2), s


def test_cfg_interval_and_rescale_by_hand():
    lm = labelled()
    cond = lm.conditional(1)
    xs = points(seed=2)
    w, lo, hi, phi = 3.0, 0.1, 2.0, 0.7
    g = G.cfg(cond, lm, w, interval=(lo, hi), rescale=phi)
    for s, got in zip(SIGMAS, on_grid(g, xs)):
        dc, du = np_denoise(cond, np.asarray(xs), s), np_denoise(lm.model, np.asarray(xs), s)
        if not (lo < s <= hi):
            assert np.max(np.abs(got - dc)) < 1e-13, s
            continue
        raw = du + w * (dc - du)
        factor = phi * dc.std(axis=1) / raw.std(axis=1) + (1 - phi)
        assert np.max(np.abs(got - raw * factor[:, None])) < 1e-12, s


def _velocity(model):
    """The rectified-flow velocity u(x_t, t) = -x0 + eps of an exact model (x_t = (1 - t) x0 + t eps)."""
    def u(xt, t):
        sigma = t / (1 - t)
        d = model(xt / (1 - t), sigma)
        return -d + (xt - (1 - t) * d) / t
    return u


def test_cfg_on_velocity_models():
    lm = labelled()
    cond = lm.conditional(0)
    xs = points(seed=3)
    w, phi = 2.0, 0.5
    plain, vel, resc = on_grid(each(
        G.cfg(cond, lm, w), G.cfg(_velocity(cond), _velocity(lm), w, parameterization="velocity"),
        G.cfg(_velocity(cond), _velocity(lm), w, rescale=phi, parameterization="velocity")), xs)
    assert np.max(np.abs(vel - plain)) < 1e-9  # the velocity is affine in x0: same guided denoiser
    for s, row in zip(SIGMAS, resc):  # by hand: rescale the velocity, D = x_t - t u
        t = s / (1 + s)
        xt = (1 - t) * np.asarray(xs)
        dc, du = np_denoise(cond, xt / (1 - t), s), np_denoise(lm.model, xt / (1 - t), s)
        uc, uu = -dc + (xt - (1 - t) * dc) / t, -du + (xt - (1 - t) * du) / t
        ug = uu + w * (uc - uu)
        ug = ug * (phi * uc.std(axis=1) / ug.std(axis=1) + 1 - phi)[:, None]
        assert np.max(np.abs(row - (xt - t * ug))) < 1e-9 * max(1.0, s), s
    assert np.max(np.abs(resc - plain)) > 1e-3  # rescaling the velocity is not rescaling x0


# ---------------------------------------------------------------- classifier guidance: exact
@pytest.mark.parametrize("c", [0, 1, 2])
def test_classifier_guidance_with_the_exact_classifier_is_the_conditional_model(c):
    lm = labelled()
    xs = points(seed=4, scale=2.0)
    got, want, traced = on_grid(each(G.classifier(lm, lm.classifier(c), 1.0), lm.conditional(c),
                                     lambda x, s: lm.class_denoiser(x, s, c)), xs)  # traced-label denoiser too
    assert np.max(np.abs(got - want)) < 1e-10
    assert np.max(np.abs(traced - want)) < 1e-12


def test_exact_noisy_likelihood_turns_the_prior_into_the_posterior():
    prior = labelled().model
    a, y, sy = jnp.array([1.0, 0.5]), jnp.array([0.3, -0.2]), 0.3
    post = E.diagonal_posterior(prior, a, y, sy)
    xs = points(seed=5, scale=2.0)
    got, want = on_grid(each(G.classifier(prior, E.noisy_log_likelihood(prior, a, y, sy), 1.0), post), xs)
    assert np.max(np.abs(got - want)) < 1e-10
    # the closed-form posterior against Bayes' rule on a grid of clean points
    ell = E.gaussian_log_likelihood(a, y, sy)
    logz = E.posterior_log_evidence(prior, a, y, sy)
    x0 = points(seed=6)
    lhs = jax.vmap(post.log_prob)(x0)
    rhs = jax.vmap(lambda z: prior.log_prob(z) + ell(z))(x0) - logz
    assert np.max(np.abs(np.asarray(lhs - rhs))) < 1e-10


def test_classifier_guidance_samples_the_exact_conditional_mixture():
    """Scale 1 with the exact classifier, sampled by DDPM (200 calls): component weights, mean and an energy
    distance to exact conditional draws, within the Monte-Carlo error of 2000 draws (fixed seeds)."""
    lm = labelled()
    c = 0
    cond = lm.conditional(c)
    n = 2000
    x, info = sd.sample(G.classifier(lm, lm.classifier(c), 1.0), key=jax.random.key(3), shape=(n, 2),
                        sigma_max=40.0, nfe=200, solver="ddpm")
    x = np.asarray(x)
    exact = np.asarray(cond.sample(jax.random.key(4), n))
    z = 4.0
    frac = np.bincount(np.asarray(cond.component_of(x)), minlength=2) / n
    frac_e = np.bincount(np.asarray(cond.component_of(exact)), minlength=2) / n
    p = float(cond.weights[0])
    assert abs(frac[0] - frac_e[0]) < z * math.sqrt(2 * p * (1 - p) / n), (frac, frac_e)
    se = np.sqrt(x.var(0) / n + exact.var(0) / n)
    assert np.all(np.abs(x.mean(0) - exact.mean(0)) < z * se), (x.mean(0), exact.mean(0))
    # energy distance: a permutation test at level 1/50
    m = 600
    xs, es = x[:m], exact[:m]
    stat = float(energy_distance(xs, es)["energy_distance"])
    pooled = np.concatenate([xs, es])
    rng = np.random.default_rng(0)
    null = [float(energy_distance(*np.split(pooled[rng.permutation(2 * m)], 2))["energy_distance"])
            for _ in range(49)]
    assert stat < max(null), (stat, sorted(null)[-5:])
    assert info.cost["num_guide_grads"] == int(info.num_model_evals) == 200


# ---------------------------------------------------------------- GFCG, minority: update rules by hand
def _np_class_denoise(lm, x, s, c):
    """``E[x0 | x, class c]`` in numpy: the restricted, reweighted mixture (``c`` per point)."""
    out = np.empty_like(x)
    for k in range(lm.num_classes):
        rows = c == k
        if rows.any():
            out[rows] = np_denoise(lm.conditional(k), x[rows], s)
    return out


def test_gradient_free_classifier_update_rule():
    lm = labelled()
    clf = lm.clean_classifier()
    xs = np.asarray(points(seed=7))
    target, scale = 1, 2.0
    plain, with_cfg, custom = on_grid(each(
        G.gradient_free_classifier(lm.class_denoiser, clf, target, scale),
        G.gradient_free_classifier(lm.class_denoiser, clf, target, scale, uncond_denoiser=lm, cfg_scale=1.5),
        G.gradient_free_classifier(lm.class_denoiser, clf, target, scale,
                                   scale_fn=lambda lp, t, r, s: s * (1.0 - jnp.exp(lp[t])))), xs)
    logp_of = jax.jit(jax.vmap(clf))
    refs = set()
    for i, s in enumerate(SIGMAS):
        dc = _np_class_denoise(lm, xs, s, np.full(len(xs), target))
        lp = np.asarray(logp_of(jnp.asarray(dc)))
        others = lp.copy()
        others[:, target] = -np.inf
        ref = others.argmax(axis=1)
        refs |= set(ref.tolist())
        dref = _np_class_denoise(lm, xs, s, ref)
        p_ref, p_t = lp[np.arange(len(xs)), ref], lp[:, target]
        w = scale * np.minimum(1.0, np.exp(p_ref - p_t))[:, None]
        np.testing.assert_allclose(plain[i], dc + w * (dc - dref), rtol=0, atol=1e-11)
        du = np_denoise(lm.model, xs, s)
        np.testing.assert_allclose(with_cfg[i], du + 1.5 * (dc - du) + w * (dc - dref), rtol=0, atol=1e-11)
        w2 = scale * (1.0 - np.exp(p_t))[:, None]
        np.testing.assert_allclose(custom[i], dc + w2 * (dc - dref), rtol=0, atol=1e-11)
    assert refs == {0, 2}  # the reference class changes with the point


def test_minority_update_rule():
    """The score term by central finite differences of the minority score written in numpy (reconstructions
    and noise held fixed, the noise drawn with the wrapper's per-point key)."""
    model = sd.GaussianMixtureDiffusion([0.9, 0.1], [[-0.5, 0.0], [1.0, 0.5]], [0.3, 0.3])
    key = jax.random.key(11)
    w, sp, nmc = 0.7, 0.8, 3
    sigmas = (0.05, 0.5, 2.0)
    xs = np.asarray(points(6, seed=8))
    g = G.minority(model, w, key=key, sigma_perturb=sp, num_mc=nmc)
    got, got_n, score_of, eps_of = on_grid(each(
        g, G.minority(model, w, key=key, sigma_perturb=sp, num_mc=nmc, normalize=True), g.minority_score,
        lambda x, s: jax.random.normal(point_key(key, x, s), (nmc, 2), x.dtype)), xs, sigmas)
    h = 1e-6
    for i, s in enumerate(sigmas):
        d0 = np_denoise(model, xs, s)
        recon = np_denoise(model, (d0[:, None, :] + sp * eps_of[i]).reshape(-1, 2), sp).reshape(-1, nmc, 2)

        def loss(z):
            return np.mean(np.linalg.norm(np_denoise(model, z, s)[:, None, :] - recon, axis=2), axis=1)

        grad = np.stack([(loss(xs + h * e) - loss(xs - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
        np.testing.assert_allclose(got[i], d0 + w * s**2 * grad, rtol=0, atol=1e-7 * max(1, s**2))
        gmax = np.abs(grad).max(axis=1, keepdims=True)
        np.testing.assert_allclose(got_n[i], d0 + w * s**2 * grad / gmax, rtol=0, atol=1e-6 * max(1, s**2))
        np.testing.assert_allclose(score_of[i], loss(xs), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- training-free guidance: update rules by hand
def _gauss():
    """A one-component prior N(mu, diag(v)): D(x, s) = mu + v/(v + s^2) (x - mu) in closed form."""
    mu, v = np.array([0.3, -0.4]), np.array([0.5, 0.8]) ** 2
    return sd.GaussianMixtureDiffusion([1.0], [mu], [np.sqrt(v)]), mu, v


def test_dps_and_mcg_update_rules():
    model, mu, v = _gauss()
    a, y, sy = np.array([1.0, 0.5]), np.array([0.2, 0.1]), 0.3
    ell = E.gaussian_log_likelihood(a, y, sy)
    mask = np.array([1.0, 0.0])

    def project(x0):  # observed coordinate set to y
        return mask * y + (1 - mask) * x0

    xs = np.asarray(points(5, seed=9))
    got_dps = on_grid(G.dps(model, ell, 1.5), xs)
    got_mcg = on_grid(G.mcg(model, ell, project, 1.5), xs)
    for i, s in enumerate(SIGMAS):
        gain = v / (v + s**2)
        d = mu + gain * (xs - mu)
        grad = gain * a * (y - a * d) / sy**2  # d/dx ell(D(x)) = J_D^T grad ell, J_D = diag(gain)
        want = d + 1.5 * s**2 * grad
        np.testing.assert_allclose(got_dps[i], want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_mcg[i], project(want), rtol=1e-12, atol=1e-12)


def test_tfg_update_rules_and_presets():
    model, mu, v = _gauss()
    a, y, sy = np.array([1.0, 0.5]), np.array([0.2, 0.1]), 0.3
    ell = E.gaussian_log_likelihood(a, y, sy)
    key = jax.random.key(5)
    rho, m, gamma, nmc = 0.8, 0.02, 0.6, 3
    sigmas = (0.02, 0.4, 3.0)
    xs = np.asarray(points(4, seed=10))
    got, got_dps, want_dps, eps_of = on_grid(each(
        G.tfg(model, ell, rho=rho, mu=m, gamma=gamma, num_iter=2, num_mc=nmc, key=key),
        G.tfg(model, ell, **G.tfg_preset("dps")), G.dps(model, ell),
        lambda x, s: jax.random.normal(point_key(key, x, s), (nmc, 2), x.dtype)), xs, sigmas)
    np.testing.assert_allclose(got_dps, want_dps, rtol=0, atol=1e-13)
    for i, s in enumerate(sigmas):
        gain = v / (v + s**2)
        std = gamma * s / math.sqrt(1 + s**2)
        eps = eps_of[i]

        def grad_logf(z):  # grad of log mean_j exp ell(z + std eps_j) for the Gaussian ell, by hand
            zz = z[:, None, :] + std * eps
            vals = -0.5 * np.sum(((y - a * zz) / sy) ** 2, axis=2)
            wts = np.exp(vals - vals.max(axis=1, keepdims=True))
            wts /= wts.sum(axis=1, keepdims=True)
            return np.sum(wts[:, :, None] * (a * (y - a * zz) / sy**2), axis=1)

        d = mu + gain * (xs - mu)
        delta_t = rho * s**2 * gain * grad_logf(d)
        z = d.copy()
        for _ in range(2):
            z = z + m * grad_logf(z)
        np.testing.assert_allclose(got[i], z + delta_t, rtol=0, atol=1e-11)
    with pytest.raises(ValueError, match="unknown preset"):
        G.tfg_preset("nope")
    with pytest.raises(ValueError, match="unknown options"):
        G.tfg_preset("dps", beta=1.0)
    assert G.tfg(model, ell, key=key, **G.tfg_preset("freedom")).recurrence == 2


def test_symplectic_adjoint_is_the_gradient_through_the_ode_solve():
    lm = labelled()
    a, y, sy = np.array([1.0, 0.0]), np.array([0.4, 0.0]), 0.3
    ell = E.gaussian_log_likelihood(a, y, sy)
    four = G.symplectic_adjoint(lm, ell, 1.3, num_steps=4)
    sigmas = (0.05, 0.7, 5.0)
    xs = points(4, seed=12)
    # the reference: autodiff through the unrolled 4-step solve
    one, dps_, got, want = on_grid(each(
        G.symplectic_adjoint(lm, ell, 1.3, num_steps=1), G.dps(lm, ell, 1.3), four,
        lambda x, s: lm(x, s) + 1.3 * s**2 * jax.grad(lambda z: ell(four.clean_estimate(z, s)))(x)), xs, sigmas)
    np.testing.assert_allclose(one, dps_, rtol=0, atol=1e-13)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- samplers
@pytest.mark.slow  # 20-45 s: the default tier must fit 15 min on 2 cores
def test_svdd_with_one_candidate_is_ddpm_and_recurrence_one_is_ddim():
    model = labelled().model
    k = jax.random.key(21)
    x_ref, _ = sd.sample(model, key=k, shape=(64, 2), sigma_max=20.0, nfe=30, solver="ddpm")
    x, info = G.svdd(model, lambda x0: -jnp.sum(x0**2), key=k, num_candidates=1, shape=(64, 2), sigma_max=20.0,
                     nfe=30)
    assert np.max(np.abs(np.asarray(x) - np.asarray(x_ref))) < 1e-12
    assert int(info.num_model_evals) == 30 and info.cost["num_value_evals"] == 29 and info.solver == "svdd"
    x_ref, _ = sd.sample(model, key=k, shape=(64, 2), sigma_max=20.0, nfe=30, solver="ddim")
    x, info = G.recurrent_sample(model, key=k, recurrence=1, shape=(64, 2), sigma_max=20.0, nfe=30)
    assert np.max(np.abs(np.asarray(x) - np.asarray(x_ref))) < 1e-12
    x3, info3 = G.recurrent_sample(model, key=k, recurrence=3, shape=(64, 2), sigma_max=20.0, nfe=30)
    assert int(info3.num_model_evals) == 1 + 3 * 9 <= 30 and np.all(np.isfinite(np.asarray(x3)))
    xb, _ = G.svdd(model, lambda x0: -jnp.sum(x0**2), key=k, num_candidates=3, shape=(8, 2), sigma_max=20.0,
                   nfe=31)
    xa, _ = G.svdd(model, lambda x0: -jnp.sum(x0**2), key=k, num_candidates=3, shape=(64, 2), sigma_max=20.0,
                   nfe=31)
    assert np.max(np.abs(np.asarray(xa[:8]) - np.asarray(xb))) < 1e-12  # batch-size invariant


def test_svdd_selection_rule():
    v = jnp.array([0.3, -1.0, 1.2, 0.5])
    assert int(select_candidate(jax.random.key(0), v, 0.0)) == 2
    keys = jax.random.split(jax.random.key(1), 20000)
    picks = np.asarray(jax.vmap(lambda k: select_candidate(k, v, 0.5))(keys))
    freq = np.bincount(picks, minlength=4) / len(picks)
    p = np.asarray(jax.nn.softmax(v / 0.5))
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / len(picks))), (freq, p)


# ---------------------------------------------------------------- costs
def test_cost_records():
    lm = labelled()
    ell = E.gaussian_log_likelihood([1.0, 0.0], [0.2, 0.0], 0.3)
    assert G.cfg(lm.conditional(0), lm, 2.0).cost_per_call == {"denoiser_evals": 2, "denoiser_vjps": 0}
    assert G.dps(lm, ell).cost_per_call == {"denoiser_evals": 1, "denoiser_vjps": 1, "guide_evals": 1,
                                            "guide_grads": 1}
    assert G.symplectic_adjoint(lm, ell, num_steps=3).cost_per_call["denoiser_evals"] == 5
    assert G.symplectic_adjoint(lm, ell, num_steps=3).cost_per_call["denoiser_vjps"] == 3
    assert G.minority(lm, 1.0, key=jax.random.key(0), num_mc=2).cost_per_call == {"denoiser_evals": 3,
                                                                                   "denoiser_vjps": 1}
    nested = G.cfg(G.dps(lm, ell), lm, 2.0)  # a guided conditional model inside CFG
    assert nested.cost_per_call == {"denoiser_evals": 2, "denoiser_vjps": 1, "guide_evals": 1, "guide_grads": 1}
    x, info = sd.sample(G.dps(lm, ell), key=jax.random.key(0), shape=(4, 2), sigma_max=10.0, nfe=12,
                        solver="heun")
    n = int(info.num_model_evals)
    assert info.cost["num_denoiser_evals"] == n and info.cost["num_denoiser_vjps"] == n
    x, info = G.svdd(G.dps(lm, ell), ell, key=jax.random.key(0), num_candidates=2, shape=(4, 2), sigma_max=10.0,
                     nfe=11)
    assert int(info.num_model_evals) == 11 and info.cost["num_denoiser_vjps"] == 11
    assert info.cost["num_value_evals"] == 10


# ---------------------------------------------------------------- argument checks
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "two", [1.0, 2.0], None])
def test_scale_must_be_finite(bad):
    lm = labelled()
    ell = E.gaussian_log_likelihood([1.0, 0.0], [0.2, 0.0], 0.3)
    for make in (lambda: G.cfg(lm, lm, bad), lambda: G.classifier(lm, lm.classifier(0), bad),
                 lambda: G.dps(lm, ell, bad), lambda: G.mcg(lm, ell, lambda z: z, bad),
                 lambda: G.symplectic_adjoint(lm, ell, bad), lambda: G.minority(lm, bad, key=jax.random.key(0)),
                 lambda: G.gradient_free_classifier(lm.class_denoiser, lm.clean_classifier(), 0, bad)):
        with pytest.raises(ValueError, match="scale must be a finite real number"):
            make()
    with pytest.raises(ValueError, match="rho must be a finite"):
        G.tfg(lm, ell, rho=bad)


def test_argument_errors_name_the_argument():
    lm = labelled()
    ell = E.gaussian_log_likelihood([1.0, 0.0], [0.2, 0.0], 0.3)
    with pytest.raises(ValueError, match="interval must be ordered"):
        G.cfg(lm, lm, 2.0, interval=(1.0, 0.5))
    with pytest.raises(ValueError, match="interval must be ordered"):
        G.cfg(lm, lm, 2.0, interval=(-0.1, 0.5))
    with pytest.raises(ValueError, match="interval must be a pair"):
        G.cfg(lm, lm, 2.0, interval=3.0)
    with pytest.raises(ValueError, match="rescale"):
        G.cfg(lm, lm, 2.0, rescale=1.5)
    with pytest.raises(ValueError, match="parameterization"):
        G.cfg(lm, lm, 2.0, parameterization="eps")
    with pytest.raises(ValueError, match="key is required"):
        G.tfg(lm, ell, gamma=0.5)
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        G.symplectic_adjoint(lm, ell, num_steps=0)
    with pytest.raises(ValueError, match="cond_denoiser must be callable"):
        G.cfg(3.0, lm, 1.0)
    with pytest.raises(ValueError, match="sigma_perturb must be > 0"):
        G.minority(lm, 1.0, key=jax.random.key(0), sigma_perturb=0.0)
    point, sig = jax.ShapeDtypeStruct((2,), jnp.float64), jax.ShapeDtypeStruct((), jnp.float64)
    # user functions are checked with jax.eval_shape; a wrong output shape names the argument
    with pytest.raises(ValueError, match="log_prob_fn must return a scalar"):
        jax.eval_shape(G.classifier(lm, lambda x, s: lm.class_log_probs(x, s), 1.0), point, sig)
    with pytest.raises(ValueError, match="log_likelihood must return a scalar"):
        jax.eval_shape(G.dps(lm, lambda x0: x0), point, sig)
    with pytest.raises(ValueError, match="log_likelihood fails on arguments of shapes"):
        jax.eval_shape(G.dps(lm, lambda x0: x0 @ jnp.ones(3)), point, sig)
    with pytest.raises(ValueError, match="project must return the projected clean point"):
        jax.eval_shape(G.mcg(lm, ell, lambda x0: x0[:1]), point, sig)
    with pytest.raises(ValueError, match="uncond_denoiser must return"):
        jax.eval_shape(G.cfg(lm, lambda x, s: jnp.zeros(3), 2.0), point, sig)
    with pytest.raises(ValueError, match="clean_log_prob_fn"):
        jax.eval_shape(G.gradient_free_classifier(lm.class_denoiser, lambda x0: jnp.sum(x0), 0), point, sig)
    with pytest.raises(ValueError, match="target=3 is not a class"):
        jax.eval_shape(G.gradient_free_classifier(lm.class_denoiser, lm.clean_classifier(), 3), point, sig)
    with pytest.raises(ValueError, match="target must be a non-negative class index"):
        G.gradient_free_classifier(lm.class_denoiser, lm.clean_classifier(), -1)
    for make in (lambda d: G.dps(d, ell), lambda d: G.classifier(d, lm.classifier(0)),
                 lambda d: G.tfg(d, ell), lambda d: G.symplectic_adjoint(d, ell),
                 lambda d: G.minority(d, 1.0, key=jax.random.key(0))):
        with pytest.raises(ValueError, match="denoiser must return E\\[x0 \\| x\\] of the point's shape"):
            jax.eval_shape(make(lambda x, s: jnp.zeros(3)), point, sig)
    # ... and diffusion.sample keeps the message
    with pytest.raises(ValueError, match="log_likelihood must return a scalar"):
        sd.sample(G.dps(lm, lambda x0: x0), key=jax.random.key(0), shape=(3, 2), sigma_max=5.0, nfe=4)
    with pytest.raises(ValueError, match="recurrent_sample"):
        sd.sample(G.tfg(lm, ell, recurrence=2), key=jax.random.key(0), shape=(3, 2), sigma_max=5.0, nfe=4)
    with pytest.raises(ValueError, match="value_fn must return a scalar"):
        G.svdd(lm, lambda x0: x0, key=jax.random.key(0), shape=(3, 2), sigma_max=5.0, nfe=9)
    with pytest.raises(ValueError, match="nfe=4 is too small"):
        G.svdd(lm, ell, key=jax.random.key(0), num_candidates=4, shape=(3, 2), sigma_max=5.0, nfe=4)
    with pytest.raises(ValueError, match="sigma_y must be positive"):
        E.diagonal_posterior(lm.model, [1.0, 0.0], [0.0, 0.0], 0.0)
    with pytest.raises(ValueError, match="y must be finite"):
        E.noisy_log_likelihood(lm.model, [1.0, 0.0], [np.nan, 0.0], 0.3)


def test_point_key_is_a_function_of_the_point_and_sigma():
    key = jax.random.key(3)
    x = jnp.array([0.25, -1.0])
    same = jax.random.normal(point_key(key, x, 0.5), (3,))
    np.testing.assert_array_equal(same, jax.random.normal(point_key(key, jnp.array([0.25, -1.0]), 0.5), (3,)))
    others = [point_key(key, x, 0.5000001), point_key(key, x.at[0].set(0.2500000001), 0.5),
              point_key(jax.random.key(4), x, 0.5)]
    for k in others:
        assert not np.allclose(jax.random.normal(k, (3,)), same)
    batched = jax.vmap(lambda z: jax.random.normal(point_key(key, z, 0.5), (3,)))(jnp.stack([x, 2 * x]))
    np.testing.assert_array_equal(batched[0], same)


def test_cfg_and_classifier_guidance_agree_on_exact_models():
    """With exact models, CFG at scale w and classifier guidance at scale w are the same denoiser:
    x + sigma^2 [grad log p_sigma(x) + w grad log p_sigma(c | x)]."""
    lm = labelled()
    a, b = on_grid(each(G.cfg(lm.conditional(2), lm, 2.5), G.classifier(lm, lm.classifier(2), 2.5)), points(seed=13))
    assert np.max(np.abs(a - b)) < 1e-10


# ---------------------------------------------------------------- measured biases (slow tier)
# Each approximate method is run on fixed seeds and its distance to the exact answer is measured; the test
# asserts that the measurement lies in the documented range below -- the bias is real (the lower bound is
# far above the Monte-Carlo error of the exact sampler, measured in the "exact" row) and has not grown.
#
# Problem A: prior = 3-component diagonal mixture in 2-D (below), y = x0[0] + 0.4 n with y = 0.2; exact
# posterior weights (0.053, 0.112, 0.835). 2000 samples (seed 1), 200 calls; "tv": total variation between
# the samples' component fractions (nearest posterior component) and the exact weights; "ed": energy distance
# (samplax.metrics, unbiased) of 1000 samples to 1000 exact posterior draws. Measured (seeds 1 / 2):
#
#   method                          tv             ed            sampler
#   exact noisy likelihood          0.012          ~0            ddpm (control: classifier guidance, scale 1)
#   dps                             0.200 / 0.197  0.155 / 0.131  ddpm (DPS's own sampler)
#   symplectic_adjoint (4 steps)    0.182 / 0.175  0.192 / 0.174  ddim, 100 calls (SAG's sampler)
#   tfg preset dps                  0.395 / 0.385  0.570 / 0.608  recurrent_sample (DDIM, TFG's sampler)
#   tfg preset lgd                  0.365 / 0.369  0.496 / 0.552  recurrent_sample
#   tfg preset mpgd                 0.507 / 0.514  0.814 / 0.892  recurrent_sample
#   tfg preset freedom              0.186 / 0.201  0.153 / 0.148  recurrent_sample, recurrence 2
#   tfg preset ugd                  0.190 / 0.200  0.199 / 0.192  recurrent_sample, recurrence 2
#   tfg preset tfg                  0.203 / 0.220  0.219 / 0.220  recurrent_sample, recurrence 2
#   svdd, M=4, value ell(D(x))      0.240 / 0.236  0.153 / 0.208  svdd (DDPM proposals), alpha 1, 401 calls
#   svdd, M=4, exact log p(y|x_t)   0.176 / 0.177  0.073 / 0.096  svdd, 401 calls
#   svdd, M=16, exact log p(y|x_t)  0.060 / 0.066  0.010 / 0.014  svdd, 1601 calls (-> exact as M grows)
#
# DPS-type guidance concentrates the posterior on the likelihood's mode direction (the plug-in likelihood is
# too sharp at high noise): too much weight on components 0 and 1 and, on the deterministic DDIM sampler, a
# collapsed spread in the observed coordinate (std 0.06 against the exact 0.39). Mean guidance with a fixed
# step (mpgd) collapses it completely. The recurrence (freedom, ugd, tfg) halves the weight error of DDIM.
_PRIOR_A = dict(weights=[0.45, 0.35, 0.2], means=[[-1.5, 0.0], [1.5, 0.8], [0.3, -1.5]],
                stds=[[0.5, 0.4], [0.4, 0.5], [0.45, 0.3]])
_N = 2000


def _problem(sigma_y):
    prior = sd.GaussianMixtureDiffusion(**_PRIOR_A)
    a, y = jnp.array([1.0, 0.0]), jnp.array([0.2, 0.0])
    post = E.diagonal_posterior(prior, a, y, sigma_y)
    return prior, a, y, post, E.gaussian_log_likelihood(a, y, sigma_y), np.asarray(post.sample(jax.random.key(7), _N))


def _errors(x, post, exact):
    x = np.asarray(x)
    assert np.all(np.isfinite(x))
    frac = np.bincount(np.asarray(post.component_of(x)), minlength=post.num_components) / len(x)
    tv = 0.5 * float(np.abs(frac - np.asarray(post.weights)).sum())
    ed = float(energy_distance(x[:1000], exact[:1000])["energy_distance"])
    return tv, ed


def _run_a(method, prior, a, y, ell):
    kw = dict(key=jax.random.key(1), shape=(_N, 2), sigma_max=20.0)
    noisy = E.noisy_log_likelihood(prior, a, y, 0.4)
    if method == "exact":
        return sd.sample(G.classifier(prior, noisy, 1.0), nfe=200, solver="ddpm", **kw)[0]
    if method == "dps":
        return sd.sample(G.dps(prior, ell), nfe=200, solver="ddpm", **kw)[0]
    if method == "symplectic_adjoint":
        return sd.sample(G.symplectic_adjoint(prior, ell, num_steps=4), nfe=100, solver="ddim", **kw)[0]
    if method.startswith("tfg_"):
        g = G.tfg(prior, ell, key=jax.random.key(3), **G.tfg_preset(method[4:]))
        return G.recurrent_sample(g, nfe=201, **kw)[0]
    m, value = {"svdd_clean_4": (4, ell), "svdd_exact_4": (4, noisy), "svdd_exact_16": (16, noisy)}[method]
    return G.svdd(prior, value, num_candidates=m, alpha=1.0, value_on="clean" if value is ell else "noisy",
                  nfe=1 + 100 * m, **kw)[0]


_RANGES_A = {  # method: ((tv_lo, tv_hi), (ed_lo, ed_hi))
    "exact": ((0.0, 0.04), (-0.01, 0.01)),
    "dps": ((0.14, 0.26), (0.08, 0.22)),
    "symplectic_adjoint": ((0.12, 0.24), (0.11, 0.26)),
    "tfg_dps": ((0.32, 0.46), (0.42, 0.75)),
    "tfg_lgd": ((0.30, 0.43), (0.36, 0.68)),
    "tfg_mpgd": ((0.44, 0.58), (0.65, 1.05)),
    "tfg_freedom": ((0.13, 0.26), (0.09, 0.22)),
    "tfg_ugd": ((0.13, 0.26), (0.12, 0.27)),
    "tfg_tfg": ((0.14, 0.28), (0.14, 0.30)),
    "svdd_clean_4": ((0.17, 0.31), (0.09, 0.28)),
    "svdd_exact_4": ((0.12, 0.24), (0.04, 0.14)),
    "svdd_exact_16": ((0.0, 0.10), (-0.005, 0.03)),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(_RANGES_A))
def test_measured_bias_against_the_exact_posterior(method):
    prior, a, y, post, ell, exact = _problem(0.4)
    tv, ed = _errors(_run_a(method, prior, a, y, ell), post, exact)
    (tlo, thi), (elo, ehi) = _RANGES_A[method]
    assert tlo <= tv <= thi and elo <= ed <= ehi, (method, tv, ed)


@pytest.mark.slow
def test_svdd_with_the_exact_soft_value_approaches_the_posterior_as_candidates_grow():
    prior, a, y, post, ell, exact = _problem(0.4)
    errs = [_errors(_run_a(m, prior, a, y, ell), post, exact) for m in ("svdd_exact_4", "svdd_exact_16")]
    assert errs[1][0] < errs[0][0] / 2 and errs[1][1] < errs[0][1] / 3, errs


# Problem B: the same prior, y = x0[0] + 0.1 n (nearly noiseless; posterior weights 0.008, 0.014, 0.979).
# MCG (projection of the clean estimate: x0[0] := y) pins the observed coordinate (std 0 against the exact
# 0.098) and, with the gradient acting on the unobserved coordinate alone, puts too much weight on component 1
# and spreads x0[1] (std 1.4 against 0.41). Measured (seeds 1 / 2): tv 0.147 / 0.135, ed 0.145 / 0.139;
# DPS on the same problem: tv 0.021 / 0.022, ed 0.060 / 0.070 (a spread in x0[0] of 0.07 against 0.098).
@pytest.mark.slow
def test_measured_bias_of_mcg_and_dps_on_a_nearly_noiseless_measurement():
    prior, a, y, post, ell, exact = _problem(0.1)
    kw = dict(key=jax.random.key(1), shape=(_N, 2), sigma_max=20.0, nfe=200, solver="ddpm")
    x, _ = sd.sample(G.mcg(prior, ell, lambda x0: x0.at[0].set(y[0])), **kw)
    assert np.all(np.asarray(x)[:, 0] == float(y[0]))
    tv, ed = _errors(x, post, exact)
    assert 0.09 <= tv <= 0.20 and 0.09 <= ed <= 0.20, (tv, ed)
    tv, ed = _errors(sd.sample(G.dps(prior, ell), **kw)[0], post, exact)
    assert 0.0 <= tv <= 0.05 and 0.03 <= ed <= 0.11, (tv, ed)


# Minority guidance on a 0.9 / 0.1 mixture, sigma_perturb = 1, DDPM 200 calls, 2000 samples: the mass of the
# minority component (nearest component) and the mean negative log-likelihood under the prior rise with the
# scale. Measured (seeds 1 / 2): scale 0: 0.091 / 0.102 (the prior's 0.1), NLL 0.98 / 0.99; scale 1:
# 0.213 / 0.236, NLL 1.42 / 1.42; scale 3: 0.428 / 0.446, NLL 2.46 / 2.47.
@pytest.mark.slow
def test_measured_minority_guidance_shift():
    mp = sd.GaussianMixtureDiffusion([0.9, 0.1], [[-0.8, 0.0], [1.0, 0.6]], [0.35, 0.3])
    out = {}
    for w in (0.0, 1.0, 3.0):
        x, _ = sd.sample(G.minority(mp, w, key=jax.random.key(5), sigma_perturb=1.0), key=jax.random.key(1),
                         shape=(_N, 2), sigma_max=20.0, nfe=200, solver="ddpm")
        out[w] = (float(np.mean(np.asarray(mp.component_of(x)) == 1)), -float(jnp.mean(jax.vmap(mp.log_prob)(x))))
    se = math.sqrt(0.1 * 0.9 / _N)
    assert abs(out[0.0][0] - 0.1) < 4 * se, out
    assert 0.16 <= out[1.0][0] <= 0.29 and 0.36 <= out[3.0][0] <= 0.52, out
    assert out[0.0][1] < out[1.0][1] < out[3.0][1], out


# GFCG and CFG on the labelled mixture, target class 1 (exact conditional: one component; the clean
# classifier's accuracy on exact conditional draws is 0.89). DDPM 200 calls, 2000 samples. Measured
# (seeds 1 / 2): conditional model acc 0.888 / 0.899; GFCG scale 1: acc 0.984 / 0.990, mean of x0[1] up by
# 0.068 / 0.064, ed 0.009 / 0.006; CFG scale 3: acc 0.999 / 0.999, ed 0.095 / 0.081; CFG scale 3 on the
# interval (0.3, 5]: acc 0.986 / 0.989, ed 0.072 / 0.060 (the interval removes part of CFG's bias).
@pytest.mark.slow
def test_measured_bias_of_gradient_free_classifier_and_cfg_guidance():
    lm = labelled()
    c = 1
    cond = lm.conditional(c)
    exact = np.asarray(cond.sample(jax.random.key(7), _N))
    clf = jax.jit(jax.vmap(lm.clean_classifier()))

    def run(g):
        x = np.asarray(sd.sample(g, key=jax.random.key(1), shape=(_N, 2), sigma_max=20.0, nfe=200,
                                 solver="ddpm")[0])
        acc = float(np.mean(np.argmax(np.asarray(clf(jnp.asarray(x))), axis=1) == c))
        return acc, float(energy_distance(x[:1000], exact[:1000])["energy_distance"]), x

    acc0, ed0, x0 = run(cond)
    assert 0.86 <= acc0 <= 0.92 and abs(ed0) < 0.01
    acc, ed, x = run(G.gradient_free_classifier(lm.class_denoiser, lm.clean_classifier(), c, 1.0))
    assert 0.96 <= acc <= 1.0 and 0.002 <= ed <= 0.02, (acc, ed)
    assert 0.03 <= x[:, 1].mean() - exact[:, 1].mean() <= 0.11, x.mean(0)
    acc, ed, _ = run(G.cfg(cond, lm, 3.0))
    assert 0.99 <= acc <= 1.0 and 0.05 <= ed <= 0.13, (acc, ed)
    acc_i, ed_i, _ = run(G.cfg(cond, lm, 3.0, interval=(0.3, 5.0)))
    assert 0.97 <= acc_i <= 1.0 and 0.035 <= ed_i < ed, (acc_i, ed_i, ed)
