"""Whole datasets through the command line: the throughput of ``vaezip compress DIR --shard K --jobs N`` against
``--jobs 1`` on CIFAR-10 test images as a folder of PNGs (every shard decoded and compared), and the cost of stored
file names: MNIST test images named ``mnist_00000.png`` ... as one archive, with and without their names.

    python bench/datasets.py                      # writes bench/results/datasets.md and .json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vaezip.training.data import load_cifar10, load_mnist  # noqa: E402

VAEZIP = [sys.executable, "-m", "vaezip"]


def export(images: np.ndarray, folder: Path, prefix: str) -> None:
    folder.mkdir(parents=True)
    for i, x in enumerate(images):
        Image.fromarray(x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)).save(folder / f"{prefix}_{i:05d}.png")


def timed(args: list[str], cpu: list | None = None) -> float:
    """Wall seconds of a vaezip command; ``cpu`` gets its CPU seconds (user and system, its workers included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(VAEZIP + args, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall


def same_pixels(a: Path, b: Path) -> bool:
    with Image.open(a) as x, Image.open(b) as y:
        return x.mode == y.mode and x.tobytes() == y.tobytes()


def throughput(work: Path, images: int, shard: int, jobs: int, runs: int, root: Path | None) -> dict:
    folder = work / "cifar"
    export(load_cifar10("test", root)[:images], folder, "cifar")
    seconds, cores = {}, {}
    for n in (1, jobs):
        times, cpu = [], []
        for r in range(runs):
            times.append(timed(["compress", str(folder), "--shard", str(shard), "--jobs", str(n), "-o",
                                str(work / f"vz{n}"), "-q", "--force"], cpu))
        seconds[n] = statistics.median(times)
        cores[n] = statistics.median(c / t for c, t in zip(cpu, times))
    back = work / "back"
    decode = timed(["decompress", str(work / f"vz{jobs}"), "--jobs", str(jobs), "-o", str(back), "-q"])
    restored = sorted(back.glob("shard-*/*.png"))
    exact = len(restored) == images and all(same_pixels(p, folder / p.name) for p in restored)
    identical = all((work / "vz1" / p.name).read_bytes() == p.read_bytes() for p in (work / f"vz{jobs}").iterdir())
    size = sum(p.stat().st_size for p in (work / "vz1").iterdir())
    return {"images": images, "shard": shard, "jobs": jobs, "seconds": {str(k): round(v, 2) for k, v in
                                                                          seconds.items()},
            "speedup": round(seconds[1] / seconds[jobs], 2), "decompress_seconds": round(decode, 2),
            "busy_cores": {str(k): round(v, 2) for k, v in cores.items()},
            "bits_per_subpixel": round(8 * size / (images * 3 * 32 * 32), 4), "exact": exact,
            "identical_shards": identical}


def names(work: Path, images: int, particles: int, root: Path | None) -> dict:
    folder = work / "mnist"
    export(load_mnist("test", root)[:images], folder, "mnist")
    out = {}
    for label, extra in (("named", []), ("unnamed", None)):
        vz = work / f"mnist-{label}.vz"
        if extra is None:               # the same archive through the API, without names
            import vaezip
            files = sorted(folder.iterdir())
            vz.write_bytes(vaezip.compress([Image.open(p) for p in files], "mnist", particles=particles))
        else:
            timed(["compress", str(folder), "-o", str(vz), "--model", "mnist", "--particles", str(particles), "-q"])
        out[label] = round(8 * vz.stat().st_size / (images * 28 * 28), 4)
    out["bytes_per_name"] = round((out["named"] - out["unnamed"]) * images * 28 * 28 / 8 / images, 2)
    return {"images": images, "particles": particles, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--shard", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--mnist", type=int, default=2000)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speed = throughput(Path(tmp), args.images, args.shard, args.jobs, args.runs, args.data)
        named = names(Path(tmp), args.mnist, args.particles, args.data)
    result = {"command": " ".join(["python", "bench/datasets.py"] + sys.argv[1:]), "machine":
              f"{platform.machine()}, {os.cpu_count()} cores", "throughput": speed, "names": named}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "datasets.json").write_text(json.dumps(result, indent=1) + "\n")
    s = speed
    md = f"""# Whole datasets

`{result['command']}` on {result['machine']}.

## Throughput: `vaezip compress DIR --shard {s['shard']} --jobs N -o OUT`

The first {s['images']} CIFAR-10 test images as a folder of PNGs, default settings, {args.runs} run(s) (median).

| processes | seconds | images/s | cores busy (CPU seconds / wall seconds) |
|---:|---:|---:|---:|
| 1 | {s['seconds']['1']} | {s['images'] / s['seconds']['1']:.0f} | {s['busy_cores']['1']} |
| {s['jobs']} | {s['seconds'][str(s['jobs'])]} | {s['images'] / s['seconds'][str(s['jobs'])]:.0f} | {s['busy_cores'][str(s['jobs'])]} |

{s['jobs']} processes: {s['speedup']} x the throughput of one. One process already keeps more than one core busy
(the convolutions' matrix products run in OpenBLAS's threads); the workers run one thread each. The shards are {s['bits_per_subpixel']} bits/subpixel;
{'byte for byte the same' if s['identical_shards'] else 'NOT the same'} with 1 and {s['jobs']} processes;
`vaezip decompress OUT --jobs {s['jobs']}` took {s['decompress_seconds']} s and gave back
{'every pixel of every image' if s['exact'] else 'DIFFERENT PIXELS'}.

## File names in an archive

The first {named['images']} MNIST test images named `mnist_00000.png` ... as one archive, `--model mnist --particles
{named['particles']}`: {named['named']} bits/dim with their names stored (the command line), {named['unnamed']}
without names (the API), {named['bytes_per_name']} bytes a name.
"""
    (args.out / "datasets.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
