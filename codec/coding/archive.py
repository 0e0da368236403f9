"""A file's model-coded images as one codec: the colour planes of all their layers in batches of tiles (bits back
chained from batch to batch, ``stages.TileCoder``), then the alpha planes, described once in decoding order.

Decoding pops, batch by batch from the last one coded, each batch of colour tiles, then the alpha planes. With the
coding parameter ``tuning``, an image that may be tuned has batches of its own, and its tuning (``tuning``) is
popped before its first batch: its tiles are coded with the network it gives.
"""
from __future__ import annotations

import numpy as np

from ..entropy import codecs
from ..format.container import ImageRecord
from ..format.planes import Layer
from . import tuning
from .stages import TileCoder
from .tiles import gather, mask, plan_batches, plan_tiles, scatter, shape

ALPHA_PRECISION = 16


class Archive:
    """The model-coded images of one file. Its data is the list of layers (colour, alpha) of every image, in
    order (``planes.split``); images coded outside the model have none. ``tunings``: the encoder's bias changes of
    every image (``tuning.tune``; None: untuned), with the coding parameter ``tuning``."""

    def __init__(self, coder: TileCoder, records: list[ImageRecord], progress=None, tunings: list | None = None):
        self.coder, self.progress = coder, progress
        self.tunings = tunings or [None] * len(records)
        self.layers = [(i, rec, table, planes) for i, rec in enumerate(records)
                       for table, (planes, _) in zip(rec.alphas, rec.layers)]
        shapes = [(planes, rec.height, rec.width) for _, rec, _, planes in self.layers]
        tiles = plan_tiles(shapes, coder.params.tile, coder.config.grid)
        self.tuned = frozenset(k for k, (_, rec, _, _) in enumerate(self.layers)
                               if coder.params.tuning and tuning.eligible(rec.height, rec.width))
        self.batches = plan_batches(tiles, coder.params.batch, coder.params.tile, coder.params.particles,
                                    self.tuned)
        self.codec = codecs.Sequence(self.describe)

    def push(self, msg, layers: list[Layer]) -> np.ndarray:
        """Code the layers; returns the bits each image's colour tiles added to the message, a batch's bits shared
        out by its tiles' information content when they belong to several images (alpha planes not counted)."""
        bits = np.zeros(len(self.tunings))
        for codec, symbols in reversed(self.codec.steps(layers)):
            before = msg.num_bits()
            codec.push(msg, symbols)
            if isinstance(codec, _Tuning):
                bits[codec.record] += msg.num_bits() - before
            if isinstance(codec, _Batch):
                codec.share(msg.num_bits() - before, [self.layers[t.image][0] for t in codec.tiles], bits)
        return bits

    def pop(self, msg) -> list[Layer]:
        return self.codec.pop(msg)

    def describe(self, layers: list[Layer] | None):
        encoding = layers is not None
        if not encoding:
            layers = [(np.zeros((planes, rec.height, rec.width), np.uint8), None) for _, rec, _, planes in self.layers]
        colors = [color for color, _ in layers]
        coders = {}
        for i in range(len(self.batches) - 1, -1, -1):
            batch = self.batches[i]
            x = gather(colors, batch) if encoding else None
            images, coder = {self.layers[t.image][0] for t in batch}, self.coder
            if batch[0].image in self.tuned:           # a batch of its own: one image, coded as it is tuned
                (image,) = images
                if image not in coders:
                    deltas = yield _Tuning(tuning.Codec(self.coder.net), image), self.tunings[image]
                    coders[image] = TileCoder(tuning.tuned(self.coder.net, deltas), self.coder.params)
                coder = coders[image]
            info = np.zeros(len(batch), np.int64) if encoding and len(images) > 1 else None
            x = yield _Batch(coder.batch(shape(batch), mask(batch), i, info), batch, info, self.progress), x
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


class _Tuning:
    """The codec of one image's tuning (``tuning.Codec``), which knows its image."""

    def __init__(self, codec: tuning.Codec, record: int):
        self.codec, self.record = codec, record

    def push(self, msg, deltas):
        self.codec.push(msg, deltas)

    def pop(self, msg):
        return self.codec.pop(msg)


class _Batch:
    """The codec of one batch of tiles, which reports its pixels to a progress bar after each push or pop. ``info``:
    the array the batch's encoding fills with its tiles' information content (tiles of several images)."""

    def __init__(self, codec, tiles, info: np.ndarray | None, progress):
        self.codec, self.tiles, self.info, self.progress = codec, tiles, info, progress

    def push(self, msg, data):
        self.codec.push(msg, data)
        self._tick()

    def pop(self, msg):
        data = self.codec.pop(msg)
        self._tick()
        return data

    def share(self, bits: int, images: list[int], out: np.ndarray) -> None:
        """Add ``bits`` to the images of the tiles (``out``), in proportion to the tiles' information content."""
        if self.info is None:                        # every tile of one image
            out[images[0]] += bits
            return
        np.add.at(out, images, bits * self.info / self.info.sum())

    def _tick(self):
        if self.progress is not None:
            self.progress.update(sum(t.h * t.w for t in self.tiles))


def _alpha_codec(table: list[tuple[int, int]], n: int) -> codecs.Categorical:
    """Categorical over the alpha values present, frequencies from their counts (each at least 1)."""
    counts = np.array([c for _, c in table], np.int64)
    total, k = int(counts.sum()), len(counts)
    freq = 1 + counts * ((1 << ALPHA_PRECISION) - k) // total
    freq[np.argmax(freq)] += (1 << ALPHA_PRECISION) - int(freq.sum())
    return codecs.Categorical(np.concatenate([[0], np.cumsum(freq)]), n)
