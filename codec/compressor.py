"""Compress and decompress whole images or archives of images to and from .vz bytes."""
from __future__ import annotations

import hashlib

import numpy as np

from . import codecs
from .bitsback import CodingParams, TileCoder
from .container import CHECKSUM_BYTES, FormatError, Header, ImageRecord, pack, unpack
from .image import MODES, Picture
from .rans import CorruptMessage, Message
from .weights import ModelError, load_model

ALPHA_PRECISION = 16
SUBPIXELS_PER_LANE = 4096      # lanes = coded subpixels / this, at least 1 (36-52 bits per lane: docs/CODER.md)
MAX_LANES = 4096


def checksum(pictures: list[Picture]) -> bytes:
    """BLAKE2b of every image's pixels in order: one check of the whole decode, 8 bytes per file."""
    h = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    for pic in pictures:
        h.update(pic.pixel_bytes())
    return h.digest()


def lane_count(pictures: list[Picture]) -> int:
    return int(np.clip(sum(p.subpixels for p in pictures) // SUBPIXELS_PER_LANE, 1, MAX_LANES))


def _alpha_codec(values: list[tuple[int, int]], n: int) -> codecs.Categorical:
    """Categorical over the alpha values present, frequencies from their counts (each at least 1)."""
    counts = np.array([c for _, c in values], np.int64)
    total, k = int(counts.sum()), len(counts)
    freq = 1 + counts * ((1 << ALPHA_PRECISION) - k) // total
    freq[np.argmax(freq)] += (1 << ALPHA_PRECISION) - int(freq.sum())
    return codecs.Categorical(np.concatenate([[0], np.cumsum(freq)]).astype(np.int64), n)


def _check_model(model, pic_channels: int, name: str) -> None:
    if pic_channels != model.config.channels and model.config.channels == 1:
        raise ModelError(f"model {name!r} is grayscale and cannot code colour images")


def compress(pictures: list[Picture], names: list[str], model_name: str, params: CodingParams,
             archive: bool = False, device: str = "cpu", progress=None) -> bytes:
    model, name, digest = load_model(model_name)
    model.to(device)
    for pic in pictures:
        _check_model(model, pic.color.shape[0], name)
    msg = Message(lane_count(pictures))
    records = []
    for pic, image_name in zip(pictures, names):
        alpha = []
        if pic.alpha is not None:
            values, counts = np.unique(pic.alpha, return_counts=True)
            alpha = [(int(v), int(c)) for v, c in zip(values, counts)]
        records.append(ImageRecord(image_name, pic.mode, *pic.size, pic.icc, alpha))
    for pic, rec in zip(pictures, records):        # alpha first: it serves as initial bits for the first tiles
        if len(rec.alpha_values) > 1:
            index = np.searchsorted([v for v, _ in rec.alpha_values], pic.alpha.ravel())
            _alpha_codec(rec.alpha_values, index.size).push(msg, index)
    msg, fixed_first = TileCoder(model, params, device).encode(msg, [p.color for p in pictures], progress)
    header = Header(name, digest[:8], params.tile, params.batch, params.latent_bits, params.posterior_precision,
                    params.pixel_precision, params.threads, msg.lanes, fixed_first, archive, records,
                    checksum(pictures))
    return pack(header, msg.to_bytes())


def decompress(data: bytes, device: str = "cpu", model_override: str | None = None,
               progress=None) -> tuple[Header, list[Picture]]:
    """Decode and verify every image; raises FormatError for anything that is not a faithful .vz."""
    header, payload = unpack(data)
    try:
        model, _, digest = load_model(model_override or header.model)
    except ModelError as e:
        raise ModelError(f"{e}; the file needs model {header.model!r} (pass its weights with --model)") from None
    if digest[:8] != header.weights:
        raise ModelError(f"the file was made with other weights of model {header.model!r} (hash mismatch)")
    model.to(device)
    params = CodingParams(header.tile, header.batch, header.latent_bits, header.posterior_precision,
                          header.pixel_precision, header.threads)
    colors = [MODES[r.mode][0] for r in header.images]
    try:
        msg = Message.from_bytes(payload, header.lanes)
        planes = TileCoder(model, params, device).decode(
            msg, [(c, r.height, r.width) for c, r in zip(colors, header.images)], header.fixed_first, progress)
        pictures = [Picture(r.mode, p, None, r.icc) for r, p in zip(header.images, planes)]
        for pic, rec in reversed(list(zip(pictures, header.images))):
            if len(rec.alpha_values) > 1:
                index = _alpha_codec(rec.alpha_values, pic.size[0] * pic.size[1]).pop(msg)
                pic.alpha = np.array([v for v, _ in rec.alpha_values], np.uint8)[index].reshape(pic.size)
            elif rec.alpha_values:
                pic.alpha = np.full(pic.size, rec.alpha_values[0][0], np.uint8)
        msg.check_initial()
    except CorruptMessage as e:
        raise FormatError(f"cannot decode this .vz file although its CRC is intact ({e}): it was probably encoded "
                          f"on a machine whose network arithmetic differs (another CPU type or a GPU)") from None
    if checksum(pictures) != header.checksum:
        raise FormatError("the decoded pixels fail the checksum: the file is corrupt or was encoded on a "
                          "platform whose network arithmetic differs")
    return header, pictures
