"""Cutting images into model tiles and grouping the tiles into network batches; the centres of images, on which
the policy estimates the model and training measures it.

Tiles are ``tile`` x ``tile`` crops in row-major order; edge tiles are smaller. Every tile is padded up to a
multiple of the model's grid with a constant value; padding is never coded, so it costs nothing but context.
Batches hold tiles of one shape: channels and padded size. The very first batches grow 1, 1, 2, 2, 4, 4, ... tiles:
the first batch's posterior pops have nothing to take bits back from, and each later batch then finds about as many
bits in the message as its own pops need, even for a latent whose posterior carries as many bits as its tile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 128


@dataclass(frozen=True)
class Tile:
    image: int      # index of the image in the job
    channels: int   # colour planes
    y: int
    x: int
    h: int          # real pixels
    w: int
    ph: int         # padded to a multiple of the stride
    pw: int


def _ceil_to(v: int, m: int) -> int:
    return -(-v // m) * m


def plan_tiles(shapes: list[tuple[int, int, int]], tile: int, grid: int) -> list[Tile]:
    """Tiles of every image (channels, height, width), image by image, row-major."""
    out = []
    for i, (channels, height, width) in enumerate(shapes):
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                h, w = min(tile, height - y), min(tile, width - x)
                out.append(Tile(i, channels, y, x, h, w, _ceil_to(h, grid), _ceil_to(w, grid)))
    return out


def plan_batches(tiles: list[Tile], batch: int, tile: int, particles: int = 1,
                 alone: frozenset[int] = frozenset()) -> list[list[Tile]]:
    """Same-shape tiles in batches of at most ``batch`` full tiles' worth of pixels (so many more small tiles, e.g.
    whole CIFAR images, share a call), the tiles of the images in ``alone`` with no other image's; the first batches
    grow 1, 1, 2, 2, 4, 4, ... With N ``particles`` each size repeats 2N times: a batch pops N latents per tile
    before it pushes back, so it needs N times the bits."""
    groups: dict[tuple[int, int, int, int], list[Tile]] = {}
    for t in tiles:
        groups.setdefault((t.channels, t.ph, t.pw, t.image if t.image in alone else -1), []).append(t)
    batches = []
    for (_, ph, pw, _), group in groups.items():
        most = max(1, batch * tile * tile // (ph * pw))
        i = 0
        while i < len(group):
            limit = min(most, 1 << min(30, len(batches) // (2 * particles)))
            batches.append(group[i:i + limit])
            i += limit
    return batches


def centre(a: np.ndarray, side: int) -> np.ndarray:
    """The centre side x side (at most) of an array's last two axes."""
    h, w = a.shape[-2:]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return a[..., y:y + side, x:x + side]


def centres(layers: list[np.ndarray], side: int, pixels: int) -> list[np.ndarray]:
    """The layers' centres (``centre``), up to the first that brings their pixels to ``pixels`` or more."""
    out, total = [], 0
    for x in layers:
        out.append(centre(x, side))
        total += out[-1].shape[-2] * out[-1].shape[-1]
        if total >= pixels:
            break
    return out


def shape(batch: list[Tile]) -> tuple[int, int, int, int]:
    """(B, C, ph, pw) of a batch's pixel array."""
    return len(batch), batch[0].channels, batch[0].ph, batch[0].pw


def mask(batch: list[Tile]) -> np.ndarray:
    """The real (not padding) pixels of a batch, (B, ph, pw)."""
    out = np.zeros((len(batch), batch[0].ph, batch[0].pw), bool)
    for k, t in enumerate(batch):
        out[k, :t.h, :t.w] = True
    return out


def gather(planes: list[np.ndarray], batch: list[Tile]) -> np.ndarray:
    """The pixels of a batch of tiles, (B, C, ph, pw), padded with PAD."""
    x = np.full(shape(batch), PAD, np.uint8)
    for k, t in enumerate(batch):
        x[k, :, :t.h, :t.w] = planes[t.image][:, t.y:t.y + t.h, t.x:t.x + t.w]
    return x


def scatter(planes: list[np.ndarray], batch: list[Tile], x: np.ndarray) -> None:
    """Write decoded tiles back into their images."""
    for k, t in enumerate(batch):
        planes[t.image][:, t.y:t.y + t.h, t.x:t.x + t.w] = x[k, :, :t.h, :t.w]
