"""Shipped and user model weights: safetensors files whose metadata holds the model configuration."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .model import VAE, Config, config_dict

ASSETS = Path(__file__).resolve().parent.parent / "assets"


class ModelError(ValueError):
    """A model name or file that cannot be used."""


def save_model(model: VAE, path: Path, info: dict | None = None) -> None:
    """Write the weights and the configuration (plus free-form ``info``) as safetensors."""
    meta = {"config": json.dumps(config_dict(model.config)), "info": json.dumps(info or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)


def resolve(name_or_path: str) -> Path:
    """A shipped model name (``photo``, ``cifar10``, ``mnist``) or a path to a .safetensors file."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ModelError(f"model file not found: {name_or_path}")
        return path
    shipped = ASSETS / f"{name_or_path}.safetensors"
    if not shipped.is_file():
        names = ", ".join(sorted(p.stem for p in ASSETS.glob("*.safetensors"))) or "none"
        raise ModelError(f"unknown model {name_or_path!r} (shipped models: {names})")
    return shipped


def weights_hash(path: Path) -> bytes:
    """SHA-256 of the weights file, which identifies the model in a .vz header."""
    return hashlib.sha256(path.read_bytes()).digest()


def load_model(name_or_path: str) -> tuple[VAE, str, bytes]:
    """(model in eval mode, model name, weights hash)."""
    path = resolve(name_or_path)
    try:
        config = Config(**json.loads(_metadata(path)["config"]))
        model = VAE(config)
        model.load_state_dict(load_file(str(path)))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        raise ModelError(f"cannot load model {name_or_path!r}: {e}") from None
    model.eval()
    return model, path.stem, weights_hash(path)


def _metadata(path: Path) -> dict:
    """The safetensors header's metadata, read without loading the tensors."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(min(header_len, 1 << 24)))["__metadata__"]


def reference_planes(files: list[str]) -> list:
    """Colour planes of the small reference images in ``assets/reference`` that shipped models record -ELBOs on."""
    from .image import read_image
    return [read_image((ASSETS / "reference" / f).read_bytes()).color for f in files]


def model_info(path: Path) -> dict:
    """The free-form training record stored with the weights."""
    return json.loads(_metadata(path).get("info", "{}"))

