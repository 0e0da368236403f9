"""The Python API: ``vaezip.compress`` and ``vaezip.decompress``, for PIL images and NumPy arrays. The command line
and the Pillow plugin go through them too.

Models are loaded once per process (``nets.weights``), so many small calls stay cheap.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .format.container import CodingParams
from .format.image import ImageError, Picture, from_pil, to_pil
from .options import Options

ARRAY_MODES = {(1, np.uint8): "L", (2, np.uint8): "LA", (3, np.uint8): "RGB", (4, np.uint8): "RGBA",
               (1, np.uint16): "I;16", (2, np.uint16): "LA;16", (3, np.uint16): "RGB;16", (4, np.uint16): "RGBA;16"}


def picture(image, name: str = "image") -> Picture:
    """A Picture from a PIL image, a uint8 or uint16 array (H x W or H x W x C, C = 1..4) or a Picture."""
    if isinstance(image, Picture):
        return image
    if isinstance(image, np.ndarray):
        arr = image[:, :, None] if image.ndim == 2 else image
        mode = ARRAY_MODES.get((arr.shape[-1], arr.dtype.type)) if arr.ndim == 3 else None
        if mode is None or 0 in arr.shape:
            raise ImageError(f"{name}: expected a uint8 or uint16 array of H x W or H x W x 1..4, got "
                             f"{image.dtype} {image.shape}")
        planes = 3 if mode.startswith("RGB") else 1
        alpha = arr[:, :, planes].copy() if arr.shape[-1] in (2, 4) else None
        return Picture(mode, np.ascontiguousarray(arr[:, :, :planes].transpose(2, 0, 1)), alpha)
    image.load()
    return from_pil(image, name)


def compress(images, model: str | None = None, *, names: Sequence[str] | None = None, tile: int = 256,
             batch: int = 4, particles: int = 1, adaptation: bool = True, classical: bool = True,
             effort: str = "default", device: str = "cpu", backend: str | None = None, strip: bool = False,
             progress=None) -> bytes:
    """.vz bytes of one image, or of a list of images as one archive (bits back chained across them).

    ``images``: PIL images, uint8/uint16 NumPy arrays (H x W or H x W x C) or ``Picture``s. ``model``: a shipped
    model name, a model in $VAEZIP_MODELS or a .safetensors path; by default the shipped model that codes these
    images shortest. ``names``: file names stored in an archive (default: none stored; decoders call the images
    ``image0.png``, ...). ``particles``: importance samples per tile (Monte Carlo bits back: closer to the IWAE
    bound, that many times slower). ``adaptation``: correct the model's means from the residuals coded so far and
    by the encoder's mean offsets (``coding.adaptation``). ``progress``: a bar such as tqdm's, ``update``d with the
    pixels as they are coded and, if it has ``set_postfix_str``, told the fit's steps while ``effort="max"`` tunes a
    picture. The other options: ``options.Options``.
    """
    from .pipeline import compress as encode
    archive = isinstance(images, (list, tuple))
    items = list(images) if archive else [images]
    names = list(names) if names is not None else [""] * len(items)
    if len(names) != len(items):
        raise ValueError(f"{len(items)} images but {len(names)} names")
    pictures = [picture(im, n or f"image {i}") for i, (im, n) in enumerate(zip(items, names))]
    if strip:
        pictures = [p.stripped() for p in pictures]
    params = CodingParams(tile=tile, batch=batch, particles=particles, adaptation=int(adaptation))
    options = Options(model, params, classical, effort, device, backend, strip)
    return encode(pictures, names, options, archive, progress)


def decompress(data: bytes, *, arrays: bool = False, pictures: bool = False, model: str | None = None,
               device: str = "cpu", backend: str | None = None, progress=None) -> list:
    """Every image of a .vz file, as PIL images (ICC profile and metadata in ``info``), or with ``arrays`` as NumPy
    arrays (H x W for one plane, else H x W x C; uint16 for 16-bit images, indices for palette images), or with
    ``pictures`` as ``Picture``s. ``model``: the weights of a file made with a model that is not shipped."""
    from .format.classical import as_array
    from .pipeline import decode
    decoded = decode(data, model, device, backend, progress)
    if pictures:
        return decoded
    return [as_array(p) if arrays else to_pil(p) for p in decoded]
