"""The benchmark end to end on three CIFAR-10 test images with a tiny random model: its numbers are consistent."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from vaezip.format.container import CodingParams
from vaezip.training.data import default_root, load_cifar10
from vaezip.format.image import Picture

pytest.importorskip("imagecodecs")
pytest.importorskip("matplotlib")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bpd  # noqa: E402
from baselines import baselines  # noqa: E402
from conftest import compress  # noqa: E402

N = 3
pytestmark = pytest.mark.skipif(not (default_root() / "cifar10").is_dir(), reason="CIFAR-10 data not present")


@pytest.fixture(scope="module")
def bench(tiny_rgb, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    report = bpd.run("cifar10", limit=N, iwae_k=4, model=tiny_rgb, runs=1, threads=1, out=out, log=lambda _: None)
    return report, out


@pytest.fixture(scope="module")
def images():
    return list(load_cifar10("test")[:N])


def rows(report):
    return {row["method"]: row for row in report["methods"]}


def test_outputs_written(bench):
    report, out = bench
    assert json.loads((out / "cifar10.json").read_text()) == json.loads(json.dumps(report))
    text = (out / "cifar10.md").read_text()
    assert "Published (not measured here)" in text and all(row["method"] in text for row in report["methods"])
    assert (out / "cifar10.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_method_exact_with_real_sizes(bench, images, tiny_rgb):
    report, _ = bench
    by_name = rows(report)
    assert len(by_name) == 2 + 7
    pictures = [Picture("RGB", x) for x in images]
    real = {"vaezip archive": len(compress(pictures, tiny_rgb, CodingParams(), archive=True)),
            "vaezip one at a time": sum(len(compress([p], tiny_rgb, CodingParams())) for p in pictures)}
    for b in baselines(1):
        real[b.name] = sum(len(b.encode(x.transpose(1, 2, 0))) for x in images)
    assert set(real) == set(by_name)
    for name, row in by_name.items():
        assert row["exact"], name
        assert row["images"] == N and row["subpixels"] == N * 3 * 32 * 32
        assert row["bytes"] == real[name], name
        assert row["bpd"] == pytest.approx(8 * row["bytes"] / row["subpixels"])


def test_overhead_parts_add_up(bench):
    report, _ = bench
    by_name = rows(report)
    for name, parts in report["overhead"].items():
        row = by_name[name]
        assert parts["file"] == 8 * row["bytes"]
        assert parts["checksums"] == 8 * (8 + 4) * row["files"]
        assert parts["header"] > 0 and (parts["flush"] > 0) == (parts["lanes"] > 0)    # no message, no flush
        assert parts["elbo"] + sum(parts[p] for p in bpd.OVERHEAD_PARTS) == pytest.approx(parts["file"])


def test_iwae_not_looser_than_elbo(bench):
    report, _ = bench
    b = report["bounds"]
    assert report["iwae_images"] == N and report["iwae_k"] == 4
    assert b["subset_iwae"][0] <= b["subset_elbo"][0] + 1e-9          # per image, by Jensen's inequality
    assert b["subset_iwae"][0] <= b["elbo"][0] + 3 * math.hypot(b["elbo"][1], b["subset_iwae"][1])
