"""rANS: a multi-lane message and the push/pop core (its loops compiled in ``kernels``).

A message is a head (one uint64 state per lane, kept in [2^31, 2^63)) and a tail, a stack of uint32 words
shared by all lanes.  ``push``/``pop`` code n symbols on L lanes in chunks of L: chunk k holds symbols
[kL, min((k+1)L, n)) and a chunk of r symbols uses lanes 0..r-1.  ``pop`` walks the chunks forwards, ``push``
backwards, so ``pop`` exactly undoes ``push``.

Below the bottom of the tail of a fresh encoding message lies a virtual, infinite stack of the constant
``VIRTUAL_WORD``: it supplies the initial bits that the first bits-back pops consume.  A message read from
bytes is strict: popping past its tail raises ``CorruptMessage``.
"""

import numpy as np

from .limits import MAX_PRECISION, VIRTUAL_WORD

HEAD0 = 0xDA5A5A5A  # initial head of every lane, in [2^31, 2^32)
_LEN_BITS = 5  # per-lane bit-length code in the serialized head: bit_length - 32, in 0..31


def compiled():
    """The compiled loops (``kernels``), imported on first use: importing numba takes 0.2 s and loading the first
    kernel 0.2 s more, which files without model-coded images never need (``codecs.preload`` loads them ahead)."""
    global _kernels
    if _kernels is None:
        from . import kernels as _kernels
    return _kernels


_kernels = None


class CorruptMessage(ValueError):
    """The message is truncated, malformed or does not decode to the initial state."""


class Message:
    """A mutable rANS message with ``lanes`` lanes.

    ``strict=False`` (the default, for encoding) supplies ``VIRTUAL_WORD`` for pops past the bottom of the
    tail; ``strict=True`` raises ``CorruptMessage`` instead.
    """

    def __init__(self, lanes, strict=False):
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.head = np.full(lanes, HEAD0, dtype=np.uint64)
        self.strict = strict
        self._tail = np.empty(16, dtype=np.uint32)
        self._len = 0

    @property
    def lanes(self):
        return self.head.size

    @property
    def tail(self):
        """The stored tail words, bottom of the stack first (a read-only view)."""
        view = self._tail[: self._len]
        view.flags.writeable = False
        return view

    def copy(self):
        other = Message(self.lanes, self.strict)
        other.head = self.head.copy()
        other._tail = self._tail[: max(self._len, 16)].copy()
        other._len = self._len
        return other

    def assign(self, other):
        """Take over the state of ``other``, a message with as many lanes that is not used afterwards."""
        self.head, self._tail, self._len = other.head, other._tail, other._len

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return np.array_equal(self.head, other.head) and np.array_equal(self.tail, other.tail)

    __hash__ = None

    def _reserve(self, m):
        """Room for ``m`` more tail words (amortized doubling)."""
        end = self._len + m
        if end > self._tail.size:
            grown = np.empty(max(end, 2 * self._tail.size), dtype=np.uint32)
            grown[: self._len] = self._tail[: self._len]
            self._tail = grown

    def _append(self, words):
        self._reserve(words.size)
        self._tail[self._len : self._len + words.size] = words
        self._len += words.size

    def empty(self):
        """True while nothing has been pushed: every head lane at ``HEAD0``, no tail words."""
        return self._len == 0 and bool(np.all(self.head == HEAD0))

    def check_initial(self):
        """Raise ``CorruptMessage`` unless the message is back in its initial state: every head lane equal to
        ``HEAD0`` and only ``VIRTUAL_WORD`` left in the tail (the virtual words a decoder pushed back)."""
        if not np.all(self.head == HEAD0):
            raise CorruptMessage("decoded message does not end in the initial head state")
        if not np.all(self.tail == VIRTUAL_WORD):
            raise CorruptMessage("decoded message leaves unconsumed data in the tail")

    def num_bits(self):
        """Exact size of ``to_bytes()`` in bits."""
        head_bits = _LEN_BITS * self.lanes + int(np.sum(_bit_length(self.head) - 1))
        return 8 * (-(-head_bits // 8)) + 32 * self._len

    def to_bytes(self):
        """Serialize: the heads, bit-packed (a 5-bit bit-length code per lane, then each lane's bits below its
        leading one, MSB first), zero-padded to a byte; then the tail, uint32 LE words (as many as the bytes left:
        the container knows the message's length)."""
        lanes = self.lanes
        length = _bit_length(self.head)
        codes = np.unpackbits((length - 32).astype(np.uint8)[:, None], axis=1)[:, 8 - _LEN_BITS :]
        bits = np.unpackbits(self.head.astype(">u8").view(np.uint8).reshape(lanes, 8), axis=1)
        below_lead = np.arange(64) > (64 - length)[:, None]
        packed = np.packbits(np.concatenate([codes.ravel(), bits[below_lead]]))
        tail = self._tail[: self._len].astype("<u4")
        return packed.tobytes() + tail.tobytes()

    @classmethod
    def from_bytes(cls, data, lanes):
        """Parse ``to_bytes`` output into a strict message; any malformation raises ``CorruptMessage``."""
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        data = np.frombuffer(bytes(data), dtype=np.uint8)
        # every lane takes at least 5 + 31 bits: check before allocating anything per lane
        if data.size < -(-(_LEN_BITS + 31) * lanes // 8):
            raise CorruptMessage("truncated message: shorter than its lanes need")
        codes = np.unpackbits(data[: -(-_LEN_BITS * lanes // 8)])[: _LEN_BITS * lanes]
        length = codes.reshape(lanes, _LEN_BITS) @ (1 << np.arange(_LEN_BITS)[::-1]) + 32
        head_bits = _LEN_BITS * lanes + int(np.sum(length - 1))
        head_bytes = -(-head_bits // 8)
        if head_bytes > data.size:
            raise CorruptMessage(f"truncated message: heads need {head_bytes} bytes, {data.size} present")
        if (data.size - head_bytes) % 4:
            raise CorruptMessage("malformed message: its tail is not whole 32-bit words")
        tail_len = (data.size - head_bytes) // 4
        bits = np.unpackbits(data[:head_bytes])
        if bits[head_bits:].any():
            raise CorruptMessage("malformed message: nonzero padding after the heads")
        below_lead = np.arange(64) > (64 - length)[:, None]
        head_bits_2d = np.zeros((lanes, 64), dtype=np.uint8)
        head_bits_2d[below_lead] = bits[_LEN_BITS * lanes : head_bits]
        head_bits_2d[np.arange(lanes), 64 - length] = 1
        msg = cls(lanes, strict=True)
        msg.head = np.packbits(head_bits_2d, axis=1).view(">u8").ravel().astype(np.uint64)
        msg._append(data[data.size - 4 * tail_len :].view("<u4"))
        return msg


def _bit_length(x):
    """Bit lengths of uint64 values in [2^31, 2^63) (exact: x >> 11 < 2^52 converts to float exactly)."""
    return np.frexp((x >> 11).astype(np.float64))[1].astype(np.int64) + 11


def _check_precision(precision):
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 1..{MAX_PRECISION}, got {precision}")


def push(msg, start, freq, precision):
    """Push symbols given as integer ``start``/``freq`` arrays (freq >= 1, start + freq <= 2^precision)."""
    _check_precision(precision)
    start, freq = np.asarray(start, dtype=np.int64), np.asarray(freq, dtype=np.int64)
    if start.shape != freq.shape or start.ndim != 1:
        raise ValueError("start and freq must be 1-d arrays of one length")
    if start.size and (start.min() < 0 or freq.min() < 1 or (start + freq).max() > 1 << precision):
        raise ValueError(f"need start >= 0, freq >= 1 and start + freq <= 2^{precision}")
    push_intervals(msg, start, freq, precision)


def push_intervals(msg, start, freq, precision):
    """``push`` without its checks, for intervals taken from a valid CDF (int64 arrays)."""
    msg._reserve(start.size)
    msg._len = compiled().push(msg.head.view(np.int64), msg._tail, msg._len, start, freq, precision)


def pop(msg, n, cdf, precision, alphabet):
    """Pop ``n`` symbols of the distribution ``cdf`` (one of ``cdfs``' forms over ``alphabet`` symbols at
    ``precision`` bits) and return them."""
    _check_precision(precision)
    out = np.empty(n, np.int64)
    length = compiled().pop(msg.head.view(np.int64), msg._tail, msg._len, msg.strict, out, precision, alphabet, cdf)
    if length < 0:
        raise CorruptMessage("message exhausted: a pop needs more tail words than are left")
    msg._len = length
    return out
