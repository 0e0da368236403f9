"""End-to-end codec tests: exact round trips in every mode and size, archives, and every error path."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vaezip.cli import main
from vaezip.coding.stages import TileCoder
from vaezip.format.container import CodingParams, FormatError, unpack
from vaezip.format.image import read_image
from vaezip.nets.weights import load_network
from vaezip.pipeline import decode
from conftest import TINY, calibrated_model, compress, png_bytes, smooth_image

ROOT = Path(__file__).resolve().parent.parent
PARAMS = CodingParams(tile=16, batch=3)


def roundtrip(data: bytes, model: str, params: CodingParams = PARAMS, by_model: bool = False):
    """Compress and decompress; ``by_model``: the model codes the image even where a classical coder is shorter."""
    pic = read_image(data)
    vz = compress([pic], model, params, classical=not by_model)
    (back,) = decode(vz, model)
    return pic, back, vz


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("RGBA", 4), ("L", 1), ("LA", 2), ("1", 1)])
@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (16, 16), (33, 20)])
def test_roundtrip_modes_and_sizes(tiny_rgb, mode, channels, h, w):
    arr = smooth_image(h, w, channels, seed=h * w)
    if channels in (2, 4):
        arr[..., -1] = np.where(arr[..., 0] > 128, 255, 17)       # a two-valued alpha plane
    pic, back, _ = roundtrip(png_bytes(arr, mode), tiny_rgb, by_model=True)
    assert back.mode == pic.mode
    assert np.array_equal(back.color, pic.color)
    assert (back.alpha is None) == (pic.alpha is None)
    if pic.alpha is not None:
        assert np.array_equal(back.alpha, pic.alpha)


def test_grayscale_model_codes_grayscale_and_refuses_colour(tiny_gray):
    pic, back, _ = roundtrip(png_bytes(smooth_image(12, 9, 1), "L"), tiny_gray, by_model=True)
    assert np.array_equal(back.color, pic.color)
    with pytest.raises(ValueError, match="grayscale"):
        roundtrip(png_bytes(smooth_image(8, 8, 3), "RGB"), tiny_gray)


def test_icc_profile_and_png_output_kept(tiny_rgb):
    icc = b"fake-icc-profile-bytes" * 10
    pic, back, _ = roundtrip(png_bytes(smooth_image(9, 11, 3), "RGB", icc_profile=icc), tiny_rgb)
    assert back.icc == icc
    from vaezip.format.image import write_png
    again = read_image(write_png(back))
    assert again.icc == icc and np.array_equal(again.color, pic.color)


def test_estimate_is_close_to_the_coded_size(tiny_rgb):
    """The coder's quick estimate (model choice, screening) is within a few percent of what the model codes."""
    pic = read_image(png_bytes(smooth_image(64, 96, 3), "RGB"))
    params = CodingParams(tile=64, batch=2)
    estimate = TileCoder(load_network(tiny_rgb)[0], params).estimate_bits([pic.color])
    coded = 8 * len(compress([pic], tiny_rgb, params, classical=False))
    assert abs(coded - estimate) < 0.03 * coded + 600


def test_rate_is_close_to_the_model_elbo(tiny_rgb):
    """The file costs the model's -ELBO plus a bounded overhead (header, flush, initial bits)."""
    from vaezip.training.bound import image_bounds
    from vaezip.nets.weights import load_model
    pic, back, vz = roundtrip(png_bytes(smooth_image(48, 48, 3), "RGB"), tiny_rgb, CodingParams(tile=48, batch=1),
                              by_model=True)
    model, _, _ = load_model(tiny_rgb)
    elbo = image_bounds(model, [pic.color], k=1, tile=48, offsets=True).elbo_bits[0]
    assert np.array_equal(back.color, pic.color)
    assert abs(8 * len(vz) - elbo) < 0.03 * elbo + 600


def test_scale_offsets_win_back_an_overconfident_models_loss(tmp_path):
    """A model whose log-scales are all 2.5 too small: the coder's scale offsets win back a large part of the
    loss, and the file costs the -ELBO with offsets."""
    import torch
    from vaezip.training.bound import image_bounds
    from vaezip.nets.config import Config
    from vaezip.nets.weights import load_model, save_model
    model = calibrated_model(Config(channels=3, **TINY), seed=5)
    per_component = 3 * 3 + 3                           # weights, means, log-scales, coefficients
    with torch.no_grad():
        for net in model.stages:
            net.head.bias.view(-1, per_component)[:, 6:9] -= 2.5
    path = tmp_path / "overconfident.safetensors"
    save_model(model, path)
    model = load_model(str(path))[0]
    params = CodingParams(tile=32, batch=2)
    pic, back, vz = roundtrip(png_bytes(smooth_image(64, 64, 3), "RGB"), str(path), params, by_model=True)
    assert np.array_equal(back.color, pic.color)
    plain = image_bounds(model, [pic.color], tile=32, batch=2).elbo_bits[0]
    offset = image_bounds(model, [pic.color], tile=32, batch=2, offsets=True).elbo_bits[0]
    assert offset < 0.85 * plain
    assert abs(8 * len(vz) - offset) < 0.01 * offset + 600


def test_decoding_is_exact_with_another_thread_count(tmp_path):
    """A photo-size model: float convolutions would differ between thread counts, the integer ones do not."""
    import torch
    from vaezip.training.train import PRESETS
    from vaezip.nets.weights import save_model
    model = str(tmp_path / "photo_size.safetensors")
    save_model(calibrated_model(PRESETS["photo"], seed=3), model)
    pic = read_image(png_bytes(smooth_image(128, 192, 3), "RGB"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        vz = compress([pic], model, CodingParams(batch=2))
        torch.set_num_threads(1)
        (back,) = decode(vz, model)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(back.color, pic.color)


def test_cli_bound_plain_and_as_coded(tiny_rgb, tmp_path):
    import re
    from vaezip.training.bound import image_bounds
    from vaezip.nets.weights import load_model
    arr = smooth_image(40, 24, 3)
    (tmp_path / "a.png").write_bytes(png_bytes(arr, "RGB"))
    numbers = {}
    for flag in ([], ["--as-coded"]):
        res = CliRunner().invoke(main, ["bound", str(tmp_path / "a.png"), "--model", tiny_rgb, "-k", "8", *flag])
        assert res.exit_code == 0, res.output
        m = re.search(r"-ELBO ([\d.]+) ± nan, IWAE \(k=8\) ([\d.]+) ± nan bits/subpixel", res.output)
        numbers[bool(flag)] = float(m[1]), float(m[2])
    assert ", as coded:" in res.output
    for elbo, iwae in numbers.values():
        assert iwae <= elbo
    model, _, _ = load_model(tiny_rgb)
    expected = image_bounds(model, [arr.transpose(2, 0, 1).copy()], k=8, offsets=True)
    assert numbers[True][0] == pytest.approx(expected.elbo_bits[0] / expected.subpixels[0], abs=1e-4)
    assert numbers[True][0] < numbers[False][0] - 0.01        # the offsets help a random model


def test_archive_chains_images_and_restores_names(tiny_rgb, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (h, w) in enumerate([(20, 24), (16, 16), (5, 31)]):
        (folder / f"img{i}.png").write_bytes(png_bytes(smooth_image(h, w, 3, seed=i), "RGB"))
    (folder / "notes.txt").write_text("not an image")
    runner = CliRunner()
    res = runner.invoke(main, ["compress", str(folder), "-o", str(tmp_path / "set.vz"), "--model", tiny_rgb,
                               "--tile", "16"])
    assert res.exit_code == 0, res.output
    header, _ = unpack((tmp_path / "set.vz").read_bytes())
    assert header.archive and [r.name for r in header.images] == ["img0.png", "img1.png", "img2.png"]
    res = runner.invoke(main, ["decompress", str(tmp_path / "set.vz"), "-o", str(tmp_path / "out"),
                               "--model", tiny_rgb])
    assert res.exit_code == 0, res.output
    for i in range(3):
        a = np.asarray(Image.open(folder / f"img{i}.png"))
        b = np.asarray(Image.open(tmp_path / "out" / f"img{i}.png"))
        assert np.array_equal(a, b)


def test_monte_carlo_bits_back_round_trips_an_archive(tiny_gray):
    """12 single-tile images with N = 2 particles: batches 1, 1, 1, 1, 2, 2, 2, 2, the last four by BB-IS."""
    import vaezip
    images = [smooth_image(8 + i % 3, 9, 1, seed=i)[..., 0] for i in range(12)]
    one, two = (vaezip.compress(images, tiny_gray, particles=n, classical=False) for n in (1, 2))
    assert unpack(two)[0].params.particles == 2 and unpack(one)[1] != unpack(two)[1]
    coder = TileCoder(load_network(tiny_gray)[0], CodingParams(particles=2))
    real = np.ones((1, 16, 16), bool)
    assert [type(coder.batch((1, 1, 16, 16), real, i)).__name__ for i in range(6)] == \
        ["Choice", "BBANS", "BBANS", "BBANS", "BBIS", "BBIS"]
    for data in (one, two):
        assert all(np.array_equal(a, b) for a, b in zip(vaezip.decompress(data, arrays=True, model=tiny_gray), images))


def test_cli_single_file_defaults_and_force(tiny_rgb, tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(png_bytes(smooth_image(10, 12, 3), "RGB"))
    runner = CliRunner()
    res = runner.invoke(main, ["compress", str(src), "--model", tiny_rgb])
    assert res.exit_code == 0 and "bits/subpixel" in res.output
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.vz").stat().st_mode & 0o777 == 0o666 & ~umask     # as any new file, not owner-only
    res = runner.invoke(main, ["compress", str(src), "--model", tiny_rgb])
    assert res.exit_code == 1 and "already exists" in res.output
    src.unlink()
    res = runner.invoke(main, ["decompress", str(tmp_path / "a.vz"), "--model", tiny_rgb])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(src)), smooth_image(10, 12, 3))
    res = runner.invoke(main, ["info", str(tmp_path / "a.vz")])
    coded = unpack((tmp_path / "a.vz").read_bytes())[0].model_coded
    assert res.exit_code == 0 and "12x10 RGB" in res.output and ("lanes" in res.output) == coded
    assert ("model: none" in res.output) != coded
    assert f"version {(tmp_path / 'a.vz').read_bytes()[4]}" in res.output


def test_cli_stdin_to_stdout(tiny_rgb):
    data = png_bytes(smooth_image(6, 7, 3), "RGB")
    runner = CliRunner()
    res = runner.invoke(main, ["compress", "-", "--model", tiny_rgb], input=data)
    assert res.exit_code == 0
    vz = res.stdout_bytes
    assert vz.startswith(b"VAEZ")
    res = runner.invoke(main, ["decompress", "-", "--model", tiny_rgb], input=vz)
    assert res.exit_code == 0
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(res.stdout_bytes))), smooth_image(6, 7, 3))


# ---- errors: one line, exit code 1, no output file ------------------------------------------------------------------
@pytest.fixture()
def vz_file(tiny_rgb, tmp_path) -> Path:
    src = tmp_path / "b.png"
    src.write_bytes(png_bytes(smooth_image(12, 12, 3), "RGB"))
    assert CliRunner().invoke(main, ["compress", str(src), "--model", tiny_rgb, "--model-only"]).exit_code == 0
    src.unlink()
    return tmp_path / "b.vz"


def test_a_file_without_model_coded_images_decodes_without_its_model(tiny_rgb, tmp_path):
    """A random model loses to a classical coding, so the file holds no model-coded image: decoding it neither
    needs the (here unknown) model nor loads torch or numba (the coder's compiled loops)."""
    import subprocess
    import sys
    src = tmp_path / "c.png"
    src.write_bytes(png_bytes(smooth_image(12, 12, 3), "RGB"))
    assert CliRunner().invoke(main, ["compress", str(src), "--model", tiny_rgb]).exit_code == 0
    header, _ = unpack((tmp_path / "c.vz").read_bytes())
    assert header.images[0].layers == []
    code = ("import sys; from vaezip.cli import main; sys.argv = ['vaezip', 'decompress', sys.argv[1], '-o', "
            "sys.argv[2]]\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code\n"
            "assert 'torch' not in sys.modules and 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.vz"), str(tmp_path / "back.png")], check=True)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "back.png")), np.asarray(Image.open(src)))


def _fails(args, match, tmp_path, input=None):
    before = set(tmp_path.rglob("*"))
    res = CliRunner().invoke(main, args, input=input)
    assert res.exit_code == 1, res.output
    assert match in res.output
    assert "Traceback" not in res.output
    assert set(tmp_path.rglob("*")) == before            # nothing written, no temporary left behind


def test_error_not_an_image(tiny_rgb, tmp_path):
    (tmp_path / "x.png").write_text("hello")
    _fails(["compress", str(tmp_path / "x.png"), "--model", tiny_rgb],
           "x.png: not a readable image (not a format Pillow reads)", tmp_path)


@pytest.mark.parametrize("mode", ["CMYK", "I", "F"])
def test_error_unsupported_mode(tiny_rgb, tmp_path, mode):
    im = Image.new(mode, (5, 4))
    im.save(tmp_path / "x.tif")
    _fails(["compress", str(tmp_path / "x.tif"), "--model", tiny_rgb], "unsupported image mode", tmp_path)


def test_8_bit_bmp_whose_row_stride_has_16_in_it_is_accepted(tiny_rgb):
    arr = smooth_image(4, 54, 3)                       # BMP rows of 164 bytes: "16" in Pillow's tile arguments
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "BMP")
    pic, back, _ = roundtrip(buf.getvalue(), tiny_rgb)
    assert np.array_equal(pic.color, arr.transpose(2, 0, 1)) and np.array_equal(back.color, pic.color)


def test_error_missing_input(tmp_path):
    _fails(["compress", str(tmp_path / "nope.png")], "no such file", tmp_path)
    _fails(["decompress", str(tmp_path / "nope.vz")], "no such file", tmp_path)


def test_error_existing_output(vz_file, tiny_rgb, tmp_path):
    (tmp_path / "b.png").write_bytes(b"keep me")
    _fails(["decompress", str(vz_file), "--model", tiny_rgb], "already exists", tmp_path)
    assert (tmp_path / "b.png").read_bytes() == b"keep me"


def test_error_truncated(vz_file, tiny_rgb, tmp_path):
    data = vz_file.read_bytes()
    for cut in (3, 10, len(data) // 2, len(data) - 1):
        vz_file.write_bytes(data[:cut])
        _fails(["decompress", str(vz_file), "--model", tiny_rgb], "vz file", tmp_path)


def test_error_flipped_bytes(vz_file, tiny_rgb, tmp_path):
    data = bytearray(vz_file.read_bytes())
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, len(data), 8):
        bad = data.copy()
        bad[pos] ^= 1 << int(rng.integers(8))
        vz_file.write_bytes(bytes(bad))
        _fails(["decompress", str(vz_file), "--model", tiny_rgb], "vz file", tmp_path)


def test_error_trailing_garbage_and_unknown_version(vz_file, tiny_rgb, tmp_path):
    data = vz_file.read_bytes()
    vz_file.write_bytes(data + b"\0")
    _fails(["decompress", str(vz_file), "--model", tiny_rgb], "corrupt", tmp_path)
    vz_file.write_bytes(data[:4] + b"\x09" + data[5:])
    _fails(["decompress", str(vz_file), "--model", tiny_rgb], "unsupported .vz format version 9", tmp_path)


def test_error_wrong_or_missing_model(vz_file, tiny_gray, tmp_path):
    _fails(["decompress", str(vz_file)], "unknown model", tmp_path)
    _fails(["decompress", str(vz_file), "--model", tiny_gray], "other weights", tmp_path)
    _fails(["decompress", str(vz_file), "--model", str(tmp_path / "none.safetensors")], "not found", tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{}")
    before = set(tmp_path.rglob("*"))
    res = CliRunner().invoke(main, ["compress", str(ROOT / "assets" / "example.png"), "-o",
                                    str(tmp_path / "e.vz"), "--model", str(tmp_path / "junk.safetensors")])
    assert res.exit_code == 1 and "cannot load model" in res.output and set(tmp_path.rglob("*")) == before


def test_error_weights_without_integer_networks(tmp_path):
    """A weights file with a configuration but float weights only (an older vaezip's) is refused in one line."""
    import json
    from dataclasses import asdict
    from safetensors.numpy import save_file
    from vaezip.nets.config import Config
    path = tmp_path / "old.safetensors"
    save_file({"encoder.conv_in.weight": np.zeros((4, 3, 3, 3), np.float32)}, str(path),
              metadata={"config": json.dumps(asdict(Config(**TINY)))})
    res = CliRunner().invoke(main, ["compress", str(ROOT / "assets" / "example.png"), "-o", str(tmp_path / "e.vz"),
                                    "--model", str(path), "--model-only"])
    assert res.exit_code == 1 and "not an integer model" in res.output
    assert not (tmp_path / "e.vz").exists()


def test_error_absurd_header_sizes(vz_file):
    import struct
    import zlib
    from vaezip.format.container import FLAG_MODEL, FLAG_PARAMS, MAGIC, VERSION
    # a header that claims 2^40 x 2^40 pixels, with a valid checksum: refused before any allocation
    body = MAGIC + bytes([VERSION, FLAG_MODEL | FLAG_PARAMS]) + b"\x05photo" + b"\0" * 8 + \
        b"\x40\x10\x0a\x14\x12\x01\x01\x00\x01\x01\x02\x00" + b"\x80\x80\x80\x80\x80\x20" * 2 + b"\0\0" + b"\0" * 8
    with pytest.raises(FormatError, match="height 1099511627776 is outside 1..1048576"):
        unpack(body + struct.pack("<I", zlib.crc32(body)))


def test_no_traceback_in_a_real_process(tmp_path):
    (tmp_path / "x.png").write_text("hello")
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "compress", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "not a readable image" in proc.stderr
    assert not (tmp_path / "x.vz").exists()


def test_container_deflates_repetitive_image_tables_and_bounds_them():
    from vaezip.format.container import FLAG_DEFLATED, Header, ImageRecord, pack
    images = [ImageRecord(f"digit{i:05d}.png", "L", 28, 28) for i in range(500)]
    header = Header("mnist", b"h" * 8, CodingParams(128, 8), 3, True, images, b"c" * 8)
    data = pack(header, b"payload")
    assert data[5] & FLAG_DEFLATED and len(data) < 500 * 4     # far below ~16 bytes of records per image
    back, payload = unpack(data)
    assert payload == b"payload" and back == header
    header.images = [ImageRecord("q7Zx.png", "L", 28, 28)]
    assert not pack(header, b"")[5] & FLAG_DEFLATED            # one short record: stored as it is
