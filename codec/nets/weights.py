"""Shipped and user model weights: safetensors files whose metadata holds the model configuration.

A model file holds the integer networks only: int16 weights, int32 biases, int8 shifts and the float32 scales
(which training needs to continue from the file; coding never uses them). Coding runs them as a
``network.Network`` over NumPy (CPU) without importing torch, except for large jobs, or over torch
(``load_network``); training and bounds load the torch ``vae.VAE``."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from safetensors import SafetensorError

from .config import Config

ASSETS = Path(str(files("vaezip.assets")))     # shipped weights, MODELS.md and reference images
VERSIONS = ASSETS / "versions"                 # every earlier version of a shipped model: NAME-HASH.safetensors


TORCH_SUBPIXELS = 1 << 21      # jobs of this many model-coded subpixels run the networks in torch (see load_network)
TORCH_LOADED_SUBPIXELS = 1 << 16   # the same when torch is imported already
BACKENDS = ("numpy", "torch", "unfold")   # unfold: torch with every convolution as im2col + matmul, as on a GPU


class ModelError(ValueError):
    """A model name or file that cannot be used."""


def save_model(model, path: Path, info: dict | None = None) -> None:
    """Freeze the integer weights of a ``model.VAE`` and write them with the configuration (plus free-form
    ``info``)."""
    import torch
    from safetensors.torch import save_file

    from .vae import config_dict
    int_types = {"w_int": torch.int16, "b_int": torch.int32, "shift": torch.int8}
    mode = model.mode
    model.freeze()
    model.mode = mode
    meta = {"config": json.dumps(config_dict(model.config)), "info": json.dumps(info or {})}
    tensors = {}
    for key, value in model.state_dict().items():
        kind = key.rsplit(".", 1)[-1]
        if kind not in ("weight", "bias"):
            tensors[key] = value.detach().cpu().to(int_types.get(kind, torch.float32)).contiguous()
    save_file(tensors, str(path), metadata=meta)


def resolve(name_or_path: str | Path) -> Path:
    """A shipped model name (``photo``, ``cifar10``, ``mnist``: their current versions), the name of a model in a
    folder listed in $VAEZIP_MODELS, or a path to a .safetensors file."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ModelError(f"model file not found: {name_or_path}")
        return path
    folders = [ASSETS] + [Path(p) for p in os.environ.get("VAEZIP_MODELS", "").split(os.pathsep) if p]
    for folder in folders:
        if (folder / f"{name_or_path}.safetensors").is_file() and Path(name_or_path).name == name_or_path:
            return folder / f"{name_or_path}.safetensors"
    names = ", ".join(shipped_models()) or "none"
    raise ModelError(f"unknown model {name_or_path!r} (shipped models: {names}; others by path or $VAEZIP_MODELS)")


def weights_hash(path: Path) -> bytes:
    """SHA-256 of the weights file, which identifies the model in a .vz header."""
    return hashlib.sha256(path.read_bytes()).digest()


def shipped_models() -> list[str]:
    """The names of the shipped models (their current versions)."""
    return sorted(p.stem for p in ASSETS.glob("*.safetensors"))


def shipped_files() -> list[Path]:
    """Every version of every shipped model: the current ones, then the earlier ones. A version is never replaced,
    only added, so that every .vz file ever written decodes."""
    return sorted(ASSETS.glob("*.safetensors")) + sorted(VERSIONS.glob("*.safetensors"))


def shipped(name_or_path: str | Path) -> bool:
    """Whether a model is one of the shipped files (a .vz file names it by its weights hash alone)."""
    return resolve(name_or_path).resolve().parent in (ASSETS.resolve(), VERSIONS.resolve())


def shipped_with_hash(prefix: bytes) -> Path | None:
    """The shipped model version whose weights hash starts with ``prefix`` (at least 8 bytes), if any."""
    if len(prefix) < 8:
        return None
    return next((path for path in shipped_files() if file_hash(path).startswith(prefix)), None)


def file_hash(path: Path) -> bytes:
    """``weights_hash`` of a file, read once per version of it."""
    path = path.resolve()
    stat = path.stat()
    return _file_hash(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _file_hash(path: Path, mtime: int, size: int) -> bytes:
    """``weights_hash`` of one version of a file, read once."""
    return weights_hash(path)


def load_model(name_or_path: str | Path, device: str = "cpu"):
    """(torch ``model.VAE`` in frozen eval mode on ``device``, model name, weights hash), loaded once per process
    and file version; callers must not modify it."""
    path = resolve(name_or_path)
    stat = path.stat()
    return _load(path.resolve(), stat.st_mtime_ns, stat.st_size, device)


def load_network(name_or_path: str | Path, device: str = "cpu", subpixels: int = 0, backend: str | None = None):
    """(the ``network.Network`` the coder runs, model name, weights hash), loaded once per process and file
    version; ``backend`` one of BACKENDS, or None to choose by the job.

    By default, on the CPU, NumPy (no torch to import, which takes longer than coding a small image) unless the job
    codes ``subpixels`` >= TORCH_SUBPIXELS, where torch's faster convolutions repay its import, or, once torch is
    imported, >= TORCH_LOADED_SUBPIXELS (about 128 x 128 pixels: below, NumPy's smaller overhead per call wins);
    elsewhere torch on ``device``. Every backend gives the same bits."""
    path = resolve(name_or_path)
    stat = path.stat()
    if backend is None:
        least = TORCH_LOADED_SUBPIXELS if "torch" in sys.modules else TORCH_SUBPIXELS
        backend = "numpy" if device == "cpu" and subpixels < least else "torch"
    elif backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    if backend == "numpy" and device != "cpu":
        raise ValueError(f"the NumPy backend runs on the CPU, not on {device}")
    return _load_network(path.resolve(), stat.st_mtime_ns, stat.st_size, backend, device)


@lru_cache(maxsize=8)
def _load(path: Path, mtime: int, size: int, device: str):
    import torch
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device}: no CUDA device is available")
    return read_model(path).to(device), path.stem, _file_hash(path, mtime, size)


@lru_cache(maxsize=8)
def _load_network(path: Path, mtime: int, size: int, backend: str, device: str):
    if backend != "numpy":
        network = _load(path, mtime, size, device)[0].network(numpy_io=True, unfold=backend == "unfold")
        return network, path.stem, _file_hash(path, mtime, size)
    from safetensors.numpy import load_file

    from .network import Network
    from .numpy_ops import NumpyOps, parameters
    try:
        config = read_config(path)
        network = Network(config, parameters(config, load_file(str(path))), NumpyOps())
    except KeyError:
        raise ModelError(f"cannot load model {path.stem!r}: not an integer model (weights of an older vaezip?)") \
            from None
    except (OSError, TypeError, ValueError, SafetensorError) as e:
        raise ModelError(f"cannot load model {path.stem!r}: {e}") from None
    return network, path.stem, _file_hash(path, mtime, size)


def read_config(path: Path) -> Config:
    """The model configuration stored in a weights file."""
    try:
        return Config(**json.loads(_metadata(path)["config"]))
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise ModelError(f"cannot load model {path.stem!r}: {e!r}") from None


def read_model(path: Path):
    """A new torch ``model.VAE`` (frozen, eval mode) from a weights file."""
    from safetensors.torch import load_file

    from .vae import VAE
    try:
        model = VAE(read_config(path))
        tensors = {k: v.float() for k, v in load_file(str(path)).items()}
        if any(k.rsplit(".", 1)[-1] not in ("weight", "bias") for k in model.state_dict().keys() - tensors.keys()):
            raise ValueError("not an integer model (weights of an older vaezip?)")
        model.load_state_dict(tensors, strict=False)
        model.thaw()
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        raise ModelError(f"cannot load model {path.stem!r}: {e}") from None
    model.mode = "frozen"
    return model.eval()


def _metadata(path: Path) -> dict:
    """The safetensors header's metadata, read without loading the tensors."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(min(header_len, 1 << 24)))["__metadata__"]


def model_info(path: Path) -> dict:
    """The free-form training record stored with the weights."""
    return json.loads(_metadata(path).get("info", "{}"))


def catalogue() -> list[dict]:
    """Every model this vaezip can use: the shipped ones (each current version, then its earlier versions) and those
    in the folders of $VAEZIP_MODELS, with their weights hash and what their training recorded."""
    user = [p for folder in os.environ.get("VAEZIP_MODELS", "").split(os.pathsep) if folder
            for p in sorted(Path(folder).glob("*.safetensors"))]
    rows = []
    for path, where in [(p, "shipped") for p in shipped_files()] + [(p, "user") for p in user]:
        earlier = path.parent.resolve() == VERSIONS.resolve()
        row = {"name": path.stem.rsplit("-", 1)[0] if earlier else path.stem, "hash": file_hash(path)[:8].hex(),
               "where": "earlier version" if earlier else where, "path": path}
        try:
            info = model_info(path)
            row.update(parameters=info.get("parameters"), dataset=info.get("dataset"), steps=info.get("steps"),
                       validation_bpd=info.get("validation_bpd"), validation=info.get("validation"),
                       data=info.get("data"))
        except (OSError, KeyError, ValueError):
            row["error"] = "not a vaezip model"
        rows.append(row)
    return rows
