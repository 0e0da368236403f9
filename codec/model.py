"""The VAE: a latent z at stride 2^levels and a decoder over nested 2x2 sub-grids.

Pixels are decoded in ``1 + 3 * (coarse_levels + levels)`` stages (DESIGN.md §4). The first stage predicts the
pixels on the coarsest grid (stride ``S = 2**(levels + coarse_levels)``) from z alone. Each level then fills the
grid of half its stride in three stages -- the diagonal phase (1,1), then (0,1), then (1,0) -- each conditioned on
z and on every pixel decoded so far; the coarse levels, above z's stride, reuse the networks of the first level
below it. Within a pixel the channels are ordered (R, G, B): the means of G depend linearly on R and those of B on R
and G (PixelCNN++), so one network pass per stage gives the distribution of every subpixel of that stage.

All networks run on space-to-depth views at the resolution of their stage, which keeps training and coding cheap.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PHASES = ((1, 1), (0, 1), (1, 0))   # order in which a level fills the three non-anchor phases of each 2x2 cell
BIN = 1.0 / 255.0                   # half a level in the [-1, 1] pixel scale
LOG_SCALE_MIN = -7.0                # lower clamp of the logistic log-scale, [-1, 1] scale (PixelCNN++)
# Scale calibration: each tile, stage and channel may shift its log-scales by one of these offsets, chosen by the
# encoder and coded at 8-bit frequencies (index 4, no shift, is by far the cheapest), so a model that is over- or
# under-confident on some image pays little for it.
SCALE_OFFSETS = np.arange(-4, 11) * 0.05
SCALE_FREQS = np.where(np.arange(15) == 4, 242, 1)
OFFSET_NATS = -np.log(SCALE_FREQS / SCALE_FREQS.sum())
CALIBRATION_PIXELS = 1 << 14        # the choice is made on at most about this many pixels of a batch's stage


@dataclass(frozen=True)
class Config:
    channels: int = 3       # 1 (grayscale) or 3 (RGB)
    levels: int = 2         # sub-grid levels; z and the first stage live at stride 2**levels
    coarse_levels: int = 0  # extra levels above z's stride that fill its grid from one 2**coarse_levels sparser
    latent: int = 8         # latent channels
    width: int = 64         # channels of the encoder and the z-feature network
    stage_width: int = 48   # channels of each stage network
    stage_blocks: int = 1   # residual blocks per stage network
    mixtures: int = 5       # logistic mixture components per subpixel

    @property
    def stride(self) -> int:
        return 2 ** self.levels

    @property
    def grid(self) -> int:
        """Stride of the first stage's pixels; tiles are padded to a multiple of it."""
        return self.stride << self.coarse_levels

    @property
    def coefficients(self) -> int:
        """Linear channel-dependence coefficients per mixture component (G|R, B|R, B|G)."""
        return self.channels * (self.channels - 1) // 2

    @property
    def params_per_pixel(self) -> int:
        return self.mixtures * (3 * self.channels + self.coefficients)


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h):
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


def _net(cin: int, width: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), *[ResBlock(width) for _ in range(blocks)],
                         nn.ReLU(), nn.Conv2d(width, cout, 1))


@dataclass
class Mixture:
    """Per-subpixel discretized logistic mixture of one stage, before the channel dependence is applied.

    Shapes: ``logit_weights``, ``means``, ``log_scales``: (B, K, C, h, w), means in the [-1, 1] pixel scale;
    ``coefficients``: (B, K, C(C-1)/2, h, w), the weights of earlier channels in later channels' means.
    """
    logit_weights: torch.Tensor
    means: torch.Tensor
    log_scales: torch.Tensor
    coefficients: torch.Tensor


class VAE(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = c = config
        s = c.stride
        self.encoder = nn.Sequential(nn.Conv2d(c.channels * s * s, c.width, 3, padding=1), ResBlock(c.width),
                                     ResBlock(c.width), nn.ReLU(), nn.Conv2d(c.width, 2 * c.latent, 1))
        # z features at every stage resolution: stride S, S/2, ..., 2
        self.z_features = nn.ModuleList()
        self.z_features.append(_net(c.latent, c.width, c.stage_width, 1))
        for _ in range(c.levels - 1):
            self.z_features.append(nn.Sequential(nn.ReLU(), nn.Conv2d(c.stage_width, 4 * c.stage_width, 1),
                                                 nn.PixelShuffle(2)))
        p = c.params_per_pixel
        self.stages = nn.ModuleList([_net(c.stage_width, c.stage_width, p, c.stage_blocks)])
        for _ in range(c.levels):
            for k in range(len(PHASES)):
                cin = c.stage_width + c.channels * (1 + k)   # z features, the anchor grid, earlier phases
                self.stages.append(_net(cin, c.stage_width, p, c.stage_blocks))

    # ---- posterior and prior ------------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log std of the diagonal Gaussian p(z|x); x is uint8-valued (B, C, H, W)."""
        h = self.encoder(F.pixel_unshuffle(to_unit(x), self.config.stride))
        mean, log_std = h.chunk(2, dim=1)
        return mean, log_std.clamp(-8.0, 2.0)

    def features(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Features of z for every stage resolution, coarsest first."""
        hs = [self.z_features[0](z)]
        for up in self.z_features[1:]:
            hs.append(up(hs[-1]))
        return hs

    # ---- the stages -----------------------------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return 1 + len(PHASES) * (self.config.coarse_levels + self.config.levels)

    def stage_grid(self, t: int) -> tuple[int, tuple[int, int]]:
        """(stride, offset) of the pixels that stage t codes: pixels x[oy::stride, ox::stride]."""
        s = self.config.grid
        if t == 0:
            return s, (0, 0)
        level, k = divmod(t - 1, len(PHASES))
        stride = s >> level
        dy, dx = PHASES[k]
        return stride, (dy * stride // 2, dx * stride // 2)

    def stage_context(self, x: torch.Tensor, t: int) -> list[torch.Tensor]:
        """The decoded sub-grids stage t sees (anchor grid, then earlier phases of its level), from full x."""
        if t == 0:
            return []
        stride, _ = self.stage_grid(t)
        k = (t - 1) % len(PHASES)
        return [x[..., ::stride, ::stride]] + [x[..., dy * stride // 2::stride, dx * stride // 2::stride]
                                               for dy, dx in PHASES[:k]]

    def stage(self, t: int, features: list[torch.Tensor], context: list[torch.Tensor]) -> Mixture:
        """Distribution of the pixels of stage t given z's features and the decoded sub-grids (uint8-valued).

        The coarse levels (above z's stride) reuse the networks of the first level below it, on z's features
        subsampled to their grid: image statistics are close to scale-invariant, so one interpolator serves them all.
        """
        coarse = self.config.coarse_levels
        level, k = (0, -1) if t == 0 else divmod(t - 1, len(PHASES))
        step = 1 << max(0, coarse - level)
        h = features[max(0, level - coarse)][..., ::step, ::step]
        net = self.stages[0 if t == 0 else 1 + len(PHASES) * max(0, level - coarse) + k]
        return self._mixture(net(torch.cat([h] + [to_unit(c) for c in context], dim=1)))

    def _mixture(self, out: torch.Tensor) -> Mixture:
        c = self.config
        b, _, h, w = out.shape
        out = out.view(b, c.mixtures, 3 * c.channels + c.coefficients, h, w)
        ch = c.channels
        return Mixture(logit_weights=out[:, :, :ch], means=out[:, :, ch:2 * ch],
                       log_scales=out[:, :, 2 * ch:3 * ch].clamp(min=LOG_SCALE_MIN),
                       coefficients=torch.tanh(out[:, :, 3 * ch:]))

    # ---- training objective ---------------------------------------------------------------------------------------
    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                       channels: int | None = None, calibrated: bool = False) -> torch.Tensor:
        """log q(x|z) in nats per image, (B,), all stages teacher-forced on x.

        ``mask`` (B, H, W) selects the real (not padding) pixels; only the first ``channels`` channels count
        (grayscale images run through an RGB model with their plane replicated and only R is coded).
        ``calibrated``: with the codec's scale calibration (each row of ``x`` one tile), the offsets' cost included.
        """
        feats = self.features(z)
        total = 0.0
        for t in range(self.num_stages):
            stride, (oy, ox) = self.stage_grid(t)
            xs = x[..., oy::stride, ox::stride]
            ms = None if mask is None else mask[:, oy::stride, ox::stride]
            mix = self.stage(t, feats, self.stage_context(x, t))
            if calibrated:
                picks = calibrate(xs, mix, ms)
                mix = shift_scales(mix, torch.from_numpy(SCALE_OFFSETS)[picks])
                total = total - torch.from_numpy(OFFSET_NATS)[picks][:, :channels].sum(1).to(x.device)
            lp = mixture_log_prob(xs, mix)[:, :channels]
            if ms is not None:
                lp = lp * ms[:, None]
            total = total + lp.flatten(1).sum(1)
        return total

    def elbo_terms(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(-log q(x|z), KL(p(z|x) || N(0, I))) in nats per image."""
        mean, log_std = self.posterior(x)
        z = mean + torch.randn_like(mean) * log_std.exp() if sample else mean
        kl = 0.5 * (mean ** 2 + (2 * log_std).exp() - 1 - 2 * log_std).flatten(1).sum(1)
        return -self.log_likelihood(x, z), kl


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8-valued pixels to the [-1, 1] scale."""
    return x.float() / 127.5 - 1.0


def channel_means(x: torch.Tensor, mix: Mixture) -> torch.Tensor:
    """Means with the linear channel dependence applied, given the (true or decoded) pixels x of the stage."""
    ch = x.shape[1]
    if ch == 1:
        return mix.means
    u = to_unit(x).unsqueeze(1)                                   # (B, 1, C, h, w)
    m, a = mix.means, mix.coefficients
    g = m[:, :, 1] + a[:, :, 0] * u[:, :, 0]
    b = m[:, :, 2] + a[:, :, 1] * u[:, :, 0] + a[:, :, 2] * u[:, :, 1]
    return torch.stack([m[:, :, 0], g, b], dim=2)


def mixture_log_prob(x: torch.Tensor, mix: Mixture) -> torch.Tensor:
    """log P(x) per subpixel (B, C, h, w) under the discretized logistic mixture (256 levels, open outer bins)."""
    u = to_unit(x).unsqueeze(1)
    centered = u - channel_means(x, mix)
    inv_s = torch.exp(-mix.log_scales)
    plus = inv_s * (centered + BIN)
    minus = inv_s * (centered - BIN)
    log_cdf_plus = plus - F.softplus(plus)                        # log sigmoid(plus): the bin of level 0
    log_sf_minus = -F.softplus(minus)                             # log (1 - sigmoid(minus)): the bin of level 255
    delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * centered
    log_pdf_mid = mid - mix.log_scales - 2.0 * F.softplus(mid) + math.log(2 * BIN)
    inner = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_pdf_mid)
    lp = torch.where(u < -0.999, log_cdf_plus, torch.where(u > 0.999, log_sf_minus, inner))
    return torch.logsumexp(lp + F.log_softmax(mix.logit_weights, dim=1), dim=1)


def shift_scales(mix: Mixture, offsets: torch.Tensor) -> Mixture:
    """``mix`` with the log-scales of each tile and channel shifted by ``offsets`` (B, C)."""
    return replace(mix, log_scales=mix.log_scales + offsets.to(mix.log_scales)[:, None, :, None, None])


def calibrate(x: torch.Tensor, mix: Mixture, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per tile and channel, the index into SCALE_OFFSETS that codes the stage's pixels ``x`` (B, C, h, w) in the
    fewest bits, the offset's own cost included; (B, C) int64.

    Estimated on a strided subset of at most about CALIBRATION_PIXELS pixels of the batch, by a coarse-to-fine
    search (every third offset, then the neighbours of the best), which assumes the cost is unimodal in the offset.
    """
    b, c, h, w = x.shape
    step = max(1, math.ceil(math.sqrt(b * h * w / CALIBRATION_PIXELS)))
    sub = lambda a: a[..., ::step, ::step]
    mix = Mixture(*map(sub, (mix.logit_weights, mix.means, mix.log_scales, mix.coefficients)))
    x = sub(x)
    weight = torch.ones_like(x[:, :1], dtype=torch.float32) if mask is None else sub(mask)[:, None].float()
    offsets, nats = torch.from_numpy(SCALE_OFFSETS), torch.from_numpy(OFFSET_NATS)

    def cost(idx: torch.Tensor) -> torch.Tensor:
        lp = mixture_log_prob(x, shift_scales(mix, offsets[idx]))
        return -(lp * weight).sum((2, 3)).double().cpu() * step ** 2 + nats[idx]

    coarse = torch.arange(1, len(SCALE_OFFSETS), 3)
    costs = torch.stack([cost(torch.full((b, c), int(i))) for i in coarse], dim=-1)
    best, idx = costs.min(-1)
    idx = coarse[idx]
    for side in (idx - 1, idx + 1):
        side = side.clamp(0, len(SCALE_OFFSETS) - 1)
        side_cost = cost(side)
        idx = torch.where(side_cost < best, side, idx)
        best = torch.minimum(side_cost, best)
    return idx


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_dict(config: Config) -> dict:
    return asdict(config)
