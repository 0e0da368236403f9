"""The coder's compiled inner loops (numba): the rANS state updates and the integer CDFs they code with.

A distribution is a ``rans.Cdf``: integer C(e) at the edges e = 0..alphabet of every symbol i, with C(0) = 0 and
C(alphabet) = 2^precision, in one of three forms:

- ROWS: C = rows[i, e] (a table; one row shared by all symbols when it has a single row);
- DIVIDED: C = floor(e 2^precision / count) (uniform over ``count`` symbols);
- MIXTURE: C = floor(sum_k w[i, k] F(edges[e] * slope[i, k] - offset[i, k]) * mult / 2^shift) + e, F an
  ``IntCdf`` table (``tables.IntCdf.scaled``: value and 16-bit increment packed in one int64), over a power of
  two of symbols.

Every number is an integer or an IEEE product and difference of two float64 values, each rounded on its own
(numba compiles without fast-math, so no fused multiply-add), so every machine gets the same C.
Push codes given intervals; pop finds each symbol by bisection over its edges, for logistic mixtures over pixel
levels after a galloping search from a guess (on CIFAR-10, 2.9 evaluations of C per pixel instead of 8). Both
walk the chunks of ``rans`` (pop forwards, push backwards); a chunk's lanes spill words in increasing and refill
in decreasing lane order, each taking the top of the tail. ``logistic_mixture`` snaps the logistic mixtures'
parameters.
"""
import numpy as np
from numba import njit

from .rans import HEAD_MIN, MIXTURE, ROWS, VIRTUAL_WORD
from .tables import FRAC_BITS, QUANTILE_BITS

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
def _table(i, e, precision, kind, rows, count):
    """C(e) of symbol i of ROWS or DIVIDED."""
    if kind == ROWS:
        return rows[i if rows.shape[0] > 1 else 0, e]
    return (e << precision) // count


@njit(cache=True, nogil=True)
def intervals(symbols, precision, kind, rows, count, slope, offset, weights, edges, table, quantiles, mult, shift):
    """(start, freq) of every symbol: C(s) and C(s + 1) - C(s) (``quantiles`` is for pop)."""
    n = symbols.size
    start, freq = np.empty(n, np.int64), np.empty(n, np.int64)
    if kind == MIXTURE:  # (one loop per kind: a branch in the loop would cost more than a mixture's C)
        for i in range(n):
            start[i] = _mixture(i, symbols[i], slope, offset, weights, edges, table, mult, shift)
            freq[i] = _mixture(i, symbols[i] + 1, slope, offset, weights, edges, table, mult, shift) - start[i]
    else:
        for i in range(n):
            start[i] = _table(i, symbols[i], precision, kind, rows, count)
            freq[i] = _table(i, symbols[i] + 1, precision, kind, rows, count) - start[i]
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
def _pop_step(head, j, cf, c_lo, c_hi, tail, length, strict, precision):
    """Lane j's state after popping the interval [c_lo, c_hi) that holds cf, refilled from the top of the tail
    (VIRTUAL_WORD below its bottom) if it fell below HEAD_MIN. Returns the new tail length, -1 past the bottom of
    a strict message's tail."""
    x = (head[j] >> precision) * (c_hi - c_lo) + cf - c_lo
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


@njit(cache=True, nogil=True, inline="always")
def _mixture_search(i, cf, precision, alphabet, slope, offset, weights, edges, table, quantiles, mult, shift):
    """(e, C(e), C(e + 1)) of the symbol e of MIXTURE symbol i whose interval holds cf, by bisection; with
    ``quantiles`` (level edges only), first a galloping search outwards from a guess: the weighted mean of the
    levels where the components reach the quantile cf / 2^precision. (A guess only saves evaluations of C: any
    guess finds the same symbol.)"""
    lo, hi, c_lo, c_hi = 0, alphabet, 0, np.int64(1) << precision
    if quantiles.size == 1:                      # plain bisection (alphabet = 2^bits)
        b = alphabet >> 1
        while b:
            c = _mixture(i, lo + b, slope, offset, weights, edges, table, mult, shift)
            if c <= cf:
                lo, c_lo = lo + b, c
            else:
                c_hi = c
            b >>= 1
        return lo, c_lo, c_hi
    u = quantiles[cf >> (precision - QUANTILE_BITS) if precision >= QUANTILE_BITS
                  else cf << (QUANTILE_BITS - precision)]
    guess, total = 0.0, 0
    for k in range(weights.shape[1]):
        guess += weights[i, k] * ((u + offset[i, k]) / slope[i, k])
        total += weights[i, k]
    e = np.int64(min(max(guess / total + 0.5, 0.0), alphabet - 1.0))     # edges[e] = e - 1/2
    c = _mixture(i, e, slope, offset, weights, edges, table, mult, shift) if e else 0
    step = 1
    if c <= cf:                                  # e <= the symbol: gallop upwards
        lo, c_lo = e, c
        while lo + step < hi:
            c = _mixture(i, lo + step, slope, offset, weights, edges, table, mult, shift)
            if c > cf:
                hi, c_hi = lo + step, c
                break
            lo, c_lo, step = lo + step, c, 2 * step
    else:                                        # the symbol < e: gallop downwards
        hi, c_hi = e, c
        while hi - step > lo:
            c = _mixture(i, hi - step, slope, offset, weights, edges, table, mult, shift)
            if c <= cf:
                lo, c_lo = hi - step, c
                break
            hi, c_hi, step = hi - step, c, 2 * step
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        c = _mixture(i, mid, slope, offset, weights, edges, table, mult, shift)
        if c <= cf:
            lo, c_lo = mid, c
        else:
            hi, c_hi = mid, c
    return lo, c_lo, c_hi


@njit(cache=True, nogil=True)
def pop(head, tail, length, strict, out, precision, alphabet, kind, rows, count, slope, offset, weights, edges,
        table, quantiles, mult, shift):
    """Pop ``out.size`` symbols into ``out``, each by bisection (from a guess for mixtures); returns the new tail
    length, -1 past the bottom of a strict message's tail (a message that is not strict reads VIRTUAL_WORD there).
    One loop per kind, as in ``intervals``: a branch per evaluation of C made pops 25-45 % slower, and loops taking
    C as a function argument cannot be cached."""
    lanes, n, mask = head.size, out.size, (1 << precision) - 1
    if kind == MIXTURE:
        for lo in range(0, n, lanes):
            for j in range(min(lanes, n - lo) - 1, -1, -1):
                cf = head[j] & mask
                e, c_lo, c_hi = _mixture_search(lo + j, cf, precision, alphabet, slope, offset, weights, edges,
                                                table, quantiles, mult, shift)
                out[lo + j] = e
                length = _pop_step(head, j, cf, c_lo, c_hi, tail, length, strict, precision)
                if length < 0:
                    return -1
    else:
        bits = 0
        while (1 << bits) < alphabet:
            bits += 1
        for lo in range(0, n, lanes):
            for j in range(min(lanes, n - lo) - 1, -1, -1):
                cf = head[j] & mask
                e, c_lo, c_hi = 0, 0, np.int64(1) << precision
                for b in range(bits - 1, -1, -1):
                    if e + (1 << b) < alphabet:
                        c = _table(lo + j, e + (1 << b), precision, kind, rows, count)
                        if c <= cf:
                            e, c_lo = e + (1 << b), c
                        else:
                            c_hi = c
                out[lo + j] = e
                length = _pop_step(head, j, cf, c_lo, c_hi, tail, length, strict, precision)
                if length < 0:
                    return -1
    return length


@njit(cache=True, nogil=True)
def _grid(x, step, lo, hi):
    """The index of x on the grid lo, lo + step, ..., hi: nearest point (ties to even), clamped."""
    return np.int64(np.rint((min(max(x, lo), hi) - lo) * (1 / step)))


@njit(cache=True, nogil=True)
def logistic_mixture(means, log_scales, logits, slopes, exp_neg, mean_step, mean_lo, mean_hi, scale_step, scale_lo,
                     scale_hi, logit_step, weight_bits, radius):
    """The snapped parameters (slope, offset, weights), each (n, K), of a ``codecs.LogisticMixture`` (see there)
    from its means, log-scales and logits, as the NumPy operations of ``codecs._snap`` and ``codecs._grid_index``
    would give them."""
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

