"""Images to train on: a built-in dataset, or a user's folder (searched recursively), glob pattern or list file (one
path a line), read as the 8-bit colour layers the codec codes, with a reproducible held-out split.

Files that are not images and images smaller than the crop are skipped and counted; images of every size, mode and
depth mix (16-bit images give two layers, palette images their colours, alpha planes are not the model's).
"""
from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import data
from ..coding.tiles import centres
from ..format.image import ImageError, read_image
from ..format.planes import coding_of, split

BUILT_IN = ("mnist", "cifar10", "photo")
BUILT_IN_CROPS = {"mnist": 28, "cifar10": 32, "photo": 64}
VALIDATION = 1000               # MNIST and CIFAR-10: images at the end of the training split held out to validate on
HELD_OUT = 0.05                 # a folder: the share of files held out to validate on ...
HELD_OUT_MAX = 200              # ... at most this many files
VALIDATION_SIDE = 256           # held-out images are measured on their centre crops of at most this side ...
VALIDATION_PIXELS = 1 << 22     # ... up to about this many pixels in all


class DataError(ValueError):
    """Training data that cannot be used: no images, too few, or of the wrong kind."""


@dataclass
class ImageSet:
    train: list[np.ndarray]                 # colour layers (C, H, W) uint8
    held_out: list[np.ndarray]              # the same, centre crops of the held-out images (``validation_crops``)
    description: dict = field(default_factory=dict)   # "data", "held_out", "crop" and the counts behind them


def built_in(source: str) -> bool:
    """Whether ``source`` names a built-in dataset (a file or folder of that name is the user's)."""
    return source in BUILT_IN and not Path(source).exists()


def read_image_set(source: str, crop: int | None = None, root: Path | None = None) -> ImageSet:
    """A built-in dataset (read from ``root``, by default ``../shared/data``; never a test split) or a user's
    images (``read_folder``)."""
    if not built_in(source):
        return read_folder(source, crop)
    if source == "photo":
        train, held = data.load_photos("train", root), data.load_photos("val", root)
        what = f"photos-train ({len(train)} photos)"
        held_what = f"the {len(held)} photos of photos-val"
    else:
        images = (data.load_mnist if source == "mnist" else data.load_cifar10)("train", root)
        train, held = list(images[:-VALIDATION]), list(images[-VALIDATION:])
        what = f"the {'MNIST' if source == 'mnist' else 'CIFAR-10'} training split ({len(train)} images)"
        held_what = f"the last {VALIDATION} images of the training split, held out"
    crop = crop or BUILT_IN_CROPS[source]
    return ImageSet(train, validation_crops(held), {"data": what, "held_out": held_what, "crop": crop,
                                                    "images": len(train) + len(held)})


def validation_crops(layers: list[np.ndarray]) -> list[np.ndarray]:
    """Copies of their centres of at most VALIDATION_SIDE pixels a side, up to about VALIDATION_PIXELS."""
    return [np.ascontiguousarray(x) for x in centres(layers, VALIDATION_SIDE, VALIDATION_PIXELS)]


def paths_of(source: str) -> list[Path]:
    """The files a source names: a folder (every file below it), a list file (.txt: one path a line, relative to
    the list's folder), or a glob pattern; sorted."""
    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.is_file() and path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return [p if p.is_absolute() else path.parent / p for p in map(Path, lines)]
    if path.is_file():
        return [path]
    return sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())


def held_out(path: Path, root: Path) -> bool:
    """Whether a file is held out: by a hash of its path below the source, so the split is the same on every run
    and machine and does not move when files are added."""
    name = str(path.relative_to(root) if path.is_relative_to(root) else path)
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") % 10_000 < HELD_OUT * 10_000


def read_folder(source: str, crop: int | None = None, multiple: int = 8, largest: int = 64) -> ImageSet:
    """The colour layers of every image of ``source`` with both sides at least ``crop`` (by default the median
    shorter side, rounded down to a ``multiple``, at most ``largest``), split into training and held-out layers;
    raises DataError when nothing is left to train or to validate on."""
    paths = paths_of(source)
    if not paths:
        raise DataError(f"{source}: no files (a folder, a glob pattern or a list file of images)")
    root = Path(source) if Path(source).is_dir() else Path(source).parent
    read, skipped, modes = [], {"not images": 0, "smaller than the crop": 0}, {}
    for path in paths:
        try:
            pic = read_image(path.read_bytes(), str(path))
        except (ImageError, OSError):
            skipped["not images"] += 1
            continue
        read.append((held_out(path, root), [color for color, _ in split(pic, coding_of(pic))], pic.mode))
    if not read:
        raise DataError(f"{source}: none of its {len(paths)} files is an image")
    if crop is None:
        crop = max(multiple, min(largest, typical_side([x for _, layers, _ in read for x in layers])) // multiple
                   * multiple)
    train, held = [], []
    for holding, layers, mode in read:
        if min(layers[0].shape[1:]) < crop:
            skipped["smaller than the crop"] += 1
            continue
        modes[mode] = modes.get(mode, 0) + 1
        (held if holding and len(held) < HELD_OUT_MAX else train).extend(layers)
    if not train:
        raise DataError(f"{source}: no image of at least {crop} x {crop} pixels to train on "
                        f"({skipped['not images']} not images, {skipped['smaller than the crop']} smaller)")
    if not held:
        held.append(train.pop())            # fewer than about 20 images: one of them validates
        if not train:
            raise DataError(f"{source}: one usable image; training needs another to validate on")
    kinds = ", ".join(f"{n} {mode}" for mode, n in sorted(modes.items()))
    skips = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
    description = {"data": f"{sum(modes.values())} images of {source} ({kinds})", "held_out": f"{len(held)} held-out "
                   f"images of the source (chosen by a hash of their names)", "crop": crop, "files": len(paths),
                   "images": sum(modes.values()), "skipped": skips}
    return ImageSet(train, validation_crops(held), description)


def as_channels(x: np.ndarray, channels: int, axis: int = 0) -> np.ndarray:
    """Layers with ``channels`` planes along ``axis``: gray ones repeated for colour."""
    return x if x.shape[axis] == channels else np.repeat(x, channels, axis=axis)


def typical_side(layers: list[np.ndarray]) -> int:
    """The median of the layers' shorter sides."""
    return int(np.median([min(x.shape[1:]) for x in layers]))
