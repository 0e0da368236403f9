"""The coder's compiled inner loops (numba): the rANS state updates and the integer CDFs they code with.

A distribution is a ``Cdf``: integer C(e) at the edges e = 0..alphabet of every symbol i, with C(0) = 0 and
C(alphabet) = 2^precision, in one of three forms:

- ROWS: C = rows[i, e] (a table; one row shared by all symbols when it has a single row);
- DIVIDED: C = floor(e 2^precision / count) (uniform over ``count`` symbols);
- MIXTURE: C = floor(sum_k w[i, k] F(edges[e] * slope[i, k] - offset[i, k]) * mult / 2^shift) + e, F an
  ``IntCdf`` table (``tables.IntCdf.scaled``: value and 16-bit increment packed in one int64).

Every number is an integer or an IEEE product and difference of two float64 values, each rounded on its own
(numba compiles without fast-math, so no fused multiply-add), so every machine gets the same C.
Push codes given intervals; pop finds each symbol by bisection over its edges. Both walk the chunks of
``rans`` (pop forwards, push backwards); a chunk's lanes spill words in increasing and refill in decreasing lane
order, each taking the top of the tail.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

HEAD_MIN = 1 << 31
VIRTUAL_WORD = 0x5A5A5A5A
ROWS, DIVIDED, MIXTURE = 0, 1, 2
FRAC_BITS = 12  # ``IntCdf.scaled``: the low bits of the table argument interpolate

_NO_ROWS = np.zeros((1, 2), np.int64)
_NO_PARAMS = np.zeros((1, 1), np.float64)
_NO_WEIGHTS = np.zeros((1, 1), np.int64)
_NO_EDGES = np.zeros(1, np.float64)
_NO_TABLE = np.zeros(1, np.int64)


class Cdf(NamedTuple):
    """A distribution for the kernels (see the module docstring); unused fields keep their placeholders."""
    kind: int
    rows: np.ndarray = _NO_ROWS             # (1 or n, alphabet + 1) int64
    count: int = 1
    slope: np.ndarray = _NO_PARAMS          # (n, K) float64
    offset: np.ndarray = _NO_PARAMS         # (n, K) float64
    weights: np.ndarray = _NO_WEIGHTS       # (n, K) int64
    edges: np.ndarray = _NO_EDGES           # (alphabet + 1,) float64
    table: np.ndarray = _NO_TABLE           # packed IntCdf table, int64
    mult: int = 0
    shift: int = 0


@njit(cache=True, nogil=True)
def _mixture(i, e, slope, offset, weights, edges, table, mult, shift):
    """C(e) of symbol i of a MIXTURE."""
    edge, last, m = edges[e], table.size - 1, 0
    for k in range(slope.shape[1]):
        u = edge * slope[i, k]
        u = u - offset[i, k]
        j = np.int64(u)
        packed = table[min(max(j >> FRAC_BITS, 0), last)]
        m += weights[i, k] * ((packed >> 16) + (((j & ((1 << FRAC_BITS) - 1)) * (packed & 0xFFFF)) >> FRAC_BITS))
    return ((m * mult) >> shift) + e


@njit(cache=True, nogil=True)
def _cdf(i, e, precision, kind, rows, count, slope, offset, weights, edges, table, mult, shift):
    """C(e) of symbol i."""
    if kind == MIXTURE:
        return _mixture(i, e, slope, offset, weights, edges, table, mult, shift)
    if kind == ROWS:
        return rows[i if rows.shape[0] > 1 else 0, e]
    return (e << precision) // count


@njit(cache=True, nogil=True)
def _bisect_mixture(i, cf, bits, slope, offset, weights, edges, table, mult, shift):
    """(e, C(e), C(e + 1)) for the largest e with C(e) <= cf, over 2^bits symbols of a MIXTURE."""
    e, c_lo, c_hi = 0, 0, np.int64(mult) + (1 << bits)
    for b in range(bits - 1, -1, -1):
        c = _mixture(i, e + (1 << b), slope, offset, weights, edges, table, mult, shift)
        if c <= cf:
            e, c_lo = e + (1 << b), c
        else:
            c_hi = c
    return e, c_lo, c_hi


@njit(cache=True, nogil=True)
def _bisect(i, cf, bits, alphabet, precision, kind, rows, count):
    """The same for ROWS and DIVIDED, over ``alphabet`` <= 2^bits symbols."""
    e, c_lo, c_hi = 0, 0, np.int64(1) << precision
    for b in range(bits - 1, -1, -1):
        cand = e + (1 << b)
        if cand < alphabet:
            c = rows[i if rows.shape[0] > 1 else 0, cand] if kind == ROWS else (cand << precision) // count
            if c <= cf:
                e, c_lo = cand, c
            else:
                c_hi = c
    return e, c_lo, c_hi


@njit(cache=True, nogil=True)
def intervals(symbols, precision, kind, rows, count, slope, offset, weights, edges, table, mult, shift):
    """(start, freq) of every symbol: C(s) and C(s + 1) - C(s)."""
    n = symbols.size
    start = np.empty(n, np.int64)
    freq = np.empty(n, np.int64)
    for i in range(n):
        s = symbols[i]
        lo = _cdf(i, s, precision, kind, rows, count, slope, offset, weights, edges, table, mult, shift)
        start[i] = lo
        freq[i] = _cdf(i, s + 1, precision, kind, rows, count, slope, offset, weights, edges, table, mult, shift) - lo
    return start, freq


@njit(cache=True, nogil=True)
def push(head, tail, length, start, freq, precision):
    """Push the intervals onto the int64 heads; ``tail`` (uint32) has room for one word per symbol beyond
    ``length``. Returns the new tail length."""
    lanes, n = head.size, start.size
    for lo in range((n - 1) // lanes * lanes, -1, -lanes):
        for j in range(min(lanes, n - lo)):
            x, f = head[j], freq[lo + j]
            if x >> (63 - precision) >= f:  # x >= f 2^(63 - p), which may be 2^63
                tail[length] = x & 0xFFFFFFFF
                length += 1
                x >>= 32
            head[j] = ((x // f) << precision) + x % f + start[lo + j]
    return length


@njit(cache=True, nogil=True)
def pop(head, tail, length, strict, out, precision, alphabet, kind, rows, count, slope, offset, weights, edges,
        table, mult, shift):
    """Pop ``out.size`` symbols into ``out``. Past the bottom of the tail a strict message fails (returns -1), any
    other reads VIRTUAL_WORD. Returns the new tail length."""
    lanes, n, mask = head.size, out.size, (1 << precision) - 1
    bits = 0
    while (1 << bits) < alphabet:
        bits += 1
    for lo in range(0, n, lanes):
        for j in range(min(lanes, n - lo) - 1, -1, -1):
            i, x = lo + j, head[j]
            cf = x & mask
            if kind == MIXTURE:  # (alphabet = 2^bits)
                e, c_lo, c_hi = _bisect_mixture(i, cf, bits, slope, offset, weights, edges, table, mult, shift)
            else:
                e, c_lo, c_hi = _bisect(i, cf, bits, alphabet, precision, kind, rows, count)
            out[i] = e
            x = (x >> precision) * (c_hi - c_lo) + cf - c_lo
            if x < HEAD_MIN:
                if length:
                    length -= 1
                    word = np.int64(tail[length])
                elif strict:
                    return -1
                else:
                    word = VIRTUAL_WORD
                x = (x << 32) | word
            head[j] = x
    return length



@njit(cache=True, nogil=True)
def _grid(x, step, lo, hi):
    """The index of x on the grid lo, lo + step, ..., hi: nearest point (ties to even), clamped."""
    return np.int64(np.rint((min(max(x, lo), hi) - lo) * (1 / step)))


@njit(cache=True, nogil=True)
def logistic_mixture(means, log_scales, logits, slopes, exp_neg, mean_step, mean_lo, mean_hi, scale_step, scale_lo,
                     scale_hi, logit_step, weight_bits, radius):
    """The snapped parameters (slope, offset, weights) of ``codecs.logistic_mixture`` (see there), each (n, K)."""
    n, k = means.shape
    slope, offset = np.empty((n, k)), np.empty((n, k))
    weights, index = np.empty((n, k), np.int64), np.empty(k, np.int64)
    one = 1 << weight_bits
    for i in range(n):
        top = -1
        for j in range(k):
            mean = np.rint(min(max(means[i, j], mean_lo), mean_hi) * (1 / mean_step)) * mean_step
            s = slopes[_grid(log_scales[i, j], scale_step, scale_lo, scale_hi)]
            slope[i, j] = s
            offset[i, j] = mean * s - radius
            index[j] = _grid(logits[i, j], logit_step, -1e6, 1e6)
            top = max(top, index[j])
        total = 0.0
        for j in range(k):
            total += exp_neg[min(top - index[j], exp_neg.size - 1)]
        best, rest = 0, one
        for j in range(k):
            w = np.int64(np.floor(exp_neg[min(top - index[j], exp_neg.size - 1)] * one / total))
            weights[i, j] = w
            rest -= w
            if w > weights[i, best]:
                best = j
        weights[i, best] += rest
    return slope, offset, weights

