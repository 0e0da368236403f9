"""Images coded outside the model: their raw pixel bytes (STORED) or a lossless JPEG XL or PNG stream.

The model cannot learn everything people compress: text, screenshots and flat graphics code several times shorter
with a classical lossless coder, and noise codes shortest as it is. The encoder codes such an image this way when
that is shorter (``policy``); its bytes follow the rANS message in the file.
"""
from __future__ import annotations

import os

import numpy as np

from .container import FormatError, ImageRecord
from .image import MODES, Picture
from .planes import CODINGS, JPEG_XL, PNG, STORED

FINAL_EFFORT = 7        # JPEG XL effort of the streams written (cjxl's default)
MAX_EFFORT = 9          # the same at compress's effort "max" (about 4 times slower, about 0.6 % shorter on photos)


def as_array(pic: Picture) -> np.ndarray:
    """H x W for one plane, else H x W x C: the picture's samples (palette images: their indices), one copy."""
    c, h, w = pic.color.shape
    arr = np.empty((h, w, c + (pic.alpha is not None)), pic.color.dtype)
    arr[:, :, :c] = pic.color.transpose(1, 2, 0)
    if pic.alpha is not None:
        arr[:, :, c] = pic.alpha
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def jpeg_xl(pic: Picture, effort: int = FINAL_EFFORT) -> bytes:
    """JPEG XL codes groups of 256 x 256 pixels in parallel: one thread for a picture of one group (more would
    only cost their start, 15 % of a CIFAR-10 image's probe)."""
    import imagecodecs
    threads = os.cpu_count() if pic.size[0] * pic.size[1] > 1 << 16 else 1
    return imagecodecs.jpegxl_encode(as_array(pic), lossless=True, effort=effort, numthreads=threads)


def png(pic: Picture, fast: bool = False) -> bytes:
    """The shortest of PNG's filter choices at full deflate level, of the samples alone (palette images: their
    indices as gray; the record holds the rest). Often a fifth shorter than a PNG writer's own optimization.
    ``fast``: adaptive filters at deflate level 1 instead (a fortieth of the time, up to 3 times longer)."""
    import imagecodecs
    arr = as_array(pic)
    f = imagecodecs.PNG.FILTER
    if fast:
        return imagecodecs.png_encode(arr, level=1, filter=f.ALL)
    return min((imagecodecs.png_encode(arr, level=9, filter=k) for k in (f.NONE, f.SUB, f.UP, f.AVG, f.PAETH, f.ALL)),
               key=len)


def encode(pic: Picture, coding: int, effort: int = FINAL_EFFORT) -> bytes:
    """The bytes that code the picture's pixels in ``coding`` (STORED, JPEG_XL at ``effort`` or PNG)."""
    return {STORED: pic.pixel_bytes, JPEG_XL: lambda: jpeg_xl(pic, effort), PNG: lambda: png(pic)}[coding]()


def decode(rec: ImageRecord, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour planes and alpha of an image from its bytes."""
    kind = MODES[rec.mode]
    dtype = np.dtype("<u2") if kind.depth == 16 else np.dtype(np.uint8)
    channels = kind.planes + kind.alpha
    if rec.coding == STORED:
        arr = np.frombuffer(data, dtype).reshape(channels, rec.height, rec.width).astype(dtype.newbyteorder("="))
    else:
        import imagecodecs
        try:
            arr = (imagecodecs.jpegxl_decode if rec.coding == JPEG_XL else imagecodecs.png_decode)(data)
        except Exception as e:          # noqa: BLE001 - any failure of the library on these bytes
            raise FormatError(f"corrupt .vz file: bad {CODINGS[rec.coding]} stream ({type(e).__name__})") from None
        if arr.size != channels * rec.height * rec.width or arr.dtype != dtype.newbyteorder("="):
            raise FormatError(f"corrupt .vz file: the {CODINGS[rec.coding]} stream does not hold the recorded image")
        arr = arr.reshape(rec.height, rec.width, channels).transpose(2, 0, 1)
    arr = np.ascontiguousarray(arr)
    return arr[:kind.planes], (arr[kind.planes] if kind.alpha else None)
