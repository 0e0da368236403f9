"""How much more could adapting the photo model to each image gain? Two measures on photos-val, beside the shipped
coder (its per-tile offsets and residual feedback):

- recalibration: a count-based correction that the decoder could repeat. While an image is coded, the coder's own
  integer frequencies give each coded subpixel its interval [F(x - 1/2), F(x + 1/2)) of the model's CDF; a histogram
  of those intervals per channel and scale bucket (``coding.adaptation``'s contexts), from the stages coded before,
  recalibrates the next stage's CDF as G(F) (G: the histogram's piecewise-linear CDF, PRIOR pixels of uniform). It
  corrects bias, scale, skew and tails of each context at once. Simulated in float on the coder's frequencies.
- fine-tuning: every parameter of every stage network fitted to one image (quantization-aware, z at the posterior
  mean, Adam), -ELBO before and after, the changed weights' cost not counted: an upper bound for per-image
  adapters (HPAC/CALLIC-style) of this architecture; and their biases alone (a few thousand numbers), also as a file
  would send them: their changes quantized, their cost counted; and low-rank adapters of their weights (each
  convolution's weight plus a rank-r product u v^T, v starting from a seeded random draw), before and after their
  cost.

    python bench/headroom.py               # writes bench/results/headroom.md and .json
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parametrize

from vaezip.coding.adaptation import BUCKETS, bucket
from vaezip.coding.stages import TileCoder
from vaezip.coding.tiles import gather, mask, plan_batches, plan_tiles
from vaezip.entropy import codecs
from vaezip.format.container import CodingParams
from vaezip.nets.vae import set_mode
from vaezip.nets.weights import load_model, load_network
from vaezip.training.data import DEFAULT_ROOT, load_photos

BINS, PRIOR = 32, 128       # recalibration histogram: bins on [0, 1], and pixels' worth of a uniform one
QUANTIZED = (3, 4, 5, 6)    # bits of the grids that fitted biases' changes are rounded to (the best is kept)


def recalibration(images: list[np.ndarray]) -> tuple[float, float]:
    """(bits per subpixel as coded, with recalibration) over ``images`` (C, H, W)."""
    net = load_network("photo", "cpu", 1 << 22)[0]
    params = CodingParams()
    coder = TileCoder(net, params)
    edges = np.linspace(0, 1, BINS + 1)
    coded = recalibrated = 0.0
    for img in images:
        tiles = plan_tiles([img.shape], params.tile, net.config.grid)
        for group in plan_batches(tiles, len(tiles), params.tile):
            x, real = gather([img], group), mask(group)
            z = coder.latent.bucket(net.posterior(x)[0].ravel())
            counts = np.zeros((x.shape[1], BUCKETS, BINS))
            pixel_codecs = 0
            for codec, symbols in codecs.Sequence(lambda d: coder.describe(z, x.shape, real, d)).steps(x):
                start, freq = codec.start_freq(symbols)
                bits = -np.log2(freq / (1 << codec.precision))
                coded += bits.sum()
                if not isinstance(codec, codecs.LogisticMixture):
                    recalibrated += bits.sum()
                    continue
                channel, pixel_codecs = pixel_codecs % x.shape[1], pixel_codecs + 1
                lo, hi = start / (1 << codec.precision), (start + freq) / (1 << codec.precision)
                dominant = codec._logits.argmax(1)       # the contexts of coding.adaptation (``bucket``)
                log_scale = codec._log_scales[np.arange(codec.n), dominant]
                buckets = bucket(log_scale)
                seen = counts[channel, buckets]
                mass = (seen + PRIOR / BINS) / (seen.sum(1, keepdims=True) + PRIOR)
                recalibrated += -np.log2(np.maximum(_cdf(hi, mass) - _cdf(lo, mass), 1e-12)).sum()
                share = (np.clip(edges[1:], lo[:, None], hi[:, None]) - np.clip(edges[:-1], lo[:, None], hi[:, None]))
                np.add.at(counts[channel], buckets, share / (hi - lo)[:, None])
    subpixels = sum(img.size for img in images)
    return coded / subpixels, recalibrated / subpixels


def _cdf(u: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """The piecewise-linear CDF of bin masses ``mass`` (n, BINS) at ``u`` (n,)."""
    j = np.minimum((u * BINS).astype(np.int64), BINS - 1)
    rows = np.arange(len(u))
    below = np.concatenate([np.zeros((len(u), 1)), np.cumsum(mass, 1)], 1)[rows, j]
    return below + mass[rows, j] * (u * BINS - j)


class LowRank(torch.nn.Module):
    """A convolution's weight plus u v^T (rank ``rank``, scaled by the weight's mean size); u starts at zero."""

    def __init__(self, weight: torch.Tensor, rank: int):
        super().__init__()
        fan_in = weight[0].numel()
        self.u = torch.nn.Parameter(torch.zeros(len(weight), rank))
        self.v = torch.nn.Parameter(torch.randn(rank, fan_in, generator=torch.Generator().manual_seed(0)) /
                                    math.sqrt(fan_in))
        self.size = float(weight.abs().mean())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.u @ self.v).view(weight.shape) * self.size


def fine_tuning(img: np.ndarray, steps: int, lr: float, fit: str = "all", rank: int = 1) -> dict:
    """-ELBO bits per subpixel ``before`` and ``after`` ``steps`` of fitting to ``img`` every parameter of the stage
    networks (``fit`` "all"), their biases ("biases") or rank-``rank`` adapters of their weights ("low-rank"), the
    ``seconds`` that took and how many ``numbers`` were fitted. For biases and adapters, also what a file would pay
    (``sent``): each fitted tensor's change quantized (``quantized``), the changes' cost included."""
    model = copy.deepcopy(load_model("photo")[0])
    model.thaw()
    set_mode(model, "train")
    model.requires_grad_(False)
    if fit == "low-rank":
        fitted = []
        for layer, _ in model.network().tunable():          # every convolution of the stage networks
            parametrize.register_parametrization(layer, "weight", LowRank(layer.weight, rank))
            fitted += list(layer.parametrizations.weight[0].parameters())
    else:
        fitted = [p for net in model.stages for name, p in net.named_parameters()
                  if fit == "all" or name.endswith("bias")]
    for p in fitted:
        p.requires_grad_(True)
    start = [p.detach().clone() for p in fitted]
    tiles = plan_tiles([img.shape], CodingParams.tile, model.config.grid)
    batches = [(torch.from_numpy(gather([img], g)), torch.from_numpy(mask(g)))
               for g in plan_batches(tiles, CodingParams.batch, CodingParams.tile)]
    with torch.no_grad():
        latents = [model.posterior(x)[0] for x, _ in batches]
    scale = 1 / (math.log(2) * img.size)

    def bpd(train: bool) -> float:
        total = 0.0
        for (x, m), z in zip(batches, latents):
            loss = -model.log_likelihood(x, z, mask=m, channels=img.shape[0]).sum() * scale
            if train:
                loss.backward()
            total += loss.item()
        return total

    optimizer = torch.optim.Adam(fitted, lr=lr)
    t0 = time.perf_counter()
    with torch.no_grad():
        before = bpd(False)
    for _ in range(steps):
        optimizer.zero_grad()
        bpd(True)
        optimizer.step()
    result = {"before": before, "seconds": time.perf_counter() - t0, "numbers": sum(p.numel() for p in fitted)}
    with torch.no_grad():
        result["after"] = bpd(False)
        if fit != "all":
            result["sent"] = min(_quantized(fitted, start, bits, bpd, img.size) for bits in QUANTIZED)
    return result


def _quantized(fitted: list, start: list, bits: int, bpd, subpixels: int) -> float:
    """Bits per subpixel (``bpd``) with every fitted tensor's change rounded to a ``bits``-bit grid of its largest,
    plus the changes' cost: their empirical entropy per tensor and a 32-bit step each."""
    exact = [p.clone() for p in fitted]
    cost = 0.0
    for p, p0 in zip(fitted, start):
        change = p - p0
        step = float(change.abs().max()) / (1 << (bits - 1)) or 1.0
        levels = torch.round(change / step)
        p.copy_(p0 + levels * step)
        _, counts = torch.unique(levels, return_counts=True)
        share = counts.double() / counts.sum()
        cost += 32 - float((counts * torch.log2(share)).sum())
    rate = bpd(False)
    for p, e in zip(fitted, exact):
        p.copy_(e)
    return rate + cost / subpixels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--tune-images", type=int, default=3, help="photos-val images fine-tuned (the first ones)")
    ap.add_argument("--steps", type=int, default=150, help="Adam steps of each fitting")
    ap.add_argument("--lr", type=float, default=5e-5, help="learning rate fitting every parameter")
    ap.add_argument("--bias-lr", type=float, default=1e-3, help="learning rate fitting the biases alone")
    ap.add_argument("--rank", type=int, default=1, help="rank of the weights' adapters")
    ap.add_argument("--rank-lr", type=float, default=1e-3, help="learning rate fitting the adapters")
    args = ap.parse_args()
    images = load_photos("val", args.data)
    result = {"command": " ".join(["python bench/headroom.py"] + sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "photos": len(images), "steps": args.steps,
              "rank": args.rank}
    coded, recalibrated = recalibration(images)
    result["recalibration"] = {"coded": round(coded, 4), "recalibrated": round(recalibrated, 4)}
    print(result, flush=True)
    result["fine_tuning"] = []
    for i, img in enumerate(images[:args.tune_images]):
        every = fine_tuning(img, args.steps, args.lr)
        bias = fine_tuning(img, args.steps, args.bias_lr, "biases")
        low = fine_tuning(img, args.steps, args.rank_lr, "low-rank", args.rank)
        result["fine_tuning"].append({
            "image": i, "size": f"{img.shape[2]}x{img.shape[1]}", "before": round(every["before"], 4),
            "all": round(every["after"], 4), "all_seconds": round(every["seconds"]), "biases": round(bias["after"], 4),
            "biases_seconds": round(bias["seconds"]), "sent": round(bias["sent"], 4),
            "low_rank": round(low["after"], 4), "low_rank_seconds": round(low["seconds"]),
            "low_rank_sent": round(low["sent"], 4)})
        result["numbers"] = {"all": every["numbers"], "biases": bias["numbers"], "low_rank": low["numbers"]}
        print(result["fine_tuning"][-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "headroom.json").write_text(json.dumps(result, indent=1) + "\n")
    report(result, args.out)


def report(result: dict, out: Path) -> None:
    """headroom.md from the measured ``result``."""
    r, n = result["recalibration"], result["numbers"]
    lines = ["# Headroom of per-image adaptation (photo model, photos-val)", "",
             f"`{result['command']}` on {result['machine']}.", "",
             f"Recalibration by counts, simulated on the coder's frequencies over the {result['photos']} photos: "
             f"{r['coded']:.4f} -> {r['recalibrated']:.4f} bits/subpixel "
             f"({100 * (r['recalibrated'] / r['coded'] - 1):+.2f} %).", "",
             f"The stage networks fitted to one photo in {result['steps']} steps (-ELBO, z at the posterior mean): "
             f"every parameter ({n['all']:,} numbers), their biases alone ({n['biases']:,}) or rank-{result['rank']} "
             f"adapters of their weights ({n['low_rank']:,}), the fitted numbers' cost not counted; and biases and "
             "adapters as a file would send them, their changes quantized and their cost counted.", "",
             "| photo | size | -ELBO before | every parameter | seconds | biases alone | seconds | biases sent | "
             f"rank-{result['rank']} adapters | seconds | adapters sent |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    change = lambda f, k: f"{f[k]:.4f} ({100 * (f[k] / f['before'] - 1):+.2f} %)"
    for f in result["fine_tuning"]:
        lines.append(f"| {f['image']} | {f['size']} | {f['before']:.4f} | {change(f, 'all')} | {f['all_seconds']} | "
                     f"{change(f, 'biases')} | {f['biases_seconds']} | {change(f, 'sent')} | {change(f, 'low_rank')} | "
                     f"{f['low_rank_seconds']} | {change(f, 'low_rank_sent')} |")
    (out / "headroom.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

if __name__ == "__main__":
    main()
