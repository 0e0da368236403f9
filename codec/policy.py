"""The encoder's choices, made once per compression as a ``Plan``: which model codes the pictures, and which
pictures are coded outside it (JPEG XL, PNG or their raw bytes) because that is shorter.

The promise: a picture's file is never longer than the shorter of its JPEG XL (at the final effort) and its PNG by
more than the container. Where the model is far ahead of a quick JPEG XL probe (digits, CIFAR-10 images) the full
classical encodings are skipped; where it is far behind on a large picture (text, screenshots, flat graphics)
the model's coding is skipped (``screen``). Every classical stream is computed at most once (``Classical``) and
the plan carries it to the file.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, replace

import numpy as np

from .coding.stages import TileCoder
from .format import classical
from .format.container import CodingParams
from .format.image import Picture
from .format.planes import BYTES, COLOURS, JPEG_XL, PNG, STORED, coding_of, split
from .nets.weights import ModelError, load_network, read_config, resolve, shipped_models
from .options import Options

SAMPLE_PIXELS = 1 << 16        # the default model is chosen on about this many pixels of the input
PROMISING = 1.25               # JPEG XL at full effort when its quick probe is within this factor of the model
SMALL = 1 << 14                # subpixels up to which the probe is JPEG XL's effort 2 ...
SMALL_PROMISING = 1.1          # ... and this factor (see Classical.worth_trying)
FLAT = 2.5                     # bits per subpixel of the probe below which PNG is tried too
SCREEN_PIXELS = 1 << 18        # pictures of at least this many pixels are screened before the model codes them:
MARGIN = 1.035                 # a classical coding shorter than this times the model's estimate skips the model
RECODE_GAIN = 1e-3             # an archive is coded again with classical codings if that saves this much of it
JPEG_XL_EFFORTS = {"default": classical.FINAL_EFFORT, "max": classical.MAX_EFFORT}


class Classical:
    """One picture's codings outside the model, each computed at most once: its raw bytes, JPEG XL at ``effort``,
    PNG, and a quick JPEG XL probe. ``ahead`` starts the JPEG XL encoding in a background thread (it releases the
    interpreter) while the caller goes on."""

    def __init__(self, pic: Picture, effort: int):
        self.pic, self.effort = pic, effort
        self._streams: dict[int, Future] = {}
        self._lock = threading.Lock()

    def stream(self, coding: int) -> bytes:
        return self._future(coding).result()

    def size(self, coding: int) -> int:
        return len(self.stream(coding))

    def ahead(self) -> None:
        self._future(JPEG_XL, background=True)

    def probe(self) -> int:
        """The bytes of a quick JPEG XL coding (effort 3; for small pictures effort 2, which is closer to the
        final effort there: on CIFAR-10 training images its median is 1.10 times effort 7's, effort 1's 1.26)."""
        return len(classical.jpeg_xl(self.pic, classical.SMALL_PROBE_EFFORT if self.small
                                     else classical.PROBE_EFFORT))

    @property
    def small(self) -> bool:
        return self.pic.subpixels <= SMALL

    def worth_trying(self, probe_bytes: int, model_bytes: float) -> bool:
        """Whether JPEG XL at full effort might beat the model: its probe comes within PROMISING of the model's
        bytes (SMALL_PROMISING for small pictures). On 1000 CIFAR-10 training images the factor 1.1 ran JPEG XL at
        full effort on 57 pictures and found 5 of the 6 that it codes shorter than the model."""
        return probe_bytes < (SMALL_PROMISING if self.small else PROMISING) * model_bytes

    def cheaper(self, model_bytes: float, probe_bytes: int | None = None) -> tuple[int | None, float]:
        """(STORED, JPEG_XL or PNG, its bytes) if that codes the picture in fewer bytes than ``model_bytes``, else
        (None, model_bytes). JPEG XL runs only where ``worth_trying`` says so (``probe_bytes``: the probe's, or
        the full effort's if known), PNG, whose deflate only wins on flat content, below FLAT bits per subpixel."""
        sizes = {None: model_bytes, STORED: self.size(STORED)}
        probe_bytes = self.probe() if probe_bytes is None else probe_bytes
        if self.worth_trying(probe_bytes, model_bytes):
            sizes[JPEG_XL] = self.size(JPEG_XL)
            if 8 * probe_bytes < FLAT * self.pic.subpixels:
                sizes[PNG] = self.size(PNG)
        best = min(sizes, key=sizes.get)
        return best, sizes[best]

    def _future(self, coding: int, background: bool = False) -> Future:
        with self._lock:
            new = coding not in self._streams
            result = self._streams.setdefault(coding, Future())
        if new:
            run = lambda: _complete(result, lambda: classical.encode(self.pic, coding, self.effort))
            threading.Thread(target=run, daemon=True).start() if background else run()
        return result


def _complete(result: Future, fn) -> None:
    try:
        result.set_result(fn())
    except Exception as e:          # raised again by result.result()
        result.set_exception(e)


@dataclass
class Plan:
    """How the pictures are coded: ``codings[i]`` (``planes.CODINGS``) of picture i, its ``classical`` codings,
    the model (with ``params``, ``device``, ``backend``) for the model-coded ones; ``probes``: quick JPEG XL sizes
    of the model-coded pictures (None where not probed), computed in the background for ``review``."""
    model: str
    params: CodingParams
    device: str
    backend: str | None
    codings: list[int]
    classical: list[Classical]
    probes: Future | None = None


def plan(pictures: list[Picture], options: Options) -> Plan:
    """The plan of a compression: the model (by default, the shipped model whose estimate on a sample of the
    pictures is lowest), each picture's coding (large pictures screened, unless the effort is "max"), and the
    probes that ``review`` compares the model's bits with, started in the background."""
    effort = JPEG_XL_EFFORTS[options.effort]
    candidates = [Classical(p, effort) for p in pictures]
    codings = [coding_of(p) for p in pictures]
    screened = [options.classical and options.effort == "default" and _screenable(p, c)
                for p, c in zip(pictures, codings)]
    centres = [Classical(_centre(p), effort) if s else None for p, s in zip(pictures, screened)]
    if any(screened):                       # one picture's JPEG XL ahead: many would hold many encoders
        first = screened.index(True)
        candidates[first].ahead(), centres[first].ahead()
    model, known = options.model, None
    if model is None:
        sample = _sample([layer for p, c in zip(pictures, codings) for layer in split(p, c)])
        model, estimates = choose_model(sample, options.params, options.device)
        if len(pictures) == 1:              # the sample is the picture's centre, which the screen estimates
            known = estimates[model]
    path = resolve(model)
    require_channels(read_config(path), path.stem, pictures)
    result = Plan(model, options.params, options.device, options.backend, codings, candidates)
    result.codings = [screen(result, c, centre, coding, known) if centre else coding
                      for c, centre, coding in zip(candidates, centres, codings)]
    if options.classical:
        result.probes = _background(lambda: [None if coding in BYTES else c.probe()
                                             for coding, c in zip(result.codings, candidates)])
    return result


def review(plan: Plan, pictures: list[Picture], file_bytes: int, bits: np.ndarray) -> Plan | None:
    """After the model coded the plan: a plan with classical codings for the pictures they code shorter than the
    bits the model spent on them (a single picture: than its whole file), or None if it would not save anything (an
    archive: at least RECODE_GAIN of it, as it costs another pass of the model)."""
    if plan.probes is None:
        return None
    spent = [file_bytes] if len(pictures) == 1 else bits / 8
    cheaper = [(None, b) if coding in BYTES else c.cheaper(b, probe)
               for coding, c, b, probe in zip(plan.codings, plan.classical, spent, plan.probes.result())]
    saving = sum(b - size for b, (_, size) in zip(spent, cheaper))
    if saving <= 0 or (len(pictures) > 1 and saving < RECODE_GAIN * file_bytes):
        return None
    return replace(plan, codings=[old if new is None else new for (new, _), old in zip(cheaper, plan.codings)])


def screen(plan: Plan, candidates: Classical, centre: Classical, coding: int, bits: float | None = None) -> int:
    """A classical coding for a large picture (SCREEN_PIXELS) that codes shorter than MARGIN times the model's
    estimate, else ``coding``: the model's full coding, many times slower than the classical coders, is then skipped.

    The estimate: the model's bits on the picture's centre (``TileCoder.estimate_bits``), scaled by what JPEG XL
    spends on the whole picture over what it spends on the centre (the centre alone often misjudges the whole).
    On the 8 validation photos of photos-train (ratio of JPEG XL -e7 to the estimate, centre crops) the model coded
    every photo with a ratio up to 1.028 longer than JPEG XL (by 0.9 to 11 %) and won at 1.045 and 1.068: MARGIN
    lies between the two. ``bits``: the estimate on the centre if known."""
    centre.ahead()
    if bits is None:
        bits = estimate_bits(plan, [color for color, _ in split(centre.pic, coding)])
    whole = candidates.size(JPEG_XL)
    estimate = bits / 8 * whole / centre.size(JPEG_XL)
    return candidates.cheaper(MARGIN * estimate, whole)[0] or coding


def estimate_bits(plan: Plan, planes: list[np.ndarray]) -> float:
    """The plan's model's estimate of the bits of colour ``planes`` (``TileCoder.estimate_bits``)."""
    net = load_network(plan.model, plan.device, sum(p.size for p in planes), plan.backend)[0]
    return TileCoder(net, plan.params).estimate_bits(planes)


def choose_model(planes: list[np.ndarray], params: CodingParams, device: str = "cpu") -> tuple[str, dict]:
    """The shipped model that codes colour ``planes`` in the fewest bits (``TileCoder.estimate_bits``), and the
    estimates of every model that can code them."""
    estimates = {}
    for name in shipped_models():
        net = load_network(name, device, sum(p.size for p in planes))[0]
        if net.config.channels == 3 or all(p.shape[0] == 1 for p in planes):
            estimates[name] = TileCoder(net, params).estimate_bits(planes)
    return min(estimates, key=estimates.get), estimates


def require_channels(config, name: str, pictures: list[Picture]) -> None:
    """Refuse colour pictures (palette images with their colours) for a grayscale model."""
    if config.channels == 1 and any(p.color.shape[0] != 1 or coding_of(p) == COLOURS for p in pictures):
        raise ModelError(f"model {name!r} is grayscale and cannot code colour images")


def _sample(layers: list) -> list[np.ndarray]:
    """Colour planes of the layers, each cropped to its centre 256 x 256 at most, up to about SAMPLE_PIXELS."""
    out, total = [], 0
    for color, _ in layers:
        out.append(_crop(color))
        total += out[-1].shape[1] * out[-1].shape[2]
        if total >= SAMPLE_PIXELS:
            break
    return out


def _crop(a: np.ndarray, side: int = 256) -> np.ndarray:
    """The centre side x side (at most) of an array's last two axes."""
    h, w = a.shape[-2:]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return a[..., y:y + side, x:x + side]


def _centre(pic: Picture) -> Picture:
    return replace(pic, color=_crop(pic.color), alpha=None if pic.alpha is None else _crop(pic.alpha))


def _screenable(pic: Picture, coding: int) -> bool:
    """Whether ``screen`` looks at a picture: one of at least SCREEN_PIXELS pixels that the model would code."""
    return coding not in BYTES and pic.size[0] * pic.size[1] >= SCREEN_PIXELS


def _background(fn) -> Future:
    """``fn()`` computed in a daemon thread (it does not hold up the exit of a process that fails meanwhile)."""
    result = Future()
    threading.Thread(target=_complete, args=(result, fn), daemon=True).start()
    return result
