"""The VAE: a latent z at stride 2^levels and a decoder over nested 2x2 sub-grids, as integer-exact networks.

Pixels are decoded in ``1 + 3 * (coarse_levels + levels)`` stages (DESIGN.md §4). The first stage predicts the
pixels on the coarsest grid (stride ``S = 2**(levels + coarse_levels)``) from z alone. Each level then fills the
grid of half its stride in three stages -- the diagonal phase (1,1), then (0,1), then (1,0) -- each conditioned on
z and on every pixel decoded so far; the coarse levels, above z's stride, reuse the networks of the first level
below it. Within a pixel the channels are ordered (R, G, B): the means of G depend linearly on R and those of B on R
and G (PixelCNN++), so one network pass per stage gives the distribution of every subpixel of that stage.

All networks run on space-to-depth views at the resolution of their stage, which keeps training and coding cheap.
They are integer networks (``codec.intnet``): pixels enter as the integers 2x - 255, z on a 1/256 grid, and every
head outputs integers on the coder's own parameter grids (``codec.codecs``), so the coder's frequencies are the
same on every machine. Mixture parameters are in pixel levels: means in levels, log-scales natural in levels.
"""
from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .codecs import (LOG_SCALE_RANGE, LOG_SCALE_STEP, LOGIT_STEP, MEAN_RANGE, MEAN_STEP, POST_LOG_SIGMA_STEP,
                     POST_MEAN_RANGE, POST_MEAN_STEP)
from .config import (COEF_COUNT, COEF_STEP, COEF_TABLE, LOG_STD_RANGE, LOGIT_MAX, PHASES, PIXEL_SCALE, Z_MAX,
                     Z_STEP, Config)
from .intnet import ACT_MAX, Calibration, IntNet, QConv, Site, exact_arithmetic, mode_of, quant, set_mode, ste
from .likelihood import Mixture, calibrated, mixture_log_prob


class Up(nn.Module):
    """ReLU, 1x1 convolution and 2x pixel shuffle: z features at twice the resolution."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = QConv(width, 4 * width, 1)
        self.site = Site(width)

    def forward(self, h, in_scale, cal=None, key=""):
        if self.conv.mode == "float":
            out = F.pixel_shuffle(self.conv(F.relu(h)), 2)
            if cal is not None:
                cal.observe(key, out)
            return out
        y = self.conv(h.clamp(min=0), in_scale, torch.full_like(in_scale, ACT_MAX),
                      self.site.scale.repeat_interleave(4))
        return F.pixel_shuffle(quant(y, -ACT_MAX, ACT_MAX), 2)


class VAE(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = c = config
        s = c.stride
        self.encoder = IntNet(c.channels * s * s, c.width, 2 * c.latent, 2)
        self.z_net = IntNet(c.latent, c.width, c.stage_width, 1)      # z features at stride S
        self.ups = nn.ModuleList([Up(c.stage_width) for _ in range(c.levels - 1)])   # ... S/2, ..., 2
        p = c.params_per_pixel
        self.stages = nn.ModuleList([IntNet(c.stage_width, c.stage_width, p, c.stage_blocks)])
        for _ in range(c.levels):
            for k in range(len(PHASES)):
                cin = c.stage_width + c.channels * (1 + k)   # z features, the anchor grid, earlier phases
                self.stages.append(IntNet(cin, c.stage_width, p, c.stage_blocks))
        self._cal: Calibration | None = None
        self._init_heads()
        self._fixed_scales()

    def _init_heads(self) -> None:
        """Start the mixtures where a [-1, 1]-scale network would: means around 127.5 levels, log-scales around
        log 127.5, both moving 127.5 times as fast in levels as the other outputs."""
        c = self.config
        per = 3 * c.channels + c.coefficients
        with torch.no_grad():
            for net in self.stages:
                w, b = net.head.weight.view(c.mixtures, per, -1), net.head.bias.view(c.mixtures, per)
                means, log_scales = slice(c.channels, 2 * c.channels), slice(2 * c.channels, 3 * c.channels)
                w[:, means] *= 127.5
                b[:, means] = 127.5 * (b[:, means] + 1)
                b[:, log_scales] += math.log(127.5)

    # ---- scales -----------------------------------------------------------------------------------------------------
    def _fixed_scales(self) -> None:
        """Units of the inputs and of the heads' outputs: pixels, z and the coder's parameter grids."""
        c = self.config
        self.encoder.in_scale.fill_(PIXEL_SCALE), self.encoder.in_bound.fill_(255)
        self.encoder.out_scale.copy_(torch.tensor([POST_MEAN_STEP] * c.latent + [POST_LOG_SIGMA_STEP] * c.latent))
        self.z_net.in_scale.fill_(Z_STEP), self.z_net.in_bound.fill_(Z_MAX)
        steps = [LOGIT_STEP] * c.channels + [MEAN_STEP] * c.channels + [LOG_SCALE_STEP] * c.channels
        head = torch.tensor((steps + [COEF_STEP] * c.coefficients) * c.mixtures)
        for net in self.stages:
            net.out_scale.copy_(head)
            net.in_bound[:c.stage_width] = ACT_MAX
            net.in_bound[c.stage_width:] = 255
        self._wire()

    def feature_scale(self, level: int) -> torch.Tensor:
        return self.z_net.out_scale if level == 0 else self.ups[level - 1].site.scale

    def _wire(self) -> None:
        """Stage inputs: the z features of their level (calibrated units), then pixels."""
        for i, net in enumerate(self.stages):
            level = 0 if i == 0 else (i - 1) // len(PHASES)
            sw = self.config.stage_width
            net.in_scale[:sw] = self.feature_scale(level)
            net.in_scale[sw:] = PIXEL_SCALE

    def calibrate_scales(self, batches) -> None:
        """Set every free scale from the float network on ``batches`` of uint8-valued images (B, C, H, W)."""
        mode = mode_of(self)
        set_mode(self, "float")
        self._cal = cal = Calibration()
        with torch.no_grad():
            for x in batches:
                mean, log_std = self.posterior(x)
                self.log_likelihood(x, mean + torch.randn_like(mean) * log_std.exp())
        self._cal = None
        for key, net in self._nets():
            net.calibrate(cal, key)
        self.z_net.out_scale.copy_(cal.ranges["features0"] / ACT_MAX)
        for i, up in enumerate(self.ups):
            up.site.scale.copy_(cal.ranges[f"features{i + 1}"] / ACT_MAX)
        self._wire()
        set_mode(self, mode)

    def _nets(self):
        yield "encoder", self.encoder
        yield "z_net", self.z_net
        for i, net in enumerate(self.stages):
            yield f"stage{i}", net

    def freeze(self) -> None:
        """Compute and store the integer weights; the model then runs them (frozen mode)."""
        for _, net in self._nets():
            net.freeze()
        for i, up in enumerate(self.ups):
            in_scale = self.feature_scale(i)
            up.conv.freeze(in_scale, torch.full_like(in_scale, ACT_MAX), up.site.scale.repeat_interleave(4))
        set_mode(self, "frozen")

    def thaw(self) -> None:
        """Master weights from the stored integer weights."""
        for _, net in self._nets():
            net.thaw()
        for i, up in enumerate(self.ups):
            up.conv.thaw(self.feature_scale(i), up.site.scale.repeat_interleave(4))

    @property
    def mode(self) -> str:
        return mode_of(self)

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        """uint8-valued pixels as the networks' input: 2x - 255 (in float mode, the [-1, 1] value)."""
        u = 2 * x.to(self.z_net.in_scale.dtype) - 255
        return u * PIXEL_SCALE if self.mode == "float" else u

    # ---- posterior and prior ------------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log std of the diagonal Gaussian p(z|x); x is uint8-valued (B, C, H, W)."""
        y = self.encoder(F.pixel_unshuffle(self._pixels(x), self.config.stride), self._cal, "encoder")
        mean, log_std = y.chunk(2, dim=1)
        if self.mode == "float":
            return mean, log_std.clamp(*LOG_STD_RANGE)
        mean = quant(mean, POST_MEAN_RANGE[0] / POST_MEAN_STEP, POST_MEAN_RANGE[1] / POST_MEAN_STEP)
        log_std = quant(log_std, LOG_STD_RANGE[0] / POST_LOG_SIGMA_STEP, LOG_STD_RANGE[1] / POST_LOG_SIGMA_STEP)
        return mean * POST_MEAN_STEP, log_std * POST_LOG_SIGMA_STEP

    def features(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Features of z for every stage resolution, coarsest first."""
        if self.mode == "float":
            hs = [self.z_net(z, self._cal, "z_net")]
            if self._cal is not None:
                self._cal.observe("features0", hs[0])
        else:
            h = self.z_net(quant(z / Z_STEP, -Z_MAX, Z_MAX))
            hs = [quant(h, -ACT_MAX, ACT_MAX)]
        for i, up in enumerate(self.ups):
            hs.append(up(hs[-1], self.feature_scale(i), self._cal, f"features{i + 1}"))
        return hs

    # ---- the stages -----------------------------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return self.config.num_stages

    def stage_grid(self, t: int) -> tuple[int, tuple[int, int]]:
        return self.config.stage_grid(t)

    def stage_context(self, x: torch.Tensor, t: int) -> list[torch.Tensor]:
        return self.config.stage_context(x, t)

    def stage(self, t: int, features: list[torch.Tensor], context: list[torch.Tensor]) -> Mixture:
        """Distribution of the pixels of stage t given z's features and the decoded sub-grids (uint8-valued)."""
        f, step, i = self.config.stage_network(t)
        h = features[f][..., ::step, ::step]
        out = self.stages[i](torch.cat([h] + [self._pixels(c) for c in context], dim=1), self._cal, f"stage{i}")
        return self._mixture(out)

    def _mixture(self, out: torch.Tensor) -> Mixture:
        c = self.config
        b, _, h, w = out.shape
        out = out.view(b, c.mixtures, 3 * c.channels + c.coefficients, h, w)
        ch = c.channels
        logits, means, log_scales, coef = (out[:, :, :ch], out[:, :, ch:2 * ch], out[:, :, 2 * ch:3 * ch],
                                           out[:, :, 3 * ch:])
        if self.mode == "float":
            return Mixture(logits.clamp(-LOGIT_MAX, LOGIT_MAX), means, log_scales.clamp(*LOG_SCALE_RANGE),
                           torch.tanh(coef))
        grid = lambda v, step, lo, hi: quant(v, lo / step, hi / step) * step
        coef = grid(coef, COEF_STEP, -COEF_COUNT * COEF_STEP, COEF_COUNT * COEF_STEP)
        table = torch.from_numpy(COEF_TABLE).to(coef)[(coef / COEF_STEP).long().detach() + COEF_COUNT]
        return Mixture(logit_weights=grid(logits, LOGIT_STEP, -LOGIT_MAX, LOGIT_MAX),
                       means=grid(means, MEAN_STEP, *MEAN_RANGE),
                       log_scales=grid(log_scales, LOG_SCALE_STEP, *LOG_SCALE_RANGE),
                       coefficients=ste(torch.tanh(coef), table) if coef.requires_grad else table)

    # ---- training objective ---------------------------------------------------------------------------------------
    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                       channels: int | None = None, calibrate: bool = False) -> torch.Tensor:
        """log q(x|z) in nats per image, (B,), all stages teacher-forced on x.

        ``mask`` (B, H, W) selects the real (not padding) pixels; only the first ``channels`` channels count
        (grayscale images run through an RGB model with their plane replicated and only R is coded).
        ``calibrate``: with the codec's scale calibration (each row of ``x`` one tile), the offsets' cost included.
        """
        feats = self.features(z)
        total = 0.0
        for t in range(self.num_stages):
            stride, (oy, ox) = self.stage_grid(t)
            xs = x[..., oy::stride, ox::stride]
            ms = None if mask is None else mask[:, oy::stride, ox::stride]
            mix = self.stage(t, feats, self.stage_context(x, t))
            if calibrate:
                mix, nats = calibrated(xs, mix, ms)
                total = total - nats[:, :channels].sum(1).to(x.device)
            lp = mixture_log_prob(xs, mix)[:, :channels]
            if ms is not None:
                lp = lp * ms[:, None]
            total = total + lp.flatten(1).sum(1)
        return total

    def elbo_terms(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(-log q(x|z), KL(p(z|x) || N(0, I))) in nats per image."""
        mean, log_std = self.posterior(x)
        z = mean + torch.randn_like(mean) * log_std.exp() if sample else mean
        return -self.log_likelihood(x, z), kl_to_prior(mean, log_std)

    def log_weights(self, x: torch.Tensor, samples: int, beta: float = 1.0, mask: torch.Tensor | None = None,
                    channels: int | None = None, calibrate: bool = False, generator: torch.Generator | None = None,
                    posterior: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Importance weights log q(x|z_i) + beta (log q(z_i) - log p(z_i|x)) in nats, (samples, B), for z_i drawn
        from the posterior; -log mean exp over the samples is the IWAE bound (with beta = 1). ``posterior``: p(z|x)'s
        (mean, log std) when the caller has them already."""
        mean, log_std = posterior if posterior is not None else self.posterior(x)
        z = mean + torch.randn((samples, *mean.shape), generator=generator).to(mean) * log_std.exp()
        repeat = lambda t: None if t is None else t.expand(samples, *t.shape).flatten(0, 1)
        log_lik = self.log_likelihood(repeat(x), z.flatten(0, 1), repeat(mask), channels, calibrate)
        log_prior = _log_normal(z, torch.zeros_like(mean), torch.zeros_like(log_std))
        return log_lik.view(samples, -1) + beta * (log_prior - _log_normal(z, mean, log_std))


def kl_to_prior(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_std)^2) || N(0, I)) in nats per image."""
    return 0.5 * (mean ** 2 + (2 * log_std).exp() - 1 - 2 * log_std).flatten(1).sum(1)


def _log_normal(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, exp(log_std)^2) summed per image: z (S, B, ...) -> (S, B)."""
    return (-0.5 * ((z - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).flatten(2).sum(2)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_dict(config: Config) -> dict:
    return asdict(config)


class TorchNetwork:
    """A frozen ``VAE`` behind the coder's interface (``npnet.Network``'s): NumPy in, float64 grid values out, with
    IEEE float32 arithmetic on any device (the GPU path)."""

    def __init__(self, model: VAE):
        self.model, self.config = model, model.config
        self.device = next(model.buffers()).device

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device)

    def posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with exact_arithmetic():
            return tuple(_f64(v) for v in self.model.posterior(self._tensor(x)))

    def features(self, z: np.ndarray) -> list[torch.Tensor]:
        with exact_arithmetic():
            return self.model.features(self._tensor(z.astype(np.float32)))

    def stage(self, t: int, features: list[torch.Tensor], x: np.ndarray) -> dict[str, np.ndarray]:
        with exact_arithmetic():
            mix = self.model.stage(t, features, self.config.stage_context(self._tensor(x), t))
        return {k: _f64(v) for k, v in vars(mix).items()}


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()
