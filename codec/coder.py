"""The coding of a file's images, described once, in decoding order; encoding is derived from the same description.

A file's model-coded images are one rANS message. Decoding pops, batch by batch from the last one coded, each batch
of colour tiles with bits-back ANS (pop z with the uniform prior, pop every stage of x with q(x|z), push z back with
p(z|x)) or, with N particles, Monte Carlo bits back (``codecs.BBIS``), then the alpha planes. Within a batch, stage
by stage and channel by channel, it pops the tiles' scale-offset indices and then the pixels (``TileCoder.stages``).
The first batch coded has no bits to take back yet: it is coded with z fixed at the prior median and, unless the
message is still empty, with bits back too, and the shorter is kept (a ``Choice``). On an empty message bits back
pops z from nothing and pays its full prior cost, latent_bits per dimension, far more than the shipped models'
latents save on x (measured: bits back lost by 1264-1288 bits on each of 100 CIFAR-10 images, 368-504 on MNIST).

Every number the codecs use comes from the integer networks (``intnet``, run by ``npnet`` on the CPU) and integer
tables, so the decoder reproduces the encoder's frequencies on any machine.
"""
from __future__ import annotations

import numpy as np

from . import codecs
from .container import CodingParams, ImageRecord
from .layers import Layer
from .scales import NO_SHIFT, SCALE_CDF, SCALE_OFFSETS, channel_mean, choose_offsets
from .tiles import PAD, gather, mask, plan_batches, plan_tiles, scatter, shape

ALPHA_PRECISION = 16


class TileCoder:
    """The codecs of one batch of tiles, for one model's networks (``npnet.Network`` or ``model.TorchNetwork``)
    and set of coding parameters."""

    def __init__(self, net, params: CodingParams):
        self.net, self.config, self.params = net, net.config, params
        self.latent = codecs.GaussianLatent(params.latent_bits)
        self.tile_info: np.ndarray | None = None

    def _planes(self, x: np.ndarray) -> np.ndarray:
        """Pixels as the model sees them: coded planes, replicated to 3 channels for grayscale through RGB."""
        return x if x.shape[1] == self.config.channels else np.repeat(x, self.config.channels, axis=1)

    def posterior(self, x: np.ndarray) -> codecs.GaussianPosterior:
        return self._posterior(*self.net.posterior(self._planes(x)))

    def _posterior(self, mean: np.ndarray, log_std: np.ndarray) -> codecs.GaussianPosterior:
        return self.latent.posterior(mean.ravel(), precision=self.params.posterior_precision,
                                     log_sigma=log_std.ravel())

    def _latent_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        s = self.config.stride
        return x_shape[0], self.config.latent, x_shape[2] // s, x_shape[3] // s

    def _features(self, z: np.ndarray, x_shape: tuple[int, ...]) -> list:
        """The model's features of latent buckets ``z`` (their centres) for a batch of pixels of ``x_shape``."""
        return self.net.features(self.latent.centres(z).reshape(self._latent_shape(x_shape)))

    def batch(self, x_shape: tuple[int, ...], real: np.ndarray, index: int, measure: bool = False):
        """The codec of the ``index``-th batch coded, of pixels of ``x_shape`` (B, C, ph, pw) whose real pixels are
        ``real``: bits-back ANS, or Monte Carlo bits back with importance sampling when ``particles`` N > 1. The
        first 2N batches (single tiles) use one particle: N particles pop N latents per tile before anything is
        pushed back, more bits than a nearly empty message holds, and bits popped from nothing are never returned.
        ``measure``: encoding leaves the information content of each tile's pixels in ``tile_info``."""
        n = int(np.prod(self._latent_shape(x_shape)))
        likelihood = lambda z: self.likelihood(z, x_shape, real, measure)
        particles = self.params.particles if index >= 2 * self.params.particles else 1
        if particles == 1:
            bits_back = codecs.BBANS(self.posterior, likelihood, self.latent.prior(n))
        else:
            bits_back = codecs.BBIS(self.posterior, likelihood, self.latent.prior(n), particles, x_shape[0],
                                    lambda x, zs: self.log_weights(x, zs, real))
        if index:
            return bits_back
        median = np.full(n, 1 << (self.params.latent_bits - 1), np.int64)
        return codecs.Choice([bits_back, self.likelihood(median, x_shape, real)],
                             lambda msg: [1] if msg.empty() else [0, 1])

    def likelihood(self, z: np.ndarray, x_shape: tuple[int, ...], real: np.ndarray,
                   measure: bool = False) -> codecs.Sequence:
        """q(x|z) for latent buckets ``z``: every stage of the batch, as one codec."""
        return codecs.Sequence(lambda x: self.stages(z, x_shape, real, x, measure))

    def stages(self, z: np.ndarray, x_shape: tuple[int, ...], real: np.ndarray, x: np.ndarray | None,
               measure: bool = False):
        """The description of q(x|z): per stage and channel, the tiles' scale-offset indices, then the pixels.

        Encoding passes the pixels ``x`` and picks the offsets; decoding passes None and fills x in as it goes.
        With ``measure``, encoding sets ``tile_info``: -log2 q(x|z) of each tile's pixels in fixed point
        (``codecs.LOG_FRAC``), which the pushes of the pixels fill in (``codecs.Measured``).
        """
        info = np.zeros(x_shape[0], np.int64)
        encoding = x is not None
        if not encoding:
            x = np.full(x_shape, PAD, np.uint8)
        feats = self._features(z, x_shape)
        offsets = codecs.Categorical(SCALE_CDF, x_shape[0])
        for t in range(self.config.num_stages):
            stride, (oy, ox) = self.config.stage_grid(t)
            levels = self.net.stage(t, feats, self._planes(x))
            xs, ms = x[:, :, oy::stride, ox::stride], real[:, oy::stride, ox::stride]
            picks = choose_offsets(self._planes(xs), levels, ms) if encoding else None
            owner = np.nonzero(ms)[0] if measure and encoding else None
            for c in range(x_shape[1]):
                pick = yield offsets, (picks[:, c] if encoding else None)
                plane, pixels = xs[:, c], self._pixels(levels, xs, ms, c, pick)
                if owner is not None:
                    pixels = codecs.Measured(pixels, info, owner)
                plane[ms] = yield pixels, (plane[ms] if encoding else None)
        if measure:
            self.tile_info = info
        return x

    def log_weights(self, x: np.ndarray, zs: list[np.ndarray], real: np.ndarray) -> np.ndarray:
        """log2 q(x|z_i) / p(z_i|x) per tile for every particle z_i, (N, B), in fixed point from the codecs' integer
        frequencies (without scale offsets: the same on both sides; the uniform prior is the same for all)."""
        posterior = self.posterior(x)
        return np.stack([self._log2_likelihood(x, real, z) - codecs.log2_probability(posterior, z, len(x))
                         for z in zs])

    def estimate_bits(self, planes: list[np.ndarray]) -> float:
        """About the bits the model codes colour ``planes`` (C, H, W) in: per batch of tiles, -log2 q(x|z) with
        the encoder's scale offsets (their cost included) at z = the posterior's mean bucket, plus its latent bits
        under the prior less those of the posterior (bits back). For choosing a model and for screening pictures
        (``compressor.screen``), in a fraction of a coding's time."""
        total = 0
        tiles = plan_tiles([p.shape for p in planes], self.params.tile, self.config.grid)
        for batch in plan_batches(tiles, self.params.batch, self.params.tile):
            x, real = gather(planes, batch), mask(batch)
            mean, log_std = self.net.posterior(self._planes(x))
            posterior = self._posterior(mean, log_std)
            z = self.latent.bucket(mean.ravel())
            latent = (z.size * self.latent.bits << codecs.LOG_FRAC) + codecs.log2_probability(posterior, z, 1)
            total += int(latent.sum()) - int(self._log2_likelihood(x, real, z, calibrate=True).sum())
        return total / (1 << codecs.LOG_FRAC)

    def _log2_likelihood(self, x: np.ndarray, real: np.ndarray, z: np.ndarray,
                         calibrate: bool = False) -> np.ndarray:
        """log2 q(x|z) per tile in fixed point; with ``calibrate``, with the encoder's scale offsets, less their
        cost."""
        feats = self._features(z, x.shape)
        total = np.zeros(len(x), np.int64)
        offsets = codecs.Categorical(SCALE_CDF, len(x))
        for t in range(self.config.num_stages):
            stride, (oy, ox) = self.config.stage_grid(t)
            levels = self.net.stage(t, feats, self._planes(x))
            xs, ms = x[:, :, oy::stride, ox::stride], real[:, oy::stride, ox::stride]
            owner = np.nonzero(ms)[0]
            picks = choose_offsets(self._planes(xs), levels, ms) if calibrate else np.full((len(x), 3), NO_SHIFT)
            for c in range(x.shape[1]):
                if calibrate:
                    total += codecs.log2_probability(offsets, picks[:, c], len(x))
                total += codecs.log2_probability(self._pixels(levels, xs, ms, c, picks[:, c]), xs[:, c][ms], len(x),
                                                 owner)
        return total

    def _pixels(self, mix: dict, xs: np.ndarray, ms: np.ndarray, c: int, picks: np.ndarray) -> codecs.TableCodec:
        """Mixture codec for channel c of one stage's real pixels; means shifted by the channels before c, log-scales
        by each tile's chosen offset (``picks``, indices into SCALE_OFFSETS). All values are exact dyadic numbers."""
        means, full = channel_mean(xs, mix, c), ms.all()

        def pick(a: np.ndarray) -> np.ndarray:
            """(B, K, h, w) -> (n, K) over the real pixels (a reshape, 4 times faster, where all are real)."""
            a = a.transpose(0, 2, 3, 1)
            return a.reshape(-1, a.shape[-1]) if full else a[ms]

        log_scales = mix["log_scales"][:, :, c] + SCALE_OFFSETS[picks][:, None, None, None]
        return codecs.LogisticMixture(pick(means), pick(log_scales), pick(mix["logit_weights"][:, :, c]),
                                      self.params.pixel_precision)


class Archive:
    """The model-coded images of one file as one codec: the colour planes of all their layers in batches of tiles,
    then the alpha planes. Its data is the list of layers (colour, alpha) of every image, in order
    (``layers.split``); images coded outside the model have none."""

    def __init__(self, coder: TileCoder, records: list[ImageRecord], progress=None):
        self.coder, self.progress, self.records = coder, progress, len(records)
        self.layers = [(i, rec, table, planes) for i, rec in enumerate(records)
                       for table, (planes, _) in zip(rec.alphas, rec.layers)]
        shapes = [(planes, rec.height, rec.width) for _, rec, _, planes in self.layers]
        tiles = plan_tiles(shapes, coder.params.tile, coder.config.grid)
        self.batches = plan_batches(tiles, coder.params.batch, coder.params.tile, coder.params.particles)
        self._counted: list[tuple[list, _Counted]] = []

    def image_bits(self) -> np.ndarray:
        """After a push: the bits each image's colour tiles added to the message, a batch's bits shared out by its
        tiles' information content when they belong to several images (alpha planes not counted)."""
        bits = np.zeros(self.records)
        for batch, codec in self._counted:
            if codec.tile_bits is None:                 # every tile of one image
                bits[self.layers[batch[0].image][0]] += codec.bits
                continue
            for t, share in zip(batch, codec.tile_bits / codec.tile_bits.sum()):
                bits[self.layers[t.image][0]] += codec.bits * share
        return bits

    def codec(self) -> codecs.Sequence:
        return codecs.Sequence(self.describe)

    def describe(self, layers: list[Layer] | None):
        encoding = layers is not None
        if not encoding:
            layers = [(np.zeros((planes, rec.height, rec.width), np.uint8), None) for _, rec, _, planes in self.layers]
        colors = [color for color, _ in layers]
        for i in range(len(self.batches) - 1, -1, -1):
            batch = self.batches[i]
            x = gather(colors, batch) if encoding else None
            measure = encoding and len({self.layers[t.image][0] for t in batch}) > 1
            codec = _Counted(self.coder.batch(shape(batch), mask(batch), i, measure), sum(t.h * t.w for t in batch),
                             self.progress, self.coder if measure else None)
            self._counted.append((batch, codec))
            x = yield codec, x
            if not encoding:
                scatter(colors, batch, x)
        alphas = []
        for (_, alpha), (_, rec, table, _) in zip(reversed(layers), reversed(self.layers)):
            values = np.array([v for v, _ in table], np.uint8)
            if len(values) > 1:
                index = np.searchsorted(values, alpha.ravel()) if encoding else None
                index = yield _alpha_codec(table, rec.height * rec.width), index
                alpha = values[index].reshape(rec.height, rec.width)
            elif len(values) == 1:
                alpha = np.full((rec.height, rec.width), values[0], np.uint8)
            alphas.append(alpha)
        return list(zip(colors, reversed(alphas)))


class _Counted:
    """A codec that reports ``pixels`` to a progress bar after each push or pop, and counts the bits a push adds
    (and, given the ``coder`` that measures them, its tiles' information content, ``tile_bits``)."""

    def __init__(self, codec, pixels: int, progress, coder: TileCoder | None = None):
        self.codec, self.pixels, self.progress, self.coder = codec, pixels, progress, coder
        self.bits, self.tile_bits = 0, None

    def push(self, msg, data):
        before = msg.num_bits()
        self.codec.push(msg, data)
        self.bits = msg.num_bits() - before
        if self.coder is not None:
            self.tile_bits = self.coder.tile_info / (1 << codecs.LOG_FRAC)
        self._tick()

    def pop(self, msg):
        data = self.codec.pop(msg)
        self._tick()
        return data

    def _tick(self):
        if self.progress is not None:
            self.progress.update(self.pixels)


def _alpha_codec(table: list[tuple[int, int]], n: int) -> codecs.Categorical:
    """Categorical over the alpha values present, frequencies from their counts (each at least 1)."""
    counts = np.array([c for _, c in table], np.int64)
    total, k = int(counts.sum()), len(counts)
    freq = 1 + counts * ((1 << ALPHA_PRECISION) - k) // total
    freq[np.argmax(freq)] += (1 << ALPHA_PRECISION) - int(freq.sum())
    return codecs.Categorical(np.concatenate([[0], np.cumsum(freq)]), n)
