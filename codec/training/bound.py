"""The model's rate bounds on real images: negative ELBO and the IWAE estimate, on the codec's own tiles."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .images import as_channels
from ..coding.offsets import OFFSET_NATS, SCALE_OFFSETS, choose_offsets
from ..coding.tiles import gather, mask, plan_batches, plan_tiles
from ..entropy.grids import LOG_SCALE_RANGE
from ..format.container import CodingParams
from ..nets.mixture import Mixture
from ..nets.vae import VAE


@dataclass
class Bound:
    """Per-image negative ELBO and IWAE estimate, in bits (totals over the image's coded subpixels)."""
    elbo_bits: np.ndarray
    iwae_bits: np.ndarray
    subpixels: np.ndarray


def image_bounds(model: VAE, planes: list[np.ndarray], k: int = 1, tile: int = CodingParams.tile,
                 batch: int = CodingParams.batch, seed: int = 0, device: str = "cpu",
                 offsets: bool = False) -> Bound:
    """-ELBO (mean of k single-sample estimates) and -log (1/k) sum_i q(x|z_i) q(z_i) / p(z_i|x) per image.

    ``planes`` are (C, H, W) uint8 colour planes; images are cut into the same tiles as the codec uses.
    ``offsets``: q(x|z) with the coder's per-tile scale offsets, their coding cost included (what files pay).
    """
    gen = torch.Generator().manual_seed(seed)
    channels = model.config.channels
    elbo = np.zeros(len(planes))
    iwae = np.zeros(len(planes))
    tiles = plan_tiles([p.shape for p in planes], tile, model.config.grid)
    for group in plan_batches(tiles, batch, tile):
        x = gather(planes, group)
        coded = x.shape[1]
        xt = torch.from_numpy(as_channels(x, channels, axis=1)).to(device)
        mt = torch.from_numpy(mask(group)).to(device)
        with torch.no_grad():
            posterior = model.posterior(xt)
            log_w = torch.cat([model.log_weights(xt, 1, mask=mt, channels=coded, offsets=with_offsets if offsets
                                                 else None, generator=gen, posterior=posterior)
                               for _ in range(k)]).double().cpu()  # (k, B) nats
        tile_elbo = -log_w.mean(0).numpy() / math.log(2)
        tile_iwae = -(torch.logsumexp(log_w, 0) - math.log(k)).numpy() / math.log(2)
        for j, t in enumerate(group):
            elbo[t.image] += tile_elbo[j]
            iwae[t.image] += tile_iwae[j]
    return Bound(elbo, iwae, np.array([p.size for p in planes]))


def with_offsets(x: torch.Tensor, mix: Mixture, mask: torch.Tensor | None) -> tuple[Mixture, torch.Tensor]:
    """A stage's mixture with the coder's scale offsets (``offsets.choose_offsets``), and their cost in nats
    (B, C)."""
    arrays = mix.map(lambda v: v.detach().cpu().double().numpy())
    picks = torch.from_numpy(choose_offsets(x.detach().cpu().numpy(), arrays,
                                            None if mask is None else mask.cpu().numpy())[1])
    offsets = torch.from_numpy(SCALE_OFFSETS).to(mix.log_scales)[picks.to(mix.log_scales.device)]
    shifted = (mix.log_scales + offsets[:, None, :, None, None]).clamp(*LOG_SCALE_RANGE)
    return mix.with_log_scales(shifted), torch.from_numpy(OFFSET_NATS)[picks]


def summary(values_bits: np.ndarray, subpixels: np.ndarray) -> tuple[float, float]:
    """(mean bits per subpixel over images, standard error of that mean)."""
    bpd = values_bits / subpixels
    se = float(bpd.std(ddof=1) / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan")
    return float(bpd.mean()), se
