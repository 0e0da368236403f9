#!/usr/bin/env python
"""Bits/dim benchmark of vaezip against standard lossless codecs (DESIGN.md §7).

    python bench/bpd.py cifar10 [--limit N] [--single-limit M] [--iwae-k K] [--iwae-limit L] [--model M]
                                [--data PATH] [--runs R] [--time-limit T] [--threads P] [--out bench/results]

codes the test images of DATASET (mnist, cifar10, kodak) with vaezip (one archive with bits back chained across
images, and one file per image) and with every baseline, decodes everything back and checks it bit-exact, times
encoding and decoding, computes the model's -ELBO and IWAE bounds and splits the real files' overhead over the
-ELBO. Writes <out>/<dataset>.md, .json and .png; ``run`` does the same in-process and returns the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import imagecodecs
import numpy as np
import PIL
import torch

from baselines import Baseline, baselines
from vaezip.training.bound import image_bounds, summary
import vaezip
from vaezip.format.container import CodingParams, unpack
from vaezip.training.data import kodak_paths, load_cifar10, load_mnist
from vaezip.format.image import Picture, read_image
from vaezip.format.planes import BYTES
from vaezip.entropy.rans import Message
from vaezip.nets.weights import load_model
from vaezip.options import EFFORTS

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = {   # title, default model, default image counts (None: all) for one-at-a-time, IWAE and timing
    "mnist": dict(title="MNIST test", model="mnist", single=200, iwae=200, time=200),
    "cifar10": dict(title="CIFAR-10 test", model="cifar10", single=200, iwae=200, time=200),
    "kodak": dict(title="Kodak", model="photo", single=None, iwae=4, time=4),
}
PUBLISHED = {   # DESIGN.md §7, bits/dim: (method, value, note)
    "mnist": [("PNG", 2.80, ""), ("WebP", 2.10, ""), ("BB-ANS", 1.48, ""), ("Bit-Swap", 1.29, "")],
    "cifar10": [("PNG", 5.87, ""), ("WebP", 4.61, ""), ("FLIF", 4.19, ""), ("Bit-Swap", 3.82, ""),
                ("HiLLoC", 3.56, ""), ("IDF", 3.34, ""), ("LBB", 3.12, ""),
                ("VDVAE", 2.87, "likelihood, not a codec"), ("PixelCNN++", 2.92, "likelihood, not a codec")],
    "kodak": [("PNG", 4.4, "approximate"), ("WebP", 3.2, "approximate"), ("JPEG XL -e7", 2.9, "approximate"),
              ("L3C", 3.3, "approximate"), ("iFlow", 2.5, "approximate")],
}
OVERHEAD_PARTS = ("header", "checksums", "flush", "remainder", "classical")


@dataclass(frozen=True)
class Method:
    name: str
    encode: Callable[[list[np.ndarray]], list[bytes]]      # colour planes (C, H, W) -> whole output files
    decode: Callable[[list[bytes]], list[np.ndarray]]      # files -> colour planes (C, H, W)
    notes: str


def load(dataset: str, root: Path | None) -> tuple[str, list[np.ndarray]]:
    """(Picture mode, colour planes (C, H, W) uint8) of the dataset's test images, in official order."""
    if dataset == "mnist":
        return "L", list(load_mnist("test", root))
    if dataset == "cifar10":
        return "RGB", list(load_cifar10("test", root))
    return "RGB", [read_image(p.read_bytes(), p.name).color for p in kodak_paths(root)]


def method_of_vaezip(mode: str, model: str, archive: bool, particles: int = 1, effort: str = "default") -> Method:
    """vaezip with default coding parameters (``particles`` importance samples per tile) at ``effort``: one archive
    of all images or one file each."""
    level = "" if effort == "default" else f", effort {effort}"
    code = lambda images: vaezip.compress(images, model, particles=particles, effort=effort)
    decode = lambda data: [p.color for p in vaezip.decompress(data, pictures=True, model=model)]
    if archive:
        return Method("vaezip archive", lambda xs: [code([Picture(mode, x) for x in xs])], lambda fs: decode(fs[0]),
                      f"one .vz file for all images (no names stored), bits back chained across them{level}")
    return Method("vaezip one at a time", lambda xs: [code(Picture(mode, x)) for x in xs],
                  lambda fs: [decode(f)[0] for f in fs], f"one .vz file per image{level}")


def per_image(b: Baseline) -> Method:
    def chw(d: np.ndarray) -> np.ndarray:
        return d.reshape(d.shape[0], d.shape[1], -1).transpose(2, 0, 1)
    return Method(b.name, lambda xs: [b.encode(x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)) for x in xs],
                  lambda fs: [chw(b.decode(f)) for f in fs], b.notes)


def same_pixels(decoded: np.ndarray, original: np.ndarray) -> bool:
    if decoded.shape[0] == 3 and original.shape[0] == 1:      # a grayscale image stored as RGB (WebP)
        original = np.repeat(original, 3, axis=0)
    return decoded.shape == original.shape and np.array_equal(decoded, original)


def _timed(fn: Callable, arg):
    """(fn(arg), its seconds)."""
    start = time.perf_counter()
    out = fn(arg)
    return out, time.perf_counter() - start


def measure(method: Method, images: list[np.ndarray], timing: int, runs: int) -> tuple[dict, list[bytes]]:
    """Code ``images`` once for sizes and exactness; speed is the median of ``runs`` runs on the first ``timing``
    images (the sizing run counts as one when those are all of them). Returns (row, files)."""
    files, enc_s = _timed(method.encode, images)
    decoded, dec_s = _timed(method.decode, files)
    enc, dec = ([enc_s], [dec_s]) if timing == len(images) else ([], [])
    while len(enc) < runs:
        again, seconds = _timed(method.encode, images[:timing])
        enc.append(seconds)
        dec.append(_timed(method.decode, again)[1])
    size, subpixels = sum(map(len, files)), sum(x.size for x in images)
    raw_mb = sum(x.size for x in images[:timing]) / 1e6
    exact = len(decoded) == len(images) and all(map(same_pixels, decoded, images))
    return dict(method=method.name, images=len(images), files=len(files), bytes=size, subpixels=subpixels,
                bpd=8 * size / subpixels, exact=exact, timing_images=timing, runs=runs,
                encode_mbps=raw_mb / statistics.median(enc), decode_mbps=raw_mb / statistics.median(dec),
                notes=method.notes), files


def overhead(files: list[bytes], bound_bits: np.ndarray) -> dict:
    """Bits of a set of .vz files split into header (without checksums), checksums (the pixels' and the file's
    CRC-32), per-lane flush (the folded heads), the rANS tail's remainder over the bound of the
    images it codes (``bound_bits``: one per image, in file order) and the bytes of images coded classically."""
    header = checksums = flush = tail = lanes = classical = 0
    elbo, images = 0.0, iter(bound_bits)
    for data in files:
        head, payload = unpack(data)
        blobs = sum(r.coded_bytes for r in head.images)
        words = Message.from_bytes(payload[:len(payload) - blobs], head.lanes).tail.size if head.model_coded else 0
        for r in head.images:
            bits = float(next(images))
            elbo += 0.0 if r.coding in BYTES else bits
        header += len(data) - len(payload) - 4 - len(head.checksum)
        checksums += len(head.checksum) + 4
        flush += len(payload) - blobs - 4 * words
        tail += 4 * words
        classical += blobs
        lanes += head.lanes if head.model_coded else 0
    return dict(file=8 * sum(map(len, files)), elbo=elbo, header=8 * header, checksums=8 * checksums,
                flush=8 * flush, remainder=8 * tail - elbo, classical=8 * classical, files=len(files), lanes=lanes)


def machine(threads: int) -> dict:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return dict(cores=os.cpu_count(), cpu=cpu or "unknown", threads=threads, platform=platform.platform(),
                python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
                pillow=PIL.__version__, imagecodecs=imagecodecs.__version__)


def run(dataset: str, limit: int | None = None, single_limit: int | None = None, iwae_k: int = 100,
        iwae_limit: int | None = None, model: str | None = None, data: str | None = None, runs: int = 3,
        time_limit: int | None = None, threads: int | None = None, particles: int = 1, effort: str = "default",
        out: str | Path = RESULTS, log: Callable[[str], None] = print) -> dict:
    """Run the benchmark on one dataset, write <out>/<dataset>.md, .json and .png and return the report."""
    started = time.perf_counter()
    options = dict(limit=limit, single_limit=single_limit, iwae_k=iwae_k, iwae_limit=iwae_limit, model=model,
                   data=data, runs=runs, time_limit=time_limit, threads=threads,
                   particles=particles if particles > 1 else None, effort=None if effort == "default" else effort)
    spec = DATASETS[dataset]
    threads = threads or os.cpu_count()
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = model or spec["model"]
        mode, images = load(dataset, Path(data) if data else None)
        images = images[:limit]
        count = lambda given, default: min(len(images), given or default or len(images))
        single, iwae_n, timing = (count(single_limit, spec["single"]), count(iwae_limit, spec["iwae"]),
                                  count(time_limit, spec["time"]))
        vae, name, digest = load_model(model)
        log(f"{spec['title']}: {len(images)} images, model {name} ({model}), {threads} thread(s)")

        params = CodingParams()
        elbo = image_bounds(vae, images, 1, params.tile, params.batch)
        coded_elbo = image_bounds(vae, images, 1, params.tile, params.batch, offsets=True)
        coded_bound = (coded_elbo.elbo_bits if particles == 1 else
                       image_bounds(vae, images, particles, params.tile, params.batch, offsets=True).iwae_bits)
        subset = image_bounds(vae, images[:iwae_n], iwae_k, params.tile, params.batch)
        bounds = dict(elbo=summary(elbo.elbo_bits, elbo.subpixels),
                      calibrated=summary(coded_elbo.elbo_bits, coded_elbo.subpixels),
                      subset_elbo=summary(subset.elbo_bits, subset.subpixels),
                      subset_iwae=summary(subset.iwae_bits, subset.subpixels))
        log(f"  -ELBO {bounds['elbo'][0]:.4f} ± {bounds['elbo'][1]:.4f} (calibrated {bounds['calibrated'][0]:.4f}); "
            f"first {iwae_n}: IWAE (k={iwae_k}) "
            f"{bounds['subset_iwae'][0]:.4f} ± {bounds['subset_iwae'][1]:.4f}")

        rows, costs = [], {}
        for method, coded in [(method_of_vaezip(mode, model, True, particles, effort), images),
                              (method_of_vaezip(mode, model, False, particles, effort), images[:single]),
                              *((per_image(b), images) for b in baselines(threads))]:
            row, files = measure(method, coded, min(timing, len(coded)), runs)
            rows.append(row)
            if method.name.startswith("vaezip"):
                costs[method.name] = overhead(files, coded_bound[:len(coded)])
            log(f"  {row['method']:<22} {row['bpd']:7.4f} bits/dim  encode {row['encode_mbps']:8.3g} MB/s  "
                f"decode {row['decode_mbps']:8.3g} MB/s  {'exact' if row['exact'] else 'NOT EXACT'}")
    finally:
        torch.set_num_threads(saved_threads)

    report = dict(dataset=dataset, title=spec["title"], model=name, model_arg=model, weights_sha256=digest.hex(),
                  particles=particles,
                  mode=mode, images=len(images), subpixels=int(elbo.subpixels.sum()), single_images=single,
                  iwae_images=iwae_n, iwae_k=iwae_k, timing_images=timing, runs=runs,
                  command=command_line(dataset, options),
                  date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine=machine(threads),
                  wall_s=time.perf_counter() - started, bounds=bounds, methods=rows, overhead=costs,
                  published=[dict(method=m, bpd=v, note=n) for m, v, n in PUBLISHED[dataset]])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{dataset}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{dataset}.md").write_text(markdown(report))
    plot(report, out / f"{dataset}.png")
    log(f"  wall time {report['wall_s']:.1f} s; wrote {out / dataset}.md, .json, .png")
    return report


def command_line(dataset: str, options: dict) -> str:
    """The shell command that repeats a run with these options."""
    words = ["python", "bench/bpd.py", dataset]
    for key, value in options.items():
        if value is not None:
            words += [f"--{key.replace('_', '-')}", str(value)]
    return shlex.join(words)


def markdown(r: dict) -> str:
    """The report as a markdown page."""
    b, m = r["bounds"], r["machine"]
    lines = [f"# vaezip benchmark: {r['title']}", "",
             f"Generated by `{r['command']}` on {r['date']}; model `{r['model']}` "
             f"(weights sha256 `{r['weights_sha256'][:16]}`).", "",
             f"- Images: {r['images']} ({r['subpixels']:,} subpixels) for the archive and the baselines; "
             f"the first {r['single_images']} coded one at a time; the first {r['iwae_images']} for IWAE.",
             f"- Speeds: MB/s of raw pixels (1 byte per subpixel), median of {r['runs']} run(s) on the first "
             f"{r['timing_images']} images (per method: the smaller of this and its image count).",
             "- bits/dim = 8 x (bytes of all output files) / subpixels; every output was decoded and compared "
             "with the original pixels.",
             f"- Machine: {m['cores']} cores ({m['cpu']}), {m['threads']} thread(s) for torch, JPEG 2000 and "
             f"the JPEG XL baselines (vaezip's NumPy networks and its own JPEG XL streams use every core); "
             f"{m['platform']}, Python {m['python']}, torch {m['torch']}, Pillow {m['pillow']}, "
             f"imagecodecs {m['imagecodecs']}.",
             f"- Wall time of the whole run: {r['wall_s']:.0f} s.", "",
             "## Measured", "",
             "| method | images | bits/dim | encode MB/s | decode MB/s | exact | notes |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for row in r["methods"]:
        lines.append(f"| {row['method']} | {row['images']} | {row['bpd']:.4f} | {row['encode_mbps']:.3g} | "
                     f"{row['decode_mbps']:.3g} | {'yes' if row['exact'] else '**NO**'} | {row['notes']} |")
    lines += ["", "## Model bounds (bits/dim, mean ± standard error over images)", "",
              f"- −ELBO (1 sample per image, {r['images']} images): {b['elbo'][0]:.4f} ± {b['elbo'][1]:.4f}",
              f"- −ELBO with the codec's scale calibration (per tile, stage and channel; the offsets' cost "
              f"included): {b['calibrated'][0]:.4f} ± {b['calibrated'][1]:.4f}",
              f"- first {r['iwae_images']} images, k = {r['iwae_k']}: −ELBO {b['subset_elbo'][0]:.4f} ± "
              f"{b['subset_elbo'][1]:.4f}, IWAE {b['subset_iwae'][0]:.4f} ± {b['subset_iwae'][1]:.4f}", "",
              f"## Overhead of the real files over the calibrated {bound_name(r)}", "",
              "Header: everything before the payload except the pixel checksum. Checksums: 8 bytes per file "
              "plus the file's 4-byte CRC-32. Flush: the folded per-lane rANS heads. "
              f"Remainder: the rANS tail minus {bound_name(r)} (initial bits, latent and pixel quantization, coding "
              "loss). Classical: the bytes of images coded with JPEG XL, PNG or stored, outside the bound.", "",
              "| | " + " | ".join(f"{name} (bits/dim) | bytes" for name in r["overhead"]) + " |",
              "| --- |" + " ---: | ---: |" * len(r["overhead"])]
    subpixels = {row["method"]: row["subpixels"] for row in r["methods"]}
    for part in ("file", "elbo", *OVERHEAD_PARTS):
        label = {"file": "whole files", "elbo": f"calibrated {bound_name(r)}"}.get(part, part)
        cells = [f"{c[part] / subpixels[name]:.4f} | {c[part] / 8:,.0f}" for name, c in r["overhead"].items()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "rANS lanes: " + "; ".join(f"{name}: {c['lanes']} lanes in {c['files']} file(s)"
                                            for name, c in r["overhead"].items()) + ".", "",
              "## Published (not measured here)", "",
              "Numbers from the literature as listed in DESIGN.md §7; other implementations, machines and "
              "sometimes other subsets, not comparable run for run.", "",
              "| method | bits/dim | note |", "| --- | ---: | --- |"]
    lines += [f"| {p['method']} | {p['bpd']:.2f} | {p['note']} |" for p in r["published"]]
    return "\n".join(lines) + "\n"


def bound_name(r: dict) -> str:
    """The bound the files code at: the -ELBO, or IWAE with as many samples as particles."""
    n = r.get("particles", 1)
    return "−ELBO" if n == 1 else f"IWAE (k = {n}, the particles)"


def plot(r: dict, path: Path) -> None:
    """Bits/dim bars: measured methods solid, published anchors hatched, −ELBO (plain and calibrated) as lines."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    measured = [(row["method"], row["bpd"]) for row in r["methods"]]
    published = [(f"{p['method']} (published)", p["bpd"]) for p in r["published"]]
    fig = Figure(figsize=(0.45 * (len(measured) + len(published)) + 3, 4.8))
    ax = fig.subplots()
    colors = ["tab:red" if name.startswith("vaezip") else "tab:blue" for name, _ in measured]
    bars = ax.bar(range(len(measured)), [v for _, v in measured], color=colors)
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    bars = ax.bar(range(len(measured), len(measured) + len(published)), [v for _, v in published],
                  color="white", edgecolor="gray", hatch="//")
    ax.bar_label(bars, fmt="%.2f", fontsize=7, color="gray")
    elbo = ax.axhline(r["bounds"]["elbo"][0], color="black", linestyle="--", linewidth=1, label="model −ELBO")
    calibrated = ax.axhline(r["bounds"]["calibrated"][0], color="black", linestyle=":", linewidth=1,
                            label="−ELBO, calibrated as coded")
    ax.set_xticks(range(len(measured) + len(published)), [n for n, _ in measured + published], rotation=45,
                  ha="right", fontsize=8)
    ax.set_ylabel("bits/dim")
    ax.set_title(f"{r['title']}: {r['images']} images, model {r['model']}")
    ax.legend(handles=[Patch(color="tab:red", label="vaezip (measured)"),
                       Patch(color="tab:blue", label="baseline (measured)"),
                       Patch(facecolor="white", edgecolor="gray", hatch="//", label="published, not measured here"),
                       elbo, calibrated], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--limit", type=positive, metavar="N", help="use only the first N test images")
    p.add_argument("--single-limit", type=positive, metavar="M",
                   help="images coded one at a time (default: 200; Kodak: all)")
    p.add_argument("--iwae-k", type=positive, default=100, metavar="K",
                   help="importance samples for the IWAE bound (default: 100)")
    p.add_argument("--iwae-limit", type=positive, metavar="L",
                   help="images for the IWAE bound (default: 200; Kodak: 4)")
    p.add_argument("--model", metavar="M", help="model name or .safetensors path (default: mnist, cifar10 or photo)")
    p.add_argument("--data", metavar="PATH", help="datasets folder (default: shared/data next to the checkout)")
    p.add_argument("--runs", type=positive, default=3, metavar="R",
                   help="timing runs; the median is reported (default: 3)")
    p.add_argument("--time-limit", type=positive, metavar="T",
                   help="images the timing runs code (default: 200; Kodak: 4)")
    p.add_argument("--threads", type=positive, metavar="P",
                   help="threads for torch, JPEG 2000 and JPEG XL (default: all cores)")
    p.add_argument("--particles", type=positive, default=1, metavar="N",
                   help="Monte Carlo bits back with N particles per tile (default: 1, plain bits back)")
    p.add_argument("--effort", choices=list(EFFORTS), default="default", help="vaezip's effort (default: default)")
    p.add_argument("--out", default=RESULTS, metavar="DIR", help="output folder (default: bench/results)")
    a = p.parse_args(argv)
    run(a.dataset, a.limit, a.single_limit, a.iwae_k, a.iwae_limit, a.model, a.data, a.runs, a.time_limit,
        a.threads, a.particles, a.effort, a.out)


if __name__ == "__main__":
    main()
