"""The encoder's choices, made once per compression as a ``Plan``: which model codes the pictures, and which pictures
are coded outside it (JPEG XL, PNG or their raw bytes) because that is shorter.

The promise: a file is never longer than the shorter of JPEG XL (at the final effort) and an optimized PNG by more
than 1 % and the container. So a single picture's JPEG XL stream is computed unless the model is so far ahead of a
quick JPEG XL probe that it cannot lose (``Classical.settled``), and PNG where JPEG XL finds the picture flat (it
only ever wins there). The costly steps are decided cheaply: the model is chosen among the shipped ones that suit
the pictures' size, by coding a small job with each or by an estimate on a sample of a large one; a large picture is
screened (``screen``) before the model codes it, and the model's coding is skipped where a classical coder wins
clearly (in an archive of many large pictures, the estimates on a few bracket the others'; ``sample_ratios``). In an
archive, pictures of a few pixels are judged by their probes against the bits the model spent on them, and the
archive is coded again without the ones a classical coder codes shorter if that saves at least RECODE_GAIN (another
pass of the model). Every classical stream is computed at most once, and the plan carries it to the file
(``Classical``).
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from .coding.stages import TileCoder
from .coding.tiles import centre, centres
from .format import classical
from .format.container import CodingParams
from .format.image import Picture
from .format.planes import BYTES, COLOURS, JPEG_XL, PNG, STORED, coding_of, split
from .nets.weights import ModelError, load_network, read_config, resolve, shipped_models
from .options import Options

CHOOSE_BY_CODING = 1 << 14     # jobs of at most this many subpixels choose their model by coding with each
SAMPLE_PIXELS = 1 << 16        # larger jobs choose it by an estimate on about this many pixels ...
CENTRE = 256                   # ... of their pictures' centres, this many pixels a side at most (and screen them)
SMALL = 1 << 14                # subpixels up to which a picture is small: its probe is JPEG XL's effort 2 ...
HUGE = 1 << 20                 # pixels from which the probe is effort 1 (effort 3's encoder takes 160 MB at 12 MP)
PROBES = {"small": (2, 1.3), "large": (3, 1.2), "huge": (1, 1.5)}   # JPEG XL effort of the probe, and AHEAD:
                               # JPEG XL is settled where the model is ahead of the probe by this factor
ARCHIVE_AHEAD = 1.1            # ... for the small pictures of an archive (see review)
FLAT = 2.5                     # bits per subpixel of JPEG XL below which PNG is tried too ...
PNG_SUBPIXELS = 1 << 16        # ... on pictures of at most this many subpixels (milliseconds), and on larger ones
PNG_AHEAD = 1.25               # where a fast PNG is within this factor of JPEG XL's bytes ...
STRUCTURED = 1.5               # ... or JPEG XL's probe is this many times its bytes at full effort
SCREEN_PIXELS = 1 << 16        # pictures of at least this many pixels are screened before the model codes them
MARGIN = 1.035                 # a classical coding shorter than this times the model's estimate skips the model
SCREEN_SAMPLE = 4              # an archive of more large pictures than this estimates the model on this many first
SPREAD = 1.06                  # ... and brackets the others' by their ratios, at least this factor either side
RECODE_GAIN = 0.01             # an archive is coded again with classical codings if that saves this much of it
JPEG_XL_EFFORTS = {"default": classical.FINAL_EFFORT, "max": classical.MAX_EFFORT}


class Classical:
    """One picture's codings outside the model, each computed at most once: its raw bytes, JPEG XL at ``effort``,
    PNG, and a quick JPEG XL probe. ``ahead`` starts JPEG XL in a background thread (it releases the interpreter)
    while the caller goes on."""

    def __init__(self, pic: Picture, effort: int):
        self.pic, self.effort = pic, effort
        self.small = pic.subpixels <= SMALL
        size = "small" if self.small else "huge" if pic.size[0] * pic.size[1] >= HUGE else "large"
        self.probe_effort, self.ahead_factor = PROBES[size]
        self._streams: dict[int | str, Future] = {}
        self._lock = threading.Lock()
        self._started = False

    @cached_property
    def centre(self) -> Classical:
        """The codings of the picture's centre, CENTRE x CENTRE at most (``screen``)."""
        return Classical(_centre(self.pic), self.effort)

    def stream(self, coding: int) -> bytes:
        return self._future(coding).result()

    def size(self, coding: int) -> int:
        if coding == STORED:                # known without making a copy of every pixel
            return len(self.pic.pixel_bytes()) if self.pic.color.dtype != np.uint8 else self.pic.subpixels
        return len(self.stream(coding))

    def ahead(self) -> None:
        """Start the probe, then JPEG XL at full effort, in a background thread (one encoder at a time: a large
        picture's encoders take hundreds of MB), once."""
        with self._lock:
            started, self._started = self._started, True
        if not started:
            threading.Thread(target=lambda: (self.probe(), self.stream(JPEG_XL)), daemon=True).start()

    def probe(self) -> int:
        """The bytes of a quick JPEG XL coding (PROBES): effort 3; effort 2 for small pictures, where it is closer
        to the final effort (on CIFAR-10 training images its median is 1.10 times effort 7's, effort 1's 1.26); effort
        1 for huge ones (as fast as reading them, and no memory of its own)."""
        return len(self._future("probe").result())

    def settled(self, model_bytes: float, factor: float | None = None) -> bool:
        """Whether the model's bytes are so far below the probe's (by ``factor``: by default the probe's AHEAD)
        that JPEG XL at full effort cannot code the picture shorter. Measured on photos-train photos and crops,
        CIFAR-10 and MNIST training images: on photos effort 3 is at most 1.15 times effort 7, effort 2 at most 1.25
        on small pictures, effort 1 at most 1.46; where the model lost to effort 7, it was at most 1.14 times ahead
        of effort 2 or 3; on text and graphics the probe is up to 13 times effort 7, but the model is further behind
        still."""
        return model_bytes * (factor or self.ahead_factor) < self.probe()

    def best(self, model_bytes: float, factor: float | None = None) -> tuple[int | None, float]:
        """(STORED, JPEG_XL or PNG, its bytes) if that codes the picture in fewer bytes than ``model_bytes``, else
        (None, model_bytes). JPEG XL runs unless ``settled``, and then PNG too where the picture is small, or where
        JPEG XL finds it flat (below FLAT bits per subpixel: text, where PNG can code 30 % shorter) and it is not a
        photo (``structured``)."""
        sizes = {None: model_bytes, STORED: self.size(STORED)}
        if not self.settled(model_bytes, factor):
            sizes[JPEG_XL] = self.size(JPEG_XL)
            if self.pic.subpixels <= PNG_SUBPIXELS or (8 * sizes[JPEG_XL] < FLAT * self.pic.subpixels and
                                                       self.structured(sizes[JPEG_XL])):
                sizes[PNG] = self.size(PNG)
        best = min(sizes, key=sizes.get)
        return best, sizes[best]

    def structured(self, jpeg_xl_bytes: int) -> bool:
        """Whether PNG's search (six deflations at level 9: half a second for a 0.2 MP photo) may beat JPEG XL's
        ``jpeg_xl_bytes``: JPEG XL's probe is STRUCTURED times longer, or one fast deflation is within PNG_AHEAD of
        it. On ``bench/graphics.py``'s set (seed 0) the fast deflation was 1.0 to 2.8 times PNG's best and the
        probe 1.0 to 13 times JPEG XL -e7; where PNG won (text) they were 0.95 to 1.0 and 2.0 to 2.6 times it, on
        the first 20 photos of BSD300's training set 1.6 to 2.1 and 1.03 to 1.22 times it."""
        return (self.probe() > STRUCTURED * jpeg_xl_bytes or
                len(classical.png(self.pic, fast=True)) < PNG_AHEAD * jpeg_xl_bytes)

    def _future(self, key: int | str) -> Future:
        """The encoding ``key`` (a coding, or "probe"), computed by the first caller; later ones wait for it."""
        with self._lock:
            new = key not in self._streams
            result = self._streams.setdefault(key, Future())
        if new:
            _complete(result, (lambda: classical.jpeg_xl(self.pic, self.probe_effort)) if key == "probe" else
                      (lambda: classical.encode(self.pic, key, self.effort)))
        return result


def _complete(result: Future, fn) -> None:
    try:
        result.set_result(fn())
    except Exception as e:          # raised again by result.result()
        result.set_exception(e)


@dataclass
class Plan:
    """How the pictures are coded: ``codings[i]`` (``planes.CODINGS``) of picture i and its ``classical`` codings;
    the model-coded ones by ``models[0]`` (with ``params``, ``device``, ``backend``), or, when several models are
    listed, by whichever codes the file shortest. ``review`` says whether a classical coding wins afterwards."""
    models: list[str]
    params: CodingParams
    device: str
    backend: str | None
    codings: list[int]
    classical: list[Classical]
    review: bool = True

    @property
    def model(self) -> str:
        return self.models[0]


def plan(pictures: list[Picture], options: Options) -> Plan:
    """The plan of a compression: the models to try, each picture's coding (large pictures screened, unless the
    effort is "max"), and whether ``review`` compares the model's bits with classical codings afterwards."""
    candidates = [Classical(p, JPEG_XL_EFFORTS[options.effort]) for p in pictures]
    codings = [coding_of(p) for p in pictures]
    if options.classical and len(pictures) == 1 and codings[0] not in BYTES and not candidates[0].small:
        candidates[0].ahead()       # while the model is chosen and codes a large picture (small ones: faster inline)
    planes = [color for p, c in zip(pictures, codings) for color, _ in split(p, c)]
    if options.model is None:
        models, estimates = choose_models(planes, options)
    else:
        path = resolve(options.model)
        require_channels(read_config(path), path.stem, pictures)
        models, estimates = [options.model], {}
    params = replace(options.params, tuning=1) if options.effort == "max" else options.params
    result = Plan(models, params, options.device, options.backend, codings, candidates, options.classical)
    if options.classical and options.effort == "default":
        screened = [i for i, (c, coding) in enumerate(zip(candidates, codings)) if _screenable(c.pic, coding)]
        if len(pictures) == 1:
            bits, bracket = {0: estimates.get(models[0])}, None     # the model's sample was the picture's centre
        else:
            bits, bracket = sample_ratios(result, [candidates[i] for i in screened], [codings[i] for i in screened])
            bits = dict(zip(screened, bits))
        result.codings = [screen(result, candidates[i], codings[i], bits.get(i), bracket) if i in screened else
                          codings[i] for i in range(len(pictures))]
    return result


def review(plan: Plan, file_bytes: int, bits: np.ndarray) -> Plan | None:
    """After the model coded the plan: a plan with classical codings for the pictures they code shorter than the
    bits the model spent on them (a single picture: than its whole file), or None if that saves nothing (an archive:
    less than RECODE_GAIN of it). The small pictures of an archive run JPEG XL at full effort only where its probe
    comes within ARCHIVE_AHEAD of the model: on 1000 CIFAR-10 training images that ran it on 57 pictures and found 5
    of the 6 that it codes shorter than the model, in a fraction of the time every picture would take."""
    if not plan.review:
        return None
    single = len(plan.codings) == 1
    spent = [file_bytes] if single else bits / 8
    best = [(None, b) if coding in BYTES else c.best(b, ARCHIVE_AHEAD if c.small and not single else None)
            for coding, c, b in zip(plan.codings, plan.classical, spent)]
    saving = sum(b - size for b, (_, size) in zip(spent, best))
    if saving <= 0 or (not single and saving < RECODE_GAIN * file_bytes):
        return None
    return replace(plan, codings=[old if new is None else new for (new, _), old in zip(best, plan.codings)],
                   models=plan.models[:1], review=False)


def screen(plan: Plan, candidates: Classical, coding: int, bits: float | None = None,
           bracket: tuple[float, float] | None = None) -> int:
    """A classical coding for a large picture (SCREEN_PIXELS) that codes shorter than MARGIN times the model's
    estimate, else ``coding``: the model's full coding, many times slower than the classical coders, is then skipped.

    The estimate: the model's bits on the picture's centre (``TileCoder.estimate_bits``; ``bits`` if known), scaled
    by what the probe spends on the whole picture over what it spends on the centre (the centre alone often
    misjudges the whole). On the 8 validation photos of photos-train (ratio of JPEG XL -e7 to the estimate, centre
    crops) the model coded every photo with a ratio up to 1.028 longer than JPEG XL (by 0.9 to 11 %) and won at
    1.045 and 1.068: MARGIN lies between the two.

    Without ``bits`` but with a ``bracket`` of the model's bytes per byte of the probe (``sample_ratios``), the
    estimate lies between its ends times the probe's bytes on the whole picture: where the decision is the same at
    both ends it is made without the model."""
    if bits is None and bracket:
        low, high = bracket[0] * candidates.probe(), bracket[1] * candidates.probe()
        if candidates.settled(high):
            return coding
        best, size = candidates.best(math.inf)
        if size < MARGIN * low:
            return best
        if size >= MARGIN * high:
            return coding
    if bits is None:
        bits = centre_bits(plan, candidates, coding)
    estimate = bits / 8 * candidates.probe() / candidates.centre.probe()
    if candidates.settled(estimate):
        return coding
    return candidates.best(MARGIN * estimate)[0] or coding


def sample_ratios(plan: Plan, candidates: list[Classical],
                  codings: list[int]) -> tuple[list, tuple[float, float] | None]:
    """For an archive of more than SCREEN_SAMPLE large pictures: the model's bits on the centres of SCREEN_SAMPLE
    evenly spread ones (None for the others), and the bracket (least, greatest) of those bytes per byte of the probe
    on the same centres, at least SPREAD either side of their median (``screen`` brackets the others' estimates by
    it); else no bits and no bracket.

    On 45 photos of one kind (the first 45 of BSD300's training set in photos-train) the ratios of all lay between
    0.94 and 1.046 times their median, and estimating every picture took three quarters of the time of coding them
    all: the bracket left 14 to estimate, and the archive came out byte for byte the same in 18 s instead of 42 s
    (cjxl -e7: 11 s). On the 8 validation photos the ratios lay between 0.97 and 1.056 times their median."""
    bits: list[float | None] = [None] * len(candidates)
    if len(candidates) <= SCREEN_SAMPLE:
        return bits, None
    ratios = []
    for i in np.linspace(0, len(candidates) - 1, SCREEN_SAMPLE).round().astype(int):
        bits[i] = centre_bits(plan, candidates[i], codings[i])
        ratios.append(bits[i] / 8 / candidates[i].centre.probe())
    middle = float(np.median(ratios))
    return bits, (min(min(ratios), middle / SPREAD), max(max(ratios), middle * SPREAD))


def centre_bits(plan: Plan, candidates: Classical, coding: int) -> float:
    """The model's estimate of the bits of a picture's centre, JPEG XL coding the picture meanwhile."""
    candidates.ahead()              # one picture's encoders at a time
    return estimate_bits(plan, [color for color, _ in split(candidates.centre.pic, coding)])


def estimate_bits(plan: Plan, planes: list[np.ndarray]) -> float:
    """The plan's model's estimate of the bits of colour ``planes`` (``TileCoder.estimate_bits``)."""
    net = load_network(plan.model, plan.device, sum(p.size for p in planes), plan.backend)[0]
    return TileCoder(net, plan.params).estimate_bits(planes)


def choose_models(planes: list[np.ndarray], options: Options) -> tuple[list[str], dict[str, float]]:
    """The shipped models that suit colour ``planes``, best first, and their estimates: for a job of at most
    CHOOSE_BY_CODING subpixels every one that suits (the encoder codes the job with each, which costs what estimating
    would), for a larger job the one with the lowest estimate on a sample of the planes.

    A grayscale model suits only gray planes; a model whose coarsest grid is larger than every picture (the photo
    model's 64 pixels, for a 32 x 32 image) suits only if no other model does: it would mostly code padding."""
    configs = {name: read_config(resolve(name)) for name in shipped_models()}
    fit = [name for name, c in configs.items() if c.channels == 3 or all(p.shape[0] == 1 for p in planes)]
    side = max(max(p.shape[1:]) for p in planes)
    names = [name for name in fit if configs[name].grid <= side] or [min(fit, key=lambda n: configs[n].grid)]
    if len(names) < 2 or sum(p.size for p in planes) <= CHOOSE_BY_CODING:
        return names, {}
    sample = centres(planes, CENTRE, SAMPLE_PIXELS)
    estimates = {}
    for name in names:
        net = load_network(name, options.device, sum(p.size for p in sample), options.backend)[0]
        estimates[name] = TileCoder(net, options.params).estimate_bits(sample)
    return [min(estimates, key=estimates.get)], estimates


def require_channels(config, name: str, pictures: list[Picture]) -> None:
    """Refuse colour pictures (palette images with their colours) for a grayscale model."""
    if config.channels == 1 and any(p.color.shape[0] != 1 or coding_of(p) == COLOURS for p in pictures):
        raise ModelError(f"model {name!r} is grayscale and cannot code colour images")


def _centre(pic: Picture) -> Picture:
    alpha = None if pic.alpha is None else centre(pic.alpha, CENTRE)
    return replace(pic, color=centre(pic.color, CENTRE), alpha=alpha)


def _screenable(pic: Picture, coding: int) -> bool:
    """Whether ``screen`` looks at a picture: one of at least SCREEN_PIXELS pixels that the model would code."""
    return coding not in BYTES and pic.size[0] * pic.size[1] >= SCREEN_PIXELS
