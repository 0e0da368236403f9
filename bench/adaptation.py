"""The levers of adaptive coding, alone and stacked: real archive sizes of the photo model (``--model-only``) on
Kodak and on photos-val, every archive decoded and compared, beside JPEG XL -e7 on the same photos.

    python bench/adaptation.py            # writes bench/results/adaptation.md and .json
    python bench/adaptation.py --report   # adaptation.md again from adaptation.json

Levers (``coding.adaptation``, ``coding.offsets``, ``coding.tuning``): the residual feedback that corrects each
stage's means from the stages coded before it, the encoder's per-tile mean offsets, and, on top of both, the stage
networks' biases tuned to each photo (``--effort max``). A lever is switched off here, for measurement only,
by making its correction zero (feedback: no shifts; mean offsets: a table of zero shifts, so each costs its 0.07-bit
"no shift"); "none" is ``adaptation=False``, format version 5's setting for older files.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import vaezip
from vaezip.coding import adaptation, offsets, stages
from vaezip.format.classical import jpeg_xl
from vaezip.format.image import read_image
from vaezip.training.data import DEFAULT_ROOT, kodak_paths, photo_paths

TARGET = 0.97          # the rate the model is to reach, times JPEG XL -e7's
LEVERS = {"none": (False, False), "feedback alone": (True, False), "mean offsets alone": (False, True),
          "both (shipped)": (True, True), "both + tuning (--effort max)": (True, True)}
TUNED = "both + tuning (--effort max)"


@contextmanager
def levers(feedback: bool, mean_offsets: bool):
    saved = adaptation.Feedback.shifts, offsets.MEAN_OFFSETS, stages.MEAN_OFFSETS
    if not feedback:
        adaptation.Feedback.shifts = lambda self: np.zeros(self.sums.shape)
    if not mean_offsets:
        offsets.MEAN_OFFSETS = stages.MEAN_OFFSETS = np.zeros_like(offsets.MEAN_OFFSETS)
    try:
        yield
    finally:
        adaptation.Feedback.shifts, offsets.MEAN_OFFSETS, stages.MEAN_OFFSETS = saved


def photos(name: str, root: Path) -> list:
    paths = kodak_paths(root) if name == "kodak" else photo_paths("val", root)
    return [read_image(p.read_bytes(), p.name) for p in paths]


def code(pictures: list, lever: str) -> tuple[float, bool, float]:
    feedback, mean_offsets = LEVERS[lever]
    t0 = time.perf_counter()
    with levers(feedback, mean_offsets):
        data = vaezip.compress(pictures, "photo", classical=False, adaptation=lever != "none",
                               effort="max" if lever == TUNED else "default")
        back = vaezip.decompress(data, pictures=True)
    exact = all(a.pixel_bytes() == b.pixel_bytes() for a, b in zip(pictures, back))
    return 8 * len(data) / sum(p.subpixels for p in pictures), exact, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--report", action="store_true", help="write adaptation.md from adaptation.json, coding nothing")
    args = ap.parse_args()
    if args.report:
        return report(json.loads((args.out / "adaptation.json").read_text()), args.out)
    result = {"command": "python bench/adaptation.py", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "sets": {}}
    for name in ("photos-val", "kodak"):
        pictures = photos(name, args.data)
        subpixels = sum(p.subpixels for p in pictures)
        row = {"photos": len(pictures), "jpeg_xl": 8 * sum(len(jpeg_xl(p)) for p in pictures) / subpixels}
        for lever in LEVERS:
            bpd, exact, seconds = code(pictures, lever)
            row[lever] = {"bpd": round(bpd, 4), "exact": exact, "seconds": round(seconds, 1)}
            print(name, lever, row[lever], flush=True)
        result["sets"][name] = row
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adaptation.json").write_text(json.dumps(result, indent=1) + "\n")
    report(result, args.out)


def report(result: dict, out: Path) -> None:
    """adaptation.md from the measured ``result``."""
    sets = result["sets"]
    lines = ["# Adaptive coding: each lever alone and stacked", "",
             f"`{result['command']}` on {result['machine']}. The photo model codes every photo (`--model photo "
             "--model-only`), each set as one archive; bits per subpixel from the archive's size, every archive "
             "decoded and compared. photos-val is where the levers were tuned; Kodak is where they are reported. "
             "Seconds are of one run, with other jobs on the machine at times: a rough guide.",
             "", "| lever | " + " | ".join(f"{n} ({sets[n]['photos']} photos)" for n in sets)
             + " | seconds to code and decode (" + ", ".join(sets) + ") | exact |",
             "|---|" + "---:|" * (len(sets) + 1) + "---|"]
    for lever in [lever for lever in LEVERS if all(lever in sets[n] for n in sets)]:
        cells = []
        for n in sets:
            r, base = sets[n][lever], sets[n]["none"]["bpd"]
            cells.append(f"{r['bpd']:.4f} ({100 * (r['bpd'] / base - 1):+.2f} %)")
        exact = all(sets[n][lever]["exact"] for n in sets)
        seconds = ", ".join(f"{sets[n][lever]['seconds']:.0f}" for n in sets)
        lines.append(f"| {lever} | " + " | ".join(cells) + f" | {seconds} | {'yes' if exact else 'NO'} |")
    lines.append("| JPEG XL -e7 | " + " | ".join(f"{sets[n]['jpeg_xl']:.4f}" for n in sets) + " | | |")
    shipped = {n: sets[n]["both (shipped)"]["bpd"] / sets[n]["jpeg_xl"] for n in sets}
    lines += ["", "Shipped levers against JPEG XL -e7: " + ", ".join(f"{n} {v:.3f} x" for n, v in shipped.items())
              + ". The goal, 0.97 x JPEG XL -e7, is " + ", ".join(
                  f"{n} {TARGET * sets[n]['jpeg_xl']:.4f} ({100 * (TARGET / v - 1):+.1f} % from the shipped levers)"
                  for n, v in shipped.items()) + ".", ""]
    if all(TUNED in sets[n] for n in sets):
        tuned = {n: sets[n][TUNED]["bpd"] / sets[n]["jpeg_xl"] for n in sets}
        lines += ["With the stage networks' biases tuned to each photo as well (`--effort max`; `coding.tuning`, "
                  "their changes' bits included): " + ", ".join(f"{n} {v:.3f} x" for n, v in tuned.items())
                  + " JPEG XL -e7, " + ", ".join(f"{n} {100 * (TARGET / v - 1):+.1f} %" for n, v in tuned.items())
                  + " from the goal.", ""]
    if (out / "headroom.json").exists():
        need = 100 * (TARGET / shipped["photos-val"] - 1)
        lines += [headroom(json.loads((out / "headroom.json").read_text()), need), ""]
    (out / "adaptation.md").write_text("\n".join(lines))
    print("\n".join(lines))


def headroom(result: dict, need: float) -> str:
    """What is left to per-image adaptation of the photo model (``bench/headroom.py``'s result), against the change
    ``need``ed on photos-val, per cent."""
    recalibration = 100 * (result["recalibration"]["recalibrated"] / result["recalibration"]["coded"] - 1)
    tuned = result["fine_tuning"]
    mean = lambda key: float(np.mean([100 * (f[key] / f["before"] - 1) for f in tuned]))
    words = (f"What is left to adapting this network to each image (`headroom.md`, photos-val; {need:+.1f} % is "
             f"needed there): recalibrating every context's CDF by counts of the stages coded before, "
             f"{recalibration:+.2f} %; fitting the stage networks to each of {len(tuned)} photos, on average "
             f"{mean('all'):+.1f} % with every parameter and {mean('biases'):+.1f} % with their biases alone, before "
             f"the weights' cost; {mean('sent'):+.1f} % with the biases' changes quantized and their cost counted; "
             f"rank-{result['rank']} adapters of every weight ({result['numbers']['low_rank']:,} numbers against "
             f"{result['numbers']['biases']:,} biases) {mean('low_rank'):+.1f} % before their cost and "
             f"{mean('low_rank_sent'):+.1f} % after. ")
    if mean("all") > need:
        return words + ("Even every parameter fitted to the photo, at no cost, does not reach the goal: the next lever "
                        "is a stronger network.")
    if mean("low_rank_sent") <= need:
        return words + "The adapters reach the goal with their cost counted: they are the next lever."
    beyond = mean("low_rank_sent") - mean("sent")
    return words + ("Only every weight fitted to each photo reaches the goal, and only before its cost; the biases' "
                    "tuning (above) takes what biases can, and adapters of the weights "
                    + ("cost more than they gain beyond it" if beyond >= 0 else f"add only {beyond:+.1f} % to it")
                    + ": the next lever is a stronger network.")


if __name__ == "__main__":
    main()
