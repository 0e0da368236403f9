"""Ship a trained model as a new version, and describe every shipped model in assets/MODELS.md.

    python bench/models.py cifar10 --weights runs/cifar10/cifar10.safetensors [--data ../shared/data]
    python bench/models.py --report            # only rebuild MODELS.md (measures each model's KL)

Shipping measures -ELBO (k = 1) on the first ``--n1`` test images and IWAE at k = 10 and 100 on the first ``--n10``
and ``--n100``, records the -ELBO of the reference images in assets/reference (the tests check it), moves the
current ``assets/<name>.safetensors`` to ``assets/versions/<name>-<hash>.safetensors`` (a shipped version is never
replaced: every .vz names its weights by hash) and writes the new weights with this record in its place. MODELS.md
is rebuilt from every shipped model, with the KL of its latent measured on the test data.
"""
from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vaezip.training import data
from vaezip.training.bound import image_bounds, summary
from vaezip.format.image import read_image
from vaezip.format.container import CodingParams
from vaezip.nets.config import Config
from vaezip.coding.tiles import gather, mask, plan_batches, plan_tiles
from vaezip.nets.vae import VAE, count_parameters, kl_to_prior
from vaezip.training.train import PRESETS, grow
from vaezip.nets.weights import ASSETS, VERSIONS, file_hash, load_model, model_info, read_model, save_model
from vaezip.training.data import reference_planes
from vaezip.training.images import as_channels

TEST_SETS = {"mnist": "MNIST test", "cifar10": "CIFAR-10 test", "photo": "Kodak (24 images)"}
REFERENCES = {"mnist": ["mnist-test-0.png", "mnist-test-1.png"],
              "cifar10": ["cifar10-test-0.png", "cifar10-test-1.png"], "photo": ["photo-crop.png"]}
TILE = CodingParams.tile
KL_IMAGES = 1000            # test images the latent's KL is measured on (Kodak: all 24)


def test_planes(name: str, root: Path | None) -> list[np.ndarray]:
    if name == "mnist":
        return list(data.load_mnist("test", root))
    if name == "cifar10":
        return list(data.load_cifar10("test", root))
    return [read_image(p.read_bytes()).color for p in data.kodak_paths(root)]


def measure(model, planes: list[np.ndarray], k: int, n: int, calibrated: bool = False) -> dict:
    t0 = time.time()
    b = image_bounds(model, planes[:n], k=k, tile=TILE, seed=k, offsets=calibrated)
    elbo, elbo_se = summary(b.elbo_bits, b.subpixels)
    iwae, iwae_se = summary(b.iwae_bits, b.subpixels)
    return {"k": k, "calibrated": calibrated, "images": len(planes[:n]), "elbo": round(elbo, 4),
            "elbo_se": round(elbo_se, 4), "iwae": round(iwae, 4), "iwae_se": round(iwae_se, 4),
            "seconds": round(time.time() - t0)}


def training_history(info: dict, config: Config) -> list[str]:
    """The training runs behind a model, oldest first. A run started from another model's weights (``info["init"]``)
    grew them to its own residual blocks per stage and coarse levels (as recorded, else ``config``'s for the last
    run)."""
    runs = [info]
    while "init" in runs[0]:
        runs.insert(0, runs[0]["init"])
    lines = []
    for i, run in enumerate(runs):
        if "conversion" in run:
            lines.append(f"converted to an integer network: {run['conversion']}")
            continue
        blocks = run.get("stage_blocks", config.stage_blocks)
        coarse = run.get("coarse_levels", config.coarse_levels if i + 1 == len(runs) else 0)
        arch = f"{blocks} residual block(s) per stage" + (f" and {coarse} coarse levels" if coarse else "")
        crops = f" of {run['crop']} px crops" if run.get("crop") else ""
        quantized = run.get("quantized_from_step")
        aware = "" if quantized is None else (", quantization-aware throughout" if quantized == 0 else
                                              f", quantization-aware from step {quantized}")
        grown = i and (blocks, coarse) != (runs[i - 1].get("stage_blocks"), runs[i - 1].get("coarse_levels"))
        m = run.get("samples", 1)
        objective = "the ELBO" if m == 1 else f"the IWAE bound with M = {m} samples"
        minutes = run.get("wall_seconds", 0) / 60
        lines.append(f"{run.get('steps')} steps of batch {run.get('batch')}{crops} on {objective}, Adam lr "
                     f"{run.get('lr')} (cosine){aware}, seed {run.get('seed')}, {minutes:.0f} min, "
                     f"{'grown to' if grown else 'with'} {arch} ({run.get('parameters', 0):,} parameters); "
                     f"validation -ELBO {run.get('validation_bpd')}"
                     + (f" on {run['validation']}" if run.get("validation") else ""))
    return lines


def latent_kl(model: VAE, name: str, root: Path | None = None, images: int = KL_IMAGES) -> str:
    """KL(p(z|x) || N(0, I)) in bits per subpixel over the first test images, on the codec's tiles."""
    planes = test_planes(name, root)[:images]
    kl_bits, subpixels = 0.0, 0
    for group in plan_batches(plan_tiles([p.shape for p in planes], TILE, model.config.grid), 4, TILE):
        x = gather(planes, group)
        with torch.no_grad():
            mean, log_std = model.posterior(torch.from_numpy(as_channels(x, model.config.channels, axis=1)))
        kl_bits += float(kl_to_prior(mean.double(), log_std.double()).sum()) / math.log(2)
        subpixels += int(mask(group).sum()) * x.shape[1]
    where = (f"the {len(planes)} Kodak photos" if name == "photo" else
             f"the first {len(planes)} {TEST_SETS[name]} images")
    return (f"KL {kl_bits / subpixels:.5f} bits/subpixel on {where} ({model.config.latent} latent channel(s) at "
            f"stride {model.config.stride})")


def ship(name: str, weights: Path) -> Path:
    """Put ``weights`` in assets/ as NAME.safetensors, the version they replace kept in assets/versions/."""
    current = ASSETS / f"{name}.safetensors"
    if current.exists():
        VERSIONS.mkdir(exist_ok=True)
        kept = VERSIONS / f"{name}-{file_hash(current)[:8].hex()}.safetensors"
        if not kept.exists():
            shutil.copyfile(current, kept)
    shutil.copyfile(weights, current)
    return current


def models_md() -> str:
    lines = ["# Shipped models", "",
             "Regenerate a row with `python bench/models.py NAME` after `vaezip train NAME ...`. Rates are bits per",
             "subpixel on the test data below (never trained on), -ELBO and IWAE estimate with one standard error,",
             f"measured on the codec's {TILE}x{TILE} tiles. \"Calibrated as coded\" is the -ELBO with the codec's",
             "per-tile scale offsets (`docs/FORMAT.md`), their cost included: what the coder actually codes.", "",
             "The models are integer networks (docs/CODER.md): int16 weights, activations of at most 10 bits, every",
             "convolution exact in float32, so a file decodes bit for bit on any machine. The three models were",
             "first trained as float networks, then converted (heads rescaled to pixel levels, scales calibrated on",
             "16 training batches: post-training quantization) and fine-tuned quantization-aware from there.", "",
             "All training ran on the 2 CPU cores of a development machine. Runs from scratch warm the KL weight up",
             "from 0 over their first 10 % of steps. A run's validation -ELBO is on the set it names; runs that",
             "name none validated on the first 1000 test images for MNIST and CIFAR-10 (watched, never trained on),",
             "on centre crops of photos-val for `photo`.", "",
             "The latent's KL(p(z|x) || q(z)) below is measured by this script on the test images it names, over",
             "the codec's tiles: what bits back borrows and returns, and the most the latent can carry. Where it is",
             "near zero the sub-grid decoders model the pixels on their own and IWAE is hardly below -ELBO.",
             "`vaezip train NAME --steps N` continues from the shipped weights (growing them into the",
             "preset's architecture when it has more residual blocks per stage or coarse levels).", ""]
    for path in sorted(ASSETS.glob("*.safetensors")):
        info = model_info(path)
        model, _, digest = load_model(path.stem)
        c = model.config
        runs = training_history(info, c)
        if len(runs) > 1:
            runs = [f"in {len(runs)} runs, each from the last one's weights (new blocks start as the identity; "
                    "coarse levels add no weights):",
                    *[f"  {i}. {run}" for i, run in enumerate(runs, 1)]]
        source = "random crops of photos-train" if info.get("crop") else "train split"
        added = []
        if info.get("coarse_levels", c.coarse_levels) != c.coarse_levels:
            added = [f"- shipped with coarse_levels={c.coarse_levels}, added after the last run: they reuse its "
                     "trained networks and add no weights"]
        coarse = (f", coarse_levels={c.coarse_levels}: the first stage codes a stride-{c.grid} grid and the coarse "
                  "levels fill it up to z's stride with the first level's networks") if c.coarse_levels else ""
        lines += [f"## `{path.stem}`", "",
                  f"- architecture: VAE, latent {c.latent} channels at stride {c.stride}; decoder in "
                  f"{c.num_stages} sub-grid stages (levels={c.levels}{coarse}), stage width {c.stage_width}, "
                  f"{c.stage_blocks} residual block(s) per stage, {c.mixtures}-component discretized logistic "
                  f"mixture per subpixel{' with linear channel dependence' if c.channels == 3 else ''}; encoder "
                  f"width {c.width}",
                  f"- parameters: {count_parameters(model):,} ({path.stat().st_size / 2 ** 20:.1f} MiB); "
                  f"weights sha256 {digest.hex()[:16]}",
                  f"- training: {info.get('dataset')} ({source}), {runs[0]}", *runs[1:], *added,
                  f"- latent: {latent_kl(model, path.stem)}", "",
                  f"| {TEST_SETS[path.stem]} | images | -ELBO | IWAE |", "|---|---|---|---|"]
        for m in info.get("test", []):
            label = f"k = {m['k']}" + (", calibrated as coded" if m.get("calibrated") else "")
            lines.append(f"| {label} | {m['images']} | {m['elbo']:.4f} ± {m['elbo_se']:.4f} | "
                         f"{m['iwae']:.4f} ± {m['iwae_se']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", choices=sorted(TEST_SETS))
    ap.add_argument("--weights", type=Path, default=None, help="the weights to ship as NAME's new version")
    ap.add_argument("--report", action="store_true", help="only rebuild assets/MODELS.md")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--n1", type=int, default=10000)
    ap.add_argument("--n10", type=int, default=1000)
    ap.add_argument("--n100", type=int, default=100)
    args = ap.parse_args()
    if not args.report:
        if not (args.name and args.weights):
            ap.error("give NAME --weights FILE to ship, or --report")
        shipped = ship_measured(args)
        print(f"wrote {shipped.relative_to(ASSETS.parent)}")
    (ASSETS / "MODELS.md").write_text(models_md())
    print("wrote assets/MODELS.md")


def ship_measured(args) -> Path:
    torch.manual_seed(0)
    model = read_model(args.weights)
    info = {"stage_blocks": model.config.stage_blocks, "coarse_levels": model.config.coarse_levels,
            **model_info(args.weights)}
    if model.config != PRESETS[args.name]:      # grow into the preset's architecture
        grown = VAE(PRESETS[args.name])
        grow(grown, model, str(args.weights))
        grown.freeze()
        model = grown
    planes = test_planes(args.name, args.data)
    tests = [measure(model, planes, k, n) for k, n in ((1, args.n1), (10, args.n10), (100, args.n100))]
    tests.append(measure(model, planes, 1, args.n1, calibrated=True))
    for m in tests:
        print(f"{args.name} k={m['k']} on {m['images']}: -ELBO {m['elbo']} ± {m['elbo_se']}, "
              f"IWAE {m['iwae']} ± {m['iwae_se']} ({m['seconds']} s)", flush=True)
    refs = REFERENCES[args.name]
    ref_bits = image_bounds(model, reference_planes(refs), k=1, tile=TILE, seed=0).elbo_bits
    info = {**info, "test": tests,
            "reference": {"images": refs, "tile": TILE, "seed": 0, "elbo_bits": [float(v) for v in ref_bits]}}
    with tempfile.TemporaryDirectory() as tmp:
        measured = Path(tmp) / f"{args.name}.safetensors"
        save_model(model, measured, info)
        return ship(args.name, measured)


if __name__ == "__main__":
    main()
