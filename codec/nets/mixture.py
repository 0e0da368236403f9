"""The pixel distribution of one stage: a discretized logistic mixture per subpixel with linear channel dependence
(PixelCNN++), as arrays of either backend (NumPy float64 on the coder's grids, or torch tensors in training).

Parameters are in pixel levels: means in levels, log-scales natural in levels.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class Mixture:
    """Shapes: ``logit_weights``, ``means``, ``log_scales``: (B, K, C, h, w); ``coefficients``: (B, K, C(C-1)/2, h,
    w), the weights of earlier channels (in levels from 127.5) in later channels' means: (G|R, B|R, B|G)."""
    logit_weights: object
    means: object
    log_scales: object
    coefficients: object

    def channel_mean(self, x, c: int):
        """Means (B, K, h, w) of channel c with the linear channel dependence applied, given the stage's pixels x
        (B, C', h, w) of the channels before it (true or decoded). In NumPy the sums are exact dyadic numbers in
        float64: the coefficients are on a 2^-14 grid."""
        mean = self.means[:, :, c]
        first = c * (c - 1) // 2            # coefficients of channel c: (c, 0), (c, 1), ...
        for j in range(c):
            mean = mean + self.coefficients[:, :, first + j] * (x[:, None, j] - 127.5)
        return mean

    def with_log_scales(self, log_scales) -> Mixture:
        return replace(self, log_scales=log_scales)

    def with_means(self, c: int, shift) -> Mixture:
        """Every component's mean of channel c shifted by ``shift`` (B,), levels (NumPy)."""
        means = self.means.copy()
        means[:, :, c] += shift[:, None, None, None]
        return replace(self, means=means)

    def map(self, fn) -> Mixture:
        return Mixture(*(fn(v) for v in (self.logit_weights, self.means, self.log_scales, self.coefficients)))
