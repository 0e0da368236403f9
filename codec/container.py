"""The .vz container (docs/FORMAT.md): header, per-image records, rANS payload, CRC-32 of the whole file."""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"VAEZ"
VERSION = 2
MODE_CODES = {"L": 0, "LA": 1, "RGB": 2, "RGBA": 3, "1": 4}
MODE_NAMES = {v: k for k, v in MODE_CODES.items()}
HASH_BYTES = 8
CHECKSUM_BYTES = 8
LIMITS = {"images": 1 << 20, "side": 1 << 20, "pixels": 1 << 28, "name": 4096, "lanes": 1 << 20, "tile": 1 << 14,
          "batch": 1 << 12, "threads": 256}


class FormatError(ValueError):
    """A .vz file that is truncated, corrupt, of another version or otherwise unreadable."""


@dataclass
class ImageRecord:
    name: str
    mode: str
    height: int
    width: int
    icc: bytes = b""
    alpha_values: list[tuple[int, int]] = field(default_factory=list)   # (value, count) of the alpha plane


@dataclass
class Header:
    model: str
    weights: bytes                     # first HASH_BYTES of the weights' SHA-256
    tile: int
    batch: int
    latent_bits: int
    posterior_precision: int
    pixel_precision: int
    threads: int                       # intra-op threads of the network calls (results depend on it)
    lanes: int
    fixed_first: bool                  # the first batch was coded with z at the prior median, without bits back
    archive: bool
    images: list[ImageRecord]
    checksum: bytes                    # 8-byte BLAKE2b of every image's pixels, in order


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

    def varint(self, limit: int, what: str) -> int:
        v, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            v |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 63:
                raise FormatError(f"corrupt .vz file: bad {what}")
        if v > limit:
            raise FormatError(f"corrupt .vz file: {what} {v} exceeds the limit {limit}")
        return v

    def blob(self, limit: int, what: str) -> bytes:
        return self.take(self.varint(min(limit, len(self.data)), what))


def _records(header: Header) -> bytes:
    out = bytearray()
    for im in header.images:
        if header.archive:
            out += _bytes(im.name.encode())
        out += bytes([MODE_CODES[im.mode]]) + _varint(im.height) + _varint(im.width) + _bytes(im.icc)
        out += _varint(len(im.alpha_values))
        for value, count in im.alpha_values:
            out += bytes([value]) + _varint(count)
    return bytes(out)


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def pack(header: Header, payload: bytes) -> bytes:
    records = _records(header)
    deflated = _bytes(_deflate(records))
    small = len(deflated) < len(records)      # archives of similar images: their records deflate to almost nothing
    flags = int(header.archive) | int(header.fixed_first) << 1 | int(small) << 2
    out = bytearray(MAGIC + bytes([VERSION, flags]))
    out += _bytes(header.model.encode()) + header.weights
    for v in (header.tile, header.batch, header.latent_bits, header.posterior_precision, header.pixel_precision,
              header.threads, header.lanes, len(header.images)):
        out += _varint(v)
    out += (deflated if small else records) + header.checksum + payload
    return bytes(out + struct.pack("<I", zlib.crc32(out)))


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parse and validate a .vz file; every size is bounded before anything is allocated."""
    if len(data) < len(MAGIC) + 6 or data[:len(MAGIC)] != MAGIC:
        raise FormatError("not a .vz file (bad magic)")
    if data[4] != VERSION:
        raise FormatError(f"unsupported .vz format version {data[4]} (this vaezip reads version {VERSION})")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise FormatError("corrupt or truncated .vz file (checksum mismatch)")
    r = _Reader(data[:-4])
    r.take(5)
    flags = r.take(1)[0]
    if flags > 7:
        raise FormatError("corrupt .vz file: unknown flags")
    archive, fixed_first = bool(flags & 1), bool(flags & 2)
    model = r.blob(256, "model name").decode("utf-8", "replace")
    weights = r.take(HASH_BYTES)
    tile, batch = r.varint(LIMITS["tile"], "tile size"), r.varint(LIMITS["batch"], "batch size")
    latent_bits, post_p, pix_p = (r.varint(24, "precision") for _ in range(3))
    threads = r.varint(LIMITS["threads"], "thread count")
    lanes = r.varint(LIMITS["lanes"], "lane count")
    count = r.varint(LIMITS["images"], "image count")
    if flags & 4:
        images = _parse_records(_Reader(_inflate(r.blob(len(data), "image table"), count)), count, archive, True)
    else:
        images = _parse_records(r, count, archive, False)
    checksum = r.take(CHECKSUM_BYTES)
    if 0 in (tile, batch, lanes, threads):
        raise FormatError("corrupt .vz file: zero coding parameter")
    header = Header(model, weights, tile, batch, latent_bits, post_p, pix_p, threads, lanes, fixed_first, archive,
                    images, checksum)
    return header, data[r.pos:-4]


def _inflate(data: bytes, count: int) -> bytes:
    """Inflate the image table, never to more than ``count`` records of the largest possible size."""
    limit = count * (LIMITS["name"] + (1 << 24) + 2048) + 1
    unpacker = zlib.decompressobj(-15)
    try:
        out = unpacker.decompress(data, min(limit, 1 << 28))
    except zlib.error:
        raise FormatError("corrupt .vz file: bad image table") from None
    if unpacker.unconsumed_tail or not unpacker.eof:
        raise FormatError("corrupt .vz file: bad image table")
    return out


def _parse_records(r: _Reader, count: int, archive: bool, whole: bool) -> list[ImageRecord]:
    """``count`` image records from r; ``whole``: r must hold exactly these records."""
    images = []
    for _ in range(count):
        name = r.blob(LIMITS["name"], "name").decode("utf-8", "replace") if archive else ""
        mode = MODE_NAMES.get(r.take(1)[0])
        if mode is None:
            raise FormatError("corrupt .vz file: unknown image mode")
        h, w = r.varint(LIMITS["side"], "height"), r.varint(LIMITS["side"], "width")
        if h * w > LIMITS["pixels"] or h == 0 or w == 0:
            raise FormatError(f"corrupt .vz file: image size {w}x{h} out of range")
        icc = r.blob(1 << 24, "ICC profile")
        alpha = [(r.take(1)[0], r.varint(h * w, "alpha count")) for _ in range(r.varint(256, "alpha table"))]
        images.append(ImageRecord(name, mode, h, w, icc, alpha))
    if whole and r.pos != len(r.data):
        raise FormatError("corrupt .vz file: trailing bytes in the image table")
    return images
