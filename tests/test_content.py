"""Every kind of image: content the model cannot learn is coded by a classical coder or stored, never worse than PNG."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

import vaezip
from vaezip.format.container import unpack
from vaezip.format.planes import CODINGS
from conftest import encode, smooth_image


def png_size(im: Image.Image) -> int:
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return len(buf.getvalue())


def text_like() -> Image.Image:
    im = Image.new("RGB", (200, 120), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for i in range(8):
        d.text((5, 5 + 14 * i), "lossless bits back coding %d" % i, fill=(0, 0, 0))
    return im


def sparse_histogram() -> Image.Image:
    gray = smooth_image(96, 128, 1, seed=3)[:, :, 0].astype(np.int64)
    return Image.fromarray((gray // 3 * 3).astype(np.uint8), "L")           # only every third level occurs


CASES = {"text": text_like, "sparse": sparse_histogram,
         "flat": lambda: Image.new("RGB", (90, 70), (12, 200, 90)),
         "noise": lambda: Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))}


@pytest.mark.parametrize("kind", list(CASES))
def test_never_worse_than_png_and_exact(tiny_rgb, kind):
    im = CASES[kind]()
    data = vaezip.compress(im, tiny_rgb)
    (back,) = vaezip.decompress(data, model=tiny_rgb)
    assert back.mode == im.mode and back.tobytes() == im.tobytes()
    assert len(data) <= png_size(im)
    n = len(im.getbands()) * im.width * im.height
    assert len(data) <= n + 64                                   # never more than raw plus a small header
    if kind == "noise":
        assert unpack(data)[0].images[0].coding == next(k for k, v in CODINGS.items() if v == "stored")


def test_archive_mixes_codings_and_keeps_every_image(tiny_rgb):
    images = [text_like(), Image.fromarray(smooth_image(40, 40, 3)), CASES["noise"]()]
    data = vaezip.compress(images, tiny_rgb)
    assert len({r.coding for r in unpack(data)[0].images}) >= 2
    back = vaezip.decompress(data, model=tiny_rgb)
    assert [b.tobytes() for b in back] == [im.tobytes() for im in images]


def test_photos_stay_with_the_model():
    from vaezip.format.image import read_image
    from vaezip.nets.weights import ASSETS
    pic = read_image((ASSETS / "reference" / "photo-crop.png").read_bytes())
    assert CODINGS[unpack(vaezip.compress(pic, "photo"))[0].images[0].coding] == "model"


def test_archive_charges_each_image_its_own_bits(tiny_rgb):
    """Tiles of two images in one batch: each image is charged its tiles' information content, not a pixel share,
    so the archive's choice of coding per image sees what the model really spends on it."""
    from vaezip.format.image import Picture
    flat = np.full((3, 16, 16), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    pictures = [Picture("RGB", x) for x in (flat, flat, flat, noise)]      # batches: [0], [1], [2, 3]
    data, bits = encode(pictures, tiny_rgb, [0] * 4, archive=True)
    alone = [encode([p], tiny_rgb, [0])[1][0] for p in pictures[2:]]
    assert alone[1] - alone[0] > 50                                   # even an untrained model sees the noise
    assert np.abs(bits[2:] - alone).max() < (alone[1] - alone[0]) / 4  # a pixel share would be off by half of it
    assert bits.sum() == pytest.approx(8 * len(unpack(data)[1]), rel=0.02)
