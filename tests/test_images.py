"""Where images live: the Python API, the Pillow plugin, palette and 16-bit images, metadata, the chosen model."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, PngImagePlugin

import vaezip
from vaezip.cli import main
from vaezip.format.container import unpack
from vaezip.format.image import read_image, write_png
from vaezip.nets.weights import ASSETS, shipped_with_hash
from conftest import smooth_image

ROOT = Path(__file__).resolve().parent.parent


def arrays() -> dict[str, np.ndarray]:
    rgb = smooth_image(13, 17, 4, seed=2)
    deep = rgb.astype(np.uint16) * 257 + np.arange(17, dtype=np.uint16)[:, None]   # low bytes not a copy of the high
    return {"L": rgb[:, :, 0], "LA": rgb[:, :, :2], "RGB": rgb[:, :, :3], "RGBA": rgb, "I;16": deep[:, :, 0],
            "LA;16": deep[:, :, :2], "RGB;16": deep[:, :, :3], "RGBA;16": deep}


@pytest.mark.parametrize("classical", [False, True], ids=["model", "classical"])
@pytest.mark.parametrize("mode", list(arrays()))
def test_api_round_trips_arrays_of_every_mode(tiny_rgb, mode, classical):
    arr = arrays()[mode]
    data = vaezip.compress(arr, tiny_rgb, classical=classical)
    assert unpack(data)[0].images[0].mode == mode
    (back,) = vaezip.decompress(data, arrays=True, model=tiny_rgb)
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def palette_image(transparency=None, duplicate: bool = False) -> Image.Image:
    im = Image.fromarray((smooth_image(11, 14, 1, seed=5)[:, :, 0] // 40).astype(np.uint8), "L").convert("P")
    colours = [0, 0, 0, 200, 30, 30, 30, 200, 30, 30, 30, 200, 250, 250, 0, 0, 250, 250, 128, 128, 128]
    if duplicate:
        colours[3:6] = colours[6:9]                       # entries 1 and 2 alike: colours cannot give indices
    im.putpalette(colours)
    if transparency is not None:
        im.info["transparency"] = transparency
    return im


@pytest.mark.parametrize("kind", ["plain", "table", "index", "duplicate"])
def test_palette_images_keep_palette_and_indices(tiny_rgb, tmp_path, kind):
    im = palette_image({"plain": None, "table": bytes([255, 0, 128, 255, 64]), "index": 3, "duplicate": None}[kind],
                       duplicate=kind == "duplicate")
    buf = io.BytesIO()
    im.save(buf, "PNG", **({"transparency": im.info["transparency"]} if "transparency" in im.info else {}))
    (tmp_path / "p.png").write_bytes(buf.getvalue())
    runner = CliRunner()
    res = runner.invoke(main, ["compress", str(tmp_path / "p.png"), "--model", tiny_rgb, "--model-only"])
    assert res.exit_code == 0
    header = unpack((tmp_path / "p.vz").read_bytes())[0]
    assert header.images[0].coding == (0 if kind == "duplicate" else 1)      # indices or colours
    (tmp_path / "p.png").unlink()
    assert runner.invoke(main, ["decompress", str(tmp_path / "p.vz"), "--model", tiny_rgb]).exit_code == 0
    original, back = Image.open(io.BytesIO(buf.getvalue())), Image.open(tmp_path / "p.png")
    assert back.mode == "P" and back.getpalette() == original.getpalette()
    assert np.array_equal(np.asarray(back), np.asarray(original))
    assert back.info.get("transparency") == original.info.get("transparency")


def deep_png(channels: int) -> bytes:
    import imagecodecs
    arr = arrays()[{1: "I;16", 2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[channels]]
    return imagecodecs.png_encode(np.ascontiguousarray(arr))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_pngs_come_back_16_bit(tiny_rgb, tmp_path, channels):
    import imagecodecs
    (tmp_path / "d.png").write_bytes(deep_png(channels))
    runner = CliRunner()
    res = runner.invoke(main, ["compress", str(tmp_path / "d.png"), "--model", tiny_rgb, "--model-only"])
    assert res.exit_code == 0
    (tmp_path / "d.png").unlink()
    assert runner.invoke(main, ["decompress", str(tmp_path / "d.vz"), "--model", tiny_rgb]).exit_code == 0
    back = imagecodecs.png_decode((tmp_path / "d.png").read_bytes())
    assert back.dtype == np.uint16 and np.array_equal(back, imagecodecs.png_decode(deep_png(channels)))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_pictures_in_pillow_read_as_pillow_reads_their_png(tiny_rgb, tmp_path, channels, monkeypatch):
    """Pillow has no 16-bit colour modes: vaezip.decompress and Image.open give I;16 for 16-bit gray (exact) and
    LA, RGB or RGBA of the high bytes otherwise, the pixels Pillow reads from the same picture's 16-bit PNG."""
    monkeypatch.setenv("VAEZIP_MODELS", str(Path(tiny_rgb).parent))          # where Image.open finds the model
    arr = arrays()[{1: "I;16", 2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[channels]]
    data = vaezip.compress(arr, tiny_rgb, classical=False)
    (tmp_path / "d.vz").write_bytes(data)
    (decoded,) = vaezip.decompress(data)
    with Image.open(tmp_path / "d.vz") as opened:
        opened.load()
        assert opened.mode == decoded.mode == {1: "I;16", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        assert np.array_equal(np.asarray(opened), np.asarray(decoded))
    expected = arr if channels == 1 else (arr >> 8).astype(np.uint8)
    assert np.array_equal(np.asarray(decoded), expected)
    if channels != 2:                                  # Pillow reads a 16-bit gray + alpha PNG as RGBA
        assert np.array_equal(np.asarray(decoded), np.asarray(Image.open(io.BytesIO(deep_png(channels)))))


def test_16_bit_scaled_from_8_bit_costs_about_what_8_bit_does():
    arr = smooth_image(48, 48, 3, seed=1)
    eight = len(vaezip.compress(arr, "photo", classical=False))
    sixteen = len(vaezip.compress(arr.astype(np.uint16) * 257, "photo", classical=False))
    assert sixteen < eight * 1.02 + 100                # the low bytes (equal to the high ones) cost next to nothing


def metadata_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "a test")
    info.add_itxt("Description", "naïve – ünïcode")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    info.add(b"gAMA", (45455).to_bytes(4, "big"))
    exif = Image.Exif()
    exif[0x0112] = 6                                   # orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(smooth_image(9, 12, 3)).save(buf, "PNG", pnginfo=info, dpi=(300, 300), exif=exif,
                                                  icc_profile=b"fake icc profile" * 4)
    return buf.getvalue()


def test_metadata_travels_and_strip_drops_it(tiny_rgb, tmp_path):
    (tmp_path / "m.png").write_bytes(metadata_png())
    runner = CliRunner()
    assert runner.invoke(main, ["compress", str(tmp_path / "m.png"), "--model", tiny_rgb]).exit_code == 0
    res = runner.invoke(main, ["info", str(tmp_path / "m.vz")])
    for key in ("exif", "xmp", "dpi", "gamma", "text:Title", "text:Description", "ICC profile"):
        assert key in res.output
    (tmp_path / "m.png").rename(tmp_path / "original.png")
    assert runner.invoke(main, ["decompress", str(tmp_path / "m.vz"), "--model", tiny_rgb]).exit_code == 0
    original, back = Image.open(tmp_path / "original.png"), Image.open(tmp_path / "m.png")
    assert back.getexif()[0x0112] == 6 and back.info["dpi"] == original.info["dpi"]
    assert back.info["icc_profile"] == original.info["icc_profile"] and back.info["gamma"] == 0.45455
    assert back.text["Title"] == "a test" and back.text["Description"] == "naïve – ünïcode"
    assert back.info["xmp"] == original.info["xmp"] and np.array_equal(np.asarray(back), np.asarray(original))
    assert runner.invoke(main, ["compress", str(tmp_path / "original.png"), "-o", str(tmp_path / "s.vz"),
                                "--model", tiny_rgb, "--strip"]).exit_code == 0
    record = unpack((tmp_path / "s.vz").read_bytes())[0].images[0]
    assert record.metadata == [] and record.icc == original.info["icc_profile"]


def test_pillow_plugin_open_save_and_seek(tiny_rgb, tmp_path, monkeypatch):
    monkeypatch.setenv("VAEZIP_MODELS", str(Path(tiny_rgb).parent))        # the model by name, as files record it
    frames = [Image.fromarray(smooth_image(10, 8, 3, seed=i)) for i in range(3)]
    frames[0].save(tmp_path / "one.vz", model=tiny_rgb, classical=False)
    with Image.open(tmp_path / "one.vz") as im:
        assert im.format == "VZ" and im.size == (8, 10) and im.mode == "RGB" and im.n_frames == 1
        assert np.array_equal(np.asarray(im), np.asarray(frames[0]))
    frames[0].save(tmp_path / "set.vz", save_all=True, append_images=frames[1:], model=tiny_rgb)
    with Image.open(tmp_path / "set.vz") as im:
        assert im.n_frames == 3 and im.is_animated
        for i in (2, 0, 1):
            im.seek(i)
            assert im.tell() == i and np.array_equal(np.asarray(im), np.asarray(frames[i]))
    palette = palette_image(bytes([255, 0, 128]))
    palette.save(tmp_path / "p.vz", model=tiny_rgb)
    with Image.open(tmp_path / "p.vz") as im:
        assert im.mode == "P" and np.array_equal(np.asarray(im), np.asarray(palette))
        assert im.getpalette()[:21] == palette.getpalette()[:21]


def test_lossy_input_warns_and_says_larger(tiny_rgb, tmp_path):
    buf = io.BytesIO()
    Image.fromarray(smooth_image(32, 32, 3)).save(buf, "JPEG", quality=30)
    (tmp_path / "j.jpg").write_bytes(buf.getvalue())
    res = CliRunner().invoke(main, ["compress", str(tmp_path / "j.jpg"), "--model", tiny_rgb])
    assert res.exit_code == 0
    assert "warning: " in res.output and "is lossy" in res.output and "larger than the input" in res.output


@pytest.mark.parametrize("files,expected", [(["mnist-test-0.png", "mnist-test-1.png"], "mnist"),
                                            (["cifar10-test-0.png", "cifar10-test-1.png"], "cifar10"),
                                            (["photo-crop.png"], "photo")])
def test_default_model_is_the_one_that_codes_shortest(files, expected):
    pictures = [read_image((ASSETS / "reference" / f).read_bytes()) for f in files]
    header = unpack(vaezip.compress(pictures if len(pictures) > 1 else pictures[0]))[0]
    assert header.model_coded and header.model == ""                             # shipped: named by its hash
    assert shipped_with_hash(header.weights).stem == expected


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """The README's Python block runs as written, in a folder with an image.png."""
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[1]
    (tmp_path / "image.png").write_bytes(write_png(read_image((ASSETS / "example.png").read_bytes())))
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
