"""Adaptive coding that the decoder repeats: while a batch of tiles is coded stage by stage, the residuals of each
tile's pixels coded so far, per context, correct the means of its pixels still to come (CALIC-style bias
cancellation). Only on tiles of ADAPTED_PIXELS or more: on CIFAR-10 and MNIST images it gains nothing, and the
encoder's mean offsets that go with it (``stages``) cost 0.1 % on CIFAR-10.

A pixel's context is its channel and the log-scale of its mixture's dominant component (one bucket per nat). Its
residual is the pixel less the mixture's mean with the channel dependence (the network's prediction), from the
coder's own integer mixture weights; pixels whose distribution reaches within SPREAD scales of 0 or 255 are left
out (clipped there, their residuals are biased even where the model is not: on MNIST digits that cost 1.2 %). A
context's correction is the mean of its residuals, shrunk to 0 by THRESHOLD standard errors (where the evidence for a
bias is weak a correction only adds noise: on photos-val, where the photo model is unbiased, every correction
costs) and towards 0 by PRIOR pixels' worth of none. The statistics are exact
integers and the correction comes from them by IEEE's basic operations (+, -, *, /, sqrt), which every machine
rounds alike: both sides compute the same corrections.
"""
from __future__ import annotations

import numpy as np

from ..entropy.codecs import mixture_weights
from ..entropy.grids import LOG_SCALE_RANGE, MEAN_STEP, WEIGHT_BITS
from ..entropy.tables import exp_table
from ..nets.mixture import Mixture

FINE, COARSE = 1 << 15, 1 << 6  # residuals in 2^-15 level (exact: means 1/64, coefficients 2^-14); squares in 1/64
PRIOR = 20                      # pixels' worth of a zero residual in every context
THRESHOLD = 3.0                 # standard errors of a context's mean residual that its correction gives up
BUCKETS = int(LOG_SCALE_RANGE[1] - LOG_SCALE_RANGE[0]) + 1
ADAPTED_PIXELS = 1 << 12        # tiles (padded) of at least this many pixels are adapted
SPREAD = 4                      # pixels predicted within this many scales of 0 or 255 are left out: their
MARGINS = SPREAD * exp_table(int(LOG_SCALE_RANGE[0]) + 1, 1, BUCKETS)      # distributions are clipped there


class Feedback:
    """The residual statistics of one batch's coding so far, per tile, channel and scale bucket (a batch may hold
    tiles of many images, each with biases of its own)."""

    def __init__(self, tiles: int, channels: int):
        self.sums = np.zeros((tiles, channels, BUCKETS), np.int64)       # residuals, 2^-15 level
        self.squares = np.zeros((tiles, channels, BUCKETS), np.int64)    # squared residuals, (1/64 level)^2
        self.counts = np.zeros((tiles, channels, BUCKETS), np.int64)

    def correct(self, mix: Mixture, channels: int) -> tuple[Mixture, np.ndarray]:
        """``mix`` with every component's mean of the first ``channels`` channels shifted by its pixel's context
        correction, and the pixels' contexts (B, C, h, w)."""
        dominant = np.argmax(mix.logit_weights[:, :, :channels], axis=1)[:, None]          # (B, 1, C, h, w)
        log_scale = np.take_along_axis(mix.log_scales[:, :, :channels], dominant, axis=1)[:, 0]
        buckets = bucket(log_scale)
        tiles, planes = np.ogrid[:len(buckets), :channels]
        means = mix.means.copy()
        means[:, :, :channels] += self.shifts()[tiles[:, :, None, None], planes[:, :, None, None], buckets][:, None]
        return Mixture(mix.logit_weights, means, mix.log_scales, mix.coefficients), buckets

    def shifts(self) -> np.ndarray:
        """Every context's correction in levels, (B, C, BUCKETS), on the 1/64 grid."""
        n = np.maximum(self.counts, 1).astype(np.float64)
        mean = self.sums / n / FINE
        spread = np.maximum(self.squares / n / COARSE ** 2 - mean * mean, 0.0)
        shrunk = np.maximum(np.abs(mean) - THRESHOLD * np.sqrt(spread / n), 0.0) * self.counts / (self.counts + PRIOR)
        return np.rint(np.copysign(shrunk, mean) / MEAN_STEP) * MEAN_STEP

    def update(self, mix: Mixture, stage: np.ndarray, real: np.ndarray, buckets: np.ndarray) -> None:
        """Add the residuals of a coded stage's real pixels (``stage`` (B, C, h, w), ``real`` (B, h, w)) from the
        network's predictions ``mix`` (uncorrected) to their contexts."""
        for c in range(stage.shape[1]):
            weights, means = mixture_weights(mix.logit_weights[:, :, c]), mix.channel_mean(stage, c)
            mean = weights[:, 0] * means[:, 0]                       # exact sums: dyadic means, integer weights
            for k in range(1, weights.shape[1]):
                mean = mean + weights[:, k] * means[:, k]
            mean = mean / (1 << WEIGHT_BITS)
            margin = MARGINS[bucket(mix.log_scales[:, :, c].max(1))]
            inside = real & (means.min(1) > margin) & (means.max(1) < 255 - margin)
            residual = stage[:, c][inside] - mean[inside]
            fine, coarse = np.rint(residual * FINE), np.rint(residual * COARSE)
            where = np.nonzero(inside)[0] * BUCKETS + buckets[:, c][inside]            # (tile, bucket), flat
            size = len(self.sums) * BUCKETS
            # float64 sums of integers are exact below 2^53 (here below 2^45: 65536 pixels of at most 2^23 each)
            self.sums[:, c] += np.bincount(where, fine, size).astype(np.int64).reshape(-1, BUCKETS)
            self.squares[:, c] += np.bincount(where, coarse * coarse, size).astype(np.int64).reshape(-1, BUCKETS)
            self.counts[:, c] += np.bincount(where, None, size).reshape(-1, BUCKETS)


def bucket(log_scale: np.ndarray) -> np.ndarray:
    """The scale bucket of log-scales (one per nat of the coder's range), int64: a pixel's context is its channel
    and the bucket of its dominant component's log-scale."""
    return np.clip(np.floor(log_scale) - LOG_SCALE_RANGE[0], 0, BUCKETS - 1).astype(np.int64)
