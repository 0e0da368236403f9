"""Compress and decompress whole images or archives of images to and from .vz bytes."""
from __future__ import annotations

import hashlib

import numpy as np

from .coder import Archive, TileCoder
from .container import CHECKSUM_BYTES, HASH_BYTES, LIMITS, CodingParams, FormatError, Header, ImageRecord, pack
from .image import Picture
from .intnet import exact_arithmetic
from .layers import Layer, coding_of, join, split
from .rans import CorruptMessage, Message
from .bound import image_bounds
from .weights import ModelError, load_model, require_channels, shipped_models

SUBPIXELS_PER_LANE = 4096      # lanes = coded subpixels / this, at least 1 (36-52 bits per lane: docs/CODER.md)
SAMPLE_PIXELS = 1 << 16        # the default model is chosen on about this many pixels of the input


def checksum(pictures: list[Picture]) -> bytes:
    """BLAKE2b of every image's pixels in order: one check of the whole decode, 8 bytes per file."""
    h = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    for pic in pictures:
        h.update(pic.pixel_bytes())
    return h.digest()


def lane_count(pictures: list[Picture]) -> int:
    return int(np.clip(sum(p.subpixels for p in pictures) // SUBPIXELS_PER_LANE, 1, LIMITS["lanes"]))


def _alpha_table(alpha: np.ndarray | None) -> list[tuple[int, int]]:
    if alpha is None:
        return []
    values, counts = np.unique(alpha, return_counts=True)
    return [(int(v), int(c)) for v, c in zip(values, counts)]


def record(pic: Picture, name: str) -> tuple[ImageRecord, list[Layer]]:
    """The header record of a picture and the layers that code it."""
    coding = coding_of(pic)
    layers = split(pic, coding)
    rec = ImageRecord(name, pic.mode, *pic.size, pic.icc, pic.palette, pic.metadata, coding,
                      [_alpha_table(alpha) for _, alpha in layers])
    return rec, layers


def sample(layers: list[Layer]) -> list[np.ndarray]:
    """Colour planes of the layers, each cropped to its centre 256 x 256 at most, up to about SAMPLE_PIXELS."""
    out, total = [], 0
    for color, _ in layers:
        h, w = color.shape[1:]
        y, x = max(0, (h - 256) // 2), max(0, (w - 256) // 2)
        out.append(color[:, y:y + 256, x:x + 256])
        total += out[-1].shape[1] * out[-1].shape[2]
        if total >= SAMPLE_PIXELS:
            break
    return out


def choose_model(layers: list[Layer], params: CodingParams, device: str = "cpu") -> str:
    """The shipped model whose scale-calibrated -ELBO on a sample of the layers is lowest."""
    planes = sample(layers)
    best = None
    for name in shipped_models():
        model = load_model(name, device)[0]
        if model.config.channels == 1 and any(p.shape[0] != 1 for p in planes):
            continue
        bits = image_bounds(model, planes, tile=params.tile, batch=params.batch, device=device,
                            calibrate=True).elbo_bits.sum()
        if best is None or bits < best[0]:
            best = bits, name
    return best[1]


def compress(pictures: list[Picture], names: list[str], model_name: str | None, params: CodingParams,
             archive: bool = False, device: str = "cpu", progress=None) -> bytes:
    """.vz bytes of the pictures; ``model_name`` None: the shipped model that codes them shortest."""
    params.check()
    records, layers = zip(*(record(p, n if archive else "") for p, n in zip(pictures, names)))
    records, layers = list(records), [layer for ls in layers for layer in ls]
    if model_name is None:
        with exact_arithmetic():
            model_name = choose_model(layers, params, device)
    model, name, digest = load_model(model_name, device)
    require_channels(model, name, pictures)
    msg = Message(lane_count(pictures))
    with exact_arithmetic():
        Archive(TileCoder(model, params, device), records, progress).codec().push(msg, layers)
    header = Header(name, digest[:HASH_BYTES], params, msg.lanes, archive, records, checksum(pictures))
    return pack(header, msg.to_bytes())


def decompress(header: Header, payload: bytes, device: str = "cpu", model_override: str | None = None,
               progress=None) -> list[Picture]:
    """Decode and verify every image of a parsed file; raises FormatError for anything that is not a faithful .vz."""
    try:
        model, _, digest = load_model(model_override or header.model, device)
    except ModelError as e:
        raise ModelError(f"{e}; the file needs model {header.model!r} (pass its weights with --model)") from None
    if digest[:HASH_BYTES] != header.weights:
        raise ModelError(f"the file was made with other weights of model {header.model!r} (hash mismatch)")
    if model.config.channels == 1 and any(planes != 1 for r in header.images for planes, _ in r.layers):
        raise FormatError("corrupt .vz file: colour images with a grayscale model")
    try:
        msg = Message.from_bytes(payload, header.lanes)
        with exact_arithmetic():
            layers = Archive(TileCoder(model, header.params, device), header.images, progress).codec().pop(msg)
        msg.check_initial()
    except CorruptMessage as e:
        raise FormatError(f"corrupt .vz file: {e}") from None
    pictures = []
    for r in header.images:
        count = len(r.layers)
        color, alpha = join(r.mode, r.coding, r.palette, r.metadata, layers[:count])
        layers = layers[count:]
        pictures.append(Picture(r.mode, color, alpha, r.icc, r.palette, r.metadata))
    if checksum(pictures) != header.checksum:
        raise FormatError("corrupt .vz file: the decoded pixels fail the checksum")
    return pictures
