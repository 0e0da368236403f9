"""Shared fixtures: tiny random-weight models (fast, deterministic) and synthetic images."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vaezip import pipeline, policy
from vaezip.format.container import CodingParams
from vaezip.nets.config import Config
from vaezip.nets.vae import VAE
from vaezip.nets.weights import save_model
from vaezip.options import Options

TINY = dict(levels=2, latent=4, width=16, stage_width=16, mixtures=2)


def calibrated_model(config: Config, seed: int = 0) -> VAE:
    """A random-weight integer model, its scales calibrated on synthetic images, frozen (as loaded for coding)."""
    torch.manual_seed(seed)
    model = VAE(config)
    side = max(32, config.grid)
    images = [smooth_image(side, side, config.channels, seed=i).transpose(2, 0, 1) for i in range(4)]
    model.calibrate_scales([torch.from_numpy(np.stack(images))])
    model.freeze()
    return model


def _tiny_model(tmp_path_factory, name: str, channels: int, coarse_levels: int) -> str:
    path = tmp_path_factory.mktemp("models") / f"{name}.safetensors"
    save_model(calibrated_model(Config(channels=channels, coarse_levels=coarse_levels, **TINY), seed=channels), path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_rgb(tmp_path_factory) -> str:
    """RGB, with a coarse level like the photo model: tiles are padded to a multiple of 8, z lives at stride 4."""
    return _tiny_model(tmp_path_factory, "tiny_rgb", 3, coarse_levels=1)


@pytest.fixture(scope="session")
def tiny_gray(tmp_path_factory) -> str:
    return _tiny_model(tmp_path_factory, "tiny_gray", 1, coarse_levels=0)


def compress(pictures: list, model: str, params: CodingParams = CodingParams(), archive: bool = False,
             **options) -> bytes:
    """``pipeline.compress`` of ``Picture``s with ``model``, ``params`` and other ``Options`` (an archive stores no
    names)."""
    return pipeline.compress(pictures, [""] * len(pictures), Options(model, params, **options), archive)


def encode(pictures: list, model: str, codings: list[int], params: CodingParams = CodingParams(),
           archive: bool = False):
    """``pipeline.encode`` of ``Picture``s coded as ``codings`` says: (.vz bytes, bits the model spent on each)."""
    plan = policy.Plan([model], params, "cpu", None, codings, [policy.Classical(p, 7) for p in pictures])
    return pipeline.encode(pictures, [""] * len(pictures), plan, archive)


def smooth_image(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient with noise, (h, w, channels) uint8 -- something like a photo, cheap to make."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [(yy * (3 + c) + xx * (5 - c) + 40 * c) % 256 for c in range(channels)]
    arr = np.stack(planes, axis=-1) + rng.integers(-4, 5, (h, w, channels))
    return np.clip(arr, 0, 255).astype(np.uint8)


def png_bytes(arr: np.ndarray, mode: str, **params) -> bytes:
    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[
        arr.shape[2]]) if mode != "1" else Image.fromarray(arr[:, :, 0] > 127)
    out = io.BytesIO()
    im.save(out, "PNG", **params)
    return out.getvalue()
