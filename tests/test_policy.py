"""The encoder's policy: its promise (never longer than JPEG XL -e7 and an optimized PNG by more than 1 % and the
container), its cheap choices (the model, the screen, the probes), and each classical stream computed once."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

import vaezip
from vaezip import pipeline, policy
from vaezip.api import picture
from vaezip.coding.stages import TileCoder
from vaezip.format import classical
from vaezip.format.container import CodingParams, unpack
from vaezip.format.planes import BYTES, JPEG_XL, PNG
from vaezip.nets.weights import ASSETS
from vaezip.training.data import load_cifar10, load_mnist
from conftest import compress, smooth_image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import graphics  # noqa: E402

CONTAINER = 48          # bytes of a classical-only file besides its stream, palette and ICC profile


def promised(pic) -> int:
    """The promise for one picture: 1 % above the shorter of JPEG XL -e7 and an optimized PNG (the best of PNG's
    filters at deflate's highest level, shorter than Pillow's optimize=True), plus the container."""
    shortest = min(len(classical.jpeg_xl(pic)), len(classical.png(pic)))
    return int(1.01 * shortest) + CONTAINER + len(pic.palette) + len(pic.icc)


def pictures() -> dict[str, object]:
    """Screenshots, text and graphics (the content benchmark's generators, another seed), photo and CIFAR-10 crops,
    an MNIST digit: small enough for a test, where a quick probe misjudges JPEG XL (text, icons) and where the model
    and JPEG XL are close (photos)."""
    rng = np.random.default_rng(11)
    crop = lambda im, side: im.crop((0, 0, side, side)) if im.width >= side else im
    out = {"icons": graphics.icons(rng), "dialog-rgba": graphics.dialog(rng).resize((260, 170)),
           "terminal": crop(graphics.terminal(rng), 160), "text": crop(graphics.text_page(rng, "DejaVuSans.ttf", 13,
                                                                                           False), 128),
           "pixel-art": graphics.pixel_art(rng).resize((64, 64)), "spreadsheet": crop(graphics.spreadsheet(rng), 96)}
    photo = Image.open(ASSETS / "reference" / "photo-crop.png")
    out["photo"] = photo
    out["photo-small"] = photo.crop((0, 0, 32, 32))
    out["cifar10"] = Image.open(ASSETS / "reference" / "cifar10-test-1.png")
    out["mnist"] = Image.open(ASSETS / "reference" / "mnist-test-0.png")
    return out


@pytest.mark.parametrize("name", list(pictures()))
def test_the_promise_holds_with_the_shipped_models(name):
    pic = picture(pictures()[name])
    data = vaezip.compress(pic)
    assert len(data) <= promised(pic), (len(data), promised(pic))
    assert vaezip.decompress(data, pictures=True)[0].pixel_bytes() == pic.pixel_bytes()


def test_a_small_colour_picture_is_coded_by_the_small_colour_model_alone(monkeypatch):
    """32 x 32 RGB: the photo model's 64-pixel grid does not suit it and MNIST's model is grayscale, so the CIFAR-10
    model codes it without any estimate; a 28 x 28 digit is coded by both models that suit it, the shorter kept."""
    coded = []
    batch = TileCoder.batch
    monkeypatch.setattr(TileCoder, "batch", lambda self, *a, **k: coded.append(self.net) or batch(self, *a, **k))
    estimates = []
    monkeypatch.setattr(TileCoder, "estimate_bits", lambda *a: estimates.append(a) or pytest.fail("estimated"))
    arr = load_cifar10("test")[3].transpose(1, 2, 0).copy()
    header = unpack(vaezip.compress(arr))[0]
    assert header.model_coded and {n.config.channels for n in coded} == {3} and len(set(map(id, coded))) == 1
    coded.clear()
    digit = load_mnist("test")[3, 0]
    files = {m: vaezip.compress(digit, m) for m in ("mnist", "cifar10")}
    assert vaezip.compress(digit) == min(files.values(), key=len)
    assert {n.config.channels for n in coded} == {1, 3}


def test_large_jobs_choose_their_model_once_on_a_sample(monkeypatch):
    sizes = []
    estimate = TileCoder.estimate_bits
    monkeypatch.setattr(TileCoder, "estimate_bits", lambda self, planes: sizes.append(
        sum(p.size for p in planes)) or estimate(self, planes))
    digits = list(load_mnist("test")[:120, 0])
    data = vaezip.compress(digits)
    assert len(sizes) == 2 and max(sizes) <= policy.SAMPLE_PIXELS + 28 * 28      # mnist and cifar10, a sample each
    assert unpack(data)[0].model_coded


def test_large_pictures_that_jpeg_xl_codes_far_shorter_skip_the_model(tiny_rgb, monkeypatch):
    """A 512 x 512 flat graphic: screened, coded by a classical coder, the model's coding never run."""
    arr = np.zeros((512, 512, 3), np.uint8)
    arr[100:300, 50:400] = (200, 30, 90)
    arr[::16] = 255
    pic = picture(arr)
    monkeypatch.setattr(TileCoder, "batch", lambda *a, **k: pytest.fail("the model coded a screened picture"))
    vz = compress([pic], tiny_rgb)
    header, _ = unpack(vz)
    assert header.images[0].coding in BYTES and not header.model_coded
    assert vaezip.decompress(vz, pictures=True)[0].pixel_bytes() == pic.pixel_bytes()


def test_each_jpeg_xl_stream_is_computed_once(tiny_rgb, monkeypatch):
    """A screened picture: JPEG XL probes the picture and its centre and codes the picture at full effort, once
    each, although the screen and the final choice both need that stream; the file carries it."""
    arr = np.zeros((512, 512, 3), np.uint8)
    arr[60:300, 80:400] = (20, 130, 240)
    arr[::32] = 255
    pic = picture(arr)
    calls = []
    encode = imagecodecs.jpegxl_encode
    monkeypatch.setattr(imagecodecs, "jpegxl_encode", lambda a, **k: calls.append((a.shape, k["effort"])) or
                        encode(a, **k))
    header, payload = unpack(compress([pic], tiny_rgb))
    assert header.images[0].coding in (JPEG_XL, PNG)
    assert sorted(calls) == sorted([((256, 256, 3), 3), ((512, 512, 3), 3), ((512, 512, 3), 7)])


def test_small_pictures_are_probed_at_effort_2_and_a_shorter_stream_wins(tiny_rgb, monkeypatch):
    """A 40 x 40 flat graphic: probed by JPEG XL at effort 2, then JPEG XL at full effort and PNG (JPEG XL finds it
    flat), and the file carries the shorter stream."""
    arr = np.zeros((40, 40, 3), np.uint8)
    arr[5:30, 10:35] = (200, 30, 90)
    pic = picture(arr)
    calls = []
    encode = imagecodecs.jpegxl_encode
    monkeypatch.setattr(imagecodecs, "jpegxl_encode", lambda *a, **k: calls.append(k["effort"]) or encode(*a, **k))
    header, _ = unpack(compress([pic], tiny_rgb, CodingParams(tile=16, batch=3)))
    assert calls == [policy.PROBES["small"][0], classical.FINAL_EFFORT]
    sizes = {JPEG_XL: len(classical.jpeg_xl(pic)), PNG: len(classical.png(pic))}
    assert header.images[0].coding == min(sizes, key=sizes.get)


def test_effort_max_codes_every_picture_by_the_model_and_jpeg_xl_at_its_highest_effort(tiny_rgb, monkeypatch):
    """A graphic that the screen sends to JPEG XL by default: at effort "max" the model codes it first, then JPEG XL
    at MAX_EFFORT wins, its stream shorter than the default file's."""
    arr = np.zeros((3, 256, 256), np.uint8)
    arr[:, 20:70, 10:80] = np.array([200, 30, 90])[:, None, None]
    arr[:, ::8] = 255
    arr[0] += (np.arange(256) // 3).astype(np.uint8)
    pic = picture(np.ascontiguousarray(arr.transpose(1, 2, 0)))
    streams = {e: len(classical.jpeg_xl(pic, e)) for e in (classical.FINAL_EFFORT, classical.MAX_EFFORT)}
    assert streams[classical.MAX_EFFORT] < streams[classical.FINAL_EFFORT]
    coded = []
    batch = TileCoder.batch
    monkeypatch.setattr(TileCoder, "batch", lambda *a, **k: coded.append(1) or batch(*a, **k))
    files = {e: compress([pic], tiny_rgb, effort=e) for e in ("default", "max")}
    assert coded                                                       # only "max" ran the model
    coded.clear()
    assert compress([pic], tiny_rgb) == files["default"] and not coded
    for data in files.values():
        assert unpack(data)[0].images[0].coding == JPEG_XL
        assert vaezip.decompress(data, pictures=True)[0].pixel_bytes() == pic.pixel_bytes()
    assert len(files["default"]) - len(files["max"]) == streams[classical.FINAL_EFFORT] - streams[
        classical.MAX_EFFORT]
    with pytest.raises(ValueError, match="unknown effort 'most': one of default, max"):
        compress([pic], tiny_rgb, effort="most")


def test_an_archive_is_coded_again_only_where_that_saves_enough(tiny_rgb, monkeypatch):
    """Smooth pictures and one flat graphic in an archive: the graphic, which a classical coder codes far shorter,
    goes classical in a second pass; an archive where that would save less than RECODE_GAIN keeps its one pass."""
    passes = []
    encode = pipeline.encode
    monkeypatch.setattr(pipeline, "encode", lambda *a, **k: passes.append(1) or encode(*a, **k))
    flat = np.zeros((48, 48, 3), np.uint8)
    flat[10:30] = (250, 20, 20)
    smooth = [picture(smooth_image(48, 48, 3, seed=i)) for i in range(3)]
    header = unpack(compress(smooth + [picture(flat)], tiny_rgb, archive=True))[0]
    assert len(passes) == 2 and header.images[3].coding in BYTES
    passes.clear()
    monkeypatch.setattr(policy, "RECODE_GAIN", 0.99)
    header = unpack(compress(smooth + [picture(flat)], tiny_rgb, archive=True))[0]
    assert len(passes) == 1 and header.images[3].coding not in BYTES


def test_an_archive_of_many_large_pictures_estimates_the_model_on_a_sample(tiny_rgb, monkeypatch):
    """Six 256 x 256 graphics in an archive: the model estimates the centres of SCREEN_SAMPLE of them, and the
    bracket of their ratios sends the other two to a classical coder without an estimate; the model codes none."""
    estimated = []
    centre_bits = policy.centre_bits
    monkeypatch.setattr(policy, "centre_bits", lambda *a: estimated.append(1) or centre_bits(*a))
    monkeypatch.setattr(TileCoder, "batch", lambda *a, **k: pytest.fail("the model coded a screened picture"))
    pics = []
    for i in range(6):
        arr = np.zeros((256, 256, 3), np.uint8)
        arr[20 + 10 * i:150, 30:200 - 5 * i] = (200, 30 * i, 90)
        arr[::8 + i] = 255
        pics.append(picture(arr))
    vz = compress(pics, tiny_rgb, archive=True)
    header = unpack(vz)[0]
    assert len(estimated) == policy.SCREEN_SAMPLE and not header.model_coded
    assert all(r.coding in BYTES for r in header.images)
    assert [p.pixel_bytes() for p in vaezip.decompress(vz, pictures=True)] == [p.pixel_bytes() for p in pics]


def test_the_screen_estimates_a_picture_only_where_its_bracket_straddles_the_decision(tiny_rgb, monkeypatch):
    pic = picture(smooth_image(256, 256, 3))
    candidates = policy.Classical(pic, classical.FINAL_EFFORT)
    plan = policy.Plan([tiny_rgb], CodingParams(), "cpu", None, [0], [candidates])
    estimated = []
    monkeypatch.setattr(policy, "centre_bits", lambda *a: estimated.append(1) or 8e9)   # the model far behind
    kind, size = candidates.best(math.inf)
    r = size / candidates.probe()               # model bytes per probe byte at which it ties the classical coding
    assert policy.screen(plan, candidates, 0, bracket=(2 * r, 3 * r)) == kind and not estimated
    assert policy.screen(plan, candidates, 0, bracket=(r / 3, r / 2)) == 0 and not estimated
    assert policy.screen(plan, candidates, 0, bracket=(r / 2, 2 * r)) == kind and estimated == [1]


def test_png_is_searched_only_where_it_may_beat_jpeg_xl(monkeypatch):
    """Both flat (JPEG XL below FLAT bits per subpixel) and larger than PNG_SUBPIXELS: a smooth photo, where PNG
    cannot win, costs one fast deflation; a page of text, where it may, PNG's full search."""
    searched = []
    png = classical.png
    monkeypatch.setattr(classical, "png", lambda pic, fast=False: searched.append(fast) or png(pic, fast))
    photo = picture(Image.open(ASSETS / "reference" / "photo-crop.png").resize((384, 256), Image.BICUBIC))
    text = picture(graphics.text_page(np.random.default_rng(3), "DejaVuSerif.ttf", 20, False))
    for pic, expected in ((photo, [True]), (text, [False])):
        searched.clear()
        candidates = policy.Classical(pic, classical.FINAL_EFFORT)
        kind, _ = candidates.best(math.inf)
        assert pic.subpixels > policy.PNG_SUBPIXELS and 8 * candidates.size(JPEG_XL) < policy.FLAT * pic.subpixels
        assert searched[-1:] == expected and kind == JPEG_XL
