"""Active measurement design: which block of the unknown to measure next, from the current posterior samples.

For candidate blocks ``b`` (sets of entries; e.g. image patches for inpainting) observed as
``y_b = x_b + sigma_y n``, the expected information gain of measuring ``b`` under a Gaussian approximation of
the posterior is ``EIG_b = 1/2 log det(I + C_bb / sigma_y^2)`` (Lindley 1956; for Gaussian models it is
exact, and maximizing it is maximum-entropy sampling, Shewry & Wynn 1987), with ``C_bb`` the covariance of the
block's entries across the posterior samples: the next block is where the samples disagree most. Entries
already observed are left out of every block.
"""
from __future__ import annotations

import numpy as np


def _check(samples, blocks, sigma_y, observed):
    s = np.asarray(samples, dtype=np.float64)
    b = np.asarray(blocks)
    if b.dtype != bool or b.ndim < 2:
        raise ValueError(f"block_scores: blocks must be a boolean array [num_blocks, *shape], got dtype {b.dtype} "
                         f"and shape {b.shape}")
    if s.ndim < 2 or s.shape[1:] != b.shape[1:]:
        raise ValueError(f"block_scores: samples must be [n, *shape] with the blocks' shape {b.shape[1:]}, "
                         f"got {s.shape}")
    if s.shape[0] < 2:
        raise ValueError("block_scores: need at least 2 samples to estimate their spread")
    if not np.all(np.isfinite(s)):
        raise ValueError("block_scores: samples have non-finite values")
    if not (np.isfinite(sigma_y) and sigma_y > 0):
        raise ValueError(f"block_scores: sigma_y must be positive and finite, got {sigma_y}")
    obs = np.zeros(b.shape[1:], bool) if observed is None else np.asarray(observed)
    if obs.dtype != bool or obs.shape != b.shape[1:]:
        raise ValueError(f"block_scores: observed must be a boolean mask of shape {b.shape[1:]}")
    return s.reshape(s.shape[0], -1), b.reshape(b.shape[0], -1), obs.reshape(-1)


def block_scores(samples, blocks, sigma_y: float, observed=None) -> np.ndarray:
    """``[num_blocks]`` expected information gains ``1/2 log det(I + C_bb / sigma_y^2)`` (0 for a block with no
    unobserved entry).

    Args:
      samples: posterior samples ``[n, *shape]`` (e.g. from :func:`samplax.diffusion.inverse.sample`).
      blocks: boolean ``[num_blocks, *shape]``, the candidate measurement blocks.
      sigma_y: the noise standard deviation of the next measurement.
      observed: optional boolean mask ``shape`` of entries already measured (left out of the blocks).
    """
    s, b, obs = _check(samples, blocks, sigma_y, observed)
    out = np.zeros(b.shape[0])
    for i, blk in enumerate(b):
        idx = np.flatnonzero(blk & ~obs)
        if idx.size == 0:
            continue
        c = np.atleast_2d(np.cov(s[:, idx].T))
        _, logdet = np.linalg.slogdet(np.eye(idx.size) + c / sigma_y**2)
        out[i] = 0.5 * logdet
    return out


def next_block(samples, blocks, sigma_y: float, observed=None) -> int:
    """The index of the block with the largest expected information gain (:func:`block_scores`)."""
    return int(np.argmax(block_scores(samples, blocks, sigma_y, observed)))
