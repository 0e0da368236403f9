"""Offsets: the encoder's per tile, stage and channel shift of the model's means and log-scales, and their search.

For each tile, stage and channel the encoder may shift every component's mean by one of MEAN_OFFSETS (levels) and
its log-scale by one of SCALE_OFFSETS (whole steps of the coder's log-scale grid), each index coded at 8-bit
frequencies (no shift is by far the cheapest), so a model that is biased, over- or under-confident on some image
pays little for it. Only the encoder searches; the decoder reads the choices.
"""
from __future__ import annotations

import math

import numpy as np

from ..entropy.grids import LOG_SCALE_RANGE, LOG_SCALE_STEP
from ..nets.mixture import Mixture

SCALE_OFFSETS = np.arange(-4, 11) * 2 * LOG_SCALE_STEP
NO_SHIFT = 4
SCALE_FREQS = np.where(np.arange(len(SCALE_OFFSETS)) == NO_SHIFT, 242, 1)   # sums to 2^8
SCALE_CDF = np.concatenate([[0], np.cumsum(SCALE_FREQS)])
OFFSET_NATS = -np.log(SCALE_FREQS / SCALE_FREQS.sum())
MEAN_OFFSETS = np.array([-3, -2, -1.5, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 1.5, 2, 3])
NO_MEAN_SHIFT = 6
MEAN_FREQS = np.where(np.arange(len(MEAN_OFFSETS)) == NO_MEAN_SHIFT, 244, 1)  # sums to 2^8
MEAN_CDF = np.concatenate([[0], np.cumsum(MEAN_FREQS)])
SEARCH_PIXELS = 1 << 14             # the choice is made on at most about this many pixels of a batch's stage


def choose_offsets(x: np.ndarray, mix: Mixture, mask: np.ndarray | None = None,
                   means: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
    """Per tile and channel, (the index into MEAN_OFFSETS, the index into SCALE_OFFSETS) that code the stage's
    pixels ``x`` (B, C, h, w) in the fewest bits, the offsets' own costs included; (B, C) int64 each, the first
    None unless ``means``. ``mix``: the stage's mixture (NumPy), of C or more channels; ``mask`` (B, h, w): the real
    pixels.

    Estimated in float32 on a strided subset of at most about SEARCH_PIXELS pixels of the batch, the mean shift
    first (at no scale shift), then the scale shift, each by a coarse-to-fine search (every third offset, then the
    neighbours of the best), which assumes the cost is unimodal in the offset.
    """
    b, c, h, w = x.shape
    step = max(1, math.ceil(math.sqrt(b * h * w / SEARCH_PIXELS)))
    sub = lambda a: a[..., ::step, ::step]
    x, mix = sub(x), mix.map(sub)
    weight = np.ones((b, 1) + x.shape[2:], np.float32) if mask is None else sub(mask)[:, None].astype(np.float32)
    centered = (x[:, None] - np.stack([mix.channel_mean(x, k) for k in range(c)], axis=2)).astype(np.float32)
    first, last = x[:, None] == 0, x[:, None] == 255
    logits = mix.logit_weights[:, :, :c]
    logits = (logits - logits.max(axis=1, keepdims=True)).astype(np.float32)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    log_scales = mix.log_scales[:, :, :c].astype(np.float32)

    def cost(shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Bits (m, B, C) of the pixels under m pairs of mean shifts and scale offsets per tile and channel
        ((m or 1, B, C) each), in one vectorized evaluation."""
        # each bin as sigma(upper / s) - sigma(lower / s), mirrored above the mean (where both are near 1) so that
        # the difference keeps its precision: upper = 0.5 - |x - mean|, lower = upper - 1; the outer bins are open
        moved = centered - shift[:, :, None, :, None, None]
        above = moved > 0
        upper = np.abs(moved, out=moved)
        np.subtract(np.float32(0.5), upper, out=upper)
        lower = upper - np.float32(1)
        upper[above & first | ~above & last] = np.inf
        lower[above & last | ~above & first] = -np.inf
        inv_s = log_scales + scale[:, :, None, :, None, None]
        np.clip(inv_s, *LOG_SCALE_RANGE, out=inv_s)
        np.negative(inv_s, out=inv_s)
        np.exp(inv_s, out=inv_s)
        with np.errstate(over="ignore", invalid="ignore"):
            p = _sigmoid(upper * inv_s) - _sigmoid(lower * inv_s)
        prob = np.maximum((weights * p).sum(axis=2), np.float32(1e-30))
        return -(np.log2(prob) * weight).sum((-2, -1), dtype=np.float64) * step ** 2

    none = np.zeros((1, b, c), np.float32)
    shifts = None
    if means:
        shifts = _search(MEAN_OFFSETS, MEAN_FREQS, lambda i: cost(MEAN_OFFSETS[i].astype(np.float32), none), (b, c))
        none = MEAN_OFFSETS[shifts][None].astype(np.float32)
    scales = _search(SCALE_OFFSETS, SCALE_FREQS, lambda i: cost(none, SCALE_OFFSETS[i].astype(np.float32)), (b, c))
    return shifts, scales


def _search(offsets: np.ndarray, freqs: np.ndarray, cost, shape: tuple[int, int]) -> np.ndarray:
    """The index (B, C) of the offset whose ``cost`` plus its own bits is lowest: every third offset (the cheapest,
    no shift, among them), then the neighbours of the best."""
    own = -np.log2(freqs / freqs.sum())
    total = lambda idx: cost(idx) + own[idx]
    coarse = np.arange(np.argmax(freqs) % 3, len(offsets), 3)
    costs = total(np.broadcast_to(coarse[:, None, None], (coarse.size, *shape)))
    idx, best = coarse[costs.argmin(0)], costs.min(0)
    sides = np.clip(np.stack([idx - 1, idx + 1]), 0, len(offsets) - 1)
    for side, side_cost in zip(sides, total(sides)):
        idx = np.where(side_cost < best, side, idx)
        best = np.minimum(side_cost, best)
    return idx


def _sigmoid(v: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-v)), in place; 0 at -inf, 1 at +inf."""
    np.negative(v, out=v)
    np.exp(v, out=v)
    v += 1
    return np.reciprocal(v, out=v)
