"""Composable codecs over a ``rans.Message``.

A codec has ``push(msg, symbols)`` and ``pop(msg) -> symbols`` with its distribution bound at construction.
Table codecs code flat int64 symbol arrays of a fixed length ``n``: ``start_freq`` is the single place where a
codec's integer (start, freq) pairs come from, and ``lookup`` (used by pop) inverts it in the same integer
arithmetic, so push and pop cannot disagree.  Parameters of the continuous families are snapped to fixed grids
first; the snapped values are the only input to the integer CDFs (see ``codec.tables``).
"""

from statistics import NormalDist

import numpy as np

from . import rans
from .limits import LATENT_BITS_MAX, LEVEL_PRECISION_MIN
from .tables import (FRAC_BITS, LOG_FRAC, LOGISTIC, NORMAL, ONE_BITS, STEP_BITS, exp2_neg_fixed, exp_table,
                     log2_fixed, normal_buckets, stored)


class TableCodec:
    """Base of codecs defined by integer (start, freq) at ``precision`` bits over ``alphabet`` symbols.

    Subclasses set ``n``, ``alphabet``, ``precision`` and implement ``start_freq(symbols, idx)`` (for the
    symbols at the slice ``idx`` of 0..n-1) and ``lookup(cf, idx) -> (symbols, start, freq)``.
    """

    def push(self, msg, symbols):
        """Push ``symbols``: their intervals are computed for all of them at once, then the core codes them."""
        start, freq = self.start_freq(self._validate(symbols))
        rans.push_with(msg, self.n, lambda idx: (start[idx], freq[idx]), self.precision)

    def pop(self, msg):
        return rans.pop(msg, self.n, self.lookup, self.precision, getattr(self, "cdf_rows", None))

    def _validate(self, symbols):
        symbols = np.asarray(symbols)
        if symbols.shape != (self.n,) or (self.n and symbols.dtype.kind not in "iu"):
            raise ValueError(f"expected {self.n} integer symbols, got shape {symbols.shape} {symbols.dtype}")
        if self.n and (symbols.min() < 0 or symbols.max() >= self.alphabet):
            raise ValueError(f"symbols out of range 0..{self.alphabet - 1}")
        return symbols.astype(np.int64, copy=False)


class Uniform(TableCodec):
    """n symbols uniform over 2^bits values, 1 <= bits <= 24."""

    def __init__(self, n, bits):
        rans._check_precision(bits)
        self.n, self.alphabet, self.precision = n, 1 << bits, bits

    def start_freq(self, symbols, idx=slice(None)):
        return symbols, np.ones(symbols.size, dtype=np.int64)

    def lookup(self, cf, idx):
        return cf.astype(np.int64), cf, np.ones(cf.size, dtype=np.int64)


class UniformCount(TableCodec):
    """n symbols uniform over 0..count-1, count <= 2^24, at precision 24 (C(i) = floor(i 2^24 / count))."""

    def __init__(self, n, count):
        if not 1 <= count <= 1 << rans.MAX_PRECISION:
            raise ValueError(f"count must be in 1..2^{rans.MAX_PRECISION}, got {count}")
        self.n, self.alphabet, self.precision = n, count, rans.MAX_PRECISION

    def start_freq(self, symbols, idx=slice(None)):
        start = (symbols << self.precision) // self.alphabet
        return start, ((symbols + 1) << self.precision) // self.alphabet - start

    def lookup(self, cf, idx):
        # the largest i with floor(i 2^p / count) <= cf
        symbols = ((cf.astype(np.int64) + 1) * self.alphabet - 1) >> self.precision
        return (symbols, *self.start_freq(symbols))


def _bisect(cdf_at, cf, bits, top, one):
    """Largest e < top with cdf_at(e) <= cf, found bit by bit (top <= 2^bits, C(0) = 0 <= cf < C(top) = one).

    Returns (e, C(e), C(e + 1)).
    """
    e = np.zeros(cf.size, dtype=np.int64)
    lo = np.zeros(cf.size, dtype=np.int64)
    hi = np.full(cf.size, one, dtype=np.int64)
    for b in range(bits - 1, -1, -1):
        cand = e + (1 << b)
        if top < 1 << bits:
            np.minimum(cand, top, out=cand)
        c = cdf_at(cand)
        ok = c <= cf
        e = np.where(ok, cand, e)
        lo = np.where(ok, c, lo)
        hi = np.where(ok, hi, c)
    return e, lo, hi


class Categorical(TableCodec):
    """Symbols from an integer CDF table: shape (K+1,) shared by ``n`` symbols, or one row per symbol (n, K+1).

    Every row must start at 0, end at 2^p (1 <= p <= 24) and increase strictly (every freq >= 1).  ``precision``
    p is read from the table unless given (a table with no rows needs it).
    """

    def __init__(self, cdf, n=None, precision=None):
        cdf = np.asarray(cdf)
        if cdf.ndim not in (1, 2) or cdf.shape[-1] < 2 or cdf.dtype.kind not in "iu":
            raise ValueError("cdf must be an integer array of shape (K+1,) or (n, K+1), K >= 1")
        cdf = cdf.astype(np.int64)
        if precision is None:
            if not cdf.size:
                raise ValueError("a cdf table without rows needs its precision")
            precision = int(cdf.flat[cdf.shape[-1] - 1]).bit_length() - 1
        rans._check_precision(precision)
        total = 1 << precision
        if np.any(cdf[..., 0] != 0) or np.any(cdf[..., -1] != total) or np.any(np.diff(cdf, axis=-1) <= 0):
            raise ValueError(f"every cdf row must start at 0, end at 2^{precision} and increase strictly")
        if cdf.ndim == 2 and n not in (None, cdf.shape[0]):
            raise ValueError(f"n={n} does not match the cdf's {cdf.shape[0]} rows")
        if cdf.ndim == 1 and n is None:
            raise ValueError("a shared cdf needs n")
        self.cdf, self.precision, self.alphabet = cdf, precision, cdf.shape[-1] - 1
        self.n = cdf.shape[0] if cdf.ndim == 2 else n

    def cdf_rows(self, idx):
        """The CDF rows of the symbols at the slice ``idx``, (m, alphabet + 1)."""
        if self.cdf.ndim == 2:
            return self.cdf[idx]
        return np.broadcast_to(self.cdf, (len(range(self.n)[idx]), self.alphabet + 1))

    def _flat_index(self, symbols, idx):
        rows = np.arange(*idx.indices(self.n))
        return rows * (self.alphabet + 1) + symbols

    def start_freq(self, symbols, idx=slice(None)):
        if self.cdf.ndim == 1:
            start = self.cdf.take(symbols)
            return start, self.cdf.take(symbols + 1) - start
        flat = self._flat_index(symbols, idx)
        start = self.cdf.take(flat)
        return start, self.cdf.take(flat + 1) - start

    def lookup(self, cf, idx):
        if self.cdf.ndim == 1:
            symbols = np.searchsorted(self.cdf, cf.view(np.int64), side="right") - 1
            return (symbols, *self.start_freq(symbols))
        base = self._flat_index(0, idx)
        bits, one = (self.alphabet - 1).bit_length(), 1 << self.precision
        e, lo, hi = _bisect(lambda c: self.cdf.take(base + c), cf.view(np.int64), bits, self.alphabet, one)
        return e, lo, hi - lo


def _params(x, shape=None):
    """Distribution parameters as float64 (no copy when they already are), NaN rejected."""
    x = np.asarray(x, dtype=np.float64)
    if shape is not None:
        x = x.reshape(shape)
    if x.size and np.isnan(x.min()):
        raise ValueError("distribution parameters must not be NaN")
    return x


def _clip(x, lo, hi, out=None):
    """np.clip without its Python-level overhead (NaN-free input)."""
    x = np.maximum(x, lo, out=out)
    return np.minimum(x, hi, out=x)


def _snap(x, step, lo, hi):
    """``x`` snapped to the nearest multiple of ``step`` (a power of two) in [lo, hi] (multiples of it)."""
    x = _clip(x, lo, hi)
    x *= 1 / step
    np.rint(x, out=x)
    x *= step
    return x


def _grid_index(x, step, lo, hi):
    """Index of ``x`` on the grid lo, lo + step, ..., hi (nearest point, clamped)."""
    x = _clip(x, lo, hi)
    x -= lo
    x *= 1 / step
    np.rint(x, out=x)
    return x.astype(np.int64)


_SUB = rans.SUB_LANES  # lazy codecs evaluate C on blocks of at most this many symbols (see rans.SUB_LANES)
_U_SCALE = 1 << (STEP_BITS + FRAC_BITS)  # IntCdf.scaled takes (t + radius) * 2^20
_WINDOW = 16  # symbols searched around a wrong pop guess
_FULL_SEARCH = 1 << 16  # most C evaluations for searching the whole alphabet for a few symbols at once
_TWO_ROUNDS = 128  # blocks of at most this many symbols search levels in two rounds, larger ones bisect
_COARSE = 1 << 13  # the two rounds' first one is evaluated for this many consecutive symbols at once
_OPEN = float(1 << 20)  # stands in for an infinite edge: beyond every table radius, yet |u| << 2^63


class _LazyCdfCodec(TableCodec):
    """A table codec whose integer CDF is evaluated only where needed, never tabulated.

    Subclasses give ``_snapped()``: a tuple of arrays, the snapped parameters of all n symbols (on the last axis;
    computed once, then sliced per block), and ``_cdf(e, params)``: C at int64 edges e of shape (..., m), with
    C(0) = 0 and C(alphabet) = 2^precision.  Pop starts from a float guess ``_guess(cf, params)`` (it only
    affects speed: it is checked against C), searches a window around the wrong ones and bisects the rest.
    """

    _sub = _SUB
    _all = None
    _coarse = None

    def _params(self, idx):
        if self._all is None:
            self._all = self._snapped()
        return tuple(p[..., idx] for p in self._all)

    def start_freq(self, symbols, idx=slice(None)):
        return _join(self._start_freq, symbols, idx.indices(self.n)[0], self._sub, 2)

    def cdf_rows(self, idx):
        """C at every edge for the symbols at the slice ``idx``, (m, alphabet + 1)."""
        params = self._params(idx)
        edges = np.repeat(np.arange(self.alphabet + 1)[:, None], params[0].shape[-1], axis=1)
        return np.ascontiguousarray(self._cdf(edges, params).T)

    def lookup(self, cf, idx):
        return _join(self._lookup, cf.view(np.int64), idx.start, self._sub, 3)

    def _start_freq(self, symbols, idx):
        edges = np.empty((2, symbols.size), dtype=np.int64)
        edges[0] = symbols
        np.add(symbols, 1, out=edges[1])
        lo, hi = self._cdf(edges, self._params(idx))
        hi -= lo
        return lo, hi

    def _lookup(self, cf, idx):
        params = self._params(idx)
        guess = self._guess(cf, params)
        if guess is None:
            if cf.size <= _TWO_ROUNDS and self.alphabet == LEVELS:
                sym, lo, hi = self._two_rounds(cf, params, idx)
            else:
                sym, lo, hi = self._bisect(cf, params)
        else:
            edges = np.empty((2, cf.size), dtype=np.int64)
            edges[0] = guess
            np.add(guess, 1, out=edges[1])
            lo, hi = self._cdf(edges, params)
            sym = edges[0]
            wrong = np.flatnonzero((lo > cf) | (hi <= cf))
            if wrong.size:
                sym[wrong], lo[wrong], hi[wrong] = self._near(cf[wrong], sym[wrong], _select(params, wrong))
        hi -= lo
        return sym, lo, hi

    def _near(self, cf, guess, params, span=_WINDOW):
        """Search a window of ``span`` symbols around wrong guesses (mostly off by a few): C at its edges
        locates cf.  Misses are searched over the whole alphabet if that is small enough, else bisected."""
        span = min(span, self.alphabet)
        base = _clip(guess - (span // 2 - 1), 0, self.alphabet - span)
        c = self._cdf(base + np.arange(span + 1)[:, None], params)  # (span + 1, m)
        k = np.count_nonzero(c <= cf, axis=0) - 1  # cf in [c[k], c[k + 1]) if 0 <= k < span
        out = np.empty((3, cf.size), dtype=np.int64)
        hit = np.flatnonzero((k >= 0) & (k < span))
        out[:, hit] = base[hit] + k[hit], c[k[hit], hit], c[k[hit] + 1, hit]
        miss = np.flatnonzero((k < 0) | (k >= span))
        if miss.size:
            sub = _select(params, miss)
            if span < self.alphabet and miss.size * (self.alphabet + 1) <= _FULL_SEARCH:
                out[:, miss] = self._near(cf[miss], guess[miss], sub, self.alphabet)
            else:
                out[:, miss] = self._bisect(cf[miss], sub)
        return out

    def _bisect(self, cf, params):
        return _bisect(lambda e: self._cdf(e, params), cf, self._bits, self.alphabet, 1 << self.precision)

    def _two_rounds(self, cf, params, idx):
        """Search 256 levels in two vectorized rounds: C at every 16th edge locates cf's group of 16 levels, C at
        the group's 17 edges the level. More evaluations than bisection, but 4x fewer NumPy calls: faster for the
        small blocks that few rANS lanes give. The first round does not depend on cf: ``_coarse_rows`` evaluates it
        ahead for many chunks at once."""
        c = self._coarse_rows(idx)
        base = (np.count_nonzero(c <= cf, axis=0) - 1) * 16
        c = self._cdf(base + np.arange(17)[:, None], params)
        k = np.count_nonzero(c <= cf, axis=0) - 1
        rows = np.arange(cf.size)
        return base + k, c[k, rows], c[k + 1, rows]

    def _coarse_rows(self, idx):
        """C at every 16th level edge, (17, m), for the symbols of the slice ``idx``; evaluated for at least
        _COARSE symbols from idx.start at a time (pop asks for consecutive chunks)."""
        lo, hi = idx.start, idx.stop
        if self._coarse is None or not self._coarse[0] <= lo <= hi <= self._coarse[1]:
            stop = min(self.n, max(hi, lo + _COARSE))
            c = self._cdf(np.arange(0, LEVELS + 1, 16)[:, None], self._params(slice(lo, stop)))
            self._coarse = (lo, stop, c)
        first, _, c = self._coarse
        return c[:, lo - first:hi - first]


def _select(params, which):
    """The parameters of a subset of the symbols (their axis is the last one)."""
    return tuple(p[..., which] for p in params)


def _join(fn, values, start, block, k):
    """fn(values[a:b], slice(start + a, start + b)) -> k-tuple of arrays, over blocks, joined field by field."""
    parts = [
        fn(values[a : a + block], slice(start + a, start + min(a + block, values.size)))
        for a in range(0, values.size, block)
    ]
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate([p[j] for p in parts]) if parts else np.empty(0, dtype=np.int64) for j in range(k))


# logistic grids: mean in 1/64 of a level over [-1024, 1280], log scale (natural log, levels) in 1/32 over [-7, 6]
MEAN_STEP, MEAN_RANGE = 1 / 64, (-1024.0, 1280.0)
LOG_SCALE_STEP, LOG_SCALE_RANGE = 1 / 32, (-7.0, 6.0)
LOGIT_STEP, LOGIT_SPAN = 1 / 64, 24.0  # mixture logits; components LOGIT_SPAN below the top get weight 0
WEIGHT_BITS = 8  # integer mixture weights sum to 2^8
LEVELS = 256
# 2^20 / scale per log-scale grid index (an exact power-of-two multiple of the correctly rounded exp)
_LOGISTIC_SLOPE = _U_SCALE * stored("logistic_slope", lambda: exp_table(-LOG_SCALE_RANGE[0], -LOG_SCALE_STEP, 417))
_EXP_NEG = stored("exp_neg", lambda: exp_table(0, -LOGIT_STEP, int(LOGIT_SPAN / LOGIT_STEP) + 1))  # exp(-j/64)
# lower bin edge e - 0.5 of level e; the outer bins are open
_LEVEL_EDGES = np.concatenate([[-_OPEN], np.arange(1, LEVELS) - 0.5, [_OPEN]])


def quantize_weights(logit_weights):
    """Integer mixture weights (n, K) summing to 2^8 per row, from logits (n, K) via a deterministic softmax."""
    return _weights(np.ascontiguousarray(_params(logit_weights).T)).T


def _weights(logits):
    """Integer weights from logits (K, m), components first: floor(softmax * 2^8) with exp from a correctly
    rounded table and a fixed summation order, the remainder added to the (first) largest weight."""
    li = _grid_index(logits, LOGIT_STEP, -1e6, 1e6)
    delta = np.minimum(li.max(axis=0) - li, _EXP_NEG.size - 1)
    e = _EXP_NEG.take(delta)
    total = e[0].copy()
    for row in e[1:]:
        total += row
    e *= 1 << WEIGHT_BITS
    e /= total
    w = np.floor(e, out=e).astype(np.int64)
    top, top_w = np.zeros(w.shape[1], dtype=np.int64), w[0].copy()
    for k in range(1, w.shape[0]):
        better = w[k] > top_w
        top[better] = k
        np.maximum(top_w, w[k], out=top_w)
    w[top, np.arange(w.shape[1])] += (1 << WEIGHT_BITS) - w.sum(axis=0)
    return w


def _snap_logistic(means, log_scales):
    """(slope, offset, mean) of snapped logistics: u = edge * slope - offset is the LOGISTIC.scaled argument."""
    mean = _snap(means, MEAN_STEP, *MEAN_RANGE)
    slope = _LOGISTIC_SLOPE.take(_grid_index(log_scales, LOG_SCALE_STEP, *LOG_SCALE_RANGE))
    offset = mean * slope
    offset -= LOGISTIC.radius * _U_SCALE
    return slope, offset, mean


class _LevelCodec(_LazyCdfCodec):
    """Discretized logistics over the 256 pixel levels, bin edges at level -+ 1/2, open outer bins.

    C(e) = floor(M(e) (2^p - 256) / 2^32) + e, M(e) in [0, 2^32] the model's integer CDF at edge e (0 at
    e = 0, 2^32 at e = 256): every level keeps freq >= 1.  A logistic with snapped mean mu and scale s has
    CDF ``LOGISTIC.scaled(u)`` at u = edge * (2^20 / s) - (mu 2^20 / s - 20 2^20): IEEE products and
    differences of snapped values, the same in both directions.
    """

    alphabet, _bits = LEVELS, 8

    def _setup(self, means, log_scales, precision):
        if not LEVEL_PRECISION_MIN <= precision <= rans.MAX_PRECISION:
            raise ValueError(f"precision must be in {LEVEL_PRECISION_MIN}..{rans.MAX_PRECISION}, got {precision}")
        if means.shape != log_scales.shape:
            raise ValueError("mean and log scale parameters differ in shape")
        self.precision, self._means, self._log_scales, self.n = precision, means, log_scales, means.shape[0]

    def _snapped(self):
        return _snap_logistic(self._means, self._log_scales)

    def _u(self, e, slope, offset):
        """The ``LOGISTIC.scaled`` argument at edges e (..., m) for params (m,), or (K, m) giving (K, ..., m)."""
        edges = _LEVEL_EDGES.take(e, mode="clip")
        if slope.ndim == 2:
            shape = (slope.shape[0],) + (1,) * (e.ndim - 1) + (slope.shape[1],)
            slope, offset = slope.reshape(shape), offset.reshape(shape)
        u = edges * slope
        u -= offset
        return u


class Logistic(_LevelCodec):
    """Discretized logistic over levels 0..255 with per-symbol ``mean`` and natural-log ``log_scale`` (n,)."""

    def __init__(self, mean, log_scale, precision=16):
        self._setup(_params(mean).ravel(), _params(log_scale).ravel(), precision)

    def _cdf(self, e, params):
        # a one-component mixture: M = 2^8 sigma_int, so floor(M X / 2^32) = floor(sigma_int X / 2^24)
        c = LOGISTIC.scaled(self._u(e, *params[:2]))
        c *= (1 << self.precision) - LEVELS
        c >>= ONE_BITS
        c += e
        return c

    def _guess(self, cf, params):
        return _logistic_guess(cf, *params, self.precision)


# logit((k + 1/2) / 4096) 2^20 + 20 2^20 for the logistic's pop guess (speed only: libm is fine here)
_GUESS_LOGITS = (np.log((np.arange(4096) + 0.5) / (4096 - 0.5 - np.arange(4096))) + LOGISTIC.radius) * _U_SCALE


def _logistic_guess(cf, slope, offset, mean, precision):
    """Invert the float logistic: level mu + 1/2 + s logit(u) at the mass fraction u of cf (the floor offset
    C(e) - floor(...) = e taken as mu), from a table of logit; u = edge * slope - offset is the same argument
    as in C."""
    frac = cf - _clip(mean, 0, LEVELS - 1)
    frac *= len(_GUESS_LOGITS) / ((1 << precision) - LEVELS)
    t = _GUESS_LOGITS.take(frac.astype(np.int64), mode="clip")
    t += offset
    t /= slope
    t += 0.5
    _clip(t, 0, LEVELS - 1, out=t)
    return t.astype(np.int64)


class LogisticMixture(_LevelCodec):
    """Mixture of discretized logistics over levels 0..255; parameters (n, K) (means, log scales, logits)."""

    def __init__(self, means, log_scales, logit_weights, precision=16):
        means = _params(means)
        k = means.shape[-1]
        self._setup(means.reshape(-1, k), _params(log_scales, (-1, k)), precision)
        self._logits = _params(logit_weights, (-1, k))
        if self._logits.shape != self._means.shape:
            raise ValueError("logit_weights and means differ in shape")
        self._sub = max(1, _SUB // k)

    def _snapped(self):
        """Snapped parameters with the components first: (K, n) arrays, so sums over K add whole rows."""
        means, log_scales, logits = (np.ascontiguousarray(p.T) for p in (self._means, self._log_scales, self._logits))
        return *_snap_logistic(means, log_scales), _weights(logits)

    def _cdf(self, e, params):
        slope, offset, _, weights = params
        c = LOGISTIC.scaled(self._u(e, slope, offset))  # (K, ..., m)
        c *= weights.reshape(c.shape[:1] + (1,) * (c.ndim - 2) + c.shape[-1:])
        m = np.add.reduce(c, axis=0)
        m *= (1 << self.precision) - LEVELS
        m >>= ONE_BITS + WEIGHT_BITS
        m += e
        return m

    def _guess(self, cf, params):
        """No cheap inverse for a mixture (the heaviest component's guesses mostly miss): bisect."""
        return None


# Gaussian posterior grids: mean in 1/1024 over [-16, 16], log sigma in 1/64 over [-10, 3]
POST_MEAN_STEP, POST_MEAN_RANGE = 1 / 1024, (-16.0, 16.0)
POST_LOG_SIGMA_STEP, POST_LOG_SIGMA_RANGE = 1 / 64, (-10.0, 3.0)
_GAUSS_SLOPE = _U_SCALE * stored("gauss_slope",  # 2^20 / sigma
                                 lambda: exp_table(-POST_LOG_SIGMA_RANGE[0], -POST_LOG_SIGMA_STEP, 833))


class GaussianLatent:
    """Latents on 2^bits buckets of equal mass under N(0, 1), 1 <= bits <= LATENT_BITS_MAX."""

    def __init__(self, bits):
        if not 1 <= bits <= LATENT_BITS_MAX:
            raise ValueError(f"bits must be in 1..{LATENT_BITS_MAX}, got {bits}")
        self.bits = bits
        self.edges, self._centres = normal_buckets(bits)
        self._finite_edges = np.clip(self.edges, -_OPEN, _OPEN)

    def prior(self, n):
        """The N(0, 1) prior: uniform over the equal-mass buckets."""
        return Uniform(n, self.bits)

    def posterior(self, mu, sigma=None, precision=16, *, log_sigma=None):
        """Diagonal Gaussian N(mu, sigma^2) over the buckets; give ``sigma`` or ``log_sigma``."""
        if (sigma is None) == (log_sigma is None):
            raise ValueError("give exactly one of sigma and log_sigma")
        if log_sigma is None:
            log_sigma = np.log(_params(sigma))
        return GaussianPosterior(self, _params(mu).ravel(), _params(log_sigma).ravel(), precision)

    def bucket(self, values):
        """The buckets that hold ``values`` (float64), int64."""
        return np.searchsorted(self.edges, values, side="right") - 1

    def centres(self, buckets):
        """Bucket centres Phi^-1((i + 1/2) / 2^bits) (float64), the values latents decode to."""
        return self._centres.take(buckets)


# standard normal quantiles at mass fractions (k + 1/2) / 4096 for the posterior's pop guess (speed only)
_GUESS_QUANTILES = np.array([NormalDist().inv_cdf((k + 0.5) / 4096) for k in range(4096)])


class GaussianPosterior(_LazyCdfCodec):
    """N(mu, sigma^2) over the buckets of a ``GaussianLatent``:
    C(i) = floor(Phi_int((e_i - mu) / sigma) (2^p - 2^b) / 2^24) + i, so every bucket keeps freq >= 1.

    As for the logistic, Phi_int is ``NORMAL.scaled(u)`` at u = e_i (2^20 / sigma) - (mu 2^20 / sigma - 8 2^20).
    """

    def __init__(self, latent, mu, log_sigma, precision):
        if not latent.bits < precision <= rans.MAX_PRECISION:
            raise ValueError(f"precision must be in {latent.bits + 1}..{rans.MAX_PRECISION}, got {precision}")
        if mu.shape != log_sigma.shape:
            raise ValueError("mu and sigma differ in size")
        self.latent, self.precision, self._bits = latent, precision, latent.bits
        self.alphabet, self.n, self._mu, self._log_sigma = 1 << latent.bits, mu.size, mu, log_sigma

    def _snapped(self):
        mu = _snap(self._mu, POST_MEAN_STEP, *POST_MEAN_RANGE)
        slope = _GAUSS_SLOPE.take(_grid_index(self._log_sigma, POST_LOG_SIGMA_STEP, *POST_LOG_SIGMA_RANGE))
        offset = mu * slope
        offset -= NORMAL.radius * _U_SCALE
        return slope, offset, mu

    def _cdf(self, i, params):
        slope, offset, _ = params
        u = self.latent._finite_edges.take(i)
        u *= slope
        u -= offset
        c = NORMAL.scaled(u)
        c *= (1 << self.precision) - self.alphabet
        c >>= ONE_BITS
        c += i
        return c

    def _guess(self, cf, params):
        """The prior bucket of mu + sigma Phi^-1(u), u the mass fraction of cf below the guess's own floor
        offset (C(i) - i), from float approximations; the second pass corrects the offset."""
        slope, _, mu = params
        bucket = 0
        for _ in range(2):
            frac = (cf - bucket) * (len(_GUESS_QUANTILES) / ((1 << self.precision) - self.alphabet))
            q = _GUESS_QUANTILES.take(frac.astype(np.int64), mode="clip")
            q *= _U_SCALE
            q /= slope
            q += mu
            q += NORMAL.radius
            q *= _U_SCALE  # IntCdf.scaled argument of the prior CDF at mu + sigma q
            bucket = NORMAL.scaled(q)
            bucket >>= ONE_BITS - self._bits
            np.minimum(bucket, self.alphabet - 1, out=bucket)
        return bucket


class Sequence:
    """Codecs chained by a description of the decoding (craystack's ``from_generator``).

    ``describe(data)`` returns a generator that yields ``(codec, symbols)`` pairs in decoding order and receives,
    for each, the symbols of that codec; it returns the decoded data. Decoding calls ``describe(None)``: the
    yielded symbols are None and the generator receives what each codec pops. Encoding calls ``describe(data)``:
    the generator yields the symbols to code (from ``data``, or choices only the encoder makes) and receives them
    back; the pairs are then pushed in reverse, so that decoding pops them in order.
    """

    def __init__(self, describe):
        self.describe = describe

    def push(self, msg, data):
        steps = []
        _drive(self.describe(data), lambda codec, symbols: steps.append((codec, symbols)) or symbols)
        for codec, symbols in reversed(steps):
            codec.push(msg, symbols)

    def pop(self, msg):
        return _drive(self.describe(None), lambda codec, _: codec.pop(msg))


def _drive(generator, step):
    """Run a description: ``step(codec, symbols)`` gives what each yield receives; returns the generator's value."""
    received = None
    try:
        while True:
            received = step(*generator.send(received))
    except StopIteration as stop:
        return stop.value


class Choice:
    """The shortest of several codecs for the same data: push tries each on a copy of the message, keeps the
    shortest and pushes its index (uniform); pop reads the index first."""

    def __init__(self, options):
        self.options = list(options)
        self.index = UniformCount(1, len(self.options))

    def push(self, msg, data):
        best = None
        for i, codec in enumerate(self.options):
            trial = msg.copy()
            codec.push(trial, data)
            self.index.push(trial, np.array([i]))
            if best is None or trial.num_bits() < best.num_bits():
                best = trial
        msg.assign(best)

    def pop(self, msg):
        return self.options[int(self.index.pop(msg)[0])].pop(msg)


class BBANS:
    """Bits-back ANS: ``posterior(x)`` and ``likelihood(z)`` build codecs for z and x; ``prior`` codes z."""

    def __init__(self, posterior, likelihood, prior):
        self.posterior, self.likelihood, self.prior = posterior, likelihood, prior

    def push(self, msg, x):
        z = self.posterior(x).pop(msg)
        self.likelihood(z).push(msg, x)
        self.prior.push(msg, z)

    def pop(self, msg):
        z = self.prior.pop(msg)
        x = self.likelihood(z).pop(msg)
        self.posterior(x).push(msg, z)
        return x


INDEX_PRECISION = 16  # bits of the particle index distributions of BBIS


def log2_probability(codec, symbols, groups, owner=None):
    """log2 of the probability ``codec`` gives ``symbols``, summed per data point, in units of 2^-16 (fixed point:
    the same integers on every machine), (groups,). The symbols are ``groups`` equal runs, one per data point,
    unless ``owner`` gives the data point of every symbol."""
    _, freq = codec.start_freq(np.asarray(symbols, dtype=np.int64))
    cost = log2_fixed(freq) - (codec.precision << LOG_FRAC)
    if owner is None:
        return cost.reshape(groups, -1).sum(1)
    out = np.zeros(groups, np.int64)
    np.add.at(out, owner, cost)
    return out


class BBIS:
    """Monte Carlo bits back with importance sampling (BB-IS, Ruan et al., ICML 2021): codes data at the IWAE bound
    with ``particles`` N samples instead of at the ELBO.

    The data is ``groups`` data points (each with its own latent: the latent symbols of a particle are ``groups``
    equal runs). Push: pop N particles with ``posterior(x)``; pop each data point's particle index j with the
    normalized importance weights ``log_weights(x, particles)`` ((N, groups) fixed-point log2 weights, computed
    identically on both sides); push the other particles with the posterior, x with ``likelihood(z_j)``, z_j with
    ``prior`` and j uniformly. Pop reverses it and pushes the indices and particles back. N = 1 codes exactly as BBANS.
    """

    def __init__(self, posterior, likelihood, prior, particles, groups, log_weights):
        self.posterior, self.likelihood, self.prior = posterior, likelihood, prior
        self.n, self.groups, self.log_weights = particles, groups, log_weights
        self.uniform = UniformCount(groups, particles)

    def _select(self, zs, j):
        """The chosen particle of every data point, and the others in order, as arrays of latent symbols."""
        stack = np.stack(zs).reshape(self.n, self.groups, -1)
        rows = np.arange(self.groups)
        chosen = stack[j, rows].ravel()
        others = [np.stack([stack[k if k < jj else k + 1, g] for g, jj in enumerate(j)]).ravel()
                  for k in range(self.n - 1)]
        return chosen, others

    def _index(self, x, zs):
        """The particle index distributions: integer weights from the importance weights, each at least 1."""
        lw = self.log_weights(x, zs)                                   # (N, groups)
        w = exp2_neg_fixed(lw.max(0) - lw)                              # in (0, 2^30]
        freq = 1 + w * ((1 << INDEX_PRECISION) - self.n) // w.sum(0)
        top = np.argmax(freq, axis=0)
        freq[top, np.arange(self.groups)] += (1 << INDEX_PRECISION) - freq.sum(0)
        cdf = np.concatenate([np.zeros((self.groups, 1), np.int64), np.cumsum(freq.T, axis=1)], axis=1)
        return Categorical(cdf, precision=INDEX_PRECISION)

    def push(self, msg, x):
        zs = [self.posterior(x).pop(msg) for _ in range(self.n)]
        j = self._index(x, zs).pop(msg) if self.n > 1 else np.zeros(self.groups, np.int64)
        chosen, others = self._select(zs, j)
        for z in reversed(others):
            self.posterior(x).push(msg, z)
        self.likelihood(chosen).push(msg, x)
        self.prior.push(msg, chosen)
        self.uniform.push(msg, j)

    def pop(self, msg):
        j = self.uniform.pop(msg)
        chosen = self.prior.pop(msg)
        x = self.likelihood(chosen).pop(msg)
        others = [self.posterior(x).pop(msg) for _ in range(self.n - 1)]
        stack = np.empty((self.n, self.groups, chosen.size // self.groups), np.int64)
        rows = np.arange(self.groups)
        stack[j, rows] = chosen.reshape(self.groups, -1)
        slots = np.array([[k for k in range(self.n) if k != jj] for jj in j], np.int64).reshape(self.groups, -1)
        for k, z in enumerate(others):
            stack[slots[:, k], rows] = z.reshape(self.groups, -1)
        zs = [stack[i].ravel() for i in range(self.n)]
        if self.n > 1:
            self._index(x, zs).push(msg, j)
        for z in reversed(zs):
            self.posterior(x).push(msg, z)
        return x
