"""Scale offsets: the encoder's per tile, stage and channel shift of the model's log-scales, and its search.

For each tile, stage and channel the encoder may shift the log-scales by one of SCALE_OFFSETS (whole steps of the
coder's log-scale grid), coded at 8-bit frequencies (index NO_SHIFT is by far the cheapest), so a model that is over-
or under-confident on some image pays little for it. Only the encoder searches; the decoder reads the choice.
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
SEARCH_PIXELS = 1 << 14             # the choice is made on at most about this many pixels of a batch's stage


def choose_offsets(x: np.ndarray, mix: Mixture, mask: np.ndarray | None = None) -> np.ndarray:
    """Per tile and channel, the index into SCALE_OFFSETS that codes the stage's pixels ``x`` (B, C, h, w) in the
    fewest bits, the offset's own cost included; (B, C) int64. ``mix``: the stage's mixture (NumPy), of C or more
    channels; ``mask`` (B, h, w): the real pixels.

    Estimated in float32 on a strided subset of at most about SEARCH_PIXELS pixels of the batch, by a coarse-to-fine
    search (every third offset, then the neighbours of the best), which assumes the cost is unimodal in the offset.
    """
    b, c, h, w = x.shape
    step = max(1, math.ceil(math.sqrt(b * h * w / SEARCH_PIXELS)))
    sub = lambda a: a[..., ::step, ::step]
    x, mix = sub(x), mix.map(sub)
    weight = np.ones((b, 1) + x.shape[2:], np.float32) if mask is None else sub(mask)[:, None].astype(np.float32)
    means = np.stack([mix.channel_mean(x, k) for k in range(c)], axis=2)
    centered = (x[:, None] - means).astype(np.float32)
    # each bin as sigma(upper / s) - sigma(lower / s), mirrored above the mean (where both are near 1) so that the
    # difference keeps its precision: upper = 0.5 - |x - mean|, lower = upper - 1; the outer bins are open
    above = centered > 0
    upper = np.abs(centered, out=centered)
    np.subtract(np.float32(0.5), upper, out=upper)
    lower = upper - np.float32(1)
    first, last = x[:, None] == 0, x[:, None] == 255
    upper[above & first | ~above & last] = np.inf
    lower[above & last | ~above & first] = -np.inf
    logits = mix.logit_weights[:, :, :c]
    logits = (logits - logits.max(axis=1, keepdims=True)).astype(np.float32)
    log_scales, offsets = mix.log_scales[:, :, :c].astype(np.float32), SCALE_OFFSETS.astype(np.float32)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    offset_bits = OFFSET_NATS / math.log(2)

    def cost(idx: np.ndarray) -> np.ndarray:
        """Costs (m, B, C) of m offset indices per tile and channel (m, B, C), in one vectorized evaluation."""
        inv_s = log_scales + offsets[idx][:, :, None, :, None, None]
        np.clip(inv_s, *LOG_SCALE_RANGE, out=inv_s)
        np.negative(inv_s, out=inv_s)
        np.exp(inv_s, out=inv_s)
        with np.errstate(over="ignore", invalid="ignore"):
            p = _sigmoid(upper * inv_s) - _sigmoid(lower * inv_s)
        prob = np.maximum((weights * p).sum(axis=2), np.float32(1e-30))
        return -(np.log2(prob) * weight).sum((-2, -1), dtype=np.float64) * step ** 2 + offset_bits[idx]

    coarse = np.arange(1, len(SCALE_OFFSETS), 3)
    costs = cost(np.broadcast_to(coarse[:, None, None], (coarse.size, b, c)))
    idx = coarse[costs.argmin(0)]
    best = costs.min(0)
    sides = np.clip(np.stack([idx - 1, idx + 1]), 0, len(SCALE_OFFSETS) - 1)
    for side, side_cost in zip(sides, cost(sides)):
        idx = np.where(side_cost < best, side, idx)
        best = np.minimum(side_cost, best)
    return idx


def _sigmoid(v: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-v)), in place; 0 at -inf, 1 at +inf."""
    np.negative(v, out=v)
    np.exp(v, out=v)
    v += 1
    return np.reciprocal(v, out=v)
