#!/usr/bin/env python
"""Speed of vaezip beside cjxl/djxl (JPEG XL lossless, effort 7) in one run, on this machine.

    python bench/speed.py [--runs 3] [--large] [--photos [--baseline REV]] [--data PATH] [--out bench/results]

Measures, as medians of ``--runs`` runs: two Kodak photos (768 x 512), kodim01 and kodim05, through the command
line (wall time, start-up included) against ``cjxl -d 0 -e 7`` and ``djxl``; a 32 x 32 image through the Python API
with the model loaded; 1000 CIFAR-10 test images as one archive (MB/s of raw pixels); with ``--large``, a 3840 x
3072 mosaic of Kodak photos through the command line, by default and with ``--model-only`` (peak memory too); with
``--photos``, kodim05 coded by the photo model alone in process (``--baseline REV``: by revision REV's code too, in
the same run) and the 24 Kodak photos as one archive through the command line, by default and model only, beside
the summed cjxl/djxl times of the photos one by one. Every vaezip output is decoded and compared. Needs cjxl and
djxl (Debian: ``apt-get install libjxl-tools``). Writes <out>/speed.md and .json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

import vaezip
from vaezip.training.data import kodak_paths, load_cifar10
from identical import revision

RESULTS = Path(__file__).resolve().parent / "results"


PEAK = {}      # command name -> largest peak resident memory seen, MB


def timed(cmd: list[str], name: str = "") -> float:
    """Wall seconds of a command; its peak resident memory goes to PEAK[name]."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    proc.stderr.close()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed: {stderr.decode()[-500:]}")
    PEAK[name] = max(PEAK.get(name, 0), usage.ru_maxrss / 1024)
    return seconds


def median(fn, runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def cli_pair(image: Path, tmp: Path, runs: int, options: tuple[str, ...] = (), memory: bool = False) -> dict:
    """vaezip compress/decompress (with ``options``) and cjxl/djxl wall times on one image file, exactness checked;
    with ``memory``, the peak resident memory of each command too."""
    vz, png, jxl, back = tmp / "x.vz", tmp / "x.png", tmp / "x.jxl", tmp / "back.png"
    vaezip_cmd = [sys.executable, "-c", "from vaezip.cli import main; main()"]
    commands = {"vaezip compress": vaezip_cmd + ["compress", str(image), "-o", str(vz), "--force", "-q", *options],
                "vaezip decompress": vaezip_cmd + ["decompress", str(vz), "-o", str(png), "--force", "-q"],
                "cjxl -d 0 -e 7": ["cjxl", str(image), str(jxl), "-d", "0", "-e", "7", "--quiet"],
                "djxl": ["djxl", str(jxl), str(back), "--quiet"]}
    PEAK.clear()
    out = {name: median(lambda: timed(cmd, name), runs) for name, cmd in commands.items()}
    if memory:
        out.update({f"{name} peak MB": PEAK[name] for name in commands})
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(image)))
    subpixels = 3 * Image.open(image).width * Image.open(image).height
    out["vaezip bits/subpixel"] = 8 * vz.stat().st_size / subpixels
    out["JPEG XL bits/subpixel"] = 8 * jxl.stat().st_size / subpixels
    return out


def tiny_api(runs: int) -> dict:
    """A 32 x 32 CIFAR-10 image through vaezip.compress / vaezip.decompress, model loaded: median milliseconds."""
    arr = load_cifar10("test")[0].transpose(1, 2, 0).copy()
    vaezip.decompress(vaezip.compress(arr, "cifar10"))           # load the model once
    data = vaezip.compress(arr, "cifar10")
    enc = median(lambda: _seconds(lambda: vaezip.compress(arr, "cifar10")), max(runs, 5))
    dec = median(lambda: _seconds(lambda: vaezip.decompress(data, arrays=True)), max(runs, 5))
    assert np.array_equal(vaezip.decompress(data, arrays=True)[0], arr)
    return {"compress ms": 1000 * enc, "decompress ms": 1000 * dec}


def cifar_archive(runs: int) -> dict:
    images = list(load_cifar10("test")[:1000].transpose(0, 2, 3, 1))
    raw_mb = sum(x.size for x in images) / 1e6
    data = vaezip.compress(images, "cifar10")
    enc = median(lambda: _seconds(lambda: vaezip.compress(images, "cifar10")), runs)
    dec = median(lambda: _seconds(lambda: vaezip.decompress(data, arrays=True)), runs)
    assert all(np.array_equal(a, b) for a, b in zip(vaezip.decompress(data, arrays=True), images))
    return {"compress MB/s": raw_mb / enc, "decompress MB/s": raw_mb / dec,
            "bits/subpixel": 8 * len(data) / raw_mb / 1e6}


MODEL_ONLY = """
import json, statistics, sys, time
import numpy as np
from PIL import Image
import vaezip
arr, runs = np.asarray(Image.open(sys.argv[1]).convert("RGB")), int(sys.argv[2])
data = vaezip.compress(arr, "photo", classical=False)
vaezip.decompress(data, arrays=True)                                # the model loaded, the loops compiled
times = {"compress s": [], "decompress s": []}
for _ in range(runs):
    t0 = time.perf_counter()
    data = vaezip.compress(arr, "photo", classical=False)
    times["compress s"].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    back = vaezip.decompress(data, arrays=True)[0]
    times["decompress s"].append(time.perf_counter() - t0)
assert np.array_equal(back, arr)
print(json.dumps({**{k: statistics.median(v) for k, v in times.items()}, "bits/subpixel": 8 * len(data) / arr.size}))
"""


def model_only(image: Path, runs: int, pythonpath: Path | None = None) -> dict:
    """One photo coded by the photo model alone (``classical=False``) through the Python API in another process,
    model loaded: median seconds each way, by this checkout's vaezip or the one on ``pythonpath``."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    proc = subprocess.run([sys.executable, "-c", MODEL_ONLY, str(image), str(runs)], capture_output=True, text=True,
                          env=env, cwd=pythonpath or None, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def photo_archive(paths: list[Path], tmp: Path, options: tuple[str, ...] = ()) -> dict:
    """The photos as one archive through the command line (with ``options``; one run each way, every pixel
    compared) beside the summed wall times of ``cjxl -d 0 -e 7`` and ``djxl`` on them one by one."""
    folder, vz, back = tmp / "photos", tmp / "photos.vz", tmp / "photos-back"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(back, ignore_errors=True)
    folder.mkdir()
    for p in paths:
        shutil.copy(p, folder / p.name)
    vaezip_cmd = [sys.executable, "-c", "from vaezip.cli import main; main()"]
    out = {"vaezip compress": timed(vaezip_cmd + ["compress", str(folder), "-o", str(vz), "--force", "-q",
                                                  *options]),
           "vaezip decompress": timed(vaezip_cmd + ["decompress", str(vz), "-o", str(back), "-q"]),
           "cjxl -d 0 -e 7, summed": 0.0, "djxl, summed": 0.0}
    jxl_bytes = 0
    for p in paths:
        out["cjxl -d 0 -e 7, summed"] += timed(["cjxl", str(p), str(tmp / "x.jxl"), "-d", "0", "-e", "7", "--quiet"])
        out["djxl, summed"] += timed(["djxl", str(tmp / "x.jxl"), str(tmp / "x.png"), "--quiet"])
        jxl_bytes += (tmp / "x.jxl").stat().st_size
    for p in paths:
        assert np.array_equal(np.asarray(Image.open(back / p.name)), np.asarray(Image.open(p)))
    subpixels = sum(3 * math.prod(Image.open(p).size) for p in paths)
    out["compress / cjxl"] = out["vaezip compress"] / out["cjxl -d 0 -e 7, summed"]
    out["decompress / djxl"] = out["vaezip decompress"] / out["djxl, summed"]
    out["vaezip bits/subpixel"] = 8 * vz.stat().st_size / subpixels
    out["JPEG XL bits/subpixel"] = 8 * jxl_bytes / subpixels
    return out


def _seconds(fn) -> float:
    """Seconds of fn()."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mosaic(data: Path | None, path: Path) -> None:
    """3840 x 3072 (11.8 MP): Kodak photos in their landscape orientation tiled 5 x 6 (the first six twice)."""
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in kodak_paths(data)]
    photos = [p if p.shape[0] == 512 else p.transpose(1, 0, 2) for p in photos]
    photos += photos[:30 - len(photos)]
    rows = [np.concatenate(photos[r * 5:(r + 1) * 5], axis=1) for r in range(6)]
    Image.fromarray(np.concatenate(rows, axis=0)[:3072, :3840]).save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--large", action="store_true", help="also the 11.8 MP mosaic (minutes)")
    p.add_argument("--photos", action="store_true", help="also the 24 Kodak photos as one archive, by default and "
                   "model only, and kodim05 model only in process (minutes)")
    p.add_argument("--baseline", metavar="REV", help="with --photos: kodim05 model only by git revision REV too")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    if not (shutil.which("cjxl") and shutil.which("djxl")):
        sys.exit("cjxl and djxl are needed (apt-get install libjxl-tools)")
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(),
              "runs": a.runs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report["kodim01"] = cli_pair(kodak_paths(a.data)[0], tmp, a.runs)
        report["kodim05"] = cli_pair(kodak_paths(a.data)[4], tmp, a.runs)
        if a.large:
            mosaic(a.data, tmp / "mosaic.png")
            report["mosaic"] = cli_pair(tmp / "mosaic.png", tmp, 1, memory=True)
            report["mosaic model"] = cli_pair(tmp / "mosaic.png", tmp, 1, ("--model-only", "--model", "photo"),
                                              memory=True)
        if a.photos:
            report["kodim05 model"] = model_only(kodak_paths(a.data)[4], a.runs)
            if a.baseline:
                with revision(a.baseline, tmp / "baseline") as path:
                    before = model_only(kodak_paths(a.data)[4], a.runs, path)
                report["kodim05 model"].update({f"{k}, {a.baseline}": v for k, v in before.items()})
            report["kodak"] = photo_archive(kodak_paths(a.data), tmp)
            report["kodak model"] = photo_archive(kodak_paths(a.data), tmp, ("--model-only", "--model", "photo"))
    report["tiny"] = tiny_api(a.runs)
    report["cifar"] = cifar_archive(a.runs)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "speed.json").write_text(json.dumps(report, indent=1) + "\n")
    flags = "".join(f" --{k} {v}" if isinstance(v, str) else f" --{k}" for k, v in
                    (("large", a.large), ("photos", a.photos), ("baseline", a.baseline)) if v)
    lines = ["# vaezip speed", "", f"Generated by `python bench/speed.py{flags}` on {report['date']}, "
             f"{report['cores']} cores; medians of {a.runs} runs.", ""]
    for key, title in (("kodim01", "kodim01 (768 x 512), command line wall time, seconds"),
                       ("kodim05", "kodim05 (768 x 512), command line wall time, seconds"),
                       ("mosaic", "3840 x 3072 mosaic, command line wall time, seconds (one run)"),
                       ("mosaic model", "3840 x 3072 mosaic, `--model-only --model photo`, seconds (one run)"),
                       ("kodim05 model", "kodim05, photo model only (`classical=False`), Python API, model "
                        "loaded, seconds (with --baseline: that revision's too)"),
                       ("kodak", "24 Kodak photos as one archive, command line, default settings, seconds (one run)"),
                       ("kodak model", "24 Kodak photos as one archive, `--model-only --model photo`, seconds "
                        "(one run)"),
                       ("tiny", "32 x 32 image, Python API, model loaded"),
                       ("cifar", "1000 CIFAR-10 test images as one archive, Python API")):
        if key in report:
            lines += [f"## {title}", "", "| measure | value |", "| --- | ---: |"]
            lines += [f"| {k} | {v:.3f} |" for k, v in report[key].items()] + [""]
    (a.out / "speed.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
