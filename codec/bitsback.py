"""BB-ANS over batches of image tiles: pop z with p(z|x), push x with q(x|z) stage by stage, push z with q(z).

The decoder runs every network call with the same batch composition, the same inputs and the same number of
intra-op threads as the encoder (oneDNN convolutions split their sums by thread count), so both see identical
float outputs whatever the caller's torch settings; from there on everything is quantized parameters and integer
tables (codecs.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from . import codecs
from .model import SCALE_FREQS, SCALE_OFFSETS, VAE, Mixture, calibrate
from .rans import Message
from .tiles import PAD, Tile, gather, plan_batches, plan_tiles, scatter

LOG_LEVEL = float(np.log(127.5))   # log-scale offset from the [-1, 1] scale to pixel levels
SCALE_CDF = np.concatenate([[0], np.cumsum(SCALE_FREQS)])   # the scale-offset indices, 8-bit precision


@dataclass(frozen=True)
class CodingParams:
    tile: int = 256
    batch: int = 4
    latent_bits: int = 10
    posterior_precision: int = 20
    pixel_precision: int = 18
    threads: int = 2            # intra-op threads of every network call, on both sides


@contextmanager
def network(threads: int):
    """Inference with a fixed intra-op thread count, restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(before)


class TileCoder:
    """Codes the colour planes of a list of images with one model, as a chain of BB-ANS steps."""

    def __init__(self, model: VAE, params: CodingParams, device: str = "cpu"):
        self.model, self.params, self.device = model, params, torch.device(device)
        self.latent = codecs.GaussianLatent(params.latent_bits)

    # ---- network calls (identical on both sides) ------------------------------------------------------------------
    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        """Pixels as the model sees them: coded planes, replicated to 3 channels for grayscale through RGB."""
        if x.shape[1] != self.model.config.channels:
            x = np.repeat(x, self.model.config.channels, axis=1)
        return torch.from_numpy(x).to(self.device)

    def _posterior(self, x: np.ndarray) -> codecs.TableCodec:
        with network(self.params.threads):
            mean, log_std = self.model.posterior(self._tensor(x))
        return self.latent.posterior(_f64(mean).ravel(), precision=self.params.posterior_precision,
                                     log_sigma=_f64(log_std).ravel())

    def _features(self, z_idx: np.ndarray, shape: tuple[int, ...]) -> list[torch.Tensor]:
        z = torch.from_numpy(self.latent.centres(z_idx).reshape(shape).astype(np.float32)).to(self.device)
        with network(self.params.threads):
            return self.model.features(z)

    def _stage(self, t: int, feats: list[torch.Tensor], x: np.ndarray) -> Mixture:
        with network(self.params.threads):
            return self.model.stage(t, feats, self.model.stage_context(self._tensor(x), t))

    def _latent_shape(self, x: np.ndarray) -> tuple[int, ...]:
        s = self.model.config.stride
        return (x.shape[0], self.model.config.latent, x.shape[2] // s, x.shape[3] // s)

    # ---- one BB-ANS step ----------------------------------------------------------------------------------------
    def _fixed_latent(self, shape: tuple[int, ...]) -> np.ndarray:
        """The prior median bucket in every dimension: the latent of a batch coded without bits back."""
        return np.full(int(np.prod(shape)), 1 << (self.params.latent_bits - 1), np.int64)

    def push_batch(self, msg: Message, x: np.ndarray, mask: np.ndarray, fixed_latent: bool = False) -> None:
        """One BB-ANS step; with ``fixed_latent`` z is the prior median and is not coded at all."""
        z_idx = self._fixed_latent(self._latent_shape(x)) if fixed_latent else self._posterior(x).pop(msg)
        feats = self._features(z_idx, self._latent_shape(x))
        codes = []
        for t in range(self.model.num_stages):
            stride, (oy, ox) = self.model.stage_grid(t)
            raw = self._stage(t, feats, x)
            mix = _levels(raw)
            xs, ms = x[:, :, oy::stride, ox::stride], mask[:, oy::stride, ox::stride]
            with network(self.params.threads):
                picks = calibrate(self._tensor(xs), raw, torch.from_numpy(ms).to(self.device)).cpu().numpy()
            for c in range(x.shape[1]):
                codes.append((codecs.Categorical(SCALE_CDF, len(x)), picks[:, c]))
                codes.append((self._pixel_codec(mix, xs, ms, c, picks[:, c]), xs[:, c][ms]))
        for codec, symbols in reversed(codes):
            codec.push(msg, symbols)
        if not fixed_latent:
            self.latent.prior(z_idx.size).push(msg, z_idx)

    def pop_batch(self, msg: Message, shape: tuple[int, ...], mask: np.ndarray,
                  fixed_latent: bool = False) -> np.ndarray:
        x = np.full(shape, PAD, np.uint8)
        latent_shape = self._latent_shape(x)
        if fixed_latent:
            z_idx = self._fixed_latent(latent_shape)
        else:
            z_idx = self.latent.prior(int(np.prod(latent_shape))).pop(msg)
        feats = self._features(z_idx, latent_shape)
        for t in range(self.model.num_stages):
            stride, (oy, ox) = self.model.stage_grid(t)
            mix = _levels(self._stage(t, feats, x))
            xs, ms = x[:, :, oy::stride, ox::stride], mask[:, oy::stride, ox::stride]
            for c in range(x.shape[1]):
                picks = codecs.Categorical(SCALE_CDF, len(x)).pop(msg)
                plane = xs[:, c]
                plane[ms] = self._pixel_codec(mix, xs, ms, c, picks).pop(msg)
        if not fixed_latent:
            self._posterior(x).push(msg, z_idx)
        return x

    def _pixel_codec(self, mix: dict, xs: np.ndarray, ms: np.ndarray, c: int, picks: np.ndarray) -> codecs.TableCodec:
        """Mixture codec for channel c of one stage's real pixels; means shifted by the channels before c, log-scales
        by each tile's chosen offset (``picks``, indices into SCALE_OFFSETS)."""
        means = mix["means"][:, :, c]
        if c > 0:
            first = c * (c - 1) // 2          # coefficients of channel c: (c, 0), (c, 1), ...
            for j in range(c):
                means = means + mix["coefficients"][:, :, first + j] * (xs[:, None, j].astype(np.float64) - 127.5)
        pick = lambda a: np.moveaxis(a, 1, -1)[ms]          # (B, K, h, w) -> (n, K) over real pixels
        log_scales = mix["log_scales"][:, :, c] + SCALE_OFFSETS[picks][:, None, None, None]
        return codecs.LogisticMixture(pick(means), pick(log_scales),
                                      pick(mix["logit_weights"][:, :, c]), self.params.pixel_precision)

    # ---- whole jobs -----------------------------------------------------------------------------------------------
    def batches(self, sizes: list[tuple[int, int]]) -> list[list[Tile]]:
        tiles = plan_tiles(sizes, self.params.tile, self.model.config.grid)
        return plan_batches(tiles, self.params.batch, self.params.tile)

    def encode(self, msg: Message, planes: list[np.ndarray], progress=None) -> tuple[Message, bool]:
        """Push every tile onto msg; returns the final message and whether the first batch has a fixed latent.

        The first batch has no bits to take back: its posterior pops would draw on the message's constant
        initial state, so z would cost its full prior rate. It is coded both with bits back and with z fixed at
        the prior median (no latent cost at all, a possibly worse likelihood) and the shorter one is kept.
        """
        fixed = False
        for i, batch in enumerate(self.batches([p.shape[1:] for p in planes])):
            x, mask = gather(planes, batch)
            if i == 0:
                trial = msg.copy()
                self.push_batch(trial, x, mask, fixed_latent=True)
                self.push_batch(msg, x, mask)
                if trial.num_bits() < msg.num_bits():
                    fixed, msg = True, trial
            else:
                self.push_batch(msg, x, mask)
            if progress is not None:
                progress.update(sum(t.h * t.w for t in batch))
        return msg, fixed

    def decode(self, msg: Message, shapes: list[tuple[int, int, int]], fixed_first: bool,
               progress=None) -> list[np.ndarray]:
        planes = [np.zeros(s, np.uint8) for s in shapes]
        batches = self.batches([s[1:] for s in shapes])
        for i in range(len(batches) - 1, -1, -1):
            batch = batches[i]
            _, mask = gather(planes, batch)
            x = self.pop_batch(msg, (len(batch), shapes[batch[0].image][0], batch[0].ph, batch[0].pw), mask,
                               fixed_latent=fixed_first and i == 0)
            scatter(planes, batch, x)
            if progress is not None:
                progress.update(sum(t.h * t.w for t in batch))
        return planes


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _levels(mix: Mixture) -> dict:
    """A stage's mixture in pixel-level units, float64 numpy: the single source for both coding directions."""
    return {"means": 127.5 * (_f64(mix.means) + 1.0), "log_scales": _f64(mix.log_scales) + LOG_LEVEL,
            "logit_weights": _f64(mix.logit_weights), "coefficients": _f64(mix.coefficients)}
