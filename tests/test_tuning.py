"""Tuning (``coding.tuning``): the encoder's per-image changes of the stage networks' biases, their coding in the
message, the tuned networks of every backend, and files that carry them."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import vaezip
from vaezip.coding import tuning
from vaezip.entropy import codecs
from vaezip.entropy.rans import CorruptMessage, Message
from vaezip.format.container import CodingParams, FormatError, unpack
from vaezip.nets.weights import ASSETS, load_model, load_network

from conftest import smooth_image


def grid_deltas(net, seed: int = 0, k: int = 6, spread: int = 3) -> list[np.ndarray]:
    """Bias changes on a 2^k grid within every bias's room, every third vector unchanged."""
    rng = np.random.default_rng(seed)
    out = []
    for j, room in enumerate(net.rooms()):
        q = np.clip(rng.integers(-spread, spread + 1, len(room)), -(room // 2 ** k), room // 2 ** k)
        out.append(np.zeros(len(room), np.int64) if j % 3 == 0 else q.astype(np.int64) << k)
    return out


def mixtures(net, x: np.ndarray) -> list[np.ndarray]:
    mean, _ = net.posterior(x)
    return [a for _, mix in net.stages(net.features(mean), x) for a in vars(mix).values()]


@st.composite
def tunings(draw):
    sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=5))
    if draw(st.booleans()):
        return sizes, None
    deltas = []
    for n in sizes:
        q = np.array(draw(st.lists(st.integers(-tuning.Q, tuning.Q), min_size=n, max_size=n)), np.int64)
        k = draw(st.integers(0, (1 << tuning.GRID_BITS) - 2))
        deltas.append(q << k)
    return sizes, deltas


@settings(max_examples=60, deadline=None)
@given(tunings(), st.integers(1, 5))
def test_tuning_codec_round_trips(case, lanes):
    sizes, deltas = case
    sequence = codecs.Sequence(lambda d: tuning.describe(sizes, d))
    msg = Message(lanes)
    sequence.push(msg, deltas if deltas is not None else [])
    back = sequence.pop(Message.from_bytes(msg.to_bytes(), lanes))
    if deltas is None:
        assert back is None
    else:
        assert all(np.array_equal(a, b) for a, b in zip(back, deltas, strict=True))


def test_tables_are_integer_cdfs_that_widen():
    tables, freq = tuning.TABLES, np.diff(tuning.TABLES, axis=1)
    assert (tables[:, 0] == 0).all() and (tables[:, -1] == 1 << tuning.TABLE_PRECISION).all() and (freq >= 1).all()
    assert (np.diff(freq[:, tuning.Q]) < 0).all()            # the mass of q = 0 falls from shape to shape
    assert (freq == freq[:, ::-1]).all()                     # symmetric about q = 0


@pytest.mark.parametrize("backend", ["numpy", "torch", "unfold"])
def test_tuned_networks_give_the_same_bits_in_every_backend(backend):
    """The photo model tuned by the same changes computes the same mixtures in every arithmetic; no change gives the
    network's own; the changes move its output."""
    crop = np.asarray(Image.open(ASSETS / "reference" / "photo-crop.png"))[:64, :64]     # a multiple of the grid
    x = np.ascontiguousarray(crop.transpose(2, 0, 1)[None])
    reference = load_network("photo", backend="numpy")[0]
    net = load_network("photo", backend=backend)[0]
    deltas = grid_deltas(reference)
    tuned = mixtures(net.tuned(deltas), x)
    assert all(np.array_equal(a, b) for a, b in zip(tuned, mixtures(reference.tuned(deltas), x), strict=True))
    unchanged = net.tuned([np.zeros_like(d) for d in deltas])
    assert all(np.array_equal(a, b) for a, b in zip(mixtures(unchanged, x), mixtures(reference, x), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(tuned, mixtures(reference, x)))


def test_a_change_beyond_the_exactness_bound_is_refused():
    net = load_network("photo", backend="numpy")[0]
    deltas = [np.zeros_like(d) for d in grid_deltas(net)]
    deltas[5][2] = int(net.rooms()[5][2]) + 1
    with pytest.raises(ValueError, match="exactness bound"):
        net.tuned(deltas)
    with pytest.raises(CorruptMessage):
        tuning.tuned(net, deltas)
    deltas[5][2] -= 1
    net.tuned(deltas)


def test_quantize_keeps_what_pays_on_its_grid_within_the_rooms():
    rng = np.random.default_rng(1)
    changes = [rng.normal(0, 200, 40) for _ in range(3)]
    rooms = [np.full(40, 1e9), np.full(40, 1e9), np.full(40, 50.0)]
    flat = tuning.quantize(changes, [np.zeros(40)] * 3, rooms)
    assert not any(d.any() for d in flat)                    # a loss that does not curve: nothing is worth its bits
    sharp = tuning.quantize(changes, [np.full(40, 1.0)] * 3, rooms)
    assert all(d.any() for d in sharp)
    assert np.abs(sharp[2]).max() <= 50 and np.abs(sharp[0] - changes[0]).max() < 16
    for d in sharp:
        tuning._grid_code(d)                                 # on a grid the codec can send


def test_fit_moves_the_biases_and_measures_their_curvature():
    model = load_model("photo")[0]
    net = load_network("photo", backend="numpy")[0]
    planes = np.asarray(Image.open(ASSETS / "reference" / "photo-crop.png")).transpose(2, 0, 1).copy()
    reports = []
    changes, curvatures = tuning.fit(model, planes, steps=3, report=lambda *step: reports.append(step))
    assert reports == [(1, 3), (2, 3), (3, 3)]
    sizes = [len(room) for room in net.rooms()]
    assert [len(c) for c in changes] == [len(c) for c in curvatures] == sizes
    assert all(np.isfinite(c).all() for c in changes) and any(np.abs(c).max() > 0 for c in changes)
    assert all((c >= 0).all() for c in curvatures) and any(c.max() > 0 for c in curvatures)


def test_tune_keeps_only_a_tuning_that_pays(monkeypatch):
    """Changes that make the model's estimate worse, or none worth their bits, give no tuning."""
    net = load_network("photo", backend="numpy")[0]
    planes = np.asarray(Image.open(ASSETS / "reference" / "photo-crop.png")).transpose(2, 0, 1).copy()
    params = CodingParams(tile=64, batch=2)
    rooms = net.rooms()
    harmful = [np.sign(np.arange(len(r)) % 2 - 0.5) * np.minimum(r, 1 << 18) for r in rooms]
    curving, flat = [np.ones(len(r)) for r in rooms], [np.zeros(len(r)) for r in rooms]
    monkeypatch.setattr(tuning, "fit", lambda model, planes, steps, report: (harmful, curving))
    assert any(d.any() for d in tuning.quantize(harmful, curving, rooms))
    assert tuning.tune(None, net, [planes], params) is None
    monkeypatch.setattr(tuning, "fit", lambda model, planes, steps, report: (harmful, flat))
    assert tuning.tune(None, net, [planes], params) is None


@pytest.fixture
def tuned_everywhere(monkeypatch):
    """Every image of 4096 pixels or more tuned by ``grid_deltas``, as if the fit had found them."""
    monkeypatch.setattr(tuning, "TUNED_PIXELS", 1 << 12)
    def tune(model, net, layers, params, report):
        report(1, 1)
        return grid_deltas(net, int(layers[0].sum()))
    monkeypatch.setattr(tuning, "tune", tune)


class Bar:
    """A progress bar that keeps what it was told."""

    def __init__(self):
        self.pixels, self.notes = 0, []

    def update(self, pixels):
        self.pixels += pixels

    def set_postfix_str(self, note):
        self.notes.append(note)


def test_effort_max_files_carry_their_tunings_and_decode_in_every_backend(tuned_everywhere):
    crop = np.asarray(Image.open(ASSETS / "reference" / "photo-crop.png"))
    small = smooth_image(40, 30, 3, seed=2)              # too small to be tuned: no flag
    pictures = [crop, small, crop[::-1].copy()]
    bar = Bar()
    data = vaezip.compress(pictures, "photo", tile=64, batch=2, classical=False, effort="max", progress=bar)
    plain = vaezip.compress(pictures, "photo", tile=64, batch=2, classical=False)
    assert bar.notes == ["tuning picture 1: 1/1", "", "tuning picture 3: 1/1", ""]     # the small one is not tuned
    assert bar.pixels == sum(p.shape[0] * p.shape[1] for p in pictures)
    header = unpack(data)[0]
    assert header.params.tuning == 1 and unpack(plain)[0].params.tuning == 0
    assert data != plain
    for backend in ("numpy", "torch"):
        back = vaezip.decompress(data, arrays=True, backend=backend)
        assert all(np.array_equal(a, b) for a, b in zip(back, pictures, strict=True))


def test_a_tuning_that_breaks_the_bound_is_a_corrupt_file(monkeypatch):
    """A file whose tuning would leave the exact arithmetic is refused with a one-line error, not decoded."""
    net = load_network("photo", backend="numpy")[0]
    deltas = [np.zeros_like(d) for d in grid_deltas(net)]
    deltas[1][0] = (int(net.rooms()[1][0]) >> 20) + 1 << 20
    monkeypatch.setattr(tuning, "TUNED_PIXELS", 1 << 12)
    monkeypatch.setattr(tuning, "tune", lambda model, net, layers, params, report: deltas)
    honest = tuning.tuned
    monkeypatch.setattr(tuning, "tuned", lambda net, d: net)      # the encoder codes the tiles untuned
    crop = np.asarray(Image.open(ASSETS / "reference" / "photo-crop.png"))
    data = vaezip.compress(crop, "photo", tile=64, batch=2, classical=False, effort="max")
    monkeypatch.setattr(tuning, "tuned", honest)
    with pytest.raises(FormatError, match="corrupt .vz file: a tuned bias breaks the exactness bound"):
        vaezip.decompress(data)


def test_small_images_are_coded_as_without_tuning(tuned_everywhere):
    """Images too small to be tuned carry no flag and share batches as they would without tuning: the message of
    an archive of them is the same at either effort."""
    pictures = [smooth_image(32, 32, 3, seed=i) for i in range(6)]
    data = vaezip.compress(pictures, "photo", classical=False, effort="max")
    plain = vaezip.compress(pictures, "photo", classical=False)
    assert unpack(data)[0].params.tuning == 1 and unpack(data)[1] == unpack(plain)[1]

