"""Tests of the rANS message and core: exact round trips, initial bits, serialization, rate, and the compiled
core against a lane-by-lane reference in Python integers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaezip.entropy import rans
from vaezip.entropy.cdfs import Divided, Rows
from vaezip.entropy.rans import HEAD0, VIRTUAL_WORD, CorruptMessage, Message

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


def pop_checked(msg, start, freq, precision):
    """Pop with a distribution per symbol whose symbol 1 is the pushed interval (0 and 2 the rest of [0, 2^p),
    possibly empty): every pop must give 1, i.e. find cf inside the pushed interval."""
    total = np.full_like(start, 1 << precision)
    rows = np.stack([np.zeros_like(start), start, start + freq, total], axis=1)
    symbols = rans.pop(msg, start.size, Rows(rows), precision, 3)
    assert np.all(symbols == 1)


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
    pop_checked(msg, start, freq, precision)
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
    pop_checked(decoded, start, freq, 16)
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


def reference_pop(msg, interval, n, precision):
    """Pop written out with Python ints: chunks forwards; the refilling lanes of a chunk take the top words of
    the tail, deepest first in increasing lane order, VIRTUAL_WORD below its bottom (or fail if strict)."""
    head, tail, lanes, mask = [int(h) for h in msg.head], [int(w) for w in msg.tail], msg.lanes, (1 << precision) - 1
    for lo in range(0, n, lanes):
        refill = []
        for lane in range(min(lanes, n - lo)):
            x = head[lane]
            s, f = interval(lo + lane, x & mask)
            head[lane] = f * (x >> precision) + (x & mask) - s
            if head[lane] < 1 << 31:
                refill.append(lane)
        if msg.strict and len(refill) > len(tail):
            raise CorruptMessage("exhausted")
        words = [VIRTUAL_WORD] * max(0, len(refill) - len(tail)) + tail[max(0, len(tail) - len(refill)):]
        del tail[max(0, len(tail) - len(refill)):]
        for lane, w in zip(refill, words):
            head[lane] = (head[lane] << 32) | w
    return head, tail


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    lanes=st.sampled_from([1, 2, 5, 32, 3000]),
    n=st.integers(0, 7000),
    precision=st.integers(1, 24),
    strict=st.booleans(),
)
def test_core_matches_the_reference(seed, lanes, n, precision, strict):
    """The compiled push and pop leave the heads and tail words of the reference, also when pops run past the
    tail into the virtual words (or are refused there, for a strict message)."""
    rng = np.random.default_rng(seed)
    start, freq = random_intervals(rng, n, precision)
    msg = Message(lanes)
    rans.push(msg, start, freq, precision)
    assert (msg.head.tolist(), msg.tail.tolist()) == reference_push(Message(lanes), start, freq, precision)
    m = n + 2 * lanes  # more than was pushed: the last pops read below the bottom of the tail
    count = 1 << min(precision, 3)
    step = (1 << precision) // count
    if strict:
        msg = Message.from_bytes(msg.to_bytes(), lanes)
    try:
        expected = reference_pop(msg, lambda i, cf: (cf // step * step, step), m, precision)
    except CorruptMessage:
        with pytest.raises(CorruptMessage, match="exhausted"):
            rans.pop(msg, m, Divided(count), precision, count)
        return
    rans.pop(msg, m, Divided(count), precision, count)
    assert (msg.head.tolist(), msg.tail.tolist()) == expected


def test_pop_on_fresh_message_uses_virtual_words_and_push_restores():
    msg = Message(5)
    freq = np.full(40, 4)
    symbols = rans.pop(msg, 40, Divided(4), 4, 4)  # 4 symbols of mass 4/16
    assert msg.tail.size == 0
    rans.push(msg, 4 * symbols, freq, 4)
    assert np.all(msg.head == HEAD0)
    assert msg.tail.size > 0 and np.all(msg.tail == VIRTUAL_WORD)  # consumed virtual words, now real ones
    msg.check_initial()


def test_strict_message_refuses_to_pop_past_its_tail():
    msg = Message(3, strict=True)
    with pytest.raises(CorruptMessage, match="exhausted"):
        rans.pop(msg, 30, Divided(1 << 24), 24, 1 << 24)


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
    pop_checked(decoded, start, freq, 16)
    decoded.check_initial()


def test_serialized_heads_are_compact():
    """A fresh lane costs 5 + 31 bits; a lane with a steady-state head about 4 + log2(head) bits, not 64."""
    lanes = 4096
    assert Message(lanes).num_bits() == 8 * (-(-(5 + 31) * lanes // 8))
    rng = np.random.default_rng(0)
    start, freq = random_intervals(rng, 50 * lanes, 16)
    msg = Message(lanes)
    rans.push(msg, start, freq, 16)
    head_bits = msg.num_bits() - 32 * msg.tail.size
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
    """No cut of a message decodes as the message: it fails to parse, runs out of tail words, pops other symbols or
    ends away from the initial state (in a file, the container's CRC-32 refuses every cut before this)."""
    rng = np.random.default_rng(7)
    start, freq = random_intervals(rng, 60, 12)
    msg = Message(3)
    rans.push(msg, start, freq, 12)
    data = msg.to_bytes()
    rows = np.stack([np.zeros_like(start), start, start + freq, np.full_like(start, 1 << 12)], axis=1)
    for cut in range(len(data)):
        try:
            cropped = Message.from_bytes(data[:cut], 3)
            symbols = rans.pop(cropped, start.size, Rows(rows), 12, 3)
            cropped.check_initial()
        except CorruptMessage:
            continue
        assert not np.all(symbols == 1)
    with pytest.raises(CorruptMessage, match="not whole 32-bit words"):
        Message.from_bytes(data + b"\0", 3)
    with pytest.raises(CorruptMessage):
        Message.from_bytes(data, 4)  # wrong lane count


def test_huge_claimed_lengths_fail_before_allocating():
    with pytest.raises(CorruptMessage, match="truncated"):
        Message.from_bytes(b"\xff", 1)                  # a 63-bit head in one byte
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
