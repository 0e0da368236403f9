"""Tuning: the encoder fits the stage networks' biases to one image and sends their changes, where they pay.

At ``--effort max`` (coding parameter ``tuning``) every model-coded image of TUNED_PIXELS or more carries a flag
and, when set, one integer change per bias of the stage networks (``Network.tunable``: 3,960 numbers for the photo
model), coded in the rANS message before the image's tiles. The changes are integers added to the integer biases,
bounded so that every partial sum stays exact (``Network.tuned``), so every machine computes the same frequencies.

The encoder fits the biases by Adam on random tiles of the image, in the quantization-aware network (``fit``);
each bias vector is then sent on a power-of-two grid, or not at all, whichever costs least by a quadratic model
of the loss (``quantize``); the whole tuning is kept only where the model's estimate of the image's bits with it,
plus its own bits, is below the estimate without (``tune``).
"""
from __future__ import annotations

import copy
import math

import numpy as np

from ..entropy import codecs
from ..entropy.rans import CorruptMessage
from .tiles import gather, mask, plan_tiles

TUNED_PIXELS = 1 << 17      # images of fewer pixels are never tuned: their tuning could not pay for itself
FIT_STEPS = 150             # Adam steps of the fit, one random tile each ...
FIT_TILE = 256              # ... of this side
FIT_RATE = 1e-3             # Adam's step size on the biases (in the units of the float network)
CURVATURE = 0.05            # the empirical Fisher overstates the curvature of the image's bits about 20-fold
Q = 31                      # a bias change is q * 2^k with |q| <= Q
GRID_BITS = 5               # per bias vector: 0 unchanged, 1 + k for changes on the grid 2^k (k < 2^GRID_BITS - 1)
DECAYS = ((1, 8), (1, 4), (1, 2), (3, 4), (7, 8), (15, 16), (31, 32), (63, 64))   # shapes of q's distribution ...
SHAPE_BITS = 3              # ... one of 2^SHAPE_BITS per changed vector
TABLE_PRECISION = 16


def _table(num: int, den: int) -> np.ndarray:
    """The CDF of q + Q under a two-sided geometric distribution of ratio num/den, in integers alone: every
    machine builds the same table."""
    mass = [1 << 30]
    for _ in range(Q):
        mass.append(mass[-1] * num // den)
    mass = np.array(mass[:0:-1] + mass, np.int64)
    freq = 1 + mass * ((1 << TABLE_PRECISION) - len(mass)) // int(mass.sum())
    freq[Q] += (1 << TABLE_PRECISION) - int(freq.sum())
    return np.concatenate([[0], np.cumsum(freq)])


TABLES = np.stack([_table(*d) for d in DECAYS])
TABLE_BITS = (TABLE_PRECISION - np.log2(np.diff(TABLES, axis=1)))   # bits of each q + Q under each shape


def eligible(height: int, width: int) -> bool:
    """Whether an image of this size may be tuned (and so carries a tuning flag)."""
    return height * width >= TUNED_PIXELS


def describe(sizes: list[int], deltas: list[np.ndarray] | None):
    """The description of one image's tuning (``codecs.Sequence``): a flag, then per bias vector of ``sizes``
    its grid and, unless unchanged, its distribution's shape and the integers q. Encoding passes the changes,
    each a multiple of a power-of-two step (``quantize``), or [] for an untuned image; decoding passes None.
    Returns the changes, or None for an untuned image."""
    encoding = deltas is not None
    flag = yield codecs.Uniform(1, 1), np.array([len(deltas) > 0], np.int64) if encoding else None
    if not flag[0]:
        return None
    out = []
    for j, n in enumerate(sizes):
        grid = np.array([_grid_code(deltas[j])], np.int64) if encoding else None
        grid = int((yield codecs.Uniform(1, GRID_BITS), grid)[0])
        if grid == 0:
            out.append(np.zeros(n, np.int64))
            continue
        q = (deltas[j] >> (grid - 1)) + Q if encoding else None
        shape = np.array([np.argmin(TABLE_BITS[:, q].sum(1))], np.int64) if encoding else None
        shape = int((yield codecs.Uniform(1, SHAPE_BITS), shape)[0])
        q = yield codecs.Categorical(TABLES[shape], n), q
        out.append((q - Q) << (grid - 1))
    return out


def _grid_code(delta: np.ndarray) -> int:
    """0 for an unchanged vector, else 1 + the largest k with every change a multiple of 2^k, |q| <= Q."""
    if not delta.any():
        return 0
    k = int(np.min([(int(v) & -int(v)).bit_length() - 1 for v in delta if v]))
    k = min(k, (1 << GRID_BITS) - 2)
    if np.abs(delta >> k).max() > Q or np.any((delta >> k) << k != delta):
        raise ValueError("a bias change off its grid")
    return 1 + k


class Codec:
    """One image's tuning in the message: its bias changes (None: untuned) for a network's ``tunable`` biases."""

    def __init__(self, net):
        self.sizes = [len(room) for room in net.rooms()]
        self.sequence = codecs.Sequence(lambda deltas: describe(self.sizes, deltas))

    def push(self, msg, deltas):
        self.sequence.push(msg, deltas or [])

    def pop(self, msg):
        return self.sequence.pop(msg)

    def bits(self, deltas) -> float:
        """The bits the tuning takes in the message."""
        total = sum(int(codecs.information(codec.start_freq(symbols)[1], codec.precision).sum())
                    for codec, symbols in self.sequence.steps(deltas or []))
        return total / (1 << codecs.LOG_FRAC)


def tuned(net, deltas):
    """The network an image is coded with: ``net``, or ``net`` tuned by ``deltas``; a file whose changes break
    the exactness bound is corrupt."""
    if deltas is None:
        return net
    try:
        return net.tuned(deltas)
    except ValueError:
        raise CorruptMessage("a tuned bias breaks the exactness bound") from None


# ---- the encoder's fit ------------------------------------------------------------------------------------------
def fit(model, planes: np.ndarray, steps: int, seed: int = 0, report=None) -> tuple[list, list]:
    """The changes of the stage networks' biases that fit a torch ``vae.VAE`` to one image's colour ``planes``
    (C, H, W) in ``steps`` Adam steps, in the units of its integer biases, and per bias the curvature of the
    image's bits in those units (an empirical Fisher from Adam's squared gradients, times CURVATURE): (changes,
    curvatures), float64 vectors in ``tunable`` order. z is the posterior's mean on each tile. ``report(step,
    steps)`` is called after each step."""
    import torch

    from ..nets.vae import set_mode
    model = copy.deepcopy(model)
    set_mode(model, "train")
    for p in model.parameters():
        p.requires_grad_(False)
    layers = [layer for layer, _ in model.network().tunable()]
    units = {conv: out_scale for conv, _, _, out_scale in model.conv_units()}
    start = [layer.bias.detach().clone() for layer in layers]
    biases = [layer.bias.requires_grad_(True) for layer in layers]
    opt = torch.optim.Adam(biases, lr=FIT_RATE)
    tiles = plan_tiles([planes.shape], FIT_TILE, model.config.grid)
    latents = {}
    rng = np.random.default_rng(seed)
    for step in range(steps):
        i = int(rng.integers(len(tiles)))
        x = torch.from_numpy(gather([planes], tiles[i:i + 1])).to(model.z_net.in_scale.device)
        m = torch.from_numpy(mask(tiles[i:i + 1])).to(x.device)
        if i not in latents:
            with torch.no_grad():
                latents[i] = model.posterior(x)[0]
        opt.zero_grad()
        (-model.log_likelihood(x, latents[i], mask=m, channels=planes.shape[0]).sum()).backward()
        opt.step()
        if report is not None:
            report(step + 1, steps)
    changes, curvatures = [], []
    beta2 = opt.defaults["betas"][1]
    for layer, before, bias in zip(layers, start, biases):
        unit = (units[layer] * torch.exp2(-layer.shift)).double()          # one integer step, in float units
        changes.append(((bias.detach().double() - before.double()) / unit).cpu().numpy())
        fisher = opt.state[bias]["exp_avg_sq"].double() / (1 - beta2 ** steps) * len(tiles) * CURVATURE
        curvatures.append((fisher * unit ** 2).cpu().numpy())
    return changes, curvatures


def quantize(changes: list, curvatures: list, rooms: list) -> list[np.ndarray]:
    """Integer bias changes: each vector on the power-of-two grid, or unchanged, that minimizes its bits in the
    message plus the bits its rounding costs the image by the quadratic model sum(curvature * error^2) / 2 ln 2;
    no change beyond its bias's ``rooms`` (``Network.rooms``)."""
    out = []
    for change, curve, room in zip(changes, curvatures, rooms):
        cost = lambda error: float((curve * error ** 2).sum()) / (2 * math.log(2))
        best, best_bits = np.zeros(len(change), np.int64), GRID_BITS + cost(change)
        for k in range((1 << GRID_BITS) - 1):
            limit = np.minimum(Q, np.floor(room / 2.0 ** k))
            q = np.clip(np.rint(change / 2.0 ** k), -limit, limit).astype(np.int64)
            if not q.any():
                break
            bits = GRID_BITS + SHAPE_BITS + TABLE_BITS[:, q + Q].sum(1).min() + cost(change - q * 2.0 ** k)
            if bits < best_bits:
                best, best_bits = q << k, bits
        out.append(best)
    return out


def tune(model, net, layers: list[np.ndarray], params, report=None) -> list[np.ndarray] | None:
    """The bias changes that code one image's colour ``layers`` (C, H, W) each, fitted to the first, shortest by
    the model's estimate with the tuning's own bits, or None where no tuning pays. ``model``: the torch
    ``vae.VAE`` of ``net``, the coder's network; ``report``: the fit's (``fit``)."""
    from .stages import TileCoder
    deltas = quantize(*fit(model, layers[0], FIT_STEPS, report=report), net.rooms())
    if not any(d.any() for d in deltas):
        return None
    before = TileCoder(net, params).estimate_bits(layers)
    after = TileCoder(net.tuned(deltas), params).estimate_bits(layers) + Codec(net).bits(deltas)
    return deltas if after < before - 1 else None
