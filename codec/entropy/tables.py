"""Deterministic integer tables: CDFs, the channel coefficients' tanh, fixed-point log2 and exp2.

Decoding must reproduce the encoder's integer frequencies bit for bit, also on another machine, so nothing
at coding time may depend on a transcendental function of the platform's libm.  Every table here is built with
Python's ``decimal`` module (software arithmetic, correctly rounded ``exp``), so its values are the same
everywhere; the package reads them from tables.npz (``stored``), bucket edges are built on first use.  At coding
time a CDF is evaluated from a float64 argument ``t`` by pure integer interpolation; the caller must build ``t``
from already-quantized parameters with IEEE basic operations only (+ - * /, floor, clip), which are exactly
reproducible.
"""

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from functools import cached_property, lru_cache
from pathlib import Path
from statistics import NormalDist

import numpy as np

ONE_BITS = 24
ONE = 1 << ONE_BITS  # CDF values are integers in [0, ONE]
STEP_BITS = 8  # table grid step 2^-8 in t
FRAC_BITS = 12  # linear interpolation resolves t to 2^-(STEP_BITS + FRAC_BITS)
QUANTILE_BITS = 10  # IntCdf.quantiles: 2^10 of them
_PREC = 40  # decimal digits for table construction
_SQRT_2PI = Decimal("2.506628274631000502415765284811045253006986740609938316629923")


def _sigmoid(t):
    return 1 / (1 + (-t).exp())


def _normal_cdf(t):
    """Phi(t) for t >= 0 by the all-positive series Phi(t) = 1/2 + phi(t) * sum t^(2n+1) / (2n+1)!!."""
    term, total, t2, k = t, t, t * t, 1
    while term > total.scaleb(-_PREC):
        k += 2
        term = term * t2 / k
        total += term
    return Decimal("0.5") + (-t2 / 2).exp() / _SQRT_2PI * total


STORE = Path(__file__).with_name("tables.npz")
BUILDERS = {}  # name -> build(): every table read from STORE, for checking and rewriting it
_STORED = dict(np.load(STORE)) if STORE.exists() else {}


def stored(name, build):
    """The table ``name`` as written to tables.npz by ``python -m vaezip.entropy.tables`` (building the tables takes a
    large part of a second; tests check that every stored table equals a fresh ``build()``), else ``build()``."""
    BUILDERS[name] = build
    return _STORED[name] if name in _STORED else build()


class IntCdf:
    """A CDF F tabulated as round(F(t) * 2^24) on a 2^-8 grid over [-radius, radius], F(-t) = 1 - F(t).

    ``radius`` only needs to reach the point where the rounded table saturates at 0 and 2^24: beyond it the
    clamped lookup returns the same values a wider table would.
    """

    def __init__(self, name, cdf, radius):
        self.radius = radius
        self.values = stored(name, lambda: _int_cdf(cdf, radius))
        diffs = np.diff(self.values, append=ONE)
        if diffs.max() >= 1 << 16:
            raise ValueError("table increments do not fit 16 bits")
        self.packed = self.values << 16 | diffs  # one table read gives value and increment

    @cached_property
    def quantiles(self):
        """u = (t + radius) 2^20 where F first reaches (j + 1/2) / 2^QUANTILE_BITS, j = 0..2^QUANTILE_BITS - 1:
        where the coder's pops start their search (float64; a guess, not part of any CDF)."""
        targets = (np.arange(1 << QUANTILE_BITS) * 2 + 1) << (ONE_BITS - QUANTILE_BITS - 1)
        return (np.searchsorted(self.values, targets) << FRAC_BITS).astype(np.float64)

    def __call__(self, t):
        """Integer F(t) in [0, 2^24], monotone non-decreasing in the float64 array ``t``."""
        t = np.clip(t, -2 * self.radius, 2 * self.radius)
        return self.scaled((t + self.radius) * (1 << (STEP_BITS + FRAC_BITS)))

    def scaled(self, u):
        """F(t) from ``u = (t + radius) 2^20`` (float64, |u| < 2^63); the coder's compiled kernels evaluate the
        same (``kernels``), and the tests check them against this.

        floor(u) >> 12 indexes the table and its low 12 bits interpolate; indices outside the table clamp to
        its saturated ends, where the increments are 0, so this equals clamping t to [-radius, radius].
        (Truncation instead of floor only differs for u < 0, which is in the saturated region too.)
        """
        i = u.astype(np.int64)
        packed = self.packed.take(i >> FRAC_BITS, mode="clip")
        i &= (1 << FRAC_BITS) - 1
        i *= packed & 0xFFFF
        i >>= FRAC_BITS
        packed >>= 16
        packed += i
        return packed


def _int_cdf(cdf, radius):
    """round(F(t) 2^24) at t = i / 2^8 for |t| <= radius (negative side by symmetry), plus one padding entry
    so that idx + 1 is always valid."""
    half = []
    with localcontext() as ctx:
        ctx.prec = _PREC
        for i in range((radius << STEP_BITS) + 1):
            scaled = cdf(Decimal(i) / (1 << STEP_BITS)) * ONE
            half.append(int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN)))
            if half[-1] == ONE:  # monotone: saturated from here on
                break
    if half[-1] != ONE:
        raise ValueError("table radius too small: CDF does not saturate")
    half += [ONE] * ((radius << STEP_BITS) + 1 - len(half))
    pos = np.array(half, dtype=np.int64)
    return np.concatenate([ONE - pos[:0:-1], pos, [ONE]])


LOGISTIC = IntCdf("logistic", _sigmoid, 20)  # saturates for |t| > 17.4
NORMAL = IntCdf("normal", _normal_cdf, 8)  # saturates for |t| > 5.5


def exp_table(start, step, count):
    """float64 values exp(start + j * step), j = 0..count-1, correctly rounded (``start``, ``step`` exact)."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        return np.array([float((Decimal(start) + j * Decimal(step)).exp()) for j in range(count)])


def tanh_table(step, count, bits):
    """Dyadic values round(tanh(j * step) * 2^bits) / 2^bits for j = -count..count, as float64 (``step`` exact).

    exp(2 j step) by repeated multiplication in decimal: not correctly rounded, but the same on every machine."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        growth, e, half = (2 * Decimal(step)).exp(), Decimal(1), []
        for _ in range(count + 1):
            half.append(int(((e - 1) / (e + 1) * (1 << bits)).to_integral_value(rounding=ROUND_HALF_EVEN)))
            e *= growth
    return np.array([-v for v in half[:0:-1]] + half, dtype=np.float64) / (1 << bits)


LOG_FRAC = 16  # fixed-point log2 values carry 16 fractional bits
_LOG_INDEX = 12  # their tables resolve 2^12 steps per octave


def _fixed_tables():
    """round(log2(1 + i / 4096) 2^16) and round(2^(-i / 4096) 2^30), i = 0..4096, in decimal."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        ln2 = Decimal(2).ln()
        n = 1 << _LOG_INDEX
        log = [int((Decimal(n + i) / n).ln() / ln2 * (1 << LOG_FRAC) + Decimal("0.5")) for i in range(n + 1)]
        exp = [int((-ln2 * i / n).exp() * (1 << 30) + Decimal("0.5")) for i in range(n + 1)]
    return np.array(log, dtype=np.int64), np.array(exp, dtype=np.int64)


_LOG2_TABLE = stored("log2", lambda: _fixed_tables()[0])
_EXP2_TABLE = stored("exp2", lambda: _fixed_tables()[1])


def log2_fixed(f):
    """log2 of integers 1 <= f <= 2^24 in units of 2^-16, by a table over the top 12 bits of the mantissa: the same
    integers on every machine (within 2^-12 of the true value)."""
    f = np.asarray(f, dtype=np.int64)
    e = np.frexp(f.astype(np.float64))[1].astype(np.int64) - 1            # exact: f < 2^53
    index = ((f << (ONE_BITS - e)) >> (ONE_BITS - _LOG_INDEX)) - (1 << _LOG_INDEX)
    return (e << LOG_FRAC) + _LOG2_TABLE.take(index)


def exp2_neg_fixed(t):
    """2^(-t / 2^16) in units of 2^-30 for integers t >= 0 (units of 2^-16), as integers: 0 beyond t = 31."""
    t = np.asarray(t, dtype=np.int64)
    whole = np.minimum(t >> LOG_FRAC, 62)
    return _EXP2_TABLE.take((t & ((1 << LOG_FRAC) - 1)) >> (LOG_FRAC - _LOG_INDEX)) >> whole


def _normal_quantile(q):
    """Phi^-1(q) for a Fraction 0 < q < 1/2 as float64: Newton steps in decimal from the float estimate."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        x = Decimal(NormalDist().inv_cdf(float(q)))
        target = Decimal(q.numerator) / q.denominator
        for _ in range(2):
            x += (target - (1 - _normal_cdf(-x))) * _SQRT_2PI / (-x * x / 2).exp()
        return float(x)


@lru_cache(maxsize=None)
def normal_buckets(bits):
    """Edges Phi^-1(i / 2^bits), i = 0..2^bits (-inf, +inf at the ends), and centres Phi^-1((i + 1/2) / 2^bits).

    Both are float64 arrays computed deterministically (and exactly antisymmetric); read-only. Those of
    STORED_LATENT_BITS are stored (computing them takes a tenth of a second, in every process that codes).
    """
    both = _STORED_BUCKETS if bits == STORED_LATENT_BITS else _normal_buckets(bits)
    edges, centres = both[:(1 << bits) + 1].copy(), both[(1 << bits) + 1:].copy()
    edges.flags.writeable = centres.flags.writeable = False
    return edges, centres


def _normal_buckets(bits):
    """normal_buckets' edges and centres, concatenated."""
    k = 1 << bits
    lower_edges = [_normal_quantile(Fraction(i, k)) for i in range(1, k // 2)]
    lower_centres = [_normal_quantile(Fraction(2 * i + 1, 2 * k)) for i in range(k // 2)]
    return np.array([-np.inf, *lower_edges, 0.0, *(-e for e in reversed(lower_edges)), np.inf,
                     *lower_centres, *(-c for c in reversed(lower_centres))])


STORED_LATENT_BITS = 10  # the coding parameters' default latent_bits
_STORED_BUCKETS = stored("normal_buckets", lambda: _normal_buckets(STORED_LATENT_BITS))


if __name__ == "__main__":
    from vaezip.entropy import codecs, tables  # noqa: F401  (their tables register themselves)
    from vaezip.nets import config  # noqa: F401
    np.savez(tables.STORE, **{name: build() for name, build in tables.BUILDERS.items()})
