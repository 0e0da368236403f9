"""The VAE as a torch module: its parameters (``modules``), their scales, and the training objectives.

The computation is ``network.Network`` over ``torch_ops.TorchOps`` in the model's ``mode``: ``float`` (the plain
network; a model trained from scratch starts here), ``train`` (quantization-aware) or ``frozen`` (the stored integer
weights, as model files hold them). Mixture parameters are in pixel levels: means in levels, log-scales natural in
levels.
"""
from __future__ import annotations

import math
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from ..entropy.grids import LOG_SCALE_STEP, LOGIT_STEP, MEAN_STEP, POST_LOG_SIGMA_STEP, POST_MEAN_STEP
from .config import ACT_MAX, COEF_STEP, PHASES, PIXEL_SCALE, Z_MAX, Z_STEP, Config
from .mixture import Mixture
from .modules import Calibration, IntNet, Up
from .network import Network
from .torch_ops import MODES, TorchOps


class VAE(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = c = config
        nets = {name: IntNet(*sizes) for name, sizes in c.networks.items()}
        self.encoder, self.z_net = nets.pop("encoder"), nets.pop("z_net")
        self.ups = nn.ModuleList([Up(c.stage_width) for _ in range(c.levels - 1)])   # z's features at S/2, ..., 2
        self.stages = nn.ModuleList(nets.values())
        self.mode = "float"
        self._calibration: Calibration | None = None
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

    # ---- the networks ---------------------------------------------------------------------------------------------
    def network(self, numpy_io: bool = False, unfold: bool = False) -> Network:
        """The networks in the model's mode (``numpy_io``, ``unfold``: see ``TorchOps``)."""
        return Network(self.config, self, TorchOps(self, self.mode, self._calibration, numpy_io, unfold))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log std of the diagonal Gaussian p(z|x); x is uint8-valued (B, C, H, W)."""
        return self.network().posterior(x)

    def features(self, z: torch.Tensor) -> list[torch.Tensor]:
        return self.network().features(z)

    def stage(self, t: int, features: list[torch.Tensor], x: torch.Tensor) -> Mixture:
        return self.network().stage(t, features, x)

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

    def conv_units(self):
        """(convolution, input scale, input bound, output scale) of every convolution of the model."""
        for net in (self.encoder, self.z_net):
            yield from net.conv_units()
        for i, up in enumerate(self.ups):
            in_scale = self.feature_scale(i)
            yield up.conv, in_scale, torch.full_like(in_scale, ACT_MAX), up.site.scale.repeat_interleave(4)
        for net in self.stages:
            yield from net.conv_units()

    def calibrate_scales(self, batches) -> None:
        """Set every free scale from the float network on ``batches`` of uint8-valued images (B, C, H, W)."""
        mode = self.mode
        self.mode, self._calibration = "float", Calibration()
        with torch.no_grad():
            for x in batches:
                mean, log_std = self.posterior(x)
                self.log_likelihood(x, mean + torch.randn_like(mean) * log_std.exp())
        cal, self._calibration = self._calibration, None
        for key, net in [("encoder", self.encoder), ("z_net", self.z_net)] + \
                [(f"stage{i}", net) for i, net in enumerate(self.stages)]:
            net.calibrate(cal, key)
        self.z_net.out_scale.copy_(cal.ranges["features0"] / ACT_MAX)
        for i, up in enumerate(self.ups):
            up.site.scale.copy_(cal.ranges[f"features{i + 1}"] / ACT_MAX)
        self._wire()
        self.mode = mode

    def freeze(self) -> None:
        """Compute and store the integer weights; the model then runs them (frozen mode)."""
        for conv, *units in self.conv_units():
            conv.freeze(*units)
        self.mode = "frozen"

    def thaw(self) -> None:
        """Master weights from the stored integer weights."""
        for conv, *units in self.conv_units():
            conv.thaw(*units)

    # ---- training objectives --------------------------------------------------------------------------------------
    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                       channels: int | None = None, offsets=None) -> torch.Tensor:
        """log q(x|z) in nats per image, (B,), all stages teacher-forced on x.

        ``mask`` (B, H, W) selects the real (not padding) pixels; only the first ``channels`` channels count
        (grayscale images run through an RGB model with their plane replicated and only R is coded).
        ``offsets(xs, mixture, mask)``: the mixture with the coder's scale offsets, and their cost in nats (B, C).
        """
        network = self.network()
        total = 0.0
        for (ys, xs), mix in network.stages(network.features(z), x):
            stage = x[..., ys, xs]
            ms = None if mask is None else mask[:, ys, xs]
            if offsets is not None:
                mix, nats = offsets(stage, mix, ms)
                total = total - nats[:, :channels].sum(1).to(x.device)
            lp = mixture_log_prob(stage, mix)[:, :channels]
            if ms is not None:
                lp = lp * ms[:, None]
            total = total + lp.flatten(1).sum(1)
        return total

    def elbo_terms(self, x: torch.Tensor, sample: bool = True, noise: torch.Tensor | None = None,
                   channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(-log q(x|z), KL(p(z|x) || N(0, I))) in nats per image, for z drawn from the posterior (``noise``: the
        standard normal draw, of the posterior mean's shape, when the caller has drawn it) or, without ``sample``,
        its mean; only the first ``channels`` channels count (``log_likelihood``)."""
        mean, log_std = self.posterior(x)
        if noise is not None:
            z = mean + noise * log_std.exp()
        else:
            z = mean + torch.randn_like(mean) * log_std.exp() if sample else mean
        return -self.log_likelihood(x, z, channels=channels), kl_to_prior(mean, log_std)

    def log_weights(self, x: torch.Tensor, samples: int, beta: float = 1.0, mask: torch.Tensor | None = None,
                    channels: int | None = None, offsets=None, generator: torch.Generator | None = None,
                    posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
                    noise: torch.Tensor | None = None) -> torch.Tensor:
        """Importance weights log q(x|z_i) + beta (log q(z_i) - log p(z_i|x)) in nats, (samples, B), for z_i drawn
        from the posterior; -log mean exp over the samples is the IWAE bound (with beta = 1). ``posterior``: p(z|x)'s
        (mean, log std) when the caller has them already; ``noise``: the standard normal draws (samples, *mean.shape)
        when the caller has drawn them."""
        mean, log_std = posterior if posterior is not None else self.posterior(x)
        if noise is None:
            noise = torch.randn((samples, *mean.shape), generator=generator)
        z = mean + noise.to(mean) * log_std.exp()
        repeat = lambda t: None if t is None else t.expand(samples, *t.shape).flatten(0, 1)
        log_lik = self.log_likelihood(repeat(x), z.flatten(0, 1), repeat(mask), channels, offsets)
        log_prior = _log_normal(z, torch.zeros_like(mean), torch.zeros_like(log_std))
        return log_lik.view(samples, -1) + beta * (log_prior - _log_normal(z, mean, log_std))


def set_mode(model: VAE, mode: str) -> None:
    """Run ``model`` in ``mode`` (one of ``torch_ops.MODES``)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    model.mode = mode


def mixture_log_prob(x: torch.Tensor, mix: Mixture) -> torch.Tensor:
    """log P(x) per subpixel (B, C, h, w) under the discretized logistic mixture (256 levels, open outer bins)."""
    xf = x.float().unsqueeze(1)
    means = torch.stack([mix.channel_mean(x, c) for c in range(x.shape[1])], dim=2)
    centered = xf - means
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
