"""How an image's pixels are coded (its ``coding``), and the 8-bit layers the model codes.

Codings: the model (``PLANES``, or ``COLOURS`` for a palette image), ``STORED`` (the raw pixel bytes, for data no
coder can shrink, such as noise), or a lossless ``JPEG_XL`` or ``PNG`` stream (for content a classical coder codes
shorter, such as text, screenshots and flat graphics); the encoder picks the shortest.

The model codes 8-bit layers: colour planes (1 or 3) and an optional alpha plane each.

- 8-bit modes: one layer, the image's own planes.
- 16-bit modes: two layers, the high bytes, then the low bytes minus the high bytes (mod 256), which is all zeros for
  the common 8-to-16-bit scaling (x * 257) and as random as the low bytes themselves otherwise.
- Palette (P): the colours (RGB, RGBA with a transparency table) when each index used is the first palette entry of
  its colour, so that colours map back to indices exactly (``COLOURS``); else the indices as one plane (``PLANES``).
"""
from __future__ import annotations

import ast

import numpy as np

from .image import MODES, Picture

PLANES, COLOURS, STORED, JPEG_XL, PNG = 0, 1, 2, 3, 4
CODINGS = {PLANES: "model", COLOURS: "model, palette colours", STORED: "stored", JPEG_XL: "JPEG XL", PNG: "PNG"}
STREAMS = (JPEG_XL, PNG)            # codings whose bytes are a stream of recorded size
BYTES = (STORED, *STREAMS)          # codings whose pixels travel as bytes, outside the model
Layer = tuple[np.ndarray, "np.ndarray | None"]     # (colour (C, H, W) uint8, alpha (H, W) uint8 or None)


def palette_alpha(palette: bytes, metadata: list[tuple[str, bytes]]) -> np.ndarray | None:
    """Per-entry alpha of a palette from its transparency (a table, or the index of one transparent entry)."""
    value = dict(metadata).get("transparency")
    if value is None:
        return None
    alpha = np.full(len(palette) // 3, 255, np.uint8)
    if value[:1].isdigit():
        index = ast.literal_eval(value.decode())
        if isinstance(index, int) and 0 <= index < len(alpha):
            alpha[index] = 0
    else:
        table = np.frombuffer(value, np.uint8)[:len(alpha)]
        alpha[:len(table)] = table
    return alpha


def _keys(palette: bytes, metadata) -> tuple[np.ndarray, np.ndarray | None]:
    """One integer per palette entry for its colour and alpha; the alpha table."""
    rgb = np.frombuffer(palette, np.uint8).reshape(-1, 3).astype(np.int64)
    alpha = palette_alpha(palette, metadata)
    a = 0 if alpha is None else alpha.astype(np.int64)
    return rgb[:, 0] << 24 | rgb[:, 1] << 16 | rgb[:, 2] << 8 | a, alpha


def coding_of(pic: Picture) -> int:
    """COLOURS for a palette image whose colours determine its indices, else PLANES."""
    if pic.mode != "P":
        return PLANES
    keys, _ = _keys(pic.palette, pic.metadata)
    used = np.unique(pic.color)
    if used[-1] >= len(keys):
        raise ValueError("palette index beyond the palette")
    distinct, first = np.unique(keys, return_index=True)
    return COLOURS if np.array_equal(first[np.searchsorted(distinct, keys[used])], used) else PLANES


def split(pic: Picture, coding: int) -> list[Layer]:
    """The 8-bit layers that code ``pic``."""
    if MODES[pic.mode].depth == 16:
        hi = [None if p is None else (p >> 8).astype(np.uint8) for p in (pic.color, pic.alpha)]
        lo = [None if p is None else p.astype(np.uint8) - h for p, h in zip((pic.color, pic.alpha), hi)]
        return [(hi[0], hi[1]), (lo[0], lo[1])]
    if coding == COLOURS:
        rgb = np.frombuffer(pic.palette, np.uint8).reshape(-1, 3)
        alpha = palette_alpha(pic.palette, pic.metadata)
        index = pic.color[0]
        return [(np.ascontiguousarray(rgb[index].transpose(2, 0, 1)), None if alpha is None else alpha[index])]
    return [(pic.color, pic.alpha)]


def shapes(mode: str, coding: int, palette: bytes, metadata) -> list[tuple[int, bool]]:
    """(colour planes, alpha) of each layer the model codes for an image, from what its record holds."""
    m = MODES[mode]
    if coding in BYTES:
        return []
    if coding == COLOURS:
        return [(3, palette_alpha(palette, metadata) is not None)]
    return [(m.planes, m.alpha)] * (2 if m.depth == 16 else 1)


def join(mode: str, coding: int, palette: bytes, metadata, layers: list[Layer]) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour planes and alpha of the image from its decoded layers."""
    if MODES[mode].depth == 16:
        (hc, ha), (lc, la) = layers
        merge = lambda h, lo: None if h is None else h.astype(np.uint16) << 8 | (lo + h).astype(np.uint16)
        return merge(hc, lc), merge(ha, la)
    color, alpha = layers[0]
    if coding == COLOURS:
        keys, _ = _keys(palette, metadata)
        order = np.argsort(keys, kind="stable")            # equal colours: the first entry first
        c = color.astype(np.int64)
        wanted = c[0] << 24 | c[1] << 16 | c[2] << 8 | (0 if alpha is None else alpha.astype(np.int64))
        pos = np.clip(np.searchsorted(keys[order], wanted), 0, len(order) - 1)
        return order[pos].astype(np.uint8)[None], None
    return color, alpha
