"""The coder's compiled inner loops (numba): the rANS state updates, the integer CDFs they code with (``cdfs``) and
the snapping of the continuous families' parameters to the coder's grids.

Every number is an integer or an IEEE product and difference of two float64 values, each rounded on its own
(numba compiles without fast-math, so no fused multiply-add), so every machine gets the same C. The loops are
written once for every form of CDF: numba compiles one specialization per form (``_cdf`` and ``_search`` are
overloaded on it), so no loop branches on the form per evaluation of C.

Push codes given intervals; pop finds each symbol by bisection over its edges, for mixtures over pixel levels after
a galloping search from a guess (on CIFAR-10, 2.9 evaluations of C per pixel instead of 8). Both walk the chunks of
``rans`` (pop forwards, push backwards); a chunk's lanes spill words in increasing and refill in decreasing lane
order, each taking the top of the tail.
"""
import numpy as np
from numba import njit
from numba.extending import overload

from .cdfs import Divided, Mixture, Rows
from .limits import HEAD_MIN, VIRTUAL_WORD
from .tables import FRAC_BITS, QUANTILE_BITS

JIT = {"cache": True, "nogil": True}


@njit(**JIT)
def _mixture(d, i, e):
    """C(e) of symbol i of a Mixture."""
    edge, last, m = d.edges[e], d.table.size - 1, 0
    for k in range(d.slope.shape[1]):
        u = edge * d.slope[i, k]
        u = u - d.offset[i, k]
        j = np.int64(u)
        packed = d.table[min(max(j >> FRAC_BITS, 0), last)]
        m += d.weights[i, k] * ((packed >> 16) + (((j & ((1 << FRAC_BITS) - 1)) * (packed & 0xFFFF)) >> FRAC_BITS))
    return ((m * d.mult) >> d.shift) + e


def _cdf(d, i, e, precision):
    """C(e) of symbol i of the distribution ``d`` (compiled per form)."""


@overload(_cdf, jit_options=JIT)
def _cdf_of(d, i, e, precision):
    form = d.instance_class
    if form is Rows:
        return lambda d, i, e, precision: d.rows[i if d.rows.shape[0] > 1 else 0, e]
    if form is Divided:
        return lambda d, i, e, precision: (e << precision) // d.count
    if form is Mixture:
        return lambda d, i, e, precision: _mixture(d, i, e)


def _search(d, i, cf, precision, alphabet):
    """(e, C(e), C(e + 1)) of the symbol e of symbol i whose interval holds cf (compiled per form)."""


@overload(_search, jit_options=JIT)
def _search_of(d, i, cf, precision, alphabet):
    if d.instance_class is Mixture:
        return lambda d, i, cf, precision, alphabet: _mixture_search(d, i, cf, precision, alphabet)
    return lambda d, i, cf, precision, alphabet: _bisect(d, i, cf, precision, alphabet)


@njit(**JIT)
def _bisect(d, i, cf, precision, alphabet):
    """Bisection over an alphabet of any size: one evaluation of C per bit."""
    bits = 0
    while (1 << bits) < alphabet:
        bits += 1
    e, c_lo, c_hi = 0, 0, np.int64(1) << precision
    for b in range(bits - 1, -1, -1):
        if e + (1 << b) < alphabet:
            c = _cdf(d, i, e + (1 << b), precision)
            if c <= cf:
                e, c_lo = e + (1 << b), c
            else:
                c_hi = c
    return e, c_lo, c_hi


@njit(**JIT)
def _mixture_search(d, i, cf, precision, alphabet):
    """``_search`` of a Mixture: plain bisection without quantiles (alphabet = 2^bits), else a galloping search
    outwards from a guess, the weighted mean of the levels where the components reach the quantile cf / 2^precision,
    then bisection. (A guess only saves evaluations of C: any guess finds the same symbol.)"""
    lo, hi, c_lo, c_hi = 0, alphabet, 0, np.int64(1) << precision
    if d.quantiles.size == 1:
        b = alphabet >> 1
        while b:
            c = _mixture(d, i, lo + b)
            if c <= cf:
                lo, c_lo = lo + b, c
            else:
                c_hi = c
            b >>= 1
        return lo, c_lo, c_hi
    u = d.quantiles[cf >> (precision - QUANTILE_BITS) if precision >= QUANTILE_BITS
                    else cf << (QUANTILE_BITS - precision)]
    guess, total = 0.0, 0
    for k in range(d.weights.shape[1]):
        guess += d.weights[i, k] * ((u + d.offset[i, k]) / d.slope[i, k])
        total += d.weights[i, k]
    e = np.int64(min(max(guess / total + 0.5, 0.0), alphabet - 1.0))     # edges[e] = e - 1/2
    c = _mixture(d, i, e) if e else 0
    step = 1
    if c <= cf:                                  # e <= the symbol: gallop upwards
        lo, c_lo = e, c
        while lo + step < hi:
            c = _mixture(d, i, lo + step)
            if c > cf:
                hi, c_hi = lo + step, c
                break
            lo, c_lo, step = lo + step, c, 2 * step
    else:                                        # the symbol < e: gallop downwards
        hi, c_hi = e, c
        while hi - step > lo:
            c = _mixture(d, i, hi - step)
            if c <= cf:
                lo, c_lo = hi - step, c
                break
            hi, c_hi, step = hi - step, c, 2 * step
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        c = _mixture(d, i, mid)
        if c <= cf:
            lo, c_lo = mid, c
        else:
            hi, c_hi = mid, c
    return lo, c_lo, c_hi


@njit(**JIT)
def intervals(symbols, precision, d):
    """(start, freq) of every symbol: C(s) and C(s + 1) - C(s)."""
    n = symbols.size
    start, freq = np.empty(n, np.int64), np.empty(n, np.int64)
    for i in range(n):
        start[i] = _cdf(d, i, symbols[i], precision)
        freq[i] = _cdf(d, i, symbols[i] + 1, precision) - start[i]
    return start, freq


@njit(**JIT)
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


@njit(**JIT)
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


@njit(**JIT)
def pop(head, tail, length, strict, out, precision, alphabet, d):
    """Pop ``out.size`` symbols of the distribution ``d`` into ``out``; returns the new tail length, -1 past the
    bottom of a strict message's tail (a message that is not strict reads VIRTUAL_WORD there)."""
    lanes, n, mask = head.size, out.size, (1 << precision) - 1
    for lo in range(0, n, lanes):
        for j in range(min(lanes, n - lo) - 1, -1, -1):
            cf = head[j] & mask
            e, c_lo, c_hi = _search(d, lo + j, cf, precision, alphabet)
            out[lo + j] = e
            length = _pop_step(head, j, cf, c_lo, c_hi, tail, length, strict, precision)
            if length < 0:
                return -1
    return length


# ---- snapping parameters to the coder's grids ------------------------------------------------------------------
@njit(**JIT)
def grid(x, step, lo, hi):
    """The index of x on the grid lo, lo + step, ..., hi: nearest point (ties to even), clamped."""
    return np.int64(np.rint((min(max(x, lo), hi) - lo) * (1 / step)))


@njit(**JIT)
def snap(x, step, lo, hi):
    """x snapped to the nearest multiple of ``step`` (a power of two) in [lo, hi] (multiples of it)."""
    return np.rint(min(max(x, lo), hi) * (1 / step)) * step


@njit(**JIT)
def _weights(logits, i, exp_neg, logit_step, weight_bits, out):
    """Mixture row i's integer weights into ``out`` (K,): floor(softmax * 2^weight_bits) of the snapped logits
    (exp from a correctly rounded table, summed in a fixed order), the remainder added to the first largest."""
    k = logits.shape[1]
    index = np.empty(k, np.int64)
    top = -1
    for j in range(k):
        index[j] = grid(logits[i, j], logit_step, -1e6, 1e6)
        top = max(top, index[j])
    total = 0.0
    for j in range(k):
        total += exp_neg[min(top - index[j], exp_neg.size - 1)]
    best, rest, one = 0, 1 << weight_bits, 1 << weight_bits
    for j in range(k):
        w = np.int64(np.floor(exp_neg[min(top - index[j], exp_neg.size - 1)] * one / total))
        out[j] = w
        rest -= w
        if w > out[best]:
            best = j
    out[best] += rest


@njit(**JIT)
def mixture_weights(logits, exp_neg, logit_step, weight_bits):
    """The integer weights (n, K) of mixtures with logits (n, K) (``_weights``)."""
    out = np.empty(logits.shape, np.int64)
    for i in range(logits.shape[0]):
        _weights(logits, i, exp_neg, logit_step, weight_bits, out[i])
    return out


@njit(**JIT)
def logistic_mixture(means, log_scales, logits, slopes, exp_neg, mean_grid, scale_grid, logit_step, weight_bits,
                     radius):
    """The snapped parameters (slope, offset, weights), each (n, K), of a ``codecs.LogisticMixture`` (see there)
    from its means, log-scales and logits; ``mean_grid`` and ``scale_grid`` are (step, lo, hi)."""
    n, k = means.shape
    slope, offset = np.empty((n, k)), np.empty((n, k))
    weights = np.empty((n, k), np.int64)
    for i in range(n):
        for j in range(k):
            s = slopes[grid(log_scales[i, j], *scale_grid)]
            slope[i, j] = s
            offset[i, j] = snap(means[i, j], *mean_grid) * s - radius
        _weights(logits, i, exp_neg, logit_step, weight_bits, weights[i])
    return slope, offset, weights


@njit(**JIT)
def gaussian(means, log_sigmas, slopes, mean_grid, sigma_grid, radius):
    """The snapped parameters (slope, offset), each (n, 1), of a ``codecs.GaussianPosterior`` (see there)."""
    n = means.size
    slope, offset = np.empty((n, 1)), np.empty((n, 1))
    for i in range(n):
        s = slopes[grid(log_sigmas[i], *sigma_grid)]
        slope[i, 0] = s
        offset[i, 0] = snap(means[i], *mean_grid) * s - radius
    return slope, offset
