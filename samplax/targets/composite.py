"""Composite targets ``log p(x) = -f(x) - g(x)``: smooth ``f`` plus a nonsmooth ``g`` with a proximal operator.

The protocol :class:`~samplax.core.composite.CompositeTarget` (in core, so kernels need no target family) is what proximal samplers (MYULA,
Bregman-MYULA in :mod:`samplax.mcmc.proximal`) need:

* ``smooth_logdensity(x) = -f(x)`` (differentiable; ``grad f`` is ``lipschitz``-Lipschitz),
* ``nonsmooth_potential(x) = g(x)`` (convex, possibly ``+inf`` outside a set),
* ``prox(x, lam) = argmin_u g(u) + |u - x|^2 / (2 lam)`` (Euclidean proximal operator),
* optionally ``mirror_map()`` (a separable Legendre function ``phi``, see :class:`MirrorMap`)
  and ``bregman_prox(x, lam) = argmin_u g(u) + D_phi(u, x) / lam`` (left Bregman proximal
  operator, Bauschke, Dao & Lindstrom 2018); without a mirror map ``phi = |x|^2 / 2``
  and ``bregman_prox = prox``.

``logdensity(x) = smooth_logdensity(x) - nonsmooth_potential(x)``.

Shipped targets (registered): ``bayesian_lasso`` (Gaussian likelihood with an
orthogonal design + Laplace prior; exact moments by 1-d quadrature because the
posterior factorizes) and ``box_gaussian`` (a diagonal Gaussian restricted to a
box; exact truncated-normal moments), with a log-barrier mirror map for the box.
"""
from __future__ import annotations


import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.core.composite import CompositeTarget, MirrorMap  # noqa: F401  (the protocol lives in core)
from samplax.core.target import GroundTruth
from samplax.targets import register


def _quadrature_1d(logp_1d, lo, hi, n=200001):
    """Normalizer, mean and sd of ``exp(logp_1d)`` on [lo, hi] by the trapezoid rule (numpy)."""
    t = np.linspace(lo, hi, n)
    lp = logp_1d(t)
    mx = lp.max()
    w = np.exp(lp - mx)
    z = np.trapezoid(w, t)
    m = np.trapezoid(w * t, t) / z
    v = np.trapezoid(w * (t - m) ** 2, t) / z
    return np.log(z) + mx, m, np.sqrt(v)


class BayesianLasso(CompositeTarget):
    """Bayesian lasso posterior (Park & Casella 2008 prior as a fixed-rate Laplace):

    ``y | beta ~ N(X beta, sigma^2 I)``, ``p(beta) ∝ exp(-alpha |beta|_1)``;
    ``f(beta) = |y - X beta|^2 / (2 sigma^2)``, ``g(beta) = alpha |beta|_1``,
    ``prox_{lam g}(x) = sign(x) max(|x| - lam alpha, 0)`` (soft thresholding),
    ``grad f`` is ``lambda_max(X^T X) / sigma^2``-Lipschitz.

    With an orthogonal design (``X^T X = n I``, the registered default) the
    posterior factorizes into 1-d densities
    ``∝ exp(-(n / 2 sigma^2)(beta_j - b_j)^2 - alpha |beta_j|)``, ``b = X^T y / n``,
    whose moments and log Z the ground truth computes by quadrature.
    """

    X: jax.Array
    y: jax.Array
    sigma: float = eqx.field(static=True, default=1.0)
    alpha: float = eqx.field(static=True, default=1.0)

    @property
    def event_shape(self):
        return (self.X.shape[1],)

    @property
    def name(self):
        return "bayesian_lasso"

    def smooth_logdensity(self, x):
        r = self.y - self.X @ x
        return -0.5 * jnp.sum(r**2) / self.sigma**2

    def nonsmooth_potential(self, x):
        return self.alpha * jnp.sum(jnp.abs(x))

    def prox(self, x, lam):
        return jnp.sign(x) * jnp.maximum(jnp.abs(x) - lam * self.alpha, 0.0)

    @property
    def lipschitz(self):
        x = np.asarray(self.X, dtype=np.float64)
        return float(np.linalg.eigvalsh(x.T @ x).max() / self.sigma**2)

    def is_orthogonal_design(self) -> bool:
        x = np.asarray(self.X, dtype=np.float64)
        g = x.T @ x
        return bool(np.allclose(g, g[0, 0] * np.eye(g.shape[0]), atol=1e-8 * abs(g[0, 0])))

    def coordinate_logdensity(self, j: int) -> tuple:
        """For an orthogonal design: ``(precision n / sigma^2, b_j)`` of the 1-d Gaussian factor."""
        x = np.asarray(self.X, dtype=np.float64)
        n = float((x.T @ x)[0, 0])
        b = x.T @ np.asarray(self.y, dtype=np.float64) / n
        return n / self.sigma**2, float(b[j])

    def ground_truth(self):
        if not self.is_orthogonal_design():
            return None
        d = self.dim
        x = np.asarray(self.X, dtype=np.float64)
        yv = np.asarray(self.y, dtype=np.float64)
        means, stds, log_z = np.zeros(d), np.zeros(d), 0.0
        for j in range(d):
            prec, b = self.coordinate_logdensity(j)
            sd = prec**-0.5
            lz, m, s = _quadrature_1d(lambda t: -0.5 * prec * (t - b) ** 2 - self.alpha * np.abs(t),
                                      b - 40 * sd - 1, b + 40 * sd + 1)
            means[j], stds[j] = m, s
            log_z += lz
        n = float((x.T @ x)[0, 0])
        bvec = x.T @ yv / n
        # |y - X beta|^2 = n |beta - b|^2 + |y|^2 - n |b|^2 (orthogonal design)
        log_z += -0.5 * (yv @ yv - n * bvec @ bvec) / self.sigma**2
        return GroundTruth(kind="analytic", source="1-d quadrature (posterior factorizes: orthogonal design)",
                           version="1", mean=means, std=stds, mean_se=np.zeros(d), std_se=np.zeros(d),
                           log_Z=float(log_z))

    def provenance(self):
        return {"source": "synthetic (samplax)", "variant": "orthogonal design" if self.is_orthogonal_design()
                else "general design", "version": "1"}


@register("bayesian_lasso")
def bayesian_lasso(dim: int = 5, num_data: int = 20, sigma: float = 1.0, alpha: float = 3.0, seed: int = 0):
    """Bayesian lasso with an orthogonal synthetic design (``X^T X = num_data I``).

    ``X = sqrt(num_data) Q`` (``Q``: orthonormal columns from a QR of a Gaussian matrix,
    numpy seed ``seed``), true coefficients ``(1.5, -0.5, 0, 0, 0.1, 0, ...)``, ``y = X beta + N(0, sigma^2)``.
    """
    if int(dim) < 1 or int(num_data) < int(dim):
        raise ValueError(f"bayesian_lasso: need 1 <= dim <= num_data, got dim={dim}, num_data={num_data}")
    if not (sigma > 0 and alpha > 0):
        raise ValueError(f"bayesian_lasso: sigma and alpha must be positive, got {sigma}, {alpha}")
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((num_data, dim)))
    x = np.sqrt(num_data) * q
    beta = np.zeros(dim)
    beta[: min(dim, 5)] = np.array([1.5, -0.5, 0.0, 0.0, 0.1])[: min(dim, 5)]
    y = x @ beta + sigma * rng.standard_normal(num_data)
    return BayesianLasso(X=jnp.asarray(x, dtype=float), y=jnp.asarray(y, dtype=float), sigma=float(sigma),
                         alpha=float(alpha))


class BoxGaussian(CompositeTarget):
    """Diagonal Gaussian ``N(mean, diag scale^2)`` restricted to the box ``[lo, hi]^d``.

    ``f(x) = sum (x - mean)^2 / (2 scale^2)``, ``g`` = indicator of the box (0 inside,
    ``+inf`` outside), ``prox_{lam g} = clip(x, lo, hi)`` (projection).  Mirror map:
    the log-barrier ``phi(x) = -sum log(x - lo) + log(hi - x)`` (self-concordant),
    ``phi'(x) = -1/(x - lo) + 1/(hi - x)``, ``phi''(x) = 1/(x - lo)^2 + 1/(hi - x)^2``;
    ``(phi')^{-1}(y)``: ``x - lo = 2w / (2 - y w + sqrt(y^2 w^2 + 4))``,
    ``hi - x = 2w / (2 + y w + sqrt(y^2 w^2 + 4))``, ``w = hi - lo``.  (The entropic map
    ``(x - lo) log(x - lo) + (hi - x) log(hi - x)`` has a Hessian growing like ``cosh(y)``
    in the dual variable, which makes an Euler step unstable near the walls; the
    barrier's grows like ``y^2``.)  Since ``phi``'s domain is the box,
    ``bregman_prox`` of the indicator is the identity.  Ground truth: truncated-normal moments.
    """

    mean: jax.Array
    scale: jax.Array
    lo: float = eqx.field(static=True, default=-1.0)
    hi: float = eqx.field(static=True, default=1.0)

    @property
    def event_shape(self):
        return (self.mean.shape[0],)

    @property
    def name(self):
        return "box_gaussian"

    def smooth_logdensity(self, x):
        return -0.5 * jnp.sum(((x - self.mean) / self.scale) ** 2)

    def nonsmooth_potential(self, x):
        inside = jnp.all((x >= self.lo) & (x <= self.hi))
        return jnp.where(inside, 0.0, jnp.inf)

    def prox(self, x, lam):
        del lam
        return jnp.clip(x, self.lo, self.hi)

    @property
    def lipschitz(self):
        return float(1.0 / np.min(np.asarray(self.scale)) ** 2)

    def mirror_map(self):
        lo, hi = self.lo, self.hi
        w = hi - lo

        def gaps(y):
            # a = x - lo, b = hi - x solving -1/a + 1/b = y (cancellation-free forms)
            r = jnp.sqrt((y * w) ** 2 + 4.0)
            return 2 * w / ((2 - y * w) + r), 2 * w / ((2 + y * w) + r)

        def grad_conj(y):
            a, b = gaps(y)
            return jnp.where(y < 0, lo + a, hi - b)

        def hess_dual(y):
            a, b = gaps(y)
            return 1.0 / a**2 + 1.0 / b**2

        return MirrorMap(grad=lambda x: -1.0 / (x - lo) + 1.0 / (hi - x), grad_conj=grad_conj,
                         hess_diag=lambda x: 1.0 / (x - lo) ** 2 + 1.0 / (hi - x) ** 2,
                         hess_diag_dual=hess_dual)

    def bregman_prox(self, x, lam):
        del lam
        return x

    def initial_point(self, key):
        return jax.random.uniform(key, self.event_shape, minval=0.9 * self.lo + 0.1 * self.hi,
                                  maxval=0.1 * self.lo + 0.9 * self.hi)

    def ground_truth(self):
        from scipy.stats import truncnorm

        m, s = np.asarray(self.mean, np.float64), np.asarray(self.scale, np.float64)
        a, b = (self.lo - m) / s, (self.hi - m) / s
        mean = truncnorm.mean(a, b, loc=m, scale=s)
        std = truncnorm.std(a, b, loc=m, scale=s)
        from scipy.special import ndtr

        log_z = float(np.sum(np.log(s * np.sqrt(2 * np.pi)) + np.log(ndtr(b) - ndtr(a))))
        d = len(m)
        return GroundTruth(kind="analytic", source="truncated normal moments (scipy.stats.truncnorm)", version="1",
                           mean=np.asarray(mean), std=np.asarray(std), mean_se=np.zeros(d), std_se=np.zeros(d),
                           log_Z=log_z)

    def provenance(self):
        return {"source": "analytic", "variant": f"box [{self.lo}, {self.hi}]", "version": "1"}


@register("box_gaussian")
def box_gaussian(mean=(0.0, 0.8, -0.5), scale=(1.0, 0.5, 2.0), lo: float = -1.0, hi: float = 1.0):
    """Diagonal Gaussian truncated to ``[lo, hi]^d`` (default d = 3, the mass piles up at the walls)."""
    mean = np.asarray(mean, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if mean.ndim != 1 or scale.shape != mean.shape:
        raise ValueError(f"box_gaussian: mean and scale must be vectors of one length, got {mean.shape}, {scale.shape}")
    if np.any(scale <= 0) or not lo < hi:
        raise ValueError(f"box_gaussian: need scale > 0 and lo < hi, got scale={scale}, lo={lo}, hi={hi}")
    return BoxGaussian(mean=jnp.asarray(mean, dtype=float), scale=jnp.asarray(scale, dtype=float),
                       lo=float(lo), hi=float(hi))
