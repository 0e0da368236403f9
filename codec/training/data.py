"""Dataset readers (MNIST, CIFAR-10, Kodak, photos-train) as uint8 arrays; see ``../shared/data/README.md``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
PHOTO_HOLDOUT = 8   # photos-train images (sorted by name, every 25th) kept out of training for validation


def default_root() -> Path:
    """``../shared/data`` next to the checkout, where the datasets live."""
    return DEFAULT_ROOT


def load_mnist(split: str, root: Path | None = None) -> np.ndarray:
    """MNIST images as (N, 1, 28, 28) uint8."""
    with np.load(Path(root or DEFAULT_ROOT) / "mnist" / f"mnist-{split}.npz") as z:
        return z["images"][:, None]


def load_cifar10(split: str, root: Path | None = None) -> np.ndarray:
    """CIFAR-10 images as (N, 3, 32, 32) uint8, official order."""
    folder = Path(root or DEFAULT_ROOT) / "cifar10"
    parts = []
    for p in range(5 if split == "train" else 1):
        with Image.open(folder / f"cifar10-{split}-{p:02d}.webp") as im:
            m = np.asarray(im.convert("RGB"))
        parts.append(m.reshape(100, 32, 100, 32, 3).transpose(0, 2, 4, 1, 3).reshape(-1, 3, 32, 32))
    return np.concatenate(parts)


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()


def kodak_paths(root: Path | None = None) -> list[Path]:
    return sorted((Path(root or DEFAULT_ROOT) / "kodak").glob("kodim*.png"))


def photo_paths(split: str, root: Path | None = None) -> list[Path]:
    """The photos-train files of ``split``, "train" or "val" (a fixed hold-out), sorted by name."""
    paths = sorted((Path(root or DEFAULT_ROOT) / "photos-train").glob("*.png"))
    held = set(paths[::len(paths) // PHOTO_HOLDOUT][:PHOTO_HOLDOUT])
    return [p for p in paths if (p in held) == (split == "val")]


def load_photos(split: str, root: Path | None = None) -> list[np.ndarray]:
    """photos-train images of ``split`` (``photo_paths``) as a list of (3, H, W) uint8."""
    return [_read_rgb(p) for p in photo_paths(split, root)]


def random_crops(images: list[np.ndarray], count: int, size: int, rng: np.random.Generator,
                 flip: bool = True) -> np.ndarray:
    """``count`` random size x size crops (with ``flip``, half of them flipped horizontally), (count, C, size, size)
    uint8."""
    out = np.empty((count, images[0].shape[0], size, size), np.uint8)
    picks = rng.integers(len(images), size=count)
    for i, k in enumerate(picks):
        im = images[k]
        y = rng.integers(im.shape[1] - size + 1)
        x = rng.integers(im.shape[2] - size + 1)
        crop = im[:, y:y + size, x:x + size]
        out[i] = crop[:, :, ::-1] if flip and rng.random() < 0.5 else crop
    return out


def reference_planes(files: list[str]) -> list[np.ndarray]:
    """Colour planes of the small reference images in ``assets/reference`` that shipped models record -ELBOs on."""
    from ..format.image import read_image
    from ..nets.weights import ASSETS
    return [read_image((ASSETS / "reference" / f).read_bytes()).color for f in files]
