"""Linear measurement operators for inverse problems: dense matrices and structured (matrix-free) operators.

Every operator maps a point of ``in_shape`` (flattened, ``d = prod(in_shape)`` entries; a point of any
shape with ``d`` entries is accepted) to a flat measurement ``[m]`` and provides

* ``matvec(x) -> A x`` ``[m]`` and ``rmatvec(y) -> A^T y`` ``[d]`` (the exact adjoint),
* ``dense() -> A`` ``[m, d]`` (what the exact posterior needs, for small ``d``),
* ``pinv(r) -> A^+ r = A^T (A A^T)^+ r`` (the projection of MCG), exact where the structure gives it,
* ``norm_sq() -> ||A||_2^2`` (host float; step sizes of the Langevin-type methods),
* ``row_norms_sq() -> [m]``, ``diag(A A^T)`` (the twisting variances of ``tds``).

They are equinox Modules: their arrays are data (changing a mask or a kernel never recompiles).

* :class:`Dense`: any ``[m, d]`` matrix.
* :class:`Mask`: inpainting, ``A x = x[mask]`` (``A A^T = I``).
* :class:`Blur`: convolution with a 1-D or 2-D kernel (signals or images), circular or zero boundary.
* :class:`SubsampledFourier`: real and imaginary parts of chosen coefficients of the unitary DFT, scaled so
  that the rows are orthonormal (``A A^T = I``), as in compressed-sensing MRI.
"""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.checks import point_shape


def _as_float(a):
    return jnp.asarray(a, dtype=jnp.result_type(float))


class LinearOperator(eqx.Module):
    """Base class of the measurement operators (see the module docstring for the protocol).

    Subclasses set ``in_shape`` (static) and define :meth:`matvec`, :meth:`rmatvec` and the property
    :attr:`out_dim`; :meth:`dense`, :meth:`pinv` and :meth:`norm_sq` have generic implementations
    (columns of the identity, conjugate gradients on ``A A^T``, power iteration) that the structured
    operators replace by exact ones.
    """

    in_shape: tuple = eqx.field(static=True)

    @property
    def in_dim(self) -> int:
        """``d``: entries of one point."""
        return int(math.prod(self.in_shape))

    @property
    def out_dim(self) -> int:  # pragma: no cover - every subclass defines it
        """``m``: entries of one measurement."""
        raise NotImplementedError

    def matvec(self, x):
        """``A x`` ``[m]`` for one point ``x`` (any shape with ``d`` entries)."""
        raise NotImplementedError  # pragma: no cover

    def rmatvec(self, y):
        """``A^T y`` ``[d]`` (flat) for one measurement-space vector ``y`` ``[m]``."""
        raise NotImplementedError  # pragma: no cover

    def __call__(self, x):
        """``A x`` (as :meth:`matvec`)."""
        return self.matvec(x)

    def dense(self):
        """The matrix ``A`` ``[m, d]`` (applies :meth:`matvec` to the columns of the identity)."""
        eye = jnp.eye(self.in_dim, dtype=jnp.result_type(float))
        return jax.vmap(self.matvec, in_axes=1, out_axes=1)(eye)

    def pinv(self, r):
        """``A^+ r = A^T u`` with ``(A A^T) u = r`` solved by conjugate gradients (at most ``min(4 m + 20, 500)`` iterations).

        The least-norm ``x`` with ``A x = r`` when ``A`` has full row rank."""
        u, _ = jax.scipy.sparse.linalg.cg(lambda v: self.matvec(self.rmatvec(v)), r, tol=1e-12,
                                          maxiter=min(4 * self.out_dim + 20, 500))
        return self.rmatvec(u)

    def norm_sq(self) -> float:
        """``||A||_2^2``, the largest eigenvalue of ``A^T A`` (power iteration, 300 steps; host float)."""
        return float(_power_iteration(self))

    def row_norms_sq(self):
        """``[m]``: the squared norms ``||a_j||^2`` of the rows of ``A`` (``diag(A A^T)``; from :meth:`dense` here,
        exact without the matrix in the structured operators)."""
        return jnp.sum(self.dense() ** 2, axis=1)


@eqx.filter_jit
def _power_iteration(op):
    v = jnp.cos(jnp.arange(op.in_dim, dtype=jnp.result_type(float)) * 1.2345) + 0.5
    v = v / jnp.linalg.norm(v)

    def body(_, v):
        w = op.rmatvec(op.matvec(v))
        return w / jnp.maximum(jnp.linalg.norm(w), 1e-300)

    v = jax.lax.fori_loop(0, 300, body, v)
    return jnp.vdot(op.matvec(v), op.matvec(v))


class Dense(LinearOperator):
    """A dense matrix ``A`` ``[m, d]``; ``shape`` (default ``(d,)``) is the event shape of the points it measures.

    ``pinv`` uses the Moore–Penrose pseudo-inverse computed once at construction (SVD, relative cutoff 1e-12)."""

    matrix: jax.Array
    pinv_matrix: jax.Array

    def __init__(self, matrix, shape=None):
        a = _as_float(matrix)
        if a.ndim != 2:
            raise ValueError(f"Dense: A must be a matrix [m, d], got shape {a.shape}")
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"Dense: A must have at least one row and one column, got shape {a.shape}")
        concrete = not isinstance(a, jax.core.Tracer)
        if concrete and not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError("Dense: A has non-finite entries")
        shape = (a.shape[1],) if shape is None else point_shape(shape, "Dense", "shape")
        if math.prod(shape) != a.shape[1]:
            raise ValueError(f"Dense: shape {shape} has {math.prod(shape)} entries but A has {a.shape[1]} columns")
        self.in_shape = shape
        self.matrix = a
        self.pinv_matrix = (jnp.asarray(np.linalg.pinv(np.asarray(a, np.float64), rcond=1e-12), a.dtype) if concrete
                            else jnp.linalg.pinv(a))

    @property
    def out_dim(self) -> int:
        """Rows of ``A``."""
        return int(self.matrix.shape[0])

    def matvec(self, x):
        """``A x``."""
        return self.matrix @ jnp.reshape(x, (-1,))

    def rmatvec(self, y):
        """``A^T y``."""
        return self.matrix.T @ y

    def dense(self):
        """The matrix itself."""
        return self.matrix

    def pinv(self, r):
        """``A^+ r`` with the stored pseudo-inverse."""
        return self.pinv_matrix @ r

    def norm_sq(self) -> float:
        """``sigma_max(A)^2`` (SVD, host)."""
        return float(np.linalg.norm(np.asarray(self.matrix, np.float64), 2) ** 2)

    def row_norms_sq(self):
        """``sum_i A_ji^2`` per row."""
        return jnp.sum(self.matrix**2, axis=1)


class Mask(LinearOperator):
    """Inpainting: observe the entries of a point where ``mask`` is True, ``A x = x[mask]`` (row-major order).

    ``A A^T = I``, so ``A^+ = A^T`` (zero-fill) and ``||A||^2 = 1``."""

    index: jax.Array

    def __init__(self, mask):
        m = np.asarray(mask)
        if m.dtype != bool:
            raise ValueError(f"Mask: mask must be a boolean array (True = observed), got dtype {m.dtype}")
        if m.ndim < 1:
            raise ValueError("Mask: mask must have at least one axis (the point's shape)")
        if not m.any():
            raise ValueError("Mask: mask observes nothing (no True entry)")
        self.in_shape = tuple(int(s) for s in m.shape)
        self.index = jnp.asarray(np.flatnonzero(m.reshape(-1)), jnp.int32)

    @property
    def out_dim(self) -> int:
        """Number of observed entries."""
        return int(self.index.shape[0])

    def matvec(self, x):
        """The observed entries ``x[mask]``."""
        return jnp.reshape(x, (-1,))[self.index]

    def rmatvec(self, y):
        """Zero-fill: ``y`` at the observed entries, 0 elsewhere (flat)."""
        return jnp.zeros((self.in_dim,), y.dtype).at[self.index].set(y)

    def pinv(self, r):
        """``A^+ = A^T`` (zero-fill)."""
        return self.rmatvec(r)

    def norm_sq(self) -> float:
        """1."""
        return 1.0

    def row_norms_sq(self):
        """Ones (each row picks one entry)."""
        return jnp.ones((self.out_dim,), jnp.result_type(float))


def _shift(x, s, axis, circular):
    """``out[i] = x[i - s]`` along ``axis`` (periodic, or zero outside the array)."""
    out = jnp.roll(x, s, axis=axis)
    if circular or s == 0:
        return out
    n = x.shape[axis]
    idx = jnp.arange(n)
    keep = (idx - s >= 0) & (idx - s < n)
    shape = [1] * x.ndim
    shape[axis] = n
    return jnp.where(keep.reshape(shape), out, 0.0)


class Blur(LinearOperator):
    """Convolution blur ``A x = k * x`` of a signal (1-D ``shape``) or an image (2-D ``shape``), output of the same size.

    ``(A x)[i] = sum_j k[j] x[i - (j - c)]`` with ``c = (size - 1) // 2`` the kernel's centre on each axis
    (a true convolution), and ``x`` periodic (``boundary="circular"``) or zero outside (``"zero"``).
    The adjoint is the correlation with the same boundary. A circular blur is diagonalised by the DFT, so
    its ``pinv`` (``A^+ r = F^H (conj(h) / |h|^2) F r`` over the frequencies where ``|h| > 1e-8 max|h|``)
    and ``norm_sq`` (``max |h|^2``) are exact; a zero-boundary blur uses the generic ones.
    """

    kernel: jax.Array
    boundary: str = eqx.field(static=True)

    def __init__(self, kernel, shape, boundary: str = "circular"):
        shape = point_shape(shape, "Blur", "shape")
        if len(shape) not in (1, 2):
            raise ValueError(f"Blur: shape must be 1-D (signal) or 2-D (image), got {shape}")
        k = _as_float(kernel)
        if k.ndim != len(shape):
            raise ValueError(f"Blur: kernel must have {len(shape)} axes for shape {shape}, got shape {k.shape}")
        if any(ks > s for ks, s in zip(k.shape, shape)):
            raise ValueError(f"Blur: kernel shape {k.shape} is larger than the point's shape {shape}")
        if not isinstance(k, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(k))):
            raise ValueError("Blur: kernel has non-finite entries")
        if boundary not in ("circular", "zero"):
            raise ValueError(f"Blur: boundary must be 'circular' or 'zero', got {boundary!r}")
        self.in_shape = shape
        self.kernel = k
        self.boundary = boundary

    @property
    def out_dim(self) -> int:
        """``d`` (same-size output)."""
        return self.in_dim

    def _apply(self, x, sign):
        x = jnp.reshape(x, self.in_shape)
        circ = self.boundary == "circular"
        out = jnp.zeros_like(x)
        centres = [(s - 1) // 2 for s in self.kernel.shape]
        for j in np.ndindex(*self.kernel.shape):
            v = x
            for ax, (jj, c) in enumerate(zip(j, centres)):
                v = _shift(v, sign * (jj - c), ax, circ)
            out = out + self.kernel[j] * v
        return jnp.reshape(out, (-1,))

    def matvec(self, x):
        """The convolution ``k * x`` (flat)."""
        return self._apply(x, 1)

    def rmatvec(self, y):
        """The adjoint: correlation with ``k`` under the same boundary (flat)."""
        return self._apply(y, -1)

    def _transfer(self):
        delta = jnp.zeros((self.in_dim,), self.kernel.dtype).at[0].set(1.0)
        return jnp.fft.fftn(jnp.reshape(self.matvec(delta), self.in_shape))

    def pinv(self, r):
        """Exact through the DFT for a circular blur; conjugate gradients for a zero boundary."""
        if self.boundary != "circular":
            return super().pinv(r)
        h = self._transfer()
        a2 = jnp.abs(h) ** 2
        ok = a2 > (1e-8 * jnp.max(jnp.abs(h))) ** 2
        inv = jnp.where(ok, jnp.conj(h) / jnp.where(ok, a2, 1.0), 0.0)
        out = jnp.fft.ifftn(inv * jnp.fft.fftn(jnp.reshape(r, self.in_shape)))
        return jnp.reshape(jnp.real(out), (-1,))

    def norm_sq(self) -> float:
        """``max |h|^2`` over the DFT of the impulse response (circular); power iteration (zero boundary)."""
        if self.boundary != "circular":
            return super().norm_sq()
        return float(jnp.max(jnp.abs(self._transfer()) ** 2))

    def row_norms_sq(self):
        """``sum_j k_j^2`` over the kernel entries that land inside the point: the blur with kernel ``k^2`` applied to
        ones (the same boundary; constant for a circular blur)."""
        return Blur(self.kernel**2, self.in_shape, self.boundary).matvec(jnp.ones(self.in_shape, self.kernel.dtype))


class SubsampledFourier(LinearOperator):
    """Chosen coefficients of the unitary DFT (``fftn``, ``norm="ortho"``) of a real signal or image, as real numbers.

    ``mask`` (boolean, the point's shape) selects frequencies ``k``. Each selected ``k`` gives
    ``sqrt(2) Re X_k`` and ``sqrt(2) Im X_k``, except a self-conjugate ``k`` (``-k = k`` modulo the shape:
    ``X_k`` is real) which gives ``Re X_k`` alone; real parts first, then imaginary parts, in row-major
    order of ``k``. The rows are then orthonormal (``A A^T = I``, ``A^+ = A^T``, ``||A||^2 = 1``). Since
    ``X_{-k} = conj(X_k)`` for real points, selecting both members of a conjugate pair would measure the
    same numbers twice; that is refused.
    """

    index: jax.Array
    index_imag: jax.Array
    scale: jax.Array

    def __init__(self, mask):
        m = np.asarray(mask)
        if m.dtype != bool:
            raise ValueError(f"SubsampledFourier: mask must be a boolean array over the frequencies, got dtype {m.dtype}")
        if m.ndim < 1 or not m.any():
            raise ValueError("SubsampledFourier: mask must have at least one axis and select at least one frequency")
        shape = tuple(int(s) for s in m.shape)
        grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
        conj_flat = np.ravel_multi_index(tuple((-g) % s for g, s in zip(grids, shape)), shape).reshape(-1)
        flat = np.arange(m.size)
        sel = np.flatnonzero(m.reshape(-1))
        self_conj = conj_flat == flat
        both = [int(k) for k in sel if not self_conj[k] and m.reshape(-1)[conj_flat[k]]]
        if both:
            k = np.unravel_index(both[0], shape)
            kc = np.unravel_index(int(conj_flat[both[0]]), shape)
            raise ValueError(f"SubsampledFourier: mask selects both members of a conjugate pair, e.g. {tuple(map(int, k))} "
                             f"and {tuple(map(int, kc))} (X[-k] = conj(X[k]) for a real point): keep one of each pair")
        self.in_shape = shape
        self.index = jnp.asarray(sel, jnp.int32)
        self.index_imag = jnp.asarray(sel[~self_conj[sel]], jnp.int32)
        self.scale = jnp.asarray(np.where(self_conj[sel], 1.0, math.sqrt(2.0)), jnp.result_type(float))

    @property
    def out_dim(self) -> int:
        """Real parts of the selected frequencies plus imaginary parts of the non-self-conjugate ones."""
        return int(self.index.shape[0] + self.index_imag.shape[0])

    def matvec(self, x):
        """``[scale Re F(x)_S, sqrt(2) Im F(x)_S']`` with ``F`` the unitary DFT."""
        f = jnp.fft.fftn(jnp.reshape(x, self.in_shape), norm="ortho").reshape(-1)
        return jnp.concatenate([self.scale * jnp.real(f[self.index]),
                                math.sqrt(2.0) * jnp.imag(f[self.index_imag])]).astype(self.scale.dtype)

    def rmatvec(self, y):
        """``Re F^H z`` with ``z`` the zero-filled complex coefficients built from ``y`` (the exact adjoint)."""
        n_re = self.index.shape[0]
        ctype = jnp.result_type(y.dtype, jnp.complex64)
        z = jnp.zeros((self.in_dim,), ctype).at[self.index].add(self.scale * y[:n_re])
        z = z.at[self.index_imag].add(1j * math.sqrt(2.0) * y[n_re:])
        return jnp.real(jnp.fft.ifftn(z.reshape(self.in_shape), norm="ortho")).reshape(-1).astype(y.dtype)

    def pinv(self, r):
        """``A^+ = A^T`` (orthonormal rows)."""
        return self.rmatvec(r)

    def norm_sq(self) -> float:
        """1 (orthonormal rows)."""
        return 1.0

    def row_norms_sq(self):
        """Ones (orthonormal rows)."""
        return jnp.ones((self.out_dim,), self.scale.dtype)
