"""The coding of one batch of tiles, described once (``TileCoder.describe``): per stage and channel, the tiles' scale
offset indices, then the pixels, with the distributions the model's networks give.

Everything else is a driver over that description: coding (``codecs.Sequence`` pushes or pops it, inside bits-back
ANS for the latent), and measuring the information content of each tile's pixels without coding them (the
encoder's estimate of a picture's bits, the importance weights of Monte Carlo bits back). Every number the codecs
use comes from the integer networks and integer tables, so the decoder reproduces the encoder's frequencies on any
machine.
"""
from __future__ import annotations

import numpy as np

from ..entropy import codecs
from ..format.container import CodingParams
from .adaptation import ADAPTED_PIXELS, Feedback
from .offsets import MEAN_CDF, MEAN_OFFSETS, NO_SHIFT, SCALE_CDF, SCALE_OFFSETS, choose_offsets
from .tiles import PAD, gather, mask, plan_batches, plan_tiles


class TileCoder:
    """The codecs of batches of tiles, for one model's networks (a ``nets.network.Network`` with NumPy input and
    output) and set of coding parameters."""

    def __init__(self, net, params: CodingParams):
        self.net, self.config, self.params = net, net.config, params
        self.latent = codecs.GaussianLatent(params.latent_bits)

    def describe(self, z: np.ndarray, x_shape: tuple[int, ...], real: np.ndarray, x: np.ndarray | None = None,
                 offsets: bool = True, info: np.ndarray | None = None):
        """The description of q(x|z) for latent buckets ``z`` and a batch of pixels of ``x_shape`` (B, C, ph, pw)
        whose real pixels are ``real`` (``codecs.Sequence``): per stage and channel, the tiles' scale-offset indices
        (unless ``offsets`` is False: then none, and no offset), then the pixels; with the coding parameters'
        ``adaptation``, on tiles of ADAPTED_PIXELS or more, each stage's means corrected by the residuals of the
        stages before it (``adaptation``) and shifted by the tiles' mean offsets, coded before each scale offset.

        Encoding passes the pixels ``x`` and picks the offsets; decoding passes None and fills x in as it goes.
        ``info``: encoding adds the information content of each tile's symbols, -log2 of their probabilities in
        fixed point (``tables.LOG_FRAC``), into it (B,), and yields the intervals it measured.
        """
        encoding = x is not None
        if not encoding:
            x = np.full(x_shape, PAD, np.uint8)
        tiles = np.arange(len(x))
        scale_codec, no_shift = codecs.Categorical(SCALE_CDF, len(x)), np.full(len(x), NO_SHIFT)
        mean_codec = codecs.Categorical(MEAN_CDF, len(x))
        adapt = self.params.adaptation and offsets and x_shape[2] * x_shape[3] >= ADAPTED_PIXELS
        feedback = Feedback(*x_shape[:2]) if adapt else None
        for (ys, xs), mix in self.net.stages(self._features(z, x_shape), x):
            stage, ms = x[:, :, ys, xs], real[:, ys, xs]
            coded = mix
            if feedback is not None:
                coded, buckets = feedback.correct(mix, x_shape[1])
            shifts, scales = choose_offsets(stage, coded, ms, adapt) if encoding and offsets else (None, None)
            owner = np.nonzero(ms)[0] if info is not None else None
            for c in range(x_shape[1]):
                pick = no_shift
                if adapt:
                    shift = yield from _step(mean_codec, shifts[:, c] if encoding else None, tiles, info)
                    coded = coded.with_means(c, MEAN_OFFSETS[shift])
                if offsets:
                    pick = yield from _step(scale_codec, scales[:, c] if encoding else None, tiles, info)
                plane = stage[:, c]
                plane[ms] = yield from _step(self._pixels(coded, stage, ms, c, pick),
                                             plane[ms] if encoding else None, owner, info)
            if feedback is not None:
                feedback.update(mix, stage, ms, buckets)
        return x

    def information(self, z: np.ndarray, x: np.ndarray, real: np.ndarray, offsets: bool = True) -> np.ndarray:
        """-log2 q(x|z) of each tile (B,) in fixed point, with the encoder's scale offsets (their cost included)
        unless ``offsets`` is False: the description measured, not coded."""
        info = np.zeros(len(x), np.int64)
        codecs.Sequence(lambda data: self.describe(z, x.shape, real, data, offsets, info)).steps(x)
        return info

    def _features(self, z: np.ndarray, x_shape: tuple[int, ...]) -> list:
        """The model's features of latent buckets ``z`` (their centres) for a batch of pixels of ``x_shape``."""
        return self.net.features(self.latent.centres(z).reshape(self._latent_shape(x_shape)))

    def _latent_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        s = self.config.stride
        return x_shape[0], self.config.latent, x_shape[2] // s, x_shape[3] // s

    def _pixels(self, mix, stage: np.ndarray, ms: np.ndarray, c: int, picks: np.ndarray) -> codecs.LogisticMixture:
        """Mixture codec for channel c of one stage's real pixels; means shifted by the channels before c, log-scales
        by each tile's chosen offset (``picks``, indices into SCALE_OFFSETS). All values are exact dyadic numbers."""
        means, full = mix.channel_mean(stage, c), ms.all()

        def pick(a: np.ndarray) -> np.ndarray:
            """(B, K, h, w) -> (n, K) over the real pixels (a reshape, 4 times faster, where all are real)."""
            a = a.transpose(0, 2, 3, 1)
            return a.reshape(-1, a.shape[-1]) if full else a[ms]

        log_scales = mix.log_scales[:, :, c] + SCALE_OFFSETS[picks][:, None, None, None]
        return codecs.LogisticMixture(pick(means), pick(log_scales), pick(mix.logit_weights[:, :, c]),
                                      self.params.pixel_precision)

    # ---- bits back --------------------------------------------------------------------------------------------------
    def posterior(self, x: np.ndarray) -> codecs.GaussianPosterior:
        return self._posterior(*self.net.posterior(x))

    def _posterior(self, mean: np.ndarray, log_std: np.ndarray) -> codecs.GaussianPosterior:
        return self.latent.posterior(mean.ravel(), precision=self.params.posterior_precision,
                                     log_sigma=log_std.ravel())

    def batch(self, x_shape: tuple[int, ...], real: np.ndarray, index: int, info: np.ndarray | None = None):
        """The codec of the ``index``-th batch coded, of pixels of ``x_shape`` (B, C, ph, pw) whose real pixels are
        ``real``: bits-back ANS, or Monte Carlo bits back with importance sampling when ``particles`` N > 1. The
        first 2N batches (single tiles) use one particle: N particles pop N latents per tile before anything is
        pushed back, more bits than a nearly empty message holds, and bits popped from nothing are never returned.
        The first batch coded has no bits to take back yet: it is coded with z fixed at the prior median and, unless
        the message is still empty, with bits back too, and the shorter is kept (a ``Choice``). On an empty message
        bits back pops z from nothing and pays its full prior cost, latent_bits per dimension, far more than the
        shipped models' latents save on x. ``info``: see ``describe`` (encoding measures each tile's pixels)."""
        n = int(np.prod(self._latent_shape(x_shape)))

        def likelihood(z: np.ndarray) -> codecs.Sequence:
            return codecs.Sequence(lambda x: self.describe(z, x_shape, real, x, info=info))

        particles = self.params.particles if index >= 2 * self.params.particles else 1
        if particles == 1:
            bits_back = codecs.BBANS(self.posterior, likelihood, self.latent.prior(n))
        else:
            bits_back = codecs.BBIS(self.posterior, likelihood, self.latent.prior(n), particles, x_shape[0],
                                    lambda x, zs: self.log_weights(x, zs, real))
        if index:
            return bits_back
        median = np.full(n, 1 << (self.params.latent_bits - 1), np.int64)
        return codecs.Choice([bits_back, likelihood(median)], lambda msg: [1] if msg.empty() else [0, 1])

    def log_weights(self, x: np.ndarray, zs: list[np.ndarray], real: np.ndarray) -> np.ndarray:
        """log2 q(x|z_i) / p(z_i|x) per tile for every particle z_i, (N, B), in fixed point from the codecs' integer
        frequencies (without scale offsets: the same on both sides; the uniform prior is the same for all)."""
        posterior = self.posterior(x)
        return np.stack([-self.information(z, x, real, offsets=False) - codecs.log2_probability(posterior, z, len(x))
                         for z in zs])

    def estimate_bits(self, planes: list[np.ndarray]) -> float:
        """About the bits the model codes colour ``planes`` (C, H, W) in: per batch of tiles, -log2 q(x|z) with
        the encoder's scale offsets (their cost included) at z = the posterior's mean bucket, plus its latent bits
        under the prior less those of the posterior (bits back). For choosing a model and for screening pictures,
        in a fraction of a coding's time."""
        total = 0
        tiles = plan_tiles([p.shape for p in planes], self.params.tile, self.config.grid)
        for batch in plan_batches(tiles, self.params.batch, self.params.tile):
            x, real = gather(planes, batch), mask(batch)
            mean, log_std = self.net.posterior(x)
            posterior = self._posterior(mean, log_std)
            z = self.latent.bucket(mean.ravel())
            latent = (z.size * self.latent.bits << codecs.LOG_FRAC) + codecs.log2_probability(posterior, z, 1)
            total += int(latent.sum()) + int(self.information(z, x, real).sum())
        return total / (1 << codecs.LOG_FRAC)


def _step(codec: codecs.TableCodec, symbols: np.ndarray | None, owner: np.ndarray | None, info: np.ndarray | None):
    """Yield one codec of a description and receive its symbols; measuring (``info``), its symbols' information
    content is added per tile (``owner``: the tile of each symbol) and the intervals measured are what is coded."""
    if info is not None and symbols is not None:
        start, freq = codec.start_freq(symbols)
        np.add.at(info, owner, codecs.information(freq, codec.precision))
        codec = codecs.Intervals(start, freq, codec.precision)
    return (yield codec, symbols)
