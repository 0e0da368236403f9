"""bench/headroom.py's recalibration simulator: its CDF transform, and its coded bits are the coder's own."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from vaezip.coding.stages import TileCoder
from vaezip.coding.tiles import gather, mask, plan_batches, plan_tiles
from vaezip.entropy.tables import LOG_FRAC
from vaezip.format.container import CodingParams
from vaezip.format.image import read_image
from vaezip.nets.modules import QConv
from vaezip.nets.weights import load_model, load_network

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import headroom  # noqa: E402

CROP = Path(__file__).resolve().parent.parent / "assets" / "reference" / "photo-crop.png"


def test_uniform_counts_leave_the_cdf_alone_and_skewed_ones_move_it():
    u = np.linspace(0, 1, 101)
    uniform = np.full((len(u), headroom.BINS), 1 / headroom.BINS)
    assert np.allclose(headroom._cdf(u, uniform), u)
    low = np.zeros((len(u), headroom.BINS))
    low[:, 0] = 1                               # every interval seen so far fell in the first bin
    assert np.allclose(headroom._cdf(u, low), np.minimum(u * headroom.BINS, 1))


def test_coded_bits_are_the_coders_information_and_recalibration_changes_them():
    img = read_image(CROP.read_bytes()).color[:, :64, :96]
    coded, recalibrated = headroom.recalibration([img])
    net = load_network("photo", "cpu", 1 << 22)[0]
    params = CodingParams()
    coder = TileCoder(net, params)
    bits = 0
    for group in plan_batches(plan_tiles([img.shape], params.tile, net.config.grid), 64, params.tile):
        x, real = gather([img], group), mask(group)
        z = coder.latent.bucket(net.posterior(x)[0].ravel())
        bits += int(coder.information(z, x, real).sum())
    assert abs(coded - bits / (1 << LOG_FRAC) / img.size) < 1e-3
    assert recalibrated != coded and abs(recalibrated / coded - 1) < 0.1


def test_low_rank_adapters_start_as_the_network_learn_and_pay_for_what_they_send():
    img = read_image(CROP.read_bytes()).color[:, :64, :96]
    biases = headroom.fine_tuning(img, 1, 1e-3, "biases")
    adapters = headroom.fine_tuning(img, 5, 1e-3, "low-rank", rank=2)
    assert adapters["before"] == biases["before"]        # u starts at zero: the network as shipped
    convs = [layer.weight for net in load_model("photo")[0].stages for layer in net.modules()
             if isinstance(layer, QConv)]
    assert adapters["numbers"] == sum(2 * (len(w) + w[0].numel()) for w in convs)
    assert adapters["after"] < adapters["before"]
    assert adapters["sent"] > adapters["after"]         # their bits, tens of thousands of numbers on a tiny crop
