"""scikit-learn's 8x8 handwritten digits as diffusion data: 64-d points that are images.

The data are the 1797 images of ``sklearn.datasets.load_digits`` (the UCI "optical recognition of
handwritten digits" test set, ships with scikit-learn: no download), grey levels 0..16 mapped to
``[-1, 1]`` by ``x / 8 - 1``. Points are flat ``[64]`` (the trained MLP denoiser's input); the images
are the same numbers in row-major ``8 x 8`` (:data:`SHAPE`).

The first :data:`NUM_TRAIN` images train the denoiser (:func:`data_fn`); the rest are held out
(:func:`held_out`) and give the true images of the inverse-problem pictures.

:data:`PRESET` is the training configuration of ``samplax diffusion train --data digits`` and of the named
preset ``samplax diffusion inverse --model digits``.
"""
from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.diffusion.train import TrainConfig

SHAPE = (8, 8)
DIM = 64
NUM_TRAIN = 1600

#: training configuration of the digits preset (the MLP denoiser of :mod:`samplax.diffusion.train`); ``sigma_data``
#: (the standard deviation of the training images) and ``dtype`` are added by :func:`preset_config`
PRESET = dict(dim=DIM, width=256, depth=3, emb_dim=16, loss="dsm", learning_rate=1e-3, batch_size=256,
              ema_decay=0.999)


def load() -> np.ndarray:
    """All 1797 images as ``[1797, 64]`` float64 in ``[-1, 1]`` (``x / 8 - 1``; row-major 8 x 8 pixels; a copy).

    Raises ImportError naming the package when scikit-learn is not installed."""
    return _load().copy()


@functools.lru_cache(maxsize=1)
def _load() -> np.ndarray:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits data need scikit-learn (pip install scikit-learn, or samplax[digits])") from None
    return np.asarray(load_digits().data, np.float64) / 8.0 - 1.0


def train_images() -> np.ndarray:
    """The first :data:`NUM_TRAIN` images, ``[1600, 64]``: the training set of the digits denoiser."""
    return load()[:NUM_TRAIN]


def held_out() -> np.ndarray:
    """The images after the first :data:`NUM_TRAIN`, ``[197, 64]``: never seen in training."""
    return load()[NUM_TRAIN:]


class ImageData(eqx.Module):
    """A data function ``sample(key, n) -> [n, dim]`` drawing rows of a fixed array uniformly with replacement.

    Point ``i`` is row ``randint(fold_in(key, i))``, so a batch is batch-size invariant (as the toy sets of
    :mod:`samplax.diffusion.toy2d`). The rows are data of the module (an argument of the training program,
    not a constant in it)."""

    images: jax.Array

    def __call__(self, key, n):
        """``n`` rows drawn uniformly with replacement; row ``i`` from ``fold_in(key, i)``."""
        idx = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(key, i), (), 0, self.images.shape[0]))(
            jnp.arange(int(n)))
        return self.images[idx]


def data_fn(dtype=None) -> ImageData:
    """The training data function of the digits denoiser: uniform draws of :func:`train_images`."""
    return ImageData(jnp.asarray(train_images(), dtype or jnp.result_type(float)))


def preset_config(dtype: str = "float32", **overrides) -> TrainConfig:
    """:data:`PRESET` as a :class:`~samplax.diffusion.train.TrainConfig`, with ``sigma_data`` the standard deviation of
    :func:`train_images` (EDM preconditioning) and ``dtype``; ``overrides`` replace any field."""
    return TrainConfig(**{**PRESET, "sigma_data": float(np.std(train_images())), "dtype": dtype, **overrides})
