"""The .vz container (docs/FORMAT.md): header, coding parameters, image records, rANS payload, CRC-32.

This module is the one home of the file format: every field, its limits, and the checks a reader applies before
it allocates anything.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import astuple, dataclass, field, fields, replace

from ..entropy.limits import LATENT_BITS_MAX, LEVEL_PRECISION_MIN, MAX_PRECISION
from .image import MAX_PIXELS, MODES, Mode
from .planes import BYTES, CODINGS, COLOURS, PLANES, STREAMS, shapes

MAGIC = b"VAEZ"
VERSION = 6
READABLE = (3, 4, 5, 6)         # version 3: the model's fields in every file, a 4-byte tail length before the message;
                                # versions 3 and 4: coding parameters without ``adaptation`` (none); versions 3 to 5:
                                # without ``tuning`` (none)
HASH_BYTES = 8                  # weights hash: the first bytes of the SHA-256 of the weights file
CHECKSUM_BYTES = 8              # BLAKE2b digest of every image's pixels
FLAG_ARCHIVE, FLAG_DEFLATED, FLAG_MODEL, FLAG_PARAMS = 1, 2, 4, 8
LIMITS = {"images": 1 << 20, "side": 1 << 20, "name": 4096, "model": 256, "lanes": 1 << 12, "icc": 1 << 24,
          "metadata": 64, "key": 80, "value": 1 << 24}
UNSAFE_NAME_CHARS = set('/\\\0:')


class FormatError(ValueError):
    """A .vz file that is truncated, corrupt, of another version or otherwise unreadable."""


@dataclass(frozen=True)
class CodingParams:
    """How the images are cut and coded: one record of the header. ``RANGES`` lists what a decoder accepts."""
    tile: int = 256                 # tile side in pixels
    batch: int = 4                  # tiles per network call (in full tiles' worth of pixels)
    latent_bits: int = 10           # log2 of the number of latent buckets
    posterior_precision: int = 20   # bits of the posterior CDFs
    pixel_precision: int = 18       # bits of the pixel CDFs
    particles: int = 1              # importance samples per tile: 1 is bits-back ANS, N > 1 Monte Carlo bits back
    adaptation: int = 1             # 0: none; 1: each stage's means corrected by earlier residuals (coding.adaptation)
    tuning: int = 0                 # 0: none; 1: large images may carry changes of the model's biases (coding.tuning)

    def check(self) -> None:
        """Raise ValueError unless every field is in range."""
        for f, value in zip(fields(self), astuple(self)):
            lo, hi = RANGES[f.name]
            if not lo <= value <= hi:
                raise ValueError(f"{f.name.replace('_', ' ')} {value} is outside {lo}..{hi}")
        if self.posterior_precision <= self.latent_bits:
            raise ValueError("the posterior precision must exceed the latent bits")


RANGES = {"tile": (8, 4096), "batch": (1, 4096), "latent_bits": (1, LATENT_BITS_MAX),
          "posterior_precision": (2, MAX_PRECISION), "pixel_precision": (LEVEL_PRECISION_MIN, MAX_PRECISION),
          "particles": (1, 64), "adaptation": (0, 1), "tuning": (0, 1)}
STORED_PARAMS = {3: 6, 4: 6, 5: 7, 6: 8}    # coding parameters in a file of each version (the first so many)


@dataclass
class ImageRecord:
    name: str                       # file name in an archive, "" for a single image
    mode: str                       # a key of image.MODES
    height: int
    width: int
    icc: bytes = b""
    palette: bytes = b""            # mode P: RGB triples
    metadata: list[tuple[str, bytes]] = field(default_factory=list)     # image.metadata_of
    coding: int = PLANES            # a key of planes.CODINGS
    alphas: list[list[tuple[int, int]]] = field(default_factory=list)   # per layer, (value, count) of its alpha
    size: int = 0                   # JPEG_XL and PNG: bytes of the stream

    def __post_init__(self):
        if not self.alphas and not any(alpha for _, alpha in self.layers):
            self.alphas = [[] for _ in self.layers]

    @property
    def kind(self) -> Mode:
        return MODES[self.mode]

    @property
    def layers(self) -> list[tuple[int, bool]]:
        """(colour planes, alpha) of every coded layer."""
        return shapes(self.mode, self.coding, self.palette, self.metadata)

    @property
    def subpixels(self) -> int:
        return (self.kind.planes + self.kind.alpha) * self.height * self.width

    @property
    def coded_bytes(self) -> int:
        """Bytes of this image after the rANS message, when it is coded outside the model: its raw pixels or its
        stream."""
        if self.coding in STREAMS:
            return self.size
        return self.subpixels * self.kind.depth // 8 if self.coding in BYTES else 0


@dataclass
class Header:
    model: str                      # "": a shipped model, found by its weights hash (or no model-coded image)
    weights: bytes                  # HASH_BYTES of the weights' SHA-256
    params: CodingParams
    lanes: int
    archive: bool
    images: list[ImageRecord]
    checksum: bytes                 # CHECKSUM_BYTES of BLAKE2b over every image's pixels, in order
    version: int = VERSION          # of the file it was read from

    @property
    def subpixels(self) -> int:
        return sum(r.subpixels for r in self.images)

    @property
    def model_coded(self) -> bool:
        """Whether the model codes some image: only then does the file hold the model's fields and a message."""
        return any(r.coding not in BYTES for r in self.images)


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _bytes(b: bytes) -> bytes:
    return _varint(len(b)) + b


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError("truncated .vz file")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def varint(self, lo: int, hi: int, what: str) -> int:
        v, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            v |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 63:
                raise FormatError(f"corrupt .vz file: bad {what}")
        if not lo <= v <= hi:
            raise FormatError(f"corrupt .vz file: {what} {v} is outside {lo}..{hi}")
        return v

    def blob(self, limit: int, what: str) -> bytes:
        return self.take(self.varint(0, min(limit, len(self.data) - self.pos), what))

    def text(self, limit: int, what: str) -> str:
        try:
            return self.blob(limit, what).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"corrupt .vz file: {what} is not UTF-8") from None


def safe_name(name: str) -> bool:
    """A bare file name that cannot reach outside the folder it is written to."""
    return name not in ("", ".", "..") and not UNSAFE_NAME_CHARS & set(name) and name.isprintable()


NUMBER = re.compile(r"(\d+)(?=\D*$)")   # the last run of digits of a name


def next_name(name: str) -> str | None:
    """The name that follows ``name`` in a numbered series: its last number plus one, as wide as it was
    (``mnist_00009.png`` -> ``mnist_00010.png``), or None for a name without a number."""
    match = NUMBER.search(name)
    if match is None:
        return None
    number = str(int(match[1]) + 1).zfill(len(match[1]))
    return name[:match.start()] + number + name[match.end():]


def _records(header: Header) -> bytes:
    out, previous = bytearray(), None
    for im in header.images:
        if header.archive:                    # a name that continues a numbered series costs one byte
            series = previous is not None and next_name(previous) == im.name
            out += b"\1" if series else b"\0" + _bytes(im.name.encode())
            previous = im.name
        out += bytes([im.kind.code, im.coding]) + _varint(im.height) + _varint(im.width) + _bytes(im.icc)
        out += _bytes(im.palette) + _varint(len(im.metadata))
        for key, value in im.metadata:
            out += _bytes(key.encode()) + _bytes(value)
        for table in im.alphas:
            out += _varint(len(table))
            for value, count in table:
                out += bytes([value]) + _varint(count)
        if im.coding in STREAMS:
            out += _varint(im.size)
    return bytes(out)


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def pack(header: Header, payload: bytes) -> bytes:
    records = _records(header)
    deflated = _bytes(_deflate(records))
    small = len(deflated) < len(records)      # archives of similar images: their records deflate to almost nothing
    coded = header.model_coded
    custom = coded and header.params != CodingParams()
    flags = FLAG_ARCHIVE * header.archive | FLAG_DEFLATED * small | FLAG_MODEL * coded | FLAG_PARAMS * custom
    out = bytearray(MAGIC + bytes([VERSION, flags]))
    if coded:
        out += _bytes(header.model.encode()) + header.weights
        for value in astuple(header.params) if custom else ():
            out += _varint(value)
        out += _varint(header.lanes)
    out += _varint(len(header.images))
    out += (deflated if small else records) + header.checksum + payload
    return bytes(out + struct.pack("<I", zlib.crc32(out)))


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parse and validate a .vz file; every size is bounded before anything is allocated."""
    if len(data) < len(MAGIC) + 6 or data[:len(MAGIC)] != MAGIC:
        raise FormatError("not a .vz file (bad magic)")
    version = data[4]
    if version not in READABLE:
        raise FormatError(f"unsupported .vz format version {version} (this vaezip reads versions "
                          f"{', '.join(map(str, READABLE[:-1]))} and {READABLE[-1]}; decode other files with the "
                          f"vaezip that wrote them)")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise FormatError("corrupt or truncated .vz file (checksum mismatch)")
    r = _Reader(data[:-4])
    r.take(5)
    flags = r.take(1)[0]
    known = FLAG_ARCHIVE | FLAG_DEFLATED | (FLAG_MODEL | FLAG_PARAMS if version > 3 else 0)
    if flags & ~known or (flags & FLAG_PARAMS and not flags & FLAG_MODEL):
        raise FormatError("corrupt .vz file: unknown flags")
    if version == 3:
        flags |= FLAG_MODEL | FLAG_PARAMS           # version 3 has the model's fields in every file
    model, weights, lanes = "", b"", 1
    params = CodingParams() if version > 4 else CodingParams(adaptation=0)
    if flags & FLAG_MODEL:
        model = r.text(LIMITS["model"], "model name")
        weights = r.take(HASH_BYTES)
        if flags & FLAG_PARAMS:
            stored = fields(CodingParams)[:STORED_PARAMS[version]]
            params = replace(params, **{f.name: r.varint(*RANGES[f.name], f.name.replace("_", " ")) for f in stored})
        try:
            params.check()
        except ValueError as e:
            raise FormatError(f"corrupt .vz file: {e}") from None
        lanes = r.varint(1, LIMITS["lanes"], "lane count")
    count = r.varint(1, LIMITS["images"], "image count")
    archive = bool(flags & FLAG_ARCHIVE)
    if flags & FLAG_DEFLATED:
        table = _Reader(_inflate(r.blob(len(data), "image table"), count))
        images = _parse_records(table, count, archive, len(data), version)
        if table.pos != len(table.data):
            raise FormatError("corrupt .vz file: trailing bytes in the image table")
    else:
        images = _parse_records(r, count, archive, len(data), version)
    if sum(im.coded_bytes for im in images) > len(data):
        raise FormatError("corrupt .vz file: the images' bytes exceed the file")
    checksum = r.take(CHECKSUM_BYTES)
    header = Header(model, weights, params, lanes, archive, images, checksum, version)
    if version == 3:
        return header, _payload_of_version_3(header, data[r.pos:-4])
    if header.model_coded != bool(flags & FLAG_MODEL):
        raise FormatError("corrupt .vz file: the model's fields do not match the images' codings")
    return header, data[r.pos:-4]


def _payload_of_version_3(header: Header, payload: bytes) -> bytes:
    """A version-3 payload laid out as in version 4: its message without the 4-byte tail length, or without the
    message when the model codes no image."""
    message = len(payload) - sum(im.coded_bytes for im in header.images)
    if message < 4:
        raise FormatError("corrupt .vz file: truncated payload")
    return payload[4:] if header.model_coded else payload[message:]


def _inflate(data: bytes, count: int) -> bytes:
    """Inflate the image table, never to more than ``count`` records of the largest possible size."""
    limit = count * (LIMITS["name"] + LIMITS["icc"] + 2048) + 1
    unpacker = zlib.decompressobj(-15)
    try:
        out = unpacker.decompress(data, min(limit, 1 << 28))
    except zlib.error:
        raise FormatError("corrupt .vz file: bad image table") from None
    if unpacker.unconsumed_tail or not unpacker.eof:
        raise FormatError("corrupt .vz file: bad image table")
    return out


def _parse_records(r: _Reader, count: int, archive: bool, file_size: int, version: int) -> list[ImageRecord]:
    images, name = [], None
    codes = {m.code: mode for mode, m in MODES.items()}
    for _ in range(count):
        if not archive:
            name = ""
        elif version < 5 or r.varint(0, 1 if name is not None else 0, "image name code") == 0:
            name = r.text(LIMITS["name"], "image name")
        else:
            name = next_name(name)
            if name is None or len(name.encode()) > LIMITS["name"]:
                raise FormatError("corrupt .vz file: a numbered image name after a name without a number")
        if name and not safe_name(name):
            raise FormatError(f"corrupt .vz file: unsafe image name {name!r}")
        mode, coding = codes.get(r.take(1)[0]), r.take(1)[0]
        if mode is None:
            raise FormatError("corrupt .vz file: unknown image mode")
        if coding not in CODINGS or (coding == COLOURS and mode != "P"):
            raise FormatError("corrupt .vz file: unknown coding of the pixels")
        h, w = r.varint(1, LIMITS["side"], "height"), r.varint(1, LIMITS["side"], "width")
        if h * w > MAX_PIXELS:
            raise FormatError(f"corrupt .vz file: image size {w}x{h} exceeds {MAX_PIXELS} pixels")
        icc = r.blob(LIMITS["icc"], "ICC profile")
        palette = r.blob(768, "palette")
        if (mode == "P") != bool(palette) or len(palette) % 3:
            raise FormatError("corrupt .vz file: bad palette")
        metadata = [(r.text(LIMITS["key"], "metadata key"), r.blob(LIMITS["value"], "metadata"))
                    for _ in range(r.varint(0, LIMITS["metadata"], "metadata count"))]
        rec = ImageRecord(name, mode, h, w, icc, palette, metadata, coding, alphas=[])
        rec.alphas = []
        for _, alpha in rec.layers:
            table = [(r.take(1)[0], r.varint(1, h * w, "alpha count")) for _ in range(r.varint(0, 256, "alpha table"))]
            if alpha != bool(table) or sum(c for _, c in table) != (h * w if table else 0) \
                    or any(a[0] >= b[0] for a, b in zip(table, table[1:])):
                raise FormatError("corrupt .vz file: bad alpha table")
            rec.alphas.append(table)
        if coding in STREAMS:
            rec.size = r.varint(1, file_size, "stream size")
        if rec.coded_bytes > file_size:
            raise FormatError("corrupt .vz file: the image's bytes exceed the file")
        images.append(rec)
    return images
