"""Reading and writing images losslessly: pixel planes, mode, alpha and ICC profile."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

# mode -> (colour planes, has alpha); "1" goes through L (0/255) and is restored exactly
MODES = {"L": (1, False), "LA": (1, True), "RGB": (3, False), "RGBA": (3, True), "1": (1, False)}
MAX_PIXELS = 1 << 28
Image.MAX_IMAGE_PIXELS = MAX_PIXELS     # Pillow's decompression-bomb guard, at vaezip's own limit


class ImageError(ValueError):
    """An input that is not an image vaezip can code losslessly."""


@dataclass
class Picture:
    """An image as planes: ``color`` (C, H, W) uint8 with C in {1, 3}, ``alpha`` (H, W) uint8 or None."""
    mode: str
    color: np.ndarray
    alpha: np.ndarray | None = None
    icc: bytes = b""

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.color.shape[1], self.color.shape[2]

    @property
    def subpixels(self) -> int:
        return self.color.size + (0 if self.alpha is None else self.alpha.size)

    def pixel_bytes(self) -> bytes:
        """The exact pixel content, for checksums."""
        return self.color.tobytes() + (b"" if self.alpha is None else self.alpha.tobytes())


def _raw_mode(args) -> str:
    """The raw (file) mode of a Pillow tile, e.g. ``RGB;16B``: the decoder argument itself or its first entry."""
    if isinstance(args, tuple) and args:
        args = args[0]
    return args if isinstance(args, str) else ""


def read_image(data: bytes, name: str = "input") -> Picture:
    """Decode an image file's bytes; unsupported modes are refused with a one-line reason."""
    unreadable = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
    try:
        im = Image.open(io.BytesIO(data))
    except unreadable as e:
        raise ImageError(f"{name}: not a readable image ({e})") from None
    if im.width * im.height > MAX_PIXELS:
        raise ImageError(f"{name}: {im.width}x{im.height} is larger than vaezip's limit of {MAX_PIXELS} pixels")
    deep = any(";16" in _raw_mode(t.args) for t in im.tile)   # Pillow would reduce 16-bit samples to 8 bits
    try:
        im.load()
    except unreadable as e:
        raise ImageError(f"{name}: not a readable image ({e})") from None
    if im.mode not in MODES:
        raise ImageError(f"{name}: unsupported image mode {im.mode} (vaezip codes L, LA, RGB, RGBA and 1; "
                         f"convert it first, e.g. to RGB or RGBA, if that is lossless for this image)")
    if deep:
        raise ImageError(f"{name}: 16-bit samples are not supported (vaezip codes 8-bit images losslessly)")
    mode = im.mode
    icc = im.info.get("icc_profile") or b""
    arr = np.asarray(im.convert("L") if mode == "1" else im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    planes, has_alpha = MODES[mode]
    color = np.ascontiguousarray(arr[:, :, :planes].transpose(2, 0, 1))
    alpha = np.ascontiguousarray(arr[:, :, planes]) if has_alpha else None
    return Picture(mode, color, alpha, icc)


def write_png(pic: Picture) -> bytes:
    """PNG bytes with the original mode, pixels and ICC profile."""
    arr = pic.color.transpose(1, 2, 0)
    if pic.alpha is not None:
        arr = np.concatenate([arr, pic.alpha[:, :, None]], axis=2)
    base = {"L": "L", "1": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA"}[pic.mode]
    im = Image.fromarray(arr[:, :, 0] if base == "L" else arr, base)
    if pic.mode == "1":
        im = im.convert("1", dither=Image.Dither.NONE)
    out = io.BytesIO()
    im.save(out, "PNG", icc_profile=pic.icc or None)
    return out.getvalue()
