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
