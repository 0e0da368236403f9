"""Standard lossless codecs the benchmark compares against: one image array in, one whole file out, and back."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import imagecodecs
import numpy as np
import PIL
from PIL import Image, features


@dataclass(frozen=True)
class Baseline:
    name: str
    encode: Callable[[np.ndarray], bytes]      # (H, W) or (H, W, 3) uint8 -> file bytes
    decode: Callable[[bytes], np.ndarray]      # file bytes -> (H, W[, C]) uint8
    notes: str


def _pillow_encode(fmt: str, **options) -> Callable[[np.ndarray], bytes]:
    def encode(x: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(x).save(out, fmt, **options)
        return out.getvalue()
    return encode


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def _jpegxl(effort: int, threads: int) -> Baseline:
    return Baseline(f"JPEG XL -e{effort}",
                    lambda x: imagecodecs.jpegxl_encode(x, lossless=True, effort=effort, numthreads=threads),
                    lambda b: imagecodecs.jpegxl_decode(b, numthreads=threads),
                    f"{imagecodecs.jpegxl_version()}, lossless, bare codestream")


def baselines(threads: int) -> list[Baseline]:
    """PNG, WebP lossless, JPEG 2000, JPEG-LS and JPEG XL at efforts 1, 7 and 9, all lossless."""
    return [
        Baseline("PNG", _pillow_encode("PNG", optimize=True), _pillow_decode,
                 f"Pillow {PIL.__version__}, optimize=True"),
        Baseline("WebP lossless", _pillow_encode("WEBP", lossless=True, quality=100, method=6), _pillow_decode,
                 f"libwebp {features.version('webp')} via Pillow, method 6, quality 100 (grayscale stored as RGB)"),
        Baseline("JPEG 2000", lambda x: imagecodecs.jpeg2k_encode(x, reversible=True, codecformat="J2K",
                                                                  numthreads=threads),
                 lambda b: imagecodecs.jpeg2k_decode(b, numthreads=threads),
                 f"{imagecodecs.jpeg2k_version()}, reversible 5/3 wavelet, .j2k codestream"),
        Baseline("JPEG-LS", imagecodecs.jpegls_encode, imagecodecs.jpegls_decode,
                 f"{imagecodecs.jpegls_version()}, near-lossless 0"),
        *(_jpegxl(effort, threads) for effort in (1, 7, 9)),
    ]
