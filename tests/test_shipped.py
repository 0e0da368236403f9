"""Round trips of real images with the shipped models: a Kodak crop, CIFAR-10 and MNIST images, and the demo."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from vaezip.cli import main
from vaezip.container import CodingParams
from vaezip.compressor import compress, decompress
from vaezip.container import unpack
from vaezip.data import kodak_paths
from vaezip.image import Picture, read_image, write_png
from vaezip.weights import ASSETS


def _roundtrip(pics: list[Picture], model: str, archive: bool = False) -> bytes:
    vz = compress(pics, [f"{i}.png" for i in range(len(pics))], model, CodingParams(), archive)
    back = decompress(*unpack(vz))
    for a, b in zip(pics, back):
        assert a.mode == b.mode and np.array_equal(a.color, b.color)
    return vz


@pytest.mark.parametrize("name", ["cifar10-test-0.png", "cifar10-test-1.png"])
def test_cifar10_images(name):
    pic = read_image((ASSETS / "reference" / name).read_bytes())
    vz = _roundtrip([pic], "cifar10")
    assert 8 * len(vz) / pic.subpixels < 8.0


def test_mnist_archive():
    pics = [read_image((ASSETS / "reference" / f"mnist-test-{i}.png").read_bytes()) for i in range(2)]
    vz = _roundtrip(pics, "mnist", archive=True)
    assert 8 * len(vz) / sum(p.subpixels for p in pics) < 4.0


def test_kodak_crop():
    paths = kodak_paths()
    if not paths:
        pytest.skip("Kodak not found in ../shared/data")
    pic = read_image(paths[0].read_bytes())
    crop = Picture("RGB", np.ascontiguousarray(pic.color[:, 100:180, 200:297]))
    vz = _roundtrip([crop], "photo")
    assert len(vz) < len(write_png(crop))


def test_demo_command():
    res = CliRunner().invoke(main, ["demo"])
    assert res.exit_code == 0, res.output
    assert "round trip exact" in res.output and "bits/subpixel" in res.output
