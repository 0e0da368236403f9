"""Tests of the codecs: exact round trips, valid integer CDFs, composition, bits back, corruption."""

import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaezip.entropy import codecs as C
from vaezip.entropy import tables
from vaezip.format.container import CodingParams
from vaezip.entropy.rans import CorruptMessage, Message

SETTINGS = settings(max_examples=25, deadline=None)


def round_trip(codec, symbols, lanes):
    msg = Message(lanes)
    codec.push(msg, symbols)
    decoded = Message.from_bytes(msg.to_bytes(), lanes)
    got = codec.pop(decoded)
    decoded.check_initial()
    return got


def cdf_from_probs(probs, precision):
    """An integer CDF with every freq >= 1 from float probabilities (rows), for tests."""
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[-1]
    freq = 1 + np.floor(probs / probs.sum(-1, keepdims=True) * ((1 << precision) - k)).astype(np.int64)
    top = freq.argmax(-1)[..., None]
    np.put_along_axis(freq, top, np.take_along_axis(freq, top, -1) + (1 << precision) - freq.sum(-1, keepdims=True), -1)
    return np.concatenate([np.zeros(freq.shape[:-1] + (1,), dtype=np.int64), np.cumsum(freq, -1)], -1)


def all_freqs(codec_factory, n):
    """start/freq of every level 0..255 for n parameter sets: codec_factory(repeats) builds the codec."""
    codec = codec_factory(256)
    symbols = np.tile(np.arange(256), n)
    start, freq = codec.start_freq(symbols)
    return start.reshape(n, 256), freq.reshape(n, 256)


def check_pop_inverts_start_freq(codec, rng):
    """For random symbols and any cf inside their interval, pop (a lane per symbol, head 2^56 + cf) returns the
    symbol and leaves the head freq * 2^(56 - p) + cf - start."""
    symbols = rng.integers(0, codec.alphabet, codec.n)
    start, freq = codec.start_freq(symbols)
    cf = start + (rng.random(codec.n) * freq).astype(np.int64)
    msg = Message(codec.n)
    msg.head[:] = (1 << 56) + cf
    assert np.array_equal(codec.pop(msg), symbols)
    assert np.array_equal(msg.head, freq * (1 << (56 - codec.precision)) + cf - start)


# ---------------------------------------------------------------- tables


def test_tables_are_symmetric_monotone_and_exact_at_zero():
    for cdf in (tables.LOGISTIC, tables.NORMAL):
        t = np.linspace(-3 * cdf.radius, 3 * cdf.radius, 200_001)
        v = cdf(t)
        assert v[0] == 0 and v[-1] == tables.ONE and np.all(np.diff(v) >= 0)
        assert cdf(np.array([0.0]))[0] == tables.ONE // 2
        grid = np.arange(-cdf.radius * 256, cdf.radius * 256 + 1) / 256
        assert np.array_equal(cdf(grid) + cdf(-grid), np.full(grid.size, tables.ONE))


def test_tables_match_the_functions():
    t = np.linspace(-12, 12, 10_001)
    assert np.max(np.abs(tables.LOGISTIC(t) / tables.ONE - 1 / (1 + np.exp(-t)))) < 1e-6
    phi = np.array([0.5 * math.erfc(-x / math.sqrt(2)) for x in t])
    assert np.max(np.abs(tables.NORMAL(t) / tables.ONE - phi)) < 1e-6


def test_stored_tables_are_what_decimal_arithmetic_builds():
    """tables.npz (read at import, for start-up time) holds exactly the tables ``python -m vaezip.entropy.tables`` builds."""
    from vaezip.nets import config  # noqa: F401  (registers the channel coefficients' table)
    assert set(tables.BUILDERS) == {"logistic", "normal", "log2", "exp2", "logistic_slope", "exp_neg", "gauss_slope",
                                    "coef_tanh", "normal_buckets"}
    assert CodingParams().latent_bits == tables.STORED_LATENT_BITS      # the buckets every default file uses
    with np.load(tables.STORE) as stored:
        assert set(stored.files) == set(tables.BUILDERS)
        for name, build in tables.BUILDERS.items():
            fresh = build()
            assert stored[name].dtype == fresh.dtype and np.array_equal(stored[name], fresh), name


def test_normal_buckets_have_equal_mass():
    for bits in (1, 4, 10):
        edges, centres = tables.normal_buckets(bits)
        k = 1 << bits
        assert edges[0] == -np.inf and edges[-1] == np.inf and edges.size == k + 1
        mass = [0.5 * math.erfc(-e / math.sqrt(2)) for e in edges[1:-1]]
        assert np.allclose(mass, np.arange(1, k) / k, atol=1e-15)
        assert np.all((edges[:-1] < centres) & (centres < edges[1:]))
        assert np.array_equal(centres, -centres[::-1])


def test_integer_cdfs_are_frozen():
    """The integer tables and frequencies define the file format: any change must come with a new version
    (version 3 widened the logistic means from [-64, 320] to [-1024, 1280] levels)."""
    h = hashlib.sha256()
    for a in (tables.LOGISTIC.values, tables.NORMAL.values, *tables.normal_buckets(8)):
        h.update(np.ascontiguousarray(a).tobytes())
    rng = np.random.default_rng(1234)
    n = 1000
    mean, log_scale = rng.uniform(-70, 330, n), rng.uniform(-8, 7, n)
    symbols = rng.integers(0, 256, n)
    mixture = C.LogisticMixture(mean.reshape(-1, 4), log_scale.reshape(-1, 4), rng.normal(0, 3, (250, 4)), 20)
    for codec in (C.Logistic(mean, log_scale, 16), mixture):
        for a in codec.start_freq(symbols[: codec.n]):
            h.update(a.astype(np.int64).tobytes())
    posterior = C.GaussianLatent(8).posterior(rng.normal(0, 2, n), np.exp(rng.uniform(-10, 3, n)), 18)
    for a in posterior.start_freq(symbols):
        h.update(a.astype(np.int64).tobytes())
    assert h.hexdigest() == "aea9763f5ec9b28bbb967969b3698762f62227868c5c0a3aebb755eb4f3e6ec1"


# ---------------------------------------------------------------- uniform and categorical


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(1, 24), n=st.integers(0, 500), lanes=st.integers(1, 50))
def test_uniform_round_trip(seed, bits, n, lanes):
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, 1 << bits, n)
    assert np.array_equal(round_trip(C.Uniform(n, bits), symbols, lanes), symbols)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 1 << 24), n=st.integers(0, 500))
def test_uniform_count_round_trip(seed, count, n):
    rng = np.random.default_rng(seed)
    codec = C.UniformCount(n, count)
    symbols = rng.integers(0, count, n)
    assert np.array_equal(round_trip(codec, symbols, 7), symbols)
    if n:
        check_pop_inverts_start_freq(codec, rng)
        _, freq = C.UniformCount(min(count, 1000), count).start_freq(np.arange(min(count, 1000)))
        assert freq.min() >= 1 and freq.max() - freq.min() <= 1


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 300),
    precision=st.integers(1, 24),
    shared=st.booleans(),
    extreme=st.booleans(),
)
def test_categorical_round_trip(seed, k, precision, shared, extreme):
    if k > 1 << precision:
        k = 1 << precision
    rng = np.random.default_rng(seed)
    n = 300
    rows = 1 if shared else n
    if extreme:  # one symbol holds all mass but freq = 1 for the others
        probs = np.zeros((rows, k))
        probs[np.arange(rows), rng.integers(0, k, rows)] = 1
    else:
        probs = rng.dirichlet(np.full(k, 0.3), rows)
    cdf = cdf_from_probs(probs, precision)
    codec = C.Categorical(cdf[0], n) if shared else C.Categorical(cdf)
    symbols = rng.integers(0, k, n)
    assert np.array_equal(round_trip(codec, symbols, 16), symbols)
    check_pop_inverts_start_freq(codec, rng)


def test_categorical_validation():
    assert C.Categorical(np.array([0, 3, 8]), 1).precision == 3
    for bad in ([0, 4, 4, 8], [1, 4, 8], [0, 4, 7], [0, 1 << 25]):
        with pytest.raises(ValueError):
            C.Categorical(np.array(bad), 3)
    with pytest.raises(ValueError):
        C.Categorical(np.array([0, 4, 8]))  # shared cdf without n
    with pytest.raises(ValueError, match="precision"):
        C.Categorical(np.zeros((0, 3), dtype=np.int64))
    assert C.Categorical(np.zeros((0, 3), dtype=np.int64), precision=5).n == 0
    with pytest.raises(ValueError):
        C.Categorical(np.array([0, 4, 8]), 2, precision=4)
    with pytest.raises(ValueError, match="out of range"):
        C.Categorical(np.array([0, 4, 8]), 2).push(Message(1), np.array([0, 2]))


# ---------------------------------------------------------------- discretized logistic


def logistic_mass(mean, scale):
    """Float discretized-logistic probabilities of the 256 levels (rows per parameter set)."""
    edges = np.arange(1, 256) - 0.5
    cdf = 1 / (1 + np.exp(-(edges[None, :] - mean[:, None]) / scale[:, None]))
    cdf = np.concatenate([np.zeros((mean.size, 1)), cdf, np.ones((mean.size, 1))], 1)
    return np.diff(cdf, axis=1)


@pytest.mark.parametrize("precision", [9, 16, 24])
def test_logistic_frequencies_are_valid_for_extreme_parameters(precision):
    rng = np.random.default_rng(precision)
    means = np.concatenate([rng.uniform(-100, 360, 300), [-1e9, -64, 0, 0.5, 127.5, 255, 320, 1e9, -np.inf, np.inf]])
    log_scales = np.concatenate([rng.uniform(-9, 8, 300), [-np.inf, -7, -7, 6, 0, -7, 6, np.inf, 0, 0]])
    start, freq = all_freqs(lambda r: C.Logistic(np.repeat(means, r), np.repeat(log_scales, r), precision), means.size)
    assert np.all(freq >= 1)
    assert np.all(freq.sum(1) == 1 << precision)
    assert np.all(start[:, 0] == 0)


@pytest.mark.parametrize("precision", [16, 20])
def test_logistic_is_close_to_the_float_distribution(precision):
    """The KL from the float discretized logistic (at the snapped parameters) is at most the mass the
    freq >= 1 floor reserves, 256 / 2^p (0.0056 bits at p = 16), plus a little interpolation error."""
    rng = np.random.default_rng(3)
    means = rng.uniform(20, 235, 200)
    log_scales = rng.uniform(0, 3, 200)
    codec = lambda r: C.Logistic(np.repeat(means, r), np.repeat(log_scales, r), precision)  # noqa: E731
    _, freq = all_freqs(codec, means.size)
    p = logistic_mass(np.round(means * 64) / 64, np.exp(np.round(log_scales * 32) / 32))
    q = freq / (1 << precision)
    kl = np.sum(p * np.log2(np.maximum(p, 1e-300) / q), axis=1)
    floor_cost = -math.log2(1 - 256 / (1 << precision))
    assert kl.max() < floor_cost + 1e-4
    if precision >= 20:
        assert kl.max() < 1e-3


def test_parameters_are_snapped_so_tiny_changes_do_not_matter():
    mean, log_scale = np.full(256, 100.3), np.full(256, 1.2)
    a = C.Logistic(mean, log_scale).start_freq(np.arange(256))
    b = C.Logistic(mean + 1e-9, log_scale - 1e-9).start_freq(np.arange(256))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="NaN"):
        C.Logistic(np.array([np.nan]), log_scale)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), precision=st.sampled_from([9, 12, 16, 24]), lanes=st.integers(1, 400))
def test_logistic_round_trip(seed, precision, lanes):
    rng = np.random.default_rng(seed)
    n = 600
    mean = rng.uniform(-80, 340, n)
    log_scale = rng.uniform(-8, 7, n)
    codec = C.Logistic(mean, log_scale, precision)
    # plausible symbols plus uniformly random ones (deep in the tails, freq often 1)
    likely = np.clip(np.round(mean + np.exp(log_scale) * rng.logistic(size=n)), 0, 255).astype(np.int64)
    symbols = np.where(rng.random(n) < 0.7, likely, rng.integers(0, 256, n))
    assert np.array_equal(round_trip(codec, symbols, lanes), symbols)
    check_pop_inverts_start_freq(codec, rng)


def reference_mixture_cdf(codec, e):
    """C at edges e (n, m) of a logistic mixture, in NumPy from the documented formula and the codec's snapped
    parameters: C = floor(sum_k w_k F(edge * slope_k - offset_k) (2^p - 256) / 2^32) + e, F = LOGISTIC.scaled."""
    cdf = codec.cdf
    u = cdf.edges[e][:, :, None] * cdf.slope[:, None, :]
    u -= cdf.offset[:, None, :]
    m = (tables.LOGISTIC.scaled(u) * cdf.weights[:, None, :]).sum(-1)
    return (m * ((1 << codec.precision) - 256) >> 32) + e


@pytest.mark.parametrize("k", [1, 5])
def test_logistic_mixture_cdf_matches_the_formula(k):
    """The compiled kernels' C against an independent NumPy evaluation, at every edge of 300 random mixtures;
    one component is the logistic (weight 2^8)."""
    rng = np.random.default_rng(k)
    means, log_scales = rng.uniform(-30, 290, (300, k)), rng.uniform(-7.5, 6.5, (300, k))
    for codec in (C.LogisticMixture(means, log_scales, rng.normal(0, 3, (300, k)), 16),
                  *([C.Logistic(means[:, 0], log_scales[:, 0], 12)] if k == 1 else [])):
        assert np.all(codec.cdf.weights.sum(1) == 256) and np.all(codec.cdf.weights >= 0)
        expected = reference_mixture_cdf(codec, np.tile(np.arange(257), (300, 1)))
        lo = np.stack([codec.start_freq(np.full(300, level))[0] for level in range(256)], axis=1)
        assert np.array_equal(lo, expected[:, :256]) and np.all(expected[:, 256] == 1 << codec.precision)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 6), precision=st.sampled_from([8, 9, 12, 16, 24]))
def test_logistic_mixture(seed, k, precision):
    rng = np.random.default_rng(seed)
    n = 400
    means = rng.uniform(-20, 280, (n, k))
    log_scales = rng.uniform(-7, 5, (n, k))
    logits = rng.normal(0, 3, (n, k))
    codec = C.LogisticMixture(means, log_scales, logits, precision)
    assert np.all(codec.cdf.weights.sum(1) == 256) and np.all(codec.cdf.weights >= 0)
    symbols = rng.integers(0, 256, n)
    assert np.array_equal(round_trip(codec, symbols, 33), symbols)
    check_pop_inverts_start_freq(codec, rng)
    _, freq = all_freqs(lambda r: C.LogisticMixture(np.repeat(means[:20], r, 0), np.repeat(log_scales[:20], r, 0),
                                                    np.repeat(logits[:20], r, 0), precision), 20)
    assert np.all(freq >= 1) and np.all(freq.sum(1) == 1 << precision)


@pytest.mark.parametrize("precision", [8, 10, 13])
def test_mixture_pop_finds_the_interval_of_every_value(precision):
    """Pop searches from a guess; whatever the guess, every cf in 0..2^p - 1 gives the symbol whose interval
    holds it (mixtures with far-apart components, where the guess is poor, included)."""
    rng = np.random.default_rng(precision)
    k = 3
    means, log_scales = rng.uniform(-20, 280, (40, k)), rng.uniform(-7, 5, (40, k))
    logits = rng.normal(0, 3, (40, k))
    start, _ = all_freqs(lambda r: C.LogisticMixture(np.repeat(means, r, 0), np.repeat(log_scales, r, 0),
                                                     np.repeat(logits, r, 0), precision), 40)
    cf = np.arange(1 << precision)
    for row in range(40):
        codec = C.LogisticMixture(np.repeat(means[row:row + 1], cf.size, 0),
                                  np.repeat(log_scales[row:row + 1], cf.size, 0),
                                  np.repeat(logits[row:row + 1], cf.size, 0), precision)
        msg = Message(cf.size)
        msg.head[:] = (1 << 56) + cf
        assert np.array_equal(codec.pop(msg), np.searchsorted(start[row], cf, side="right") - 1)


# ---------------------------------------------------------------- Gaussian latents


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(1, 12), extra=st.integers(1, 12), lanes=st.integers(1, 300))
def test_gaussian_posterior(seed, bits, extra, lanes):
    precision = min(bits + extra, 24)
    rng = np.random.default_rng(seed)
    latent = C.GaussianLatent(bits)
    n = 600
    mu = rng.normal(0, 3, n)
    sigma = np.exp(rng.uniform(-11, 4, n))
    codec = latent.posterior(mu, sigma, precision)
    buckets = rng.integers(0, 1 << bits, n)
    assert np.array_equal(round_trip(codec, buckets, lanes), buckets)
    check_pop_inverts_start_freq(codec, rng)
    rows = 8
    post = latent.posterior(np.repeat(mu[:rows], 1 << bits), np.repeat(sigma[:rows], 1 << bits), precision)
    _, freq = post.start_freq(np.tile(np.arange(1 << bits), rows))
    freq = freq.reshape(rows, -1)
    assert np.all(freq >= 1) and np.all(freq.sum(1) == 1 << precision)


def test_gaussian_posterior_mass_matches_the_float_gaussian():
    latent = C.GaussianLatent(8)
    mu, sigma = 0.3, 0.2
    post = latent.posterior(np.full(256, mu), np.full(256, sigma), 20)
    _, freq = post.start_freq(np.arange(256))
    cdf = np.array([0.5 * math.erfc(-(e - mu) / sigma / math.sqrt(2)) for e in latent.edges[1:-1]])
    mass = np.diff(np.concatenate([[0], cdf, [1]]))
    assert np.max(np.abs(freq / (1 << 20) - mass)) < 3e-4
    assert np.array_equal(latent.prior(5).start_freq(np.arange(5))[1], np.ones(5))
    assert np.allclose(latent.centres(np.array([0, 255])), [-2.885634912, 2.885634912])


def test_gaussian_latent_validation():
    with pytest.raises(ValueError):
        C.GaussianLatent(13)
    with pytest.raises(ValueError):
        C.GaussianLatent(8).posterior(np.zeros(3), np.ones(3), precision=8)
    with pytest.raises(ValueError):
        C.GaussianLatent(8).posterior(np.zeros(3))


# ---------------------------------------------------------------- composition


def _markov(n, alphabet):
    """A description of n symbols, each coded with a categorical that favours the symbol before it; the encoder
    also makes a choice of its own (the parity of the first symbol), which decoding reads back."""
    def describe(data):
        out, prev = [], 0
        parity = yield C.Uniform(1, 1), (None if data is None else np.array([data[0] % 2]))
        for i in range(n):
            freq = np.ones(alphabet, np.int64)
            freq[prev] += (1 << 12) - alphabet
            cdf = np.concatenate([[0], np.cumsum(freq)])
            (sym,) = yield C.Categorical(cdf, 1), (None if data is None else data[i:i + 1])
            out.append(int(sym))
            prev = int(sym)
        assert out[0] % 2 == parity[0]
        return np.array(out)
    return C.Sequence(describe)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), lanes=st.integers(1, 8))
def test_sequence_round_trip_in_decoding_order(seed, n, lanes):
    rng = np.random.default_rng(seed)
    data = np.minimum.accumulate(rng.integers(0, 9, n)[::-1])[::-1].copy()    # long runs: cheap under the model
    codec = _markov(n, 9)
    assert np.array_equal(round_trip(codec, data, lanes), data)
    # it codes like pushing every step by hand, last step first
    by_hand = Message(lanes)
    prev = [0] + list(data[:-1])
    for i in range(n - 1, -1, -1):
        freq = np.ones(9, np.int64)
        freq[prev[i]] += (1 << 12) - 9
        C.Categorical(np.concatenate([[0], np.cumsum(freq)]), 1).push(by_hand, data[i:i + 1])
    C.Uniform(1, 1).push(by_hand, np.array([data[0] % 2]))
    msg = Message(lanes)
    codec.push(msg, data)
    assert msg == by_hand


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), lanes=st.integers(1, 8))
def test_choice_keeps_the_shortest_option(seed, lanes):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 4, 200)
    fair = C.Uniform(200, 2)
    cdf = np.array([0, 1, 2, 3, 1 << 16])
    skewed = C.Categorical(cdf, 200)           # costs ~14 bits for every symbol but 3
    for options, best in (([fair, skewed], 0), ([skewed, fair, skewed], 1)):
        codec = C.Choice(options)
        assert np.array_equal(round_trip(codec, data, lanes), data)
        msg, alone = Message(lanes), Message(lanes)
        codec.push(msg, data)
        options[best].push(alone, data)
        C.UniformCount(1, len(options)).push(alone, np.array([best]))
        assert msg == alone


def test_choice_tries_only_the_options_its_trials_name():
    data = np.random.default_rng(0).integers(0, 4, 200)
    fair, skewed = C.Uniform(200, 2), C.Categorical(np.array([0, 1, 2, 3, 1 << 16]), 200)
    codec = C.Choice([fair, skewed], lambda msg: [1] if msg.empty() else [0, 1])
    for head_start, best in ((False, 1), (True, 0)):
        msg, alone = Message(3), Message(3)
        if head_start:
            for m in (msg, alone):
                C.Uniform(9, 3).push(m, np.arange(9) % 8)
        assert msg.empty() != head_start
        codec.push(msg, data)
        options = [fair, skewed]
        options[best].push(alone, data)
        C.UniformCount(1, 2).push(alone, np.array([best]))
        assert msg == alone
        assert np.array_equal(codec.pop(msg), data)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 12), lanes=st.integers(1, 40))
def test_interleaved_pushes_and_pops_undo_exactly(seed, steps, lanes):
    rng = np.random.default_rng(seed)

    def random_codec():
        n = int(rng.integers(0, 200))
        kind = rng.integers(0, 4)
        if kind == 0:
            return C.Uniform(n, int(rng.integers(1, 25)))
        if kind == 1:
            precision = int(rng.integers(3, 20))
            return C.Categorical(cdf_from_probs(rng.dirichlet(np.ones(7), n), precision), precision=precision)
        if kind == 2:
            return C.Logistic(rng.uniform(0, 255, n), rng.uniform(-2, 4, n), int(rng.integers(9, 25)))
        return C.GaussianLatent(5).posterior(rng.normal(size=n), np.exp(rng.uniform(-4, 1, n)))

    msg = Message(lanes)
    C.Uniform(4000, 24).push(msg, rng.integers(0, 1 << 24, 4000))  # so pops do not reach the virtual words
    initial = msg.copy()
    history = []
    for _ in range(steps):
        codec = random_codec()
        if rng.random() < 0.5:
            data = rng.integers(0, codec.alphabet, codec.n)
            codec.push(msg, data)
            history.append(("push", codec, data))
        else:
            history.append(("pop", codec, codec.pop(msg)))
    for action, codec, data in reversed(history):
        if action == "push":
            assert np.array_equal(codec.pop(msg), data)
        else:
            codec.push(msg, data)
    assert msg == initial


# ---------------------------------------------------------------- bits back


class ToyModel:
    """z on 2^6 equal-mass N(0, 1) buckets; x | z: 4 pixels, discretized logistics with means linear in z.

    The posterior is the Gaussian with the exact posterior's mean and standard deviation.
    """

    bits, pixels, log_scale = 6, 4, 1.7

    def __init__(self):
        self.latent = C.GaussianLatent(self.bits)
        self.slopes = np.array([40.0, -30.0, 55.0, 20.0])

    def means(self, z):
        return 128 + self.latent.centres(z)[:, None] * self.slopes

    def likelihood(self, z):
        return C.Logistic(self.means(z), np.full((z.size, self.pixels), self.log_scale))

    def log2_likelihoods(self, x):
        """log2 p(x | z) for every bucket z: (n, 2^bits)."""
        n, k = x.shape[0], 1 << self.bits
        _, freq = self.likelihood(np.tile(np.arange(k), n)).start_freq(np.repeat(x, k, 0).ravel())
        return np.log2(freq.reshape(n, k, self.pixels) / (1 << 16)).sum(-1)

    def posterior_params(self, x):
        ll = self.log2_likelihoods(x.reshape(-1, self.pixels))
        w = np.exp2(ll - ll.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        c = self.latent.centres(np.arange(1 << self.bits))
        mu = w @ c
        return mu, np.sqrt(np.maximum(w @ c**2 - mu**2, 1e-6))

    def posterior(self, x):
        return self.latent.posterior(*self.posterior_params(x))

    def neg_elbo(self, x):
        """-ELBO in bits per sample under the integer distributions the coder uses (sum over all z)."""
        x = x.reshape(-1, self.pixels)
        k = 1 << self.bits
        mu, sigma = self.posterior_params(x)
        every_z = self.latent.posterior(np.repeat(mu, k), np.repeat(sigma, k))
        q = every_z.start_freq(np.tile(np.arange(k), x.shape[0]))[1].reshape(-1, k) / (1 << 16)
        return np.sum(q * (-self.log2_likelihoods(x) + self.bits + np.log2(q)), axis=1)

    def sample(self, rng, n):
        mean = self.means(rng.integers(0, 1 << self.bits, n))
        noise = np.exp(self.log_scale) * rng.logistic(size=mean.shape)
        return np.clip(np.round(mean + noise), 0, 255).astype(np.int64)


def coded_rate(codec, data, warmup, lanes):
    """Push every batch of ``data``; bits per data point after the first ``warmup`` batches, and the message."""
    msg = Message(lanes)
    for x in data[:warmup]:
        codec.push(msg, x)
    start_bits = msg.num_bits()
    for x in data[warmup:]:
        codec.push(msg, x)
    return (msg.num_bits() - start_bits) / sum(x.size // ToyModel.pixels for x in data[warmup:]), msg


def assert_decodes(codec, msg, data, lanes):
    decoded = Message.from_bytes(msg.to_bytes(), lanes)
    for x in reversed(data):
        assert np.array_equal(codec.pop(decoded), x)
    decoded.check_initial()


def test_bits_back_round_trip_and_rate():
    """The coded rate after warm-up is within 1 % of the -ELBO; decoding restores data and initial state."""
    model = ToyModel()
    rng = np.random.default_rng(0)
    batch, warmup, batches, lanes = 250, 4, 80, 32
    data = [model.sample(rng, batch).ravel() for _ in range(warmup + batches)]
    bb = C.BBANS(model.posterior, model.likelihood, model.latent.prior(batch))
    rate, msg = coded_rate(bb, data, warmup, lanes)
    elbo = float(np.mean(np.concatenate([model.neg_elbo(x) for x in data[warmup:]])))
    assert abs(rate - elbo) / elbo < 0.01
    assert_decodes(bb, msg, data, lanes)


# ---------------------------------------------------------------- corruption


def test_corrupted_streams_raise_or_decode_to_other_symbols():
    """Every cut of a message raises. A flipped bit raises CorruptMessage in most cases (the decoder ends in another
    state); otherwise the message is another valid one and decodes to other symbols, which the container's pixel
    checksum rejects (tests/test_compress.py, tests/fuzz.py): never to the original symbols."""
    rng = np.random.default_rng(2)
    n, lanes = 240, 16
    codec = C.Logistic(rng.uniform(0, 255, n), rng.uniform(0, 2, n))
    symbols = rng.integers(0, 256, n)
    msg = Message(lanes)
    codec.push(msg, symbols)
    data = msg.to_bytes()
    for cut in range(0, len(data), 7):
        with pytest.raises(CorruptMessage):
            decoded = Message.from_bytes(data[:cut], lanes)
            codec.pop(decoded)
            decoded.check_initial()
    raised = 0
    for _ in range(200):
        flipped = bytearray(data)
        pos = int(rng.integers(0, len(data)))
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            decoded = Message.from_bytes(bytes(flipped), lanes)
            got = codec.pop(decoded)
            decoded.check_initial()
        except CorruptMessage:
            raised += 1
            continue
        assert not np.array_equal(got, symbols), f"corruption at byte {pos} decodes to the original symbols"
    assert raised >= 100


class BimodalToy(ToyModel):
    """x | z depends on |z| only, so the exact posterior has two modes, z and -z; the Gaussian posterior fitted to
    its moments sits between them, so the ELBO is far above the log-likelihood and IWAE with N particles is not."""

    def means(self, z):
        return 128 + np.abs(self.latent.centres(z))[:, None] * self.slopes

    def log_weights(self, x, zs):
        """log2 p(x | z_i) / q(z_i | x) per data point, fixed point (the uniform prior is the same for all)."""
        n = x.size // self.pixels
        return np.stack([C.log2_probability(self.likelihood(z), x, n) - C.log2_probability(self.posterior(x), z, n)
                         for z in zs])

    def iwae(self, x, particles, draws, rng):
        """-log2 mean_i w_i (bits per data point) averaged over ``draws`` sets of particles from the integer
        posterior, under the integer distributions the coder uses."""
        x = x.reshape(-1, self.pixels)
        k = 1 << self.bits
        mu, sigma = self.posterior_params(x)
        q = self.latent.posterior(np.repeat(mu, k), np.repeat(sigma, k)).start_freq(
            np.tile(np.arange(k), len(x)))[1].reshape(-1, k) / (1 << 16)
        log_w = self.log2_likelihoods(x) - self.bits - np.log2(q)                   # (n, k) for every bucket
        out = np.empty((len(x), draws))
        for i in range(len(x)):
            z = rng.choice(k, size=(draws, particles), p=q[i] / q[i].sum())
            lw = log_w[i][z]
            top = lw.max(1, keepdims=True)
            out[i] = -(top[:, 0] + np.log2(np.mean(np.exp2(lw - top), axis=1)))
        return out.mean(1)


def test_bbis_codes_at_the_iwae_bound_and_one_particle_is_bbans():
    model = BimodalToy()
    rng = np.random.default_rng(3)
    batch, warmup, batches, lanes, particles = 200, 4, 30, 32, 8
    data = [model.sample(rng, batch).ravel() for _ in range(warmup + batches)]
    prior = model.latent.prior(batch)
    bbis = C.BBIS(model.posterior, model.likelihood, prior, particles, batch, model.log_weights)
    rate, msg = coded_rate(bbis, data, warmup, lanes)
    iwae = float(np.mean(np.concatenate([model.iwae(x, particles, 200, rng) for x in data[warmup:]])))
    elbo = float(np.mean(np.concatenate([model.neg_elbo(x) for x in data[warmup:]])))
    assert iwae < 0.9 * elbo                                     # a toy where importance sampling matters
    assert abs(rate - iwae) / iwae < 0.02
    assert_decodes(bbis, msg, data, lanes)
    one, plain = Message(lanes), Message(lanes)
    single = C.BBIS(model.posterior, model.likelihood, prior, 1, batch, model.log_weights)
    for x in data[:5]:
        single.push(one, x)
        C.BBANS(model.posterior, model.likelihood, prior).push(plain, x)
    assert one.to_bytes() == plain.to_bytes()


FMA_CHECK = r"""
import re, numpy as np
from vaezip.entropy import codecs, kernels, rans
codec = codecs.LogisticMixture(np.zeros((4, 2)), np.zeros((4, 2)), np.zeros((4, 2)))
posterior = codecs.GaussianLatent(8).posterior(np.zeros(4), log_sigma=np.zeros(4))
msg = rans.Message(2)
codec.push(msg, np.arange(4) * 60)
posterior.push(msg, np.arange(4))
assert np.array_equal(posterior.pop(msg), np.arange(4))
assert np.array_equal(codec.pop(msg), np.arange(4) * 60)
asm = "".join(k.inspect_asm(s) for k in (kernels.intervals, kernels.pop, kernels.logistic_mixture, kernels.gaussian)
              for s in k.signatures).lower()
assert "mulsd" in asm  # the products of C are in the code inspected
print(bool(re.search(r"\bv?f(n)?m(add|sub)", asm)))
"""


def test_compiled_kernels_round_every_float_operation(tmp_path):
    """The CDFs' float products and differences must be rounded one by one, as IEEE says, on every machine: the
    compiled kernels contain no fused multiply-add (it would round once and change C on some inputs). Compiled
    afresh in a subprocess (numba cannot show the code of cached kernels)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", FMA_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False"]
