"""Composable codecs over a ``rans.Message``.

A codec has ``push(msg, symbols)`` and ``pop(msg) -> symbols`` with its distribution bound at construction.
Table codecs code flat int64 symbol arrays of a fixed length ``n`` with an integer CDF, ``cdf`` (one of ``cdfs``'
forms): the compiled kernels take push's intervals from it (``start_freq``) and search it in pop, so push and pop
cannot disagree. Parameters of the continuous families are snapped to the coder's grids (``grids``) first; the
snapped values are the only input to the integer CDFs (see ``tables``).
"""

import threading
from functools import cache, cached_property

import numpy as np

from . import rans
from .cdfs import Divided, Mixture, Rows
from .grids import (LEVELS, LOG_SCALE_RANGE, LOG_SCALE_STEP, LOGIT_SPAN, LOGIT_STEP, MEAN_RANGE, MEAN_STEP,
                    POST_LOG_SIGMA_RANGE, POST_LOG_SIGMA_STEP, POST_MEAN_RANGE, POST_MEAN_STEP, WEIGHT_BITS)
from .limits import LATENT_BITS_MAX, LEVEL_PRECISION_MIN, MAX_PRECISION
from .tables import (FRAC_BITS, LOG_FRAC, LOGISTIC, NORMAL, ONE_BITS, STEP_BITS, exp2_neg_fixed, exp_table,
                     log2_fixed, normal_buckets, stored)


class TableCodec:
    """Base of codecs of ``n`` symbols over ``alphabet`` values at ``precision`` bits; subclasses set these and
    the ``cdf`` property."""

    def push(self, msg, symbols):
        rans.push_intervals(msg, *self.start_freq(symbols), self.precision)

    def pop(self, msg):
        return rans.pop(msg, self.n, self.cdf, self.precision, self.alphabet)

    def start_freq(self, symbols):
        """The integer intervals (start, freq) of ``symbols``, n integers in 0..alphabet-1 (checked)."""
        return rans.compiled().intervals(self._validate(symbols), self.precision, self.cdf)

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
        self.cdf = Divided(self.alphabet)


class UniformCount(TableCodec):
    """n symbols uniform over 0..count-1, count <= 2^24, at precision 24 (C(i) = floor(i 2^24 / count))."""

    def __init__(self, n, count):
        if not 1 <= count <= 1 << MAX_PRECISION:
            raise ValueError(f"count must be in 1..2^{MAX_PRECISION}, got {count}")
        self.n, self.alphabet, self.precision = n, count, MAX_PRECISION
        self.cdf = Divided(count)


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
        self.precision, self.alphabet = precision, cdf.shape[-1] - 1
        self.n = cdf.shape[0] if cdf.ndim == 2 else n
        self.cdf = Rows(np.ascontiguousarray(cdf.reshape(-1, cdf.shape[-1])))


def _params(x, shape=None):
    """Distribution parameters as float64 (no copy when they already are), NaN rejected."""
    x = np.asarray(x, dtype=np.float64)
    if shape is not None:
        x = x.reshape(shape)
    if x.size and np.isnan(x.min()):
        raise ValueError("distribution parameters must not be NaN")
    return x


_U_SCALE = 1 << (STEP_BITS + FRAC_BITS)  # IntCdf.scaled takes (t + radius) * 2^20
_OPEN = float(1 << 20)  # stands in for an infinite edge: beyond every table radius, yet |u| << 2^63
# 2^20 / scale per log-scale grid index (an exact power-of-two multiple of the correctly rounded exp)
_LOGISTIC_SLOPE = _U_SCALE * stored("logistic_slope", lambda: exp_table(-LOG_SCALE_RANGE[0], -LOG_SCALE_STEP, 417))
_EXP_NEG = stored("exp_neg", lambda: exp_table(0, -LOGIT_STEP, int(LOGIT_SPAN / LOGIT_STEP) + 1))  # exp(-j/64)
# lower bin edge e - 0.5 of level e; the outer bins are open
_LEVEL_EDGES = np.concatenate([[-_OPEN], np.arange(1, LEVELS) - 0.5, [_OPEN]])


def _check_levels(means, log_scales, precision):
    if not LEVEL_PRECISION_MIN <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in {LEVEL_PRECISION_MIN}..{MAX_PRECISION}, got {precision}")
    if means.shape != log_scales.shape:
        raise ValueError("mean and log scale parameters differ in shape")


class LogisticMixture(TableCodec):
    """Mixture of discretized logistics over levels 0..255; parameters (n, K) (means, log scales, logits).

    Bin edges at level -+ 1/2, open outer bins. C(e) = floor(M(e) (2^p - 256) / 2^32) + e with
    M(e) = sum_k w_k F_k(e) in [0, 2^32], so every level keeps freq >= 1: integer weights w_k summing to 2^8,
    floor(softmax * 2^8) of the snapped logits (exp from a correctly rounded table, summed in a fixed order, the
    remainder added to the first largest weight); a logistic with snapped mean mu and scale s has
    F = ``LOGISTIC.scaled(u)`` at u = edge * (2^20 / s) - (mu 2^20 / s - 20 2^20): IEEE products and differences
    of snapped values. The snapping and the weights are computed by ``kernels.logistic_mixture``, with the
    posterior's snapping (``kernels.snap``, ``kernels.grid``).
    """

    alphabet = LEVELS

    def __init__(self, means, log_scales, logit_weights, precision=16):
        means = _params(means)
        k = means.shape[-1]
        self._means, self._log_scales = means.reshape(-1, k), _params(log_scales, (-1, k))
        self._logits = _params(logit_weights, (-1, k))
        if self._logits.shape != self._means.shape:
            raise ValueError("logit_weights and means differ in shape")
        _check_levels(self._means, self._log_scales, precision)
        self.n, self.precision = self._means.shape[0], precision

    @cached_property
    def cdf(self):
        slope, offset, weights = rans.compiled().logistic_mixture(
            self._means, self._log_scales, self._logits, _LOGISTIC_SLOPE, _EXP_NEG, (MEAN_STEP, *MEAN_RANGE),
            (LOG_SCALE_STEP, *LOG_SCALE_RANGE), LOGIT_STEP, WEIGHT_BITS, LOGISTIC.radius * _U_SCALE)
        return Mixture(slope, offset, weights, _LEVEL_EDGES, LOGISTIC.packed, LOGISTIC.quantiles,
                       (1 << self.precision) - LEVELS, ONE_BITS + WEIGHT_BITS)


def mixture_weights(logits):
    """The integer weights, summing to 2^WEIGHT_BITS, that a ``LogisticMixture`` gives its components, for logits
    (B, K, ...): int64 of the same shape."""
    moved = np.moveaxis(_params(logits), 1, -1)
    flat = rans.compiled().mixture_weights(np.ascontiguousarray(moved.reshape(-1, moved.shape[-1])), _EXP_NEG,
                                           LOGIT_STEP, WEIGHT_BITS)
    return np.moveaxis(flat.reshape(moved.shape), -1, 1)


class Logistic(LogisticMixture):
    """Discretized logistic over levels 0..255 with per-symbol ``mean`` and natural-log ``log_scale`` (n,): the
    one-component mixture (weight 2^8, so C(e) = floor(F(e) (2^p - 256) / 2^24) + e)."""

    def __init__(self, mean, log_scale, precision=16):
        mean, log_scale = _params(mean).ravel(), _params(log_scale).ravel()
        super().__init__(mean[:, None], log_scale[:, None], np.zeros((mean.size, 1)), precision)


_GAUSS_SLOPE = _U_SCALE * stored("gauss_slope",  # 2^20 / sigma
                                 lambda: exp_table(-POST_LOG_SIGMA_RANGE[0], -POST_LOG_SIGMA_STEP, 833))
_NO_GUESS = np.zeros(1)                 # Mixture.quantiles of the posterior: its buckets are not the level grid


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


class GaussianPosterior(TableCodec):
    """N(mu, sigma^2) over the buckets of a ``GaussianLatent``:
    C(i) = floor(Phi_int((e_i - mu) / sigma) (2^p - 2^b) / 2^24) + i, so every bucket keeps freq >= 1.

    As for the logistic, Phi_int is ``NORMAL.scaled(u)`` at u = e_i (2^20 / sigma) - (mu 2^20 / sigma - 8 2^20).
    """

    def __init__(self, latent, mu, log_sigma, precision):
        if not latent.bits < precision <= MAX_PRECISION:
            raise ValueError(f"precision must be in {latent.bits + 1}..{MAX_PRECISION}, got {precision}")
        if mu.shape != log_sigma.shape:
            raise ValueError("mu and sigma differ in size")
        self.latent, self.precision = latent, precision
        self.alphabet, self.n, self._mu, self._log_sigma = 1 << latent.bits, mu.size, mu, log_sigma

    @cached_property
    def cdf(self):
        slope, offset = rans.compiled().gaussian(self._mu, self._log_sigma, _GAUSS_SLOPE,
                                                 (POST_MEAN_STEP, *POST_MEAN_RANGE),
                                                 (POST_LOG_SIGMA_STEP, *POST_LOG_SIGMA_RANGE), NORMAL.radius * _U_SCALE)
        return Mixture(slope, offset, np.ones((self.n, 1), np.int64), self.latent._finite_edges, NORMAL.packed,
                       _NO_GUESS, (1 << self.precision) - self.alphabet, ONE_BITS)


@cache
def preload():
    """Load the compiled loops in a background thread, once (importing numba and loading the first kernel take
    0.4 s), while the caller loads a model and runs its networks, which release the interpreter."""
    def load():
        codec, msg = LogisticMixture(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1))), rans.Message(1)
        codec.push(msg, np.zeros(1, np.int64))
        codec.pop(msg)
    threading.Thread(target=load, daemon=True).start()


class Intervals:
    """Given intervals (start, freq) at ``precision`` bits, pushed as they are: a codec that has measured its
    symbols already (push only)."""

    def __init__(self, start, freq, precision):
        self.start, self.freq, self.precision = start, freq, precision

    def push(self, msg, symbols):
        rans.push_intervals(msg, self.start, self.freq, self.precision)

    def pop(self, msg):
        raise TypeError("intervals measured by an encoder cannot be popped")


def information(freq, precision):
    """-log2(freq / 2^precision) of integer frequencies in fixed point (units of 2^-16): the same integers on every
    machine (within 2^-12 of the true value)."""
    return (precision << LOG_FRAC) - log2_fixed(freq)


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

    def steps(self, data):
        """The (codec, symbols) pairs that encode ``data``, in decoding order."""
        steps = []
        _drive(self.describe(data), lambda codec, symbols: steps.append((codec, symbols)) or symbols)
        return steps

    def push(self, msg, data):
        for codec, symbols in reversed(self.steps(data)):
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
    shortest and pushes its index (uniform); pop reads the index first. ``trials(msg)``, if given, lists the
    indices of the options worth trying on ``msg`` (the others are known to lose there)."""

    def __init__(self, options, trials=None):
        self.options = list(options)
        self.index = UniformCount(1, len(self.options))
        self.trials = trials or (lambda msg: range(len(self.options)))

    def push(self, msg, data):
        best = None
        for i in self.trials(msg):
            trial = msg.copy()
            self.options[i].push(trial, data)
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
    cost = -information(freq, codec.precision)
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
