"""Reading and writing images losslessly: pixels (8 and 16 bits, palettes), mode, alpha, ICC profile and metadata."""
from __future__ import annotations

import ast
import io
import struct
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError


@dataclass(frozen=True)
class Mode:
    code: int       # in .vz files
    planes: int     # colour planes (a palette image: one plane of indices)
    alpha: bool
    depth: int = 8  # bits per sample


# "1" goes through L (0/255) and is restored exactly; "P" holds palette indices; the ";16" modes are 16-bit PNGs
MODES = {"L": Mode(0, 1, False), "LA": Mode(1, 1, True), "RGB": Mode(2, 3, False), "RGBA": Mode(3, 3, True),
         "1": Mode(4, 1, False), "P": Mode(5, 1, False), "I;16": Mode(6, 1, False, 16),
         "LA;16": Mode(7, 1, True, 16), "RGB;16": Mode(8, 3, False, 16), "RGBA;16": Mode(9, 3, True, 16)}
MAX_PIXELS = 1 << 28
Image.MAX_IMAGE_PIXELS = MAX_PIXELS     # Pillow's decompression-bomb guard, at vaezip's own limit
# metadata kept (key, bytes): "exif", "xmp", "dpi", "gamma", "transparency" and "text:<keyword>" for text chunks
TEXT = "text:"


class ImageError(ValueError):
    """An input that is not an image vaezip can code losslessly."""


@dataclass
class Picture:
    """An image as planes: ``color`` (C, H, W) and ``alpha`` (H, W) or None, uint8 (uint16 for 16-bit modes);
    a palette image has one plane of indices and its ``palette`` (RGB triples)."""
    mode: str
    color: np.ndarray
    alpha: np.ndarray | None = None
    icc: bytes = b""
    palette: bytes = b""
    metadata: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.color.shape[1], self.color.shape[2]

    @property
    def subpixels(self) -> int:
        return self.color.size + (0 if self.alpha is None else self.alpha.size)

    def pixel_bytes(self) -> bytes:
        """The exact pixel content, for checksums (16-bit samples little-endian)."""
        planes = [self.color] + ([] if self.alpha is None else [self.alpha])
        return b"".join(p.astype(p.dtype.newbyteorder("<"), copy=False).tobytes() for p in planes)

    def same_pixels(self, other: Picture) -> bool:
        """Whether ``other`` has this picture's mode and every one of its pixels."""
        return self.mode == other.mode and self.pixel_bytes() == other.pixel_bytes()

    def stripped(self) -> Picture:
        """Without the metadata that does not change how the pixels look (transparency and ICC stay)."""
        return replace(self, metadata=[(k, v) for k, v in self.metadata if k == "transparency"])


def _raw_mode(args) -> str:
    """The raw (file) mode of a Pillow tile, e.g. ``RGB;16B``: the decoder argument itself or its first entry."""
    if isinstance(args, tuple) and args:
        args = args[0]
    return args if isinstance(args, str) else ""


def is_lossy(data: bytes) -> bool:
    """A JPEG or a lossy WebP: its decoded pixels are not what the camera or editor had."""
    return data[:3] == b"\xff\xd8\xff" or (data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8 ")


def metadata_of(im: Image.Image) -> list[tuple[str, bytes]]:
    """The metadata vaezip keeps, from a Pillow image's info."""
    info, out = im.info, []
    if info.get("exif"):
        out.append(("exif", bytes(info["exif"])))
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if xmp:
        out.append(("xmp", xmp.encode() if isinstance(xmp, str) else bytes(xmp)))
    for key in ("dpi", "gamma"):
        if key in info:
            out.append((key, repr(info[key]).encode()))
    if "transparency" in info:
        t = info["transparency"]
        out.append(("transparency", t if isinstance(t, bytes) else repr(t).encode()))
    for key, value in getattr(im, "text", {}).items():
        if key != "XML:com.adobe.xmp" and isinstance(value, str):
            out.append((TEXT + key, value.encode()))
    return out


def read_image(data: bytes, name: str = "input") -> Picture:
    """Decode an image file's bytes; unsupported modes are refused with a one-line reason."""
    unreadable = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
    try:
        im = Image.open(io.BytesIO(data))
        if im.width * im.height > MAX_PIXELS:
            raise ImageError(f"{name}: {im.width}x{im.height} is larger than vaezip's limit of {MAX_PIXELS} pixels")
        deep = any(";16" in _raw_mode(t.args) for t in im.tile)   # Pillow reduces 16-bit colour to 8 bits
        im.load()
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image (not a format Pillow reads)") from None
    except unreadable as e:
        raise ImageError(f"{name}: not a readable image ({e})") from None
    return from_pil(im, name, data if deep else None)


def from_pil(im: Image.Image, name: str = "image", deep_png: bytes | None = None) -> Picture:
    """A Picture from a loaded Pillow image (``deep_png``: the file of a 16-bit PNG, which Pillow reduces)."""
    icc, meta = im.info.get("icc_profile") or b"", metadata_of(im)
    if deep_png is not None or im.mode == "I;16":
        arr = _deep(im, name, deep_png)
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        return _planes({1: "I;16", 2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[channels], arr, icc, meta)
    if im.mode == "P":
        if im.palette is None or im.palette.mode != "RGB":
            raise ImageError(f"{name}: palette of mode {getattr(im.palette, 'mode', None)} is not supported")
        palette = bytes(im.palette.palette)[:768]
        return Picture("P", np.asarray(im)[None].copy(), None, icc, palette + bytes(-len(palette) % 3), meta)
    if im.mode not in MODES:
        raise ImageError(f"{name}: unsupported image mode {im.mode} (vaezip codes L, LA, RGB, RGBA, 1, P and 16-bit "
                         f"PNG; convert it first if that is lossless for this image)")
    return _planes(im.mode, np.asarray(im.convert("L") if im.mode == "1" else im), icc, meta)


def _deep(im: Image.Image, name: str, png: bytes | None) -> np.ndarray:
    if png is None:
        return np.asarray(im).astype(np.uint16)
    if im.format != "PNG":
        raise ImageError(f"{name}: 16-bit samples are supported in PNG files only")
    import imagecodecs
    return imagecodecs.png_decode(png).astype(np.uint16, copy=False)


def _planes(mode: str, arr: np.ndarray, icc: bytes, meta) -> Picture:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    planes = MODES[mode].planes
    color = np.ascontiguousarray(arr[:, :, :planes].transpose(2, 0, 1))
    alpha = np.ascontiguousarray(arr[:, :, planes]) if MODES[mode].alpha else None
    return Picture(mode, color, alpha, icc, b"", meta)


def to_pil(pic: Picture) -> Image.Image:
    """The Pillow image of a picture, with its palette; metadata in ``info``. Pillow has 16-bit grayscale (I;16) but
    no 16-bit colour or gray+alpha modes: those come back as LA, RGB or RGBA of their high bytes, as Pillow reads the
    same pictures from 16-bit PNG or TIFF files (their exact samples: ``as_array``)."""
    arr = pic.color.transpose(1, 2, 0)
    if pic.alpha is not None:
        arr = np.concatenate([arr, pic.alpha[:, :, None]], axis=2)
    base = "L" if pic.mode in ("1", "P") else pic.mode
    if MODES[pic.mode].depth == 16 and pic.mode != "I;16":
        arr, base = (arr >> 8).astype(np.uint8), pic.mode[:-3]
    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, base if base != "I;16" else None)
    if pic.mode == "1":
        im = im.convert("1", dither=Image.Dither.NONE)
    elif pic.mode == "P":
        im = im.convert("P")
        im.putpalette(pic.palette, "RGB")
    if pic.icc:
        im.info["icc_profile"] = pic.icc
    for key, value in pic.metadata:
        im.info[key] = _info_value(key, value)
    return im


def _info_value(key: str, value: bytes):
    if key in ("dpi", "gamma") or (key == "transparency" and value[:1] in b"(0123456789"):
        return ast.literal_eval(value.decode())
    return value.decode() if key.startswith(TEXT) else value


def write_png(pic: Picture) -> bytes:
    """PNG bytes with the original mode, pixels, palette, ICC profile and metadata."""
    if MODES[pic.mode].depth == 16:
        return _deep_png(pic)
    out = io.BytesIO()
    to_pil(pic).save(out, "PNG", **png_params(pic))
    return out.getvalue()


def png_params(pic: Picture) -> dict:
    """Pillow's PNG save arguments for the picture's ICC profile and metadata."""
    info, params = PngImagePlugin.PngInfo(), {"icc_profile": pic.icc or None, "pnginfo": None}
    for key, value in pic.metadata:
        if key.startswith(TEXT):
            text = value.decode()
            if all(ord(ch) < 256 for ch in text):
                info.add_text(key[len(TEXT):], text)
            else:
                info.add_itxt(key[len(TEXT):], text)
        elif key == "xmp":
            info.add_itxt("XML:com.adobe.xmp", value.decode("utf-8", "replace"))
        elif key == "gamma":
            info.add(b"gAMA", struct.pack(">I", round(_info_value(key, value) * 100000)))
        else:
            params[key] = _info_value(key, value)
    if info.chunks:
        params["pnginfo"] = info
    return params


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _deep_png(pic: Picture) -> bytes:
    """A 16-bit PNG (imagecodecs) with the metadata chunks Pillow writes for an 8-bit one spliced in."""
    import imagecodecs
    arr = pic.color.transpose(1, 2, 0)
    if pic.alpha is not None:
        arr = np.concatenate([arr, pic.alpha[:, :, None]], axis=2)
    png = imagecodecs.png_encode(np.ascontiguousarray(arr[:, :, 0] if arr.shape[2] == 1 else arr))
    donor = io.BytesIO()
    params = png_params(pic)
    transparency = params.pop("transparency", None)
    Image.new("L", (1, 1)).save(donor, "PNG", **params)
    chunks, pos, data = [], 8, donor.getvalue()
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind not in (b"IHDR", b"IDAT", b"IEND"):
            chunks.append(data[pos:pos + 12 + length])
        pos += 12 + length
    if transparency is not None:
        values = transparency if isinstance(transparency, tuple) else (transparency,)
        chunks.append(_chunk(b"tRNS", struct.pack(f">{len(values)}H", *values)))
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:ihdr_end] + b"".join(chunks) + png[ihdr_end:]
