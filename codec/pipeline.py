"""Pictures to .vz bytes and back: the policy's plan (``policy``) carried out, and every file checked as it is read.

Encoding: the plan says which model codes which pictures and which are coded outside it (a classical stream, or
their raw bytes); the model-coded pictures' 8-bit layers become one rANS message (``coding.archive``), the others
follow it as bytes; the header (``format.container``) records everything a decoder needs and a checksum of every
pixel.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from . import policy
from .coding import tuning
from .coding.archive import Archive
from .coding.stages import TileCoder
from .entropy import codecs
from .entropy.rans import CorruptMessage, Message
from .format import classical
from .format.container import CHECKSUM_BYTES, HASH_BYTES, LIMITS, FormatError, Header, ImageRecord, pack, unpack
from .format.image import Picture
from .format.planes import BYTES, STREAMS, join, split
from .nets.weights import ModelError, load_model, load_network, shipped, shipped_with_hash
from .options import Options

SYMBOLS_PER_LANE = 16384       # lanes = coded symbols / this, at least 1 (36-52 bits per lane: docs/CODER.md)


def compress(pictures: list[Picture], names: list[str], options: Options, archive: bool = False,
             progress=None) -> bytes:
    """.vz bytes of the pictures (names are stored in an ``archive``), coded as the policy plans."""
    options.check()
    planned, data, tunings = policy.plan(pictures, options), None, {}
    for model in planned.models:                # several only for small jobs, where coding costs what choosing would
        attempt = replace(planned, models=[model])
        coded, spent = encode(pictures, names, attempt, archive, progress, tunings)
        if data is None or len(coded) < len(data):
            plan, data, bits = attempt, coded, spent
    better = policy.review(plan, len(data), bits)
    return data if better is None else min(data, encode(pictures, names, better, archive, None, tunings)[0], key=len)


def encode(pictures: list[Picture], names: list[str], plan: policy.Plan, archive: bool = False, progress=None,
           tunings: dict | None = None) -> tuple[bytes, np.ndarray]:
    """The .vz bytes of the pictures coded as ``plan`` says, and the bits the model spent on each. With the coding
    parameter ``tuning``, each picture's tuning is fitted once per model and kept in ``tunings``."""
    records, layers, streams, colours = [], [], [], []
    for pic, name, coding, candidates in zip(pictures, names, plan.codings, plan.classical):
        own = [] if coding in BYTES else split(pic, coding)
        colours.append([color for color, _ in own])
        stream = candidates.stream(coding) if coding in BYTES else b""
        records.append(ImageRecord(name if archive else "", pic.mode, *pic.size, pic.icc, pic.palette, pic.metadata,
                                   coding, [_alpha_table(alpha) for _, alpha in own],
                                   len(stream) if coding in STREAMS else 0))
        layers += own
        streams.append(stream)
    model_subpixels = sum(r.subpixels for r in records if r.coding not in BYTES)
    msg = Message(int(np.clip(model_subpixels // SYMBOLS_PER_LANE, 1, LIMITS["lanes"])))
    bits, message, name, digest = np.zeros(len(records)), b"", "", b""
    if layers:
        net, name, digest = load_network(plan.model, plan.device, model_subpixels, plan.backend)
        tuned = None
        if plan.params.tuning:
            cache = {} if tunings is None else tunings
            tuned = [_tuning(plan, net, i, own, rec, cache, progress)
                     for i, (own, rec) in enumerate(zip(colours, records))]
        bits = Archive(TileCoder(net, plan.params), records, progress, tuned).push(msg, layers)
        message = msg.to_bytes()
        name = "" if shipped(plan.model) else name         # a shipped model is named by its weights hash alone
    header = Header(name, digest[:HASH_BYTES], plan.params, msg.lanes, archive, records, checksum(pictures))
    return pack(header, message + b"".join(streams)), bits


def decode(data: bytes, model: str | None = None, device: str = "cpu", backend: str | None = None,
           progress=None) -> list[Picture]:
    """Decode and verify every picture of a .vz file; raises FormatError for anything that is not a faithful .vz,
    ModelError when the file needs a model this vaezip does not have (``model``: the weights it was made with).
    The model is loaded only when some image needs it."""
    header, payload = unpack(data)
    sizes = [r.coded_bytes for r in header.images]
    message = len(payload) - sum(sizes)
    if message < 0:
        raise FormatError("corrupt .vz file: truncated payload")
    layers = []
    if header.model_coded:
        try:
            msg = Message.from_bytes(payload[:message], header.lanes)
            codecs.preload()
            net = _network(header, model, device, backend)
            layers = Archive(TileCoder(net, header.params), header.images, progress).pop(msg)
            msg.check_initial()
        except CorruptMessage as e:
            raise FormatError(f"corrupt .vz file: {e}") from None
    elif message:
        raise FormatError("corrupt .vz file: bytes that no image uses")
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


def checksum(pictures: list[Picture]) -> bytes:
    """BLAKE2b of every image's pixels in order: one check of the whole decode, 8 bytes per file."""
    h = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    for pic in pictures:
        h.update(pic.pixel_bytes())
    return h.digest()


def _tuning(plan: policy.Plan, net, index: int, colours: list[np.ndarray], rec: ImageRecord, cache: dict,
            progress=None):
    """The bias changes that tune ``plan``'s model to picture ``index`` (its layers' ``colours``), None where the
    picture is not model-coded, too small or gains nothing; fitted once per model (``cache``). A ``progress`` bar
    with ``set_postfix_str`` (tqdm's) shows the fit's steps."""
    if not colours or not tuning.eligible(rec.height, rec.width):
        return None
    key = (plan.model, index)
    if key not in cache:
        note = getattr(progress, "set_postfix_str", None)
        report = None if note is None else lambda step, steps: note(f"tuning picture {index + 1}: {step}/{steps}")
        cache[key] = tuning.tune(load_model(plan.model, plan.device)[0], net, colours, plan.params, report)
        if note is not None:
            note("")
    return cache[key]


def _alpha_table(alpha: np.ndarray | None) -> list[tuple[int, int]]:
    if alpha is None:
        return []
    values, counts = np.unique(alpha, return_counts=True)
    return [(int(v), int(c)) for v, c in zip(values, counts)]


def _network(header: Header, model: str | None, device: str, backend: str | None):
    """The networks of the model a file was made with, checked by the hash of its weights: ``model`` if given,
    else the model the file names, else (a shipped model is named by its hash alone) the shipped version with that
    hash, which also serves a file that names a shipped model whose weights have changed since."""
    source = model or header.model or shipped_with_hash(header.weights)
    if source is None:
        raise ModelError(f"the file needs a model that this vaezip does not ship (weights {header.weights.hex()}): "
                         f"pass it with --model, or put it in a folder listed in $VAEZIP_MODELS")
    subpixels = sum(r.subpixels for r in header.images if r.coding not in BYTES)
    try:
        net, name, digest = load_network(source, device, subpixels, backend)
    except ModelError as e:
        raise ModelError(f"{e}; the file needs model {header.model!r} (weights {header.weights.hex()}): pass it "
                         f"with --model, or put it in a folder listed in $VAEZIP_MODELS") from None
    if digest[:HASH_BYTES] != header.weights:
        older = None if model else shipped_with_hash(header.weights)
        if older is None:
            raise ModelError(f"the file was made with other weights of model {header.model or name!r} (weights "
                             f"{header.weights.hex()}, not {digest[:HASH_BYTES].hex()})")
        net = load_network(older, device, subpixels, backend)[0]
    if net.config.channels == 1 and any(planes != 1 for r in header.images for planes, _ in r.layers):
        raise FormatError("corrupt .vz file: colour images with a grayscale model")
    return net
