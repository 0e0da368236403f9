"""Archives that always decode: any mix of modes and sizes, unique safe names, hostile headers, all or nothing
written."""
from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from PIL import Image

import vaezip
from vaezip.cli import main
from vaezip.datasets import output_names
from vaezip.format.container import VERSION, CodingParams, FormatError, pack, unpack
from vaezip.nets.weights import ASSETS
from conftest import png_bytes, smooth_image

CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "1": 1}


def image_file(mode: str, h: int, w: int, seed: int, icc: bytes | None = None) -> bytes:
    arr = smooth_image(h, w, CHANNELS[mode], seed=seed)
    if mode in ("LA", "RGBA"):
        arr[..., -1] = np.where(arr[..., 0] > 100, 255, (seed * 37) % 256)
    return png_bytes(arr, mode, **({"icc_profile": icc} if icc else {}))


def pixels(data: bytes) -> tuple[str, bytes, bytes | None]:
    im = Image.open(io.BytesIO(data))
    return im.mode, im.tobytes(), im.info.get("icc_profile")


def archive_round_trip(model: str, folder: Path, files: list[tuple[str, bytes]], classical: bool = False
                       ) -> dict[str, bytes]:
    """Compress ``files`` (sub/name, bytes) as one archive (by the model alone unless ``classical``) and decompress
    it; {output name: bytes}."""
    paths = []
    for rel, data in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        paths.append(str(folder / rel))
    runner = CliRunner()
    res = runner.invoke(main, ["compress", *paths, "-o", str(folder / "set.vz"), "--model", model, "--tile", "32",
                               "--verify", "--classical" if classical else "--model-only"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["decompress", str(folder / "set.vz"), "-o", str(folder / "out"), "--model", model])
    assert res.exit_code == 0, res.output
    return {p.name: p.read_bytes() for p in (folder / "out").iterdir()}


@pytest.mark.parametrize("modes", [["RGB", "RGB", "RGB", "L"], ["RGB", "RGB", "L", "RGB"], ["L", "RGBA", "1", "LA"]])
def test_mixed_modes_in_one_archive(tiny_rgb, tmp_path, modes):
    files = [(f"img{i}.png", image_file(m, 16, 16, i)) for i, m in enumerate(modes)]
    out = archive_round_trip(tiny_rgb, tmp_path, files)
    assert sorted(out) == sorted(n for n, _ in files)
    for name, data in files:
        assert pixels(out[name]) == pixels(data)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])     # no shrinking: each example takes seconds
@given(spec=st.lists(st.tuples(st.sampled_from(list(CHANNELS)), st.integers(1, 70), st.integers(1, 90),
                               st.sampled_from(["a.png", "a.bmp", "b.png", "c.tif"]), st.booleans(),
                               st.sampled_from(["", "x/", "y/"])), min_size=2, max_size=8), classical=st.booleans())
def test_random_archives_round_trip_with_their_names(tiny_rgb, tmp_path_factory, spec, classical):
    folder = tmp_path_factory.mktemp("archive")
    files, seen = [], set()
    for i, (mode, h, w, name, icc, sub) in enumerate(spec):
        if (sub + name) in seen:                  # one file per path: equal names go to other folders
            sub = f"d{i}/"
        seen.add(sub + name)
        files.append((sub + name, image_file(mode, h, w, i, icc=b"profile%d" % i * 40 if icc else None)))
    out = archive_round_trip(tiny_rgb, folder, files, classical)
    names = output_names([Path(rel).name for rel, _ in files])
    assert sorted(out) == sorted(names)
    for name, (_, data) in zip(names, files):
        original = Image.open(io.BytesIO(data))
        back = pixels(out[name])
        assert back[0] == original.mode and back[1] == original.tobytes()
        assert back[2] == original.info.get("icc_profile")


def test_output_names_are_unique_and_keep_what_they_can():
    assert output_names(["x.png", "x.bmp", "y.bmp", "x.png", "X.PNG", "z.tif"]) == \
        ["x.png", "x.bmp.png", "y.png", "x-2.png", "X-3.png", "z.png"]
    assert output_names(["a.bmp", "a.tif", "a.bmp.png"]) == ["a.bmp.png", "a.tif.png", "a.bmp-2.png"]
    assert output_names(["", "image0.png", ""]) == ["image0.png", "image0-2.png", "image2.png"]


def test_archive_without_names(tiny_rgb, tmp_path):
    """The API stores no names by default (each costs bytes in an archive of small images); the CLI numbers them."""
    import vaezip
    images = [smooth_image(9, 7, 3, seed=s) for s in range(3)]
    data = vaezip.compress(images, tiny_rgb, classical=False)
    named = vaezip.compress(images, tiny_rgb, names=["first.png", "second.png", "third.png"], classical=False)
    assert [r.name for r in unpack(data)[0].images] == ["", "", ""] and len(data) < len(named)
    (tmp_path / "set.vz").write_bytes(data)
    res = CliRunner().invoke(main, ["decompress", str(tmp_path / "set.vz"), "-o", str(tmp_path / "out"),
                                    "--model", tiny_rgb])
    assert res.exit_code == 0, res.output
    for i, im in enumerate(images):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"image{i}.png")), im)


def hostile(vz: bytes, **changes) -> bytes:
    """The file with header fields changed and a valid CRC, as a hostile or buggy writer would make it."""
    header, payload = unpack(vz)
    for key, value in changes.items():
        if key in ("name", "height"):
            setattr(header.images[0], key, value)
        elif key == "params":
            header.params = CodingParams(**{**vars(header.params), **value})
        else:
            setattr(header, key, value)
    return pack(header, payload)


@pytest.fixture()
def archive(tiny_rgb, tmp_path) -> bytes:
    for i in range(2):
        (tmp_path / f"p{i}.png").write_bytes(image_file("RGB", 12, 9, i))
    res = CliRunner().invoke(main, ["compress", str(tmp_path / "p0.png"), str(tmp_path / "p1.png"), "-o",
                                    str(tmp_path / "a.vz"), "--model", tiny_rgb, "--model-only", "-q"])
    assert res.exit_code == 0 and res.output == ""          # --quiet: nothing on success
    data = (tmp_path / "a.vz").read_bytes()
    for p in tmp_path.iterdir():
        p.unlink()
    return data


def fails(args: list[str], tmp_path: Path, match: str) -> None:
    before = set(tmp_path.rglob("*"))
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert match in res.output and res.output.count("\n") == 1 and "Traceback" not in res.output
    assert set(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("changes,match", [
    ({"name": "../evil.png"}, "unsafe image name '../evil.png'"),
    ({"name": "sub/x.png"}, "unsafe image name"),
    ({"name": ".."}, "unsafe image name"),
    ({"images": []}, "image count 0 is outside"),
    ({"params": {"latent_bits": 13}}, "latent bits 13 is outside 1..12"),
    ({"params": {"latent_bits": 20, "posterior_precision": 24}}, "latent bits 20 is outside"),
    ({"params": {"posterior_precision": 9}}, "posterior precision must exceed"),
    ({"params": {"tile": 5000}}, "tile 5000 is outside"),
    ({"params": {"pixel_precision": 25}}, "pixel precision 25 is outside"),
    ({"lanes": 0}, "lane count 0 is outside"),
    ({"height": 0}, "height 0 is outside"),
])
def test_hostile_headers_give_one_line_errors(archive, tiny_rgb, tmp_path, changes, match):
    (tmp_path / "h.vz").write_bytes(hostile(archive, **changes))
    for command in (["info"], ["decompress", "--model", tiny_rgb]):
        fails([command[0], str(tmp_path / "h.vz"), *command[1:]], tmp_path, match)


def test_header_holds_the_model_fields_only_when_the_model_codes_an_image(archive, tiny_rgb, tmp_path):
    """A custom model is named, its non-default coding parameters written; a file of classical streams alone has no
    model fields and no rANS message; either kind with the other's flag is refused in one line."""
    from vaezip.format.container import FLAG_MODEL, FLAG_PARAMS
    header, payload = unpack(archive)
    assert archive[5] & FLAG_MODEL and not archive[5] & FLAG_PARAMS and header.model == Path(tiny_rgb).stem
    custom = unpack(hostile(archive, params={"tile": 64}))[0]
    assert custom.params.tile == 64 and custom.model == header.model
    (tmp_path / "p.png").write_bytes(image_file("RGB", 12, 9, 0))
    stored = CliRunner().invoke(main, ["compress", str(tmp_path / "p.png"), "-o", str(tmp_path / "s.vz"), "--model",
                                       tiny_rgb, "-q"])
    data = (tmp_path / "s.vz").read_bytes()
    plain, blob = unpack(data)
    assert stored.exit_code == 0 and not plain.model_coded and not data[5] & FLAG_MODEL
    # magic, version, flags; image count; its record (7 bytes and the stream's length); pixel checksum; stream; CRC
    assert len(data) == 6 + 1 + 9 + 8 + len(blob) + 4
    for bad, flags in ((data, data[5] | FLAG_MODEL), (archive, archive[5] & ~FLAG_MODEL)):
        body = bad[:5] + bytes([flags]) + bad[6:-4]
        (tmp_path / "bad.vz").write_bytes(body + zlib.crc32(body).to_bytes(4, "little"))
        fails(["decompress", str(tmp_path / "bad.vz"), "--model", tiny_rgb], tmp_path, "corrupt .vz file")


def test_shipped_models_are_named_by_their_weights_hash(tmp_path):
    """A file of a shipped model stores no name: decoding finds the model by its hash; an unknown hash is refused
    in one line."""
    arr = smooth_image(8, 8, 3)
    vz = vaezip.compress(arr, "cifar10", classical=False)
    header, _ = unpack(vz)
    assert header.model == "" and np.array_equal(vaezip.decompress(vz, arrays=True)[0], arr)
    (tmp_path / "a.vz").write_bytes(vz)
    res = CliRunner().invoke(main, ["info", str(tmp_path / "a.vz")])
    assert res.exit_code == 0 and "model: cifar10 (weights" in res.output
    (tmp_path / "b.vz").write_bytes(hostile(vz, weights=b"\1" * 8))
    fails(["decompress", str(tmp_path / "b.vz")], tmp_path, "needs a model that this vaezip does not ship")


def test_files_of_format_version_3_still_decode(tmp_path):
    """Files written by the previous format (tests/data, made by vaezip at format 3): a CIFAR-10 archive coded by
    the shipped model and a picture coded by a classical stream decode to their pixels; written again, both are
    shorter."""
    data = Path(__file__).parent / "data"
    for name, originals, names in (("v3-cifar10-archive.vz", ["v3-a.png", "v3-b.png"], ["a.png", "b.png"]),
                                   ("v3-classical.vz", ["v3-flat.png"], None)):
        vz = (data / name).read_bytes()
        header, _ = unpack(vz)
        assert vz[4] == header.version == 3
        arrays = [np.asarray(Image.open(data / f)) for f in originals]
        images = vaezip.decompress(vz, arrays=True)
        assert len(images) == len(arrays) and all(np.array_equal(a, b) for a, b in zip(images, arrays))
        again = vaezip.compress(arrays if names else arrays[0], "cifar10", names=names,
                                classical=not header.model_coded)
        assert unpack(again)[0].version == VERSION and len(again) < len(vz)
        (tmp_path / name).write_bytes(vz)
        res = CliRunner().invoke(main, ["info", str(tmp_path / name)])
        assert res.exit_code == 0 and "version 3" in res.output


def test_nothing_is_written_unless_everything_can_be(archive, tiny_rgb, tmp_path):
    (tmp_path / "a.vz").write_bytes(archive)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "p1.png").write_bytes(b"keep")
    fails(["decompress", str(tmp_path / "a.vz"), "--model", tiny_rgb], tmp_path, "p1.png: already exists")
    res = CliRunner().invoke(main, ["decompress", str(tmp_path / "a.vz"), "--model", tiny_rgb, "--force", "-q"])
    assert res.exit_code == 0 and res.output == ""
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["p0.png", "p1.png"]
    assert pixels((tmp_path / "a" / "p1.png").read_bytes()) == pixels(image_file("RGB", 12, 9, 1))


def test_bound_refuses_colour_images_for_a_grayscale_model(tiny_gray, tmp_path):
    (tmp_path / "c.png").write_bytes(image_file("RGB", 8, 8, 0))
    fails(["bound", str(tmp_path / "c.png"), "--model", tiny_gray], tmp_path, "is grayscale and cannot code colour")


def test_version_option_lists_every_model_version(tmp_path, tiny_gray, monkeypatch):
    """--version names the package's version and every model present, the earlier versions of shipped models and the
    models of $VAEZIP_MODELS included; ``vaezip models`` adds their cards and refuses nothing it cannot read."""
    from importlib.metadata import version
    from vaezip.nets.weights import file_hash, shipped_files
    monkeypatch.setenv("VAEZIP_MODELS", str(Path(tiny_gray).parent))
    res = CliRunner().invoke(main, ["--version"])
    lines = res.output.splitlines()
    assert res.exit_code == 0 and lines[0] == f"vaezip {version('vaezip-codec')}"
    assert {line.split()[1] for line in lines[1:]} == \
        {file_hash(p)[:8].hex() for p in shipped_files() + [Path(tiny_gray), Path(tiny_gray).with_name("tiny_rgb.safetensors")]
         if p.exists()}
    assert any("earlier version" in line and line.split()[0] == "cifar10" for line in lines)
    (Path(tiny_gray).parent / "junk.safetensors").write_bytes(b"not a model")
    try:
        res = CliRunner().invoke(main, ["models"])
    finally:
        (Path(tiny_gray).parent / "junk.safetensors").unlink()
    assert res.exit_code == 0 and "junk" in res.output and "not a vaezip model" in res.output
    assert "photo " in res.output and "validation" in res.output


def test_verify_reports_success(tiny_rgb, tmp_path):
    (tmp_path / "v.png").write_bytes(image_file("RGBA", 20, 11, 3))
    res = CliRunner().invoke(main, ["compress", str(tmp_path / "v.png"), "--model", tiny_rgb, "--verify"])
    assert res.exit_code == 0 and "verified" in res.output
    assert unpack((tmp_path / "v.vz").read_bytes())[0].images[0].mode == "RGBA"


def test_unknown_format_version_is_one_line(archive, tiny_rgb, tmp_path):
    (tmp_path / "old.vz").write_bytes(archive[:4] + b"\x02" + archive[5:])
    fails(["decompress", str(tmp_path / "old.vz"), "--model", tiny_rgb], tmp_path,
          "unsupported .vz format version 2 (this vaezip reads versions 3, 4, 5 and 6")
    with pytest.raises(FormatError):
        unpack(archive[:4] + b"\x02" + archive[5:])


@pytest.mark.parametrize("name, weights, references", [
    ("v5-photo.vz", "23598663100e2e1c", ["photo-crop.png"]),
    ("v4-photo.vz", "23598663100e2e1c", ["photo-crop.png"]),
    ("v4-cifar10.vz", "ba782776fc2ecd34", ["cifar10-test-0.png", "cifar10-test-1.png"]),
    ("v4-mnist.vz", "8f32e12eceff7069", ["mnist-test-0.png"]),
    ("v3-123fc91a-cifar10.vz", "123fc91a0f1e37fb", ["cifar10-test-0.png"]),
    ("v3-534b512b-cifar10.vz", "534b512b35fd035a", ["cifar10-test-0.png"])])
def test_files_of_every_shipped_weights_version_decode(name, weights, references):
    """Files coded by the model with each version of the weights and of the format that vaezip has shipped
    (tests/data, written by the vaezip of that version) decode to their pixels: a shipped model is never replaced,
    only added. The version-3 files name the model "cifar10", whose current weights are others: the decoder finds
    theirs by their hash."""
    vz = (Path(__file__).parent / "data" / name).read_bytes()
    header, _ = unpack(vz)
    assert header.model_coded and header.weights.hex() == weights
    assert (header.model, header.version) == ("cifar10" if name.startswith("v3") else "", int(name[1]))
    images = vaezip.decompress(vz, arrays=True)
    assert all(np.array_equal(a, np.asarray(Image.open(ASSETS / "reference" / f))) for a, f in zip(images, references))


def test_numbered_names_cost_next_to_nothing(tiny_gray):
    """Names that continue a numbered series are stored as one byte each (then deflated with the other records):
    500 digits named mnist_00000.png ... cost under 0.1 byte a name; any mix of names round trips."""
    from vaezip.format.container import next_name
    assert [next_name(n) for n in ("mnist_00009.png", "a9.png", "b.png", "x-7-099.tif")] == \
        ["mnist_00010.png", "a10.png", None, "x-7-100.tif"]
    digits = [smooth_image(4, 4, 1, seed=i)[..., 0] for i in range(500)]
    named = vaezip.compress(digits, tiny_gray, names=[f"mnist_{i:05d}.png" for i in range(500)], classical=False)
    bare = vaezip.compress(digits, tiny_gray, classical=False)
    assert len(named) - len(bare) < 50
    names = ["a.png", "img7.png", "img8.png", "img10.png", "img11.png", "b.png", "c1.png", "c2.png", "c2.png"]
    data = vaezip.compress([smooth_image(3, 3, 1, seed=i)[..., 0] for i in range(len(names))], tiny_gray,
                           names=names, classical=False)
    assert [r.name for r in unpack(data)[0].images] == names
