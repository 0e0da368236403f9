"""The pixel likelihood in torch (training and bounds): discretized logistic mixtures with linear channel dependence,
and the scale calibration (``scales``) applied to them.

Parameters are in pixel levels: means in levels, log-scales natural in levels.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .codecs import LOG_SCALE_RANGE
from .scales import OFFSET_NATS, SCALE_OFFSETS, choose_offsets


@dataclass
class Mixture:
    """Per-subpixel discretized logistic mixture of one stage, before the channel dependence is applied.

    Shapes: ``logit_weights``, ``means``, ``log_scales``: (B, K, C, h, w); ``coefficients``: (B, K, C(C-1)/2, h, w),
    the weights of earlier channels (in levels from 127.5) in later channels' means.
    """
    logit_weights: torch.Tensor
    means: torch.Tensor
    log_scales: torch.Tensor
    coefficients: torch.Tensor

    def map(self, fn) -> Mixture:
        return Mixture(*(fn(v) for v in (self.logit_weights, self.means, self.log_scales, self.coefficients)))


def channel_means(x: torch.Tensor, mix: Mixture) -> torch.Tensor:
    """Means with the linear channel dependence applied, given the (true or decoded) pixels x of the stage."""
    ch = x.shape[1]
    if ch == 1:
        return mix.means
    u = (x.float() - 127.5).unsqueeze(1)                          # (B, 1, C, h, w)
    m, a = mix.means, mix.coefficients
    g = m[:, :, 1] + a[:, :, 0] * u[:, :, 0]
    b = m[:, :, 2] + a[:, :, 1] * u[:, :, 0] + a[:, :, 2] * u[:, :, 1]
    return torch.stack([m[:, :, 0], g, b], dim=2)


def mixture_log_prob(x: torch.Tensor, mix: Mixture) -> torch.Tensor:
    """log P(x) per subpixel (B, C, h, w) under the discretized logistic mixture (256 levels, open outer bins)."""
    xf = x.float().unsqueeze(1)
    centered = xf - channel_means(x, mix)
    inv_s = torch.exp(-mix.log_scales)
    plus = inv_s * (centered + 0.5)
    minus = inv_s * (centered - 0.5)
    log_cdf_plus = plus - F.softplus(plus)                        # log sigmoid(plus): the bin of level 0
    log_sf_minus = -F.softplus(minus)                             # log (1 - sigmoid(minus)): the bin of level 255
    delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * centered
    log_pdf_mid = mid - mix.log_scales - 2.0 * F.softplus(mid)
    inner = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_pdf_mid)
    lp = torch.where(xf < 0.5, log_cdf_plus, torch.where(xf > 254.5, log_sf_minus, inner))
    return torch.logsumexp(lp + F.log_softmax(mix.logit_weights, dim=1), dim=1)


def shift_scales(mix: Mixture, picks: torch.Tensor) -> Mixture:
    """``mix`` with the log-scales of each tile and channel shifted by SCALE_OFFSETS[picks] (B, C), within the
    coder's range."""
    offsets = torch.from_numpy(SCALE_OFFSETS).to(mix.log_scales)[picks.to(mix.log_scales.device)]
    shifted = mix.log_scales + offsets[:, None, :, None, None]
    return replace(mix, log_scales=shifted.clamp(*LOG_SCALE_RANGE))


def choose_scale_offsets(x: torch.Tensor, mix: Mixture, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``scales.choose_offsets`` for a stage's tensors: (B, C) int64 on the CPU."""
    arrays = {k: v.detach().cpu().double().numpy() for k, v in vars(mix).items()}
    return torch.from_numpy(choose_offsets(x.detach().cpu().numpy(), arrays,
                                           None if mask is None else mask.cpu().numpy()))


def calibrated(x: torch.Tensor, mix: Mixture, mask: torch.Tensor | None) -> tuple[Mixture, torch.Tensor]:
    """The stage's mixture with the encoder's scale offsets, and their cost in nats (B, C)."""
    picks = choose_scale_offsets(x, mix, mask)
    return shift_scales(mix, picks), torch.from_numpy(OFFSET_NATS)[picks]
