"""Compress and decompress whole images or archives of images to and from .vz bytes."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from . import classical, codecs
from .coder import Archive, TileCoder
from .container import CHECKSUM_BYTES, HASH_BYTES, LIMITS, CodingParams, FormatError, Header, ImageRecord, pack
from .image import Picture
from .layers import BYTES, JPEG_XL, PNG, STORED, STREAMS, Layer, coding_of, join, split
from .memo import background, digest, remembered
from .rans import CorruptMessage, Message
from .weights import (ModelError, load_network, read_config, require_channels, resolve, shipped, shipped_models,
                      shipped_with_hash)

SYMBOLS_PER_LANE = 16384       # lanes = coded symbols / this, at least 1 (36-52 bits per lane: docs/CODER.md)
SAMPLE_PIXELS = 1 << 16        # the default model is chosen on about this many pixels of the input
PROMISING = 1.25               # JPEG XL at full effort when its quick probe is within this factor of the model
SMALL = 1 << 14                # subpixels up to which the probe is JPEG XL's effort 2 ...
SMALL_PROMISING = 1.1          # ... and this factor (see cheaper_coding)
FLAT = 2.5                     # bits per subpixel of the probe below which PNG is tried too
SCREEN_PIXELS = 1 << 18        # images of at least this many pixels are screened before the model codes them:
MARGIN = 1.035                 # a classical coding shorter than this times the model's estimate skips the model
RECODE_GAIN = 1e-3             # an archive is coded again with classical codings if that saves this much of it
EFFORTS = {"default": classical.FINAL_EFFORT, "max": classical.MAX_EFFORT}   # level: its JPEG XL effort


def checksum(pictures: list[Picture]) -> bytes:
    """BLAKE2b of every image's pixels in order: one check of the whole decode, 8 bytes per file."""
    h = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    for pic in pictures:
        h.update(pic.pixel_bytes())
    return h.digest()


def model_subpixels(records: list[ImageRecord]) -> int:
    """The subpixels the model codes (the bytes of the other images are not in the message)."""
    return sum(r.subpixels for r in records if r.coding not in BYTES)


def lane_count(records: list[ImageRecord]) -> int:
    return int(np.clip(model_subpixels(records) // SYMBOLS_PER_LANE, 1, LIMITS["lanes"]))


def _alpha_table(alpha: np.ndarray | None) -> list[tuple[int, int]]:
    if alpha is None:
        return []
    values, counts = np.unique(alpha, return_counts=True)
    return [(int(v), int(c)) for v, c in zip(values, counts)]


def record(pic: Picture, name: str, coding: int, jxl_effort: int = classical.FINAL_EFFORT
           ) -> tuple[ImageRecord, list[Layer], bytes | None]:
    """The header record of a picture coded as ``coding``, the layers the model codes and the bytes coded
    outside it."""
    if coding in BYTES:
        data = classical.encode(pic, coding, jxl_effort)
        rec = ImageRecord(name, pic.mode, *pic.size, pic.icc, pic.palette, pic.metadata, coding, [],
                          len(data) if coding in STREAMS else 0)
        return rec, [], data
    layers = split(pic, coding)
    rec = ImageRecord(name, pic.mode, *pic.size, pic.icc, pic.palette, pic.metadata, coding,
                      [_alpha_table(alpha) for _, alpha in layers])
    return rec, layers, None


def centre(a: np.ndarray, side: int = 256) -> np.ndarray:
    """The centre side x side (at most) of an array's last two axes."""
    h, w = a.shape[-2:]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return a[..., y:y + side, x:x + side]


def sample(layers: list[Layer]) -> list[np.ndarray]:
    """Colour planes of the layers, each cropped to its centre 256 x 256 at most, up to about SAMPLE_PIXELS."""
    out, total = [], 0
    for color, _ in layers:
        out.append(centre(color))
        total += out[-1].shape[1] * out[-1].shape[2]
        if total >= SAMPLE_PIXELS:
            break
    return out


@remembered(lambda model_name, planes, params, device: (model_name, params, device, digest(*planes)))
def estimate_bits(model_name: str, planes: list[np.ndarray], params: CodingParams, device: str) -> float:
    """``TileCoder.estimate_bits``, remembered for the last pictures (the model choice and ``screen`` ask for the
    same centre of a single image)."""
    return TileCoder(load_network(model_name, device, sum(p.size for p in planes))[0], params).estimate_bits(planes)


def choose_model(layers: list[Layer], params: CodingParams, device: str = "cpu") -> str:
    """The shipped model that codes a sample of the layers in the fewest bits (``TileCoder.estimate_bits``)."""
    planes = sample(layers)
    best = None
    for name in shipped_models():
        net = load_network(name, device)[0]
        if net.config.channels == 1 and any(p.shape[0] != 1 for p in planes):
            continue
        bits = estimate_bits(name, planes, params, device)
        if best is None or bits < best[0]:
            best = bits, name
    return best[1]


def screen(pictures: list[Picture], codings: list[int], model_name: str, params: CodingParams,
           device: str = "cpu") -> list[int]:
    """Codings with a classical one for every large picture (SCREEN_PIXELS) that it codes shorter than MARGIN times
    the model's estimate: the model's full coding, many times slower than the classical coders, is then skipped.

    The estimate: the model's bits on the picture's centre (``TileCoder.estimate_bits``), scaled by what JPEG XL
    spends on the whole picture over what it spends on the centre (the centre alone often misjudges the whole).
    On the 8 validation photos of photos-train (ratio of JPEG XL -e7 to the estimate, centre crops) the model coded
    every photo with a ratio up to 1.028 longer than JPEG XL (by 0.9 to 11 %) and won at 1.045 and 1.068: MARGIN
    lies between the two."""
    out = []
    for pic, coding in zip(pictures, codings):
        if _screenable(pic, coding):
            crop = _centre(pic)
            bits = estimate_bits(model_name, [color for color, _ in split(crop, coding)], params, device)
            whole = len(classical.jpeg_xl(pic))
            estimate = bits / 8 * whole / len(classical.jpeg_xl(crop))
            coding = cheaper_coding(pic, MARGIN * estimate, whole)[0] or coding
        out.append(coding)
    return out


def _jpeg_xl_ahead(pictures: list[Picture], codings: list[int]) -> None:
    """Start the JPEG XL encodings that ``screen`` needs first (of the picture and its centre), to run while the
    model makes its estimates (only for one picture: many at once could hold the memory of many encoders)."""
    for pic, coding in zip(pictures, codings):
        if _screenable(pic, coding):
            classical.jpeg_xl.ahead(pic)
            classical.jpeg_xl.ahead(_centre(pic))
            return


def _centre(pic: Picture) -> Picture:
    """The picture's centre (``centre``)."""
    return replace(pic, color=centre(pic.color), alpha=None if pic.alpha is None else centre(pic.alpha))


def _screenable(pic: Picture, coding: int) -> bool:
    """Whether ``screen`` looks at a picture: one of at least SCREEN_PIXELS pixels that the model would code."""
    return coding not in BYTES and pic.size[0] * pic.size[1] >= SCREEN_PIXELS


def encode(pictures: list[Picture], names: list[str], codings: list[int], model_name: str, params: CodingParams,
           archive: bool = False, device: str = "cpu", progress=None, jxl_effort: int = classical.FINAL_EFFORT
           ) -> tuple[bytes, np.ndarray]:
    """The .vz bytes of the pictures, each coded as ``codings`` says (JPEG XL at ``jxl_effort``), and the bits the
    model spent on each."""
    records, layers, blobs = [], [], []
    for pic, image_name, coding in zip(pictures, names, codings):
        rec, ls, blob = record(pic, image_name if archive else "", coding, jxl_effort)
        records.append(rec)
        layers += ls
        blobs.append(blob)
    msg, bits, message, name, digest = Message(lane_count(records)), np.zeros(len(records)), b"", "", b""
    if layers:
        net, name, digest = load_network(model_name, device, model_subpixels(records))
        coded = Archive(TileCoder(net, params), records, progress)
        coded.codec().push(msg, layers)
        bits, message = coded.image_bits(), msg.to_bytes()
        name = "" if shipped(model_name) else name         # a shipped model is named by its weights hash alone
    header = Header(name, digest[:HASH_BYTES], params, msg.lanes, archive, records, checksum(pictures))
    return pack(header, message + b"".join(b for b in blobs if b is not None)), bits


def _probing(pic: Picture) -> tuple[int, float]:
    """(JPEG XL effort of the picture's probe, factor within which the probe is promising): PROBE_EFFORT and
    PROMISING, or SMALL_PROBE_EFFORT and SMALL_PROMISING up to SMALL subpixels."""
    if pic.subpixels <= SMALL:
        return classical.SMALL_PROBE_EFFORT, SMALL_PROMISING
    return classical.PROBE_EFFORT, PROMISING


def probe(pic: Picture) -> int:
    """The bytes of a quick JPEG XL coding of the picture (``_probing``)."""
    return len(classical.jpeg_xl(pic, _probing(pic)[0]))


def cheaper_coding(pic: Picture, model_bytes: float, probe_bytes: int | None = None,
                   jxl_effort: int = classical.FINAL_EFFORT) -> tuple[int | None, float]:
    """(STORED, JPEG_XL or PNG, its bytes) if that codes the picture in fewer bytes than ``model_bytes``, else
    (None, model_bytes).

    The classical coders run (JPEG XL at ``jxl_effort``; PNG, whose deflate only wins on flat content, below FLAT
    bits per subpixel) only when a quick JPEG XL probe (``probe``; its bytes, or the full effort's, if already known)
    comes within PROMISING of the model (SMALL_PROMISING for small pictures): where the model is far ahead (digits,
    CIFAR-10 images) they would only cost time. Small pictures' probe at effort 2 is closer to effort 7 (CIFAR-10
    training images: 1.10 times its bytes, median, effort 1 1.26): on 1000 of them, with the factor 1.1, 57
    pictures ran JPEG XL at full effort and 5 of the 6 that it codes shorter than the model were found (effort 1
    and 1.25: 28 and 4; 1000 MNIST digits: 9 runs, all 7, against none) in half the time."""
    sizes = {None: model_bytes, STORED: len(pic.pixel_bytes())}
    probe_bytes = probe(pic) if probe_bytes is None else probe_bytes
    if probe_bytes < _probing(pic)[1] * model_bytes:
        sizes[JPEG_XL] = len(classical.jpeg_xl(pic, jxl_effort))
        if 8 * probe_bytes < FLAT * pic.subpixels:
            sizes[PNG] = len(classical.png(pic))
    best = min(sizes, key=sizes.get)
    return best, sizes[best]


def compress(pictures: list[Picture], names: list[str], model_name: str | None, params: CodingParams,
             archive: bool = False, device: str = "cpu", progress=None, classical: bool = True,
             effort: str = "default") -> bytes:
    """.vz bytes of the pictures; ``model_name`` None: the shipped model that codes them shortest.

    Each picture is coded by the model, unless (with ``classical``) storing its raw pixels or a classical stream is
    shorter: for a single image, than its model-coded file; in an archive, than the bits the model spent on the
    picture's tiles, and the archive, coded again when that saves at least RECODE_GAIN of it (another pass of the
    model), keeps whichever whole file is shorter. A large picture that a classical coding codes far shorter than
    the model's estimate (``screen``) is not coded by the model at all. The JPEG XL probes of the pictures
    (``cheaper_coding``) run in a thread while the model codes them.

    ``effort`` "max" (EFFORTS): every picture is coded by the model, none screened out, and JPEG XL streams are
    written at JPEG XL's highest effort; several times slower, a little shorter on photos."""
    if effort not in EFFORTS:
        raise ValueError(f"unknown effort {effort!r}: one of {', '.join(EFFORTS)}")
    params.check()
    jxl, screened = EFFORTS[effort], classical and effort == "default"
    codings = [coding_of(p) for p in pictures]
    if any(c not in BYTES for c in codings):
        codecs.preload()
    if screened:
        _jpeg_xl_ahead(pictures, codings)
    if model_name is None:
        layers = [layer for p, c in zip(pictures, codings) for layer in split(p, c)]
        model_name = choose_model(layers, params, device)
    path = resolve(model_name)
    require_channels(read_config(path), path.stem, pictures)
    if screened:
        codings = screen(pictures, codings, model_name, params, device)
    if classical:
        probes = background(lambda: [None if c in BYTES else probe(p) for p, c in zip(pictures, codings)])
    best, bits = encode(pictures, names, codings, model_name, params, archive, device, progress)
    if not classical:
        return best
    spent = [len(best)] if len(pictures) == 1 else bits / 8
    cheaper = [(None, b) if c in BYTES else cheaper_coding(p, b, n, jxl)
               for p, c, b, n in zip(pictures, codings, spent, probes.result())]
    saving = sum(b - size for b, (_, size) in zip(spent, cheaper))
    if saving > 0 and (len(pictures) == 1 or saving >= RECODE_GAIN * len(best)):
        codings = [c if c is not None else old for (c, _), old in zip(cheaper, codings)]
        best = min(best, encode(pictures, names, codings, model_name, params, archive, device, jxl_effort=jxl)[0],
                   key=len)
    return best


def decompress(header: Header, payload: bytes, device: str = "cpu", model_override: str | None = None,
               progress=None) -> list[Picture]:
    """Decode and verify every image of a parsed file; raises FormatError for anything that is not a faithful .vz.

    The model is loaded only when some image needs it."""
    sizes = [r.coded_bytes for r in header.images]
    message = len(payload) - sum(sizes)
    if message < 0:
        raise FormatError("corrupt .vz file: truncated payload")
    layers = []
    if header.model_coded:
        try:
            msg = Message.from_bytes(payload[:message], header.lanes)
            codecs.preload()
            net = _network(header, device, model_override)
            layers = Archive(TileCoder(net, header.params), header.images, progress).codec().pop(msg)
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


def _network(header: Header, device: str, model_override: str | None):
    """The networks of the model a file was made with (checked by the hash of its weights; a file names no shipped
    model, which its hash finds)."""
    name = model_override or header.model or shipped_with_hash(header.weights)
    if name is None:
        raise ModelError(f"the file needs a model that this vaezip does not ship (weights {header.weights.hex()}; "
                         f"pass them with --model)")
    try:
        net, _, digest = load_network(name, device, model_subpixels(header.images))
    except ModelError as e:
        raise ModelError(f"{e}; the file needs model {header.model or name!r} (pass its weights with --model)") \
            from None
    if digest[:HASH_BYTES] != header.weights:
        raise ModelError(f"the file was made with other weights of model {header.model or name!r} (hash mismatch)")
    if net.config.channels == 1 and any(planes != 1 for r in header.images for planes, _ in r.layers):
        raise FormatError("corrupt .vz file: colour images with a grayscale model")
    return net
