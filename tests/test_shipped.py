"""Round trips of real images with the shipped models, coded by the model (not by a classical fallback), at rates
well below JPEG XL's on the same images: CIFAR-10 and MNIST test images, a photo crop, a Kodak crop and the demo."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from vaezip.cli import main
from vaezip.format.classical import jpeg_xl
from vaezip.format.container import CodingParams, unpack
from vaezip.format.planes import BYTES
from vaezip.pipeline import decode
from vaezip.training.data import kodak_paths
from vaezip.format.image import Picture, read_image, write_png
from vaezip.nets.weights import ASSETS
from conftest import compress


def _roundtrip(pics: list[Picture], model: str, archive: bool = False) -> bytes:
    vz = compress(pics, model, CodingParams(), archive)
    assert all(r.coding not in BYTES for r in unpack(vz)[0].images)
    back = decode(vz)
    for a, b in zip(pics, back):
        assert a.mode == b.mode and np.array_equal(a.color, b.color)
    return vz


def _reference(name: str) -> Picture:
    return read_image((ASSETS / "reference" / name).read_bytes())


@pytest.mark.parametrize("name", ["cifar10-test-0.png", "cifar10-test-1.png"])
def test_cifar10_images(name):
    pic = _reference(name)
    assert len(_roundtrip([pic], "cifar10")) < 0.97 * len(jpeg_xl(pic))       # measured: 0.94 and 0.90


def test_mnist_archive():
    pics = [_reference(f"mnist-test-{i}.png") for i in range(2)]
    assert len(_roundtrip(pics, "mnist", archive=True)) < 0.8 * sum(len(jpeg_xl(p)) for p in pics)   # 0.61


def test_photo_crop():
    pic = _reference("photo-crop.png")
    assert len(_roundtrip([pic], "photo")) < len(jpeg_xl(pic))                 # 0.96


def test_kodak_crop():
    paths = kodak_paths()
    if not paths:
        pytest.skip("Kodak not found in ../shared/data")
    pic = read_image(paths[0].read_bytes())
    crop = Picture("RGB", np.ascontiguousarray(pic.color[:, 100:180, 200:297]))
    vz = _roundtrip([crop], "photo")
    assert len(vz) < 0.85 * len(write_png(crop))


def test_demo_command():
    res = CliRunner().invoke(main, ["demo"])
    assert res.exit_code == 0, res.output
    assert "round trip exact" in res.output and "bits/subpixel" in res.output
