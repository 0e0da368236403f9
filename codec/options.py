"""What a user asks of a compression: one dataclass, built by the API, the command line and the Pillow plugin."""
from __future__ import annotations

from dataclasses import dataclass

from .format.container import CodingParams

EFFORTS = ("default", "max")


@dataclass(frozen=True)
class Options:
    """``model``: a shipped model name, a model in $VAEZIP_MODELS or a .safetensors path; None: the shipped model
    that codes the pictures shortest. ``classical``: code a picture by JPEG XL or PNG, or store it, where that is
    shorter than the model. ``effort``: "default", or "max" (every picture coded by the model first, none screened
    out, large pictures with the model's biases tuned to them, and JPEG XL at its highest effort). ``device``:
    where the networks run; ``backend``: their arithmetic (``nets.weights.BACKENDS``; None chooses by the job).
    ``strip``: drop EXIF, XMP, text, dpi and gamma."""
    model: str | None = None
    params: CodingParams = CodingParams()
    classical: bool = True
    effort: str = "default"
    device: str = "cpu"
    backend: str | None = None
    strip: bool = False

    def check(self) -> None:
        """Raise ValueError unless every option is valid."""
        if self.effort not in EFFORTS:
            raise ValueError(f"unknown effort {self.effort!r}: one of {', '.join(EFFORTS)}")
        self.params.check()
