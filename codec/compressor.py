"""Compress and decompress whole images or archives of images to and from .vz bytes."""
from __future__ import annotations

import hashlib

import numpy as np

from . import classical
from .bound import image_bounds
from .coder import Archive, TileCoder
from .container import CHECKSUM_BYTES, HASH_BYTES, LIMITS, CodingParams, FormatError, Header, ImageRecord, pack
from .image import Picture
from .intnet import exact_arithmetic
from .layers import BYTES, JPEG_XL, PNG, STORED, STREAMS, Layer, coding_of, join, split
from .rans import CorruptMessage, Message
from .weights import ModelError, load_model, require_channels, shipped_models

SYMBOLS_PER_LANE = 16384       # lanes = coded symbols / this, at least 1 (36-52 bits per lane: docs/CODER.md)
SAMPLE_PIXELS = 1 << 16        # the default model is chosen on about this many pixels of the input
PROMISING = 1.25               # JPEG XL at full effort when its quick probe is within this factor of the model
SMALL = 1 << 14                # subpixels below which the probe is JPEG XL's fastest effort
FLAT = 2.5                     # bits per subpixel of the probe below which PNG is tried too


def checksum(pictures: list[Picture]) -> bytes:
    """BLAKE2b of every image's pixels in order: one check of the whole decode, 8 bytes per file."""
    h = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    for pic in pictures:
        h.update(pic.pixel_bytes())
    return h.digest()


def lane_count(records: list[ImageRecord]) -> int:
    """From the model-coded subpixels (the bytes of the other images are not in the message)."""
    symbols = sum(r.subpixels for r in records if r.coding not in BYTES)
    return int(np.clip(symbols // SYMBOLS_PER_LANE, 1, LIMITS["lanes"]))


def _alpha_table(alpha: np.ndarray | None) -> list[tuple[int, int]]:
    if alpha is None:
        return []
    values, counts = np.unique(alpha, return_counts=True)
    return [(int(v), int(c)) for v, c in zip(values, counts)]


def record(pic: Picture, name: str, coding: int) -> tuple[ImageRecord, list[Layer], bytes | None]:
    """The header record of a picture coded as ``coding``, the layers the model codes and the bytes coded
    outside it."""
    if coding in BYTES:
        data = classical.encode(pic, coding)
        rec = ImageRecord(name, pic.mode, *pic.size, pic.icc, pic.palette, pic.metadata, coding, [],
                          len(data) if coding in STREAMS else 0)
        return rec, [], data
    layers = split(pic, coding)
    rec = ImageRecord(name, pic.mode, *pic.size, pic.icc, pic.palette, pic.metadata, coding,
                      [_alpha_table(alpha) for _, alpha in layers])
    return rec, layers, None


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


def encode(pictures: list[Picture], names: list[str], codings: list[int], model_name: str, params: CodingParams,
           archive: bool = False, device: str = "cpu", progress=None) -> tuple[bytes, np.ndarray]:
    """The .vz bytes of the pictures, each coded as ``codings`` says, and the bits the model spent on each."""
    model, name, digest = load_model(model_name, device)
    records, layers, blobs = [], [], []
    for pic, image_name, coding in zip(pictures, names, codings):
        rec, ls, blob = record(pic, image_name if archive else "", coding)
        records.append(rec)
        layers += ls
        blobs.append(blob)
    msg = Message(lane_count(records))
    coded = Archive(TileCoder(model, params, device), records, progress)
    with exact_arithmetic():
        coded.codec().push(msg, layers)
    header = Header(name, digest[:HASH_BYTES], params, msg.lanes, archive, records, checksum(pictures))
    return pack(header, msg.to_bytes() + b"".join(b for b in blobs if b is not None)), coded.image_bits()


def cheaper_coding(pic: Picture, model_bytes: float) -> int | None:
    """STORED, JPEG_XL or PNG if that codes the picture in fewer bytes than ``model_bytes``, else None.

    The classical coders run (JPEG XL at full effort; PNG, whose deflate only wins on flat content, below FLAT bits
    per subpixel) only when a quick JPEG XL probe comes within PROMISING of the model: where the model is far ahead
    (digits, CIFAR-10 images) they would only cost time."""
    sizes = {None: model_bytes, STORED: len(pic.pixel_bytes())}
    probe = len(classical.jpeg_xl(pic, classical.PROBE_EFFORT if pic.subpixels > SMALL else 1))
    if probe < PROMISING * model_bytes:
        sizes[JPEG_XL] = len(classical.jpeg_xl(pic))
        if 8 * probe < FLAT * pic.subpixels:
            sizes[PNG] = len(classical.png(pic))
    return min(sizes, key=sizes.get)


def compress(pictures: list[Picture], names: list[str], model_name: str | None, params: CodingParams,
             archive: bool = False, device: str = "cpu", progress=None, classical: bool = True) -> bytes:
    """.vz bytes of the pictures; ``model_name`` None: the shipped model that codes them shortest.

    Each picture is coded by the model, unless (with ``classical``) storing its raw pixels or a classical stream is
    shorter: exactly so for a single image; in an archive, against the bits the model spent on the picture's tiles,
    and the archive keeps whichever whole file is shorter."""
    params.check()
    codings = [coding_of(p) for p in pictures]
    if model_name is None:
        layers = [layer for p, c in zip(pictures, codings) for layer in split(p, c)]
        with exact_arithmetic():
            model_name = choose_model(layers, params, device)
    model, name, _ = load_model(model_name, device)
    require_channels(model, name, pictures)
    best, bits = encode(pictures, names, codings, model_name, params, archive, device, progress)
    if not classical:
        return best
    spent = [len(best)] if len(pictures) == 1 else bits / 8
    cheaper = [cheaper_coding(p, b) for p, b in zip(pictures, spent)]
    if any(c is not None for c in cheaper):
        codings = [c if c is not None else old for c, old in zip(cheaper, codings)]
        best = min(best, encode(pictures, names, codings, model_name, params, archive, device)[0], key=len)
    return best


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
    sizes = [r.coded_bytes for r in header.images]
    message = len(payload) - sum(sizes)
    if message < 0:
        raise FormatError("corrupt .vz file: truncated payload")
    try:
        msg = Message.from_bytes(payload[:message], header.lanes)
        with exact_arithmetic():
            layers = Archive(TileCoder(model, header.params, device), header.images, progress).codec().pop(msg)
        msg.check_initial()
    except CorruptMessage as e:
        raise FormatError(f"corrupt .vz file: {e}") from None
    ends = message + np.cumsum(sizes)
    pictures = []
    for r, end, size in zip(header.images, ends, sizes):
        if r.coding in BYTES:
            color, alpha = classical.decode(r, payload[end - size:end])
        else:
            count = len(r.layers)
            color, alpha = join(r.mode, r.coding, r.palette, r.metadata, layers[:count])
            layers = layers[count:]
        pictures.append(Picture(r.mode, color, alpha, r.icc, r.palette, r.metadata))
    if checksum(pictures) != header.checksum:
        raise FormatError("corrupt .vz file: the decoded pixels fail the checksum")
    return pictures
