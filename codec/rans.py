"""Vectorized rANS: a multi-lane message and the push/pop core.

A message is a head (one uint64 state per lane, kept in [2^31, 2^63)) and a tail, a stack of uint32 words
shared by all lanes.  ``push``/``pop`` code n symbols on L lanes in chunks of L: chunk k holds symbols
[kL, min((k+1)L, n)) and a chunk of r symbols uses lanes 0..r-1.  ``pop`` walks the chunks forwards, ``push``
backwards, so ``pop`` exactly undoes ``push``.

Below the bottom of the tail of a fresh encoding message lies a virtual, infinite stack of the constant
``VIRTUAL_WORD``: it supplies the initial bits that the first bits-back pops consume.  A message read from
bytes is strict: popping past its tail raises ``CorruptMessage``.
"""

import numpy as np

from .limits import MAX_PRECISION

HEAD0 = 0xDA5A5A5A  # initial head of every lane, in [2^31, 2^32)
VIRTUAL_WORD = 0x5A5A5A5A
HEAD_MIN = 1 << 31
# push and pop work on at most this many lanes at a time (the chunk semantics are unchanged): temporaries stay
# cache-sized and are not freshly page-faulted per chunk, while the per-call overhead of NumPy stays amortized.
SUB_LANES = 1 << 14
# messages of at most this many lanes are coded symbol by symbol in Python integers: for few lanes the NumPy calls of
# a chunk cost far more than its arithmetic (a 32 x 32 image has one lane). Measured crossovers (docs/CODER.md):
SCALAR_PUSH_LANES = 32
SCALAR_POP_LANES = 1
TABLE_ENTRIES = 1 << 21  # pop with few lanes tabulates the CDF rows of at most this many entries at a time
_LEN_BITS = 5  # per-lane bit-length code in the serialized head: bit_length - 32, in 0..31


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

    def _append(self, words):
        end = self._len + words.size
        if end > self._tail.size:
            grown = np.empty(max(end, 2 * self._tail.size), dtype=np.uint32)
            grown[: self._len] = self._tail[: self._len]
            self._tail = grown
        self._tail[self._len : end] = words
        self._len = end

    def _take(self, m):
        """The top ``m`` words of the tail, deepest first, removed from the stack."""
        if m <= self._len:
            self._len -= m
            return self._tail[self._len : self._len + m]
        if self.strict:
            raise CorruptMessage(f"message exhausted: a pop needs {m} tail words, {self._len} left")
        words = np.full(m, VIRTUAL_WORD, dtype=np.uint32)
        words[m - self._len :] = self._tail[: self._len]
        self._len = 0
        return words

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
        return 32 + 8 * (-(-head_bits // 8)) + 32 * self._len

    def to_bytes(self):
        """Serialize: uint32 LE tail length T; the heads, bit-packed (a 5-bit bit-length code per lane, then
        each lane's bits below its leading one, MSB first), zero-padded to a byte; T uint32 LE tail words."""
        if self._len >= 1 << 32:
            raise ValueError("message too long to serialize")
        lanes = self.lanes
        length = _bit_length(self.head)
        codes = np.unpackbits((length - 32).astype(np.uint8)[:, None], axis=1)[:, 8 - _LEN_BITS :]
        bits = np.unpackbits(self.head.astype(">u8").view(np.uint8).reshape(lanes, 8), axis=1)
        below_lead = np.arange(64) > (64 - length)[:, None]
        packed = np.packbits(np.concatenate([codes.ravel(), bits[below_lead]]))
        tail = self._tail[: self._len].astype("<u4")
        return self._len.to_bytes(4, "little") + packed.tobytes() + tail.tobytes()

    @classmethod
    def from_bytes(cls, data, lanes):
        """Parse ``to_bytes`` output into a strict message; any malformation raises ``CorruptMessage``."""
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        data = np.frombuffer(bytes(data), dtype=np.uint8)
        if data.size < 4:
            raise CorruptMessage("truncated message: no tail length")
        tail_len = int(data[:4].view("<u4")[0])
        # every lane takes at least 5 + 31 bits: check before allocating anything per lane
        if data.size < 4 + 4 * tail_len + (-(-(_LEN_BITS + 31) * lanes // 8)):
            raise CorruptMessage("truncated message: shorter than its lanes and tail length need")
        bits = np.unpackbits(data[4 : data.size - 4 * tail_len])
        length = bits[: _LEN_BITS * lanes].reshape(lanes, _LEN_BITS) @ (1 << np.arange(_LEN_BITS)[::-1]) + 32
        head_bits = _LEN_BITS * lanes + int(np.sum(length - 1))
        head_bytes = -(-head_bits // 8)
        if head_bytes != bits.size // 8:
            reason = "truncated" if head_bytes > bits.size // 8 else "trailing bytes in"
            raise CorruptMessage(f"{reason} message: heads need {head_bytes} bytes, {bits.size // 8} present")
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


def _as_u64(a):
    a = np.asarray(a)
    return a.view(np.uint64) if a.dtype == np.int64 else a.astype(np.uint64, copy=False)


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
    push_with(msg, start.size, lambda idx: (start[idx], freq[idx]), precision)


def push_with(msg, n, start_freq, precision):
    """Push n symbols whose (start, freq) arrays ``start_freq(idx)`` gives for the slice ``idx`` of 0..n-1."""
    _check_precision(precision)
    lanes = msg.lanes
    if lanes <= SCALAR_PUSH_LANES:
        return _push_scalar(msg, n, *start_freq(slice(0, n)), precision)
    for lo in range((n - 1) // lanes * lanes, -1, -lanes):
        r = min(lanes, n - lo)
        for a in range(0, r, SUB_LANES):  # spilled words go out in increasing lane order
            b = min(a + SUB_LANES, r)
            start, freq = map(_as_u64, start_freq(slice(lo + a, lo + b)))
            x = msg.head[a:b]
            spill = np.flatnonzero(x >= freq << (63 - precision))
            if spill.size:
                words = x[spill]
                msg._append(words)
                words >>= 32
                x[spill] = words
            q = x // freq
            x -= q * freq
            q <<= precision
            x += q
            x += start


def _push_scalar(msg, n, start, freq, precision):
    """push_with for few lanes: the same chunks and spill order, one symbol at a time."""
    heads, words, lanes = msg.head.tolist(), [], msg.lanes
    start, freq = np.asarray(start).tolist(), np.asarray(freq).tolist()
    for lo in range((n - 1) // lanes * lanes, -1, -lanes):
        for j in range(min(lanes, n - lo)):
            x, f = heads[j], freq[lo + j]
            if x >= f << (63 - precision):
                words.append(x & 0xFFFFFFFF)
                x >>= 32
            heads[j] = (x // f << precision) + x % f + start[lo + j]
    msg._append(np.array(words, dtype=np.uint32))
    msg.head[:] = heads


def pop(msg, n, lookup, precision, rows=None):
    """Pop ``n`` symbols and return them.

    ``lookup(cf, idx)`` maps the cumulative frequencies ``cf`` (uint64, read only) of the symbols at the slice
    ``idx`` to (symbols, start, freq) arrays with start <= cf < start + freq.  (The codecs' ``start_freq``
    gives the intervals of the returned symbols again where a caller needs them.) ``rows(idx)``, where given,
    is the same distribution as a table, (m, alphabet + 1) CDF rows, which a message of one lane searches instead.
    """
    _check_precision(precision)
    if rows is not None and msg.lanes <= SCALAR_POP_LANES:
        return _pop_scalar(msg, n, rows, precision)
    lanes, mask = msg.lanes, np.uint64((1 << precision) - 1)
    symbols = None
    for lo in range(0, n, lanes):
        r = min(lanes, n - lo)
        for a in range((r - 1) // SUB_LANES * SUB_LANES, -1, -SUB_LANES):  # higher lanes refill first
            b = min(a + SUB_LANES, r)
            x, idx = msg.head[a:b], slice(lo + a, lo + b)
            cf = x & mask
            sym, start, freq = lookup(cf, idx)
            if symbols is None:
                symbols = np.empty(n, dtype=np.asarray(sym).dtype)
            symbols[idx] = sym
            x >>= precision
            x *= _as_u64(freq)
            x += cf
            x -= _as_u64(start)
            refill = np.flatnonzero(x < HEAD_MIN)
            if refill.size:
                words = x[refill]
                words <<= 32
                words |= msg._take(refill.size)
                x[refill] = words
    return np.empty(0, dtype=np.int64) if symbols is None else symbols


def _pop_scalar(msg, n, rows, precision):
    """pop for few lanes: the same chunks and refill order, one symbol at a time, searching tabulated CDF rows."""
    heads, lanes, mask = msg.head.tolist(), msg.lanes, (1 << precision) - 1
    symbols = np.empty(n, dtype=np.int64)
    width = rows(slice(0, 1)).shape[1] if n else 1
    block = max(1, TABLE_ENTRIES // width // lanes) * lanes       # whole chunks' rows at a time
    for first in range(0, n, block):
        table = rows(slice(first, min(first + block, n)))
        for lo in range(first, min(first + block, n), lanes):
            refill = []
            for j in range(min(lanes, n - lo)):
                x = heads[j]
                cf = x & mask
                row = table[lo + j - first]
                s = int(row.searchsorted(cf, "right")) - 1
                start = int(row[s])
                heads[j] = x = (x >> precision) * (int(row[s + 1]) - start) + cf - start
                symbols[lo + j] = s
                if x < HEAD_MIN:
                    refill.append(j)
            for j, word in zip(refill, msg._take(len(refill)).tolist()):
                heads[j] = heads[j] << 32 | word
    msg.head[:] = heads
    return symbols
