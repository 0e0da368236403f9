"""Tests of the rANS message and core: exact round trips, initial bits, serialization, rate."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaezip import rans
from vaezip.rans import HEAD0, VIRTUAL_WORD, CorruptMessage, Message

SETTINGS = settings(max_examples=40, deadline=None)


def random_intervals(rng, n, precision, skew=False):
    """Random (start, freq) with freq >= 1 and start + freq <= 2^precision; skew: mostly tiny or huge freqs."""
    total = 1 << precision
    if skew:
        freq = np.where(rng.random(n) < 0.5, 1, total - rng.integers(0, 3, n))
        freq = np.clip(freq, 1, total)
    else:
        freq = rng.integers(1, total + 1, n)
    start = (rng.random(n) * (total - freq + 1)).astype(np.int64)
    return start, freq


def checked_lookup(start, freq):
    """A lookup that asserts the popped cf lies in the pushed interval and returns it."""

    def lookup(cf, idx):
        cf = cf.astype(np.int64)
        assert np.all((start[idx] <= cf) & (cf < start[idx] + freq[idx]))
        return np.arange(idx.start, idx.stop), start[idx], freq[idx]

    return lookup


def info_bits(freq, precision):
    return float(np.sum(precision - np.log2(freq.astype(np.float64))))


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    lanes=st.sampled_from([1, 2, 3, 7, 64, 1000]),
    n=st.integers(0, 3000),
    precision=st.integers(1, 24),
    skew=st.booleans(),
)
def test_push_pop_round_trip(seed, lanes, n, precision, skew):
    rng = np.random.default_rng(seed)
    start, freq = random_intervals(rng, n, precision, skew)
    msg = Message(lanes)
    rans.push(msg, start, freq, precision)
    symbols = rans.pop(msg, n, checked_lookup(start, freq), precision)  # asserts cf in each pushed interval
    assert np.array_equal(symbols, np.arange(n))
    assert msg == Message(lanes)
    msg.check_initial()


@pytest.mark.parametrize("lanes", [1, 100_000])
def test_extreme_lane_counts(lanes):
    rng = np.random.default_rng(lanes)
    n = 2 * lanes + 17 if lanes > 1 else 500
    start, freq = random_intervals(rng, n, 16)
    msg = Message(lanes)
    rans.push(msg, start, freq, 16)
    data = msg.to_bytes()
    decoded = Message.from_bytes(data, lanes)
    rans.pop(decoded, n, checked_lookup(start, freq), 16)
    decoded.check_initial()


def reference_push(msg, start, freq, precision):
    """The core step written out lane by lane with Python ints (chunks backwards, spills in lane order)."""
    head, tail, lanes = [int(h) for h in msg.head], [int(w) for w in msg.tail], msg.lanes
    for lo in reversed(range(0, len(start), lanes)):
        for lane in range(min(lanes, len(start) - lo)):
            s, f, x = int(start[lo + lane]), int(freq[lo + lane]), head[lane]
            if x >= f << (63 - precision):
                tail.append(x & 0xFFFFFFFF)
                x >>= 32
            head[lane] = ((x // f) << precision) + x % f + s
    return head, tail


def reference_pop(msg, cf_to_interval, n, precision):
    head, tail, lanes = [int(h) for h in msg.head], [int(w) for w in msg.tail], msg.lanes
    for lo in range(0, n, lanes):
        r = min(lanes, n - lo)
        refill = []
        for lane in range(r):
            x = head[lane]
            s, f = cf_to_interval(lo + lane, x & ((1 << precision) - 1))
            head[lane] = f * (x >> precision) + (x & ((1 << precision) - 1)) - s
            if head[lane] < 1 << 31:
                refill.append(lane)
        words = tail[len(tail) - len(refill) :]
        del tail[len(tail) - len(refill) :]
        for lane, w in zip(refill, words):
            head[lane] = (head[lane] << 32) | w
    return head, tail


def test_matches_reference_across_sub_lane_blocks():
    """Lanes beyond SUB_LANES are processed in blocks; words must still spill and refill in lane order."""
    lanes, precision = rans.SUB_LANES + 123, 12
    rng = np.random.default_rng(1)
    start, freq = random_intervals(rng, 2 * lanes + 5, precision)
    msg = Message(lanes)
    rans.push(msg, start, freq, precision)
    head, tail = reference_push(Message(lanes), start, freq, precision)
    assert msg.head.tolist() == head and msg.tail.tolist() == tail
    expected = reference_pop(msg, lambda i, cf: (int(start[i]), int(freq[i])), start.size, precision)
    rans.pop(msg, start.size, checked_lookup(start, freq), precision)
    assert (msg.head.tolist(), msg.tail.tolist()) == expected


def test_pop_on_fresh_message_uses_virtual_words_and_push_restores():
    msg = Message(5)
    freq = np.full(40, 4)
    lookup = lambda cf, idx: (cf // 4, cf - cf % 4, freq[idx])  # noqa: E731 - 4 symbols of mass 4/16
    symbols = rans.pop(msg, 40, lookup, 4)
    assert msg.tail.size == 0
    rans.push(msg, 4 * symbols, freq, 4)
    assert np.all(msg.head == HEAD0)
    assert msg.tail.size > 0 and np.all(msg.tail == VIRTUAL_WORD)  # consumed virtual words, now real ones
    msg.check_initial()


def test_strict_message_refuses_to_pop_past_its_tail():
    msg = Message(3, strict=True)
    lookup = lambda cf, idx: (cf, cf, np.ones(cf.size, dtype=np.int64))  # noqa: E731
    with pytest.raises(CorruptMessage, match="exhausted"):
        rans.pop(msg, 30, lookup, 24)


def test_check_initial_detects_leftovers():
    msg = Message(4)
    msg.check_initial()
    rans.push(msg, np.array([1]), np.array([1]), 8)
    with pytest.raises(CorruptMessage):
        msg.check_initial()
    msg = Message(4)
    rans.push(msg, np.zeros(200, dtype=np.int64), np.ones(200, dtype=np.int64), 24)
    msg.head[:] = HEAD0
    with pytest.raises(CorruptMessage, match="tail"):
        msg.check_initial()


def test_invalid_arguments():
    msg = Message(2)
    with pytest.raises(ValueError):
        Message(0)
    with pytest.raises(ValueError):
        rans.push(msg, np.zeros(2), np.ones(2), 25)
    with pytest.raises(ValueError):
        rans.push(msg, np.zeros(2), np.ones(3), 8)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), lanes=st.integers(1, 300), n=st.integers(0, 2000))
def test_serialization_round_trip(seed, lanes, n):
    rng = np.random.default_rng(seed)
    start, freq = random_intervals(rng, n, 16)
    msg = Message(lanes)
    rans.push(msg, start, freq, 16)
    data = msg.to_bytes()
    assert 8 * len(data) == msg.num_bits()
    decoded = Message.from_bytes(data, lanes)
    assert decoded.strict and decoded == msg
    assert decoded.to_bytes() == data
    rans.pop(decoded, n, checked_lookup(start, freq), 16)
    decoded.check_initial()


def test_serialized_heads_are_compact():
    """A fresh lane costs 5 + 31 bits; a lane with a steady-state head about 4 + log2(head) bits, not 64."""
    lanes = 4096
    assert Message(lanes).num_bits() == 32 + (5 + 31) * lanes
    rng = np.random.default_rng(0)
    start, freq = random_intervals(rng, 50 * lanes, 16)
    msg = Message(lanes)
    rans.push(msg, start, freq, 16)
    head_bits = msg.num_bits() - 32 - 32 * msg.tail.size
    exact = sum(5 + int(h).bit_length() - 1 for h in msg.head)
    assert exact <= head_bits < exact + 8  # byte padding
    assert head_bits / lanes < 53  # log2(head) is about uniform over [31, 63) in steady state


@pytest.mark.parametrize("precision", [8, 16])
def test_length_is_information_plus_per_lane_flush(precision):
    """bits <= information + 38 bits per lane + 40, and the excess is <= 0.01 % of the information."""
    lanes, n = 256, 400_000
    rng = np.random.default_rng(precision)
    start, freq = random_intervals(rng, n, precision)
    msg = Message(lanes)
    rans.push(msg, start, freq, precision)
    info = info_bits(freq, precision)
    flush = 38 * lanes + 40  # a fresh head (5 + 31 bits) plus rounding, per lane; length and padding
    assert msg.num_bits() <= info + flush
    assert msg.num_bits() - flush <= info * (1 + 1e-4)
    assert msg.num_bits() >= info  # an information-theoretic sanity check on the measurement


def test_truncation_at_every_cut_is_detected():
    rng = np.random.default_rng(7)
    start, freq = random_intervals(rng, 60, 12)
    msg = Message(3)
    rans.push(msg, start, freq, 12)
    data = msg.to_bytes()
    for cut in range(len(data)):
        with pytest.raises(CorruptMessage):
            Message.from_bytes(data[:cut], 3)
    with pytest.raises(CorruptMessage, match="trailing"):
        Message.from_bytes(data + b"\0", 3)
    with pytest.raises(CorruptMessage):
        Message.from_bytes(data, 4)  # wrong lane count


def test_huge_claimed_lengths_fail_before_allocating():
    with pytest.raises(CorruptMessage, match="truncated"):
        Message.from_bytes(b"\xff\xff\xff\xff" + b"\0" * 10, 1)
    with pytest.raises(CorruptMessage, match="truncated"):
        Message.from_bytes(b"\0" * 8, 10**9)


def test_nonzero_padding_is_rejected():
    data = bytearray(Message(1).to_bytes())  # 36 head bits: 4 padding bits at the end
    data[-1] |= 1
    with pytest.raises(CorruptMessage, match="padding"):
        Message.from_bytes(bytes(data), 1)


def test_push_rejects_invalid_intervals():
    for start, freq in (([0], [0]), ([-1], [1]), ([255], [2]), ([0], [257])):
        with pytest.raises(ValueError, match="freq"):
            rans.push(Message(1), np.array(start), np.array(freq), 8)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    lanes=st.sampled_from([1, 2, 5, 32]),
    n=st.integers(0, 600),
    precision=st.integers(1, 12),
    strict=st.booleans(),
)
def test_few_lanes_code_symbol_by_symbol_exactly_as_chunks_do(seed, lanes, n, precision, strict):
    """Messages of few lanes push in Python integers and pop by searching CDF rows (here forced for every lane
    count tested): the same message, tail words and symbols as the vectorized chunks (forced with thresholds 0),
    also when pops run past the tail into the virtual words."""
    rng = np.random.default_rng(seed)
    cdf = np.sort(rng.choice(np.arange(1, 1 << precision), min(7, (1 << precision) - 1), replace=False))
    cdf = np.concatenate([[0], cdf, [1 << precision]])
    rows = np.stack([cdf] * n) if n else np.zeros((0, cdf.size), np.int64)
    symbols = rng.integers(0, cdf.size - 1, n)
    start, freq = cdf[symbols], cdf[symbols + 1] - cdf[symbols]

    def lookup(cf, idx):
        s = np.searchsorted(cdf, cf.astype(np.int64), side="right") - 1
        return s, cdf[s], cdf[s + 1] - cdf[s]

    def coded(scalar_lanes):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(rans, "SCALAR_PUSH_LANES", scalar_lanes)
            patch.setattr(rans, "SCALAR_POP_LANES", scalar_lanes)
            msg = Message(lanes)
            rans.push(msg, start, freq, precision)
            pushed = msg.copy()
            if strict:
                msg = Message.from_bytes(msg.to_bytes(), lanes)
            popped = rans.pop(msg, n, lookup, precision, lambda idx: rows[idx])
            extra = rans.pop(Message(lanes), 3 * lanes, lookup, precision, lambda idx: np.stack([cdf] * 3 * lanes)[idx])
            return pushed, msg, popped, extra

    (pushed, msg, popped, extra), expected = coded(32), coded(0)
    assert pushed == expected[0] and msg == expected[1]
    assert np.array_equal(popped, symbols) and np.array_equal(expected[2], symbols)
    assert np.array_equal(extra, expected[3])
    msg.check_initial()
