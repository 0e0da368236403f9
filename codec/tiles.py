"""Cutting images into model tiles and grouping the tiles into network batches.

Tiles are ``tile`` x ``tile`` crops in row-major order; edge tiles are smaller. Every tile is padded up to a
multiple of the model stride with a constant value; padding is never coded, so it costs nothing but context.
Batches hold tiles of one padded shape. The very first batches grow 1, 1, 2, 2, 4, 4, ... tiles: the first
batch's posterior pops have nothing to take bits back from, and each later batch then finds about as many bits
in the message as its own pops need, even for a latent whose posterior carries as many bits as its tile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 128


@dataclass(frozen=True)
class Tile:
    image: int      # index of the image in the job
    y: int
    x: int
    h: int          # real pixels
    w: int
    ph: int         # padded to a multiple of the stride
    pw: int


def _ceil_to(v: int, m: int) -> int:
    return -(-v // m) * m


def plan_tiles(sizes: list[tuple[int, int]], tile: int, stride: int) -> list[Tile]:
    """Tiles of every image (height, width), image by image, row-major."""
    out = []
    for i, (height, width) in enumerate(sizes):
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                h, w = min(tile, height - y), min(tile, width - x)
                out.append(Tile(i, y, x, h, w, _ceil_to(h, stride), _ceil_to(w, stride)))
    return out


def plan_batches(tiles: list[Tile], batch: int, tile: int) -> list[list[Tile]]:
    """Consecutive same-shape tiles in batches of at most ``batch`` full tiles' worth of pixels (so many more
    small tiles, e.g. whole CIFAR images, share a call); the first batches grow 1, 1, 2, 2, 4, 4, ..."""
    groups: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        groups.setdefault((t.ph, t.pw), []).append(t)
    batches = []
    for (ph, pw), group in groups.items():
        most = max(1, batch * tile * tile // (ph * pw))
        i = 0
        while i < len(group):
            limit = min(most, 1 << (len(batches) // 2))
            batches.append(group[i:i + limit])
            i += limit
    return batches


def gather(planes: list[np.ndarray], batch: list[Tile]) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (B, C, ph, pw) padded with PAD, mask of real pixels (B, ph, pw)) for a batch of tiles."""
    c = planes[batch[0].image].shape[0]
    ph, pw = batch[0].ph, batch[0].pw
    x = np.full((len(batch), c, ph, pw), PAD, np.uint8)
    mask = np.zeros((len(batch), ph, pw), bool)
    for k, t in enumerate(batch):
        x[k, :, :t.h, :t.w] = planes[t.image][:, t.y:t.y + t.h, t.x:t.x + t.w]
        mask[k, :t.h, :t.w] = True
    return x, mask


def scatter(planes: list[np.ndarray], batch: list[Tile], x: np.ndarray) -> None:
    """Write decoded tiles back into their images."""
    for k, t in enumerate(batch):
        planes[t.image][:, t.y:t.y + t.h, t.x:t.x + t.w] = x[k, :, :t.h, :t.w]
