"""Integer-exact network layers: every value a network passes on is an integer, held in float32.

Weights are integers (each output channel's scale is a power of two times the scale its output is wanted in), inputs
are integers with known bounds, and every product and partial sum of a convolution is an integer below 2^24 in
magnitude, so float32 convolution gives the same bits in any summation order, SIMD width, thread count or device.
Between layers values are scaled by a power of two, rounded (ties to even) and clamped: exact IEEE operations too.

A module runs in one of three modes (``set_mode``): ``float`` is the plain network (master weights, no rounding),
used to calibrate the scales; ``train`` derives the integer weights from the masters at every call and rounds with a
straight-through gradient (quantization-aware training); ``frozen`` runs stored integer weights (coding).

Scales: every integer tensor has a per-channel scale, the real value of one unit. Free scales are calibrated once
from the float network (each channel's largest value, with headroom), the others are fixed by their consumer
(the coder's grids) or derived (power-of-two steps from a residual stream).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACT_MAX, STREAM_MAX

EXACT = 1 << 24             # |every partial sum| below this: float32 holds it exactly
WEIGHT_MAX = (1 << 15) - 1  # integer weights are stored as int16
STREAM_UNITS = 1 << 15      # a residual stream resolves its calibrated range into this many units
HEADROOM = 1.25             # calibrated ranges: this times the largest value seen per channel
SHIFT_RANGE = (-30, 30)
MODES = ("float", "train", "frozen")


def rnd(x: torch.Tensor) -> torch.Tensor:
    """Round half to even; with a straight-through gradient when x needs one."""
    return ste(x, torch.round(x)) if x.requires_grad else torch.round(x)


def ste(exact: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` forwards, the gradient of ``exact`` backwards."""
    return exact + (value - exact).detach()


def quant(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Round and clamp to integers in [lo, hi]."""
    return rnd(x).clamp(lo, hi) if x.requires_grad else torch.round(x).clamp_(lo, hi)


def per_channel(v: torch.Tensor) -> torch.Tensor:
    """A (C,) vector shaped to broadcast over (B, C, H, W)."""
    return v[:, None, None]


def conv(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor, padding: int) -> torch.Tensor:
    """Convolution of integer tensors, exact under the 2^24 bound.

    On the CPU oneDNN runs it as a direct or GEMM convolution; elsewhere it is im2col + matrix product, which no
    library turns into a Winograd or FFT algorithm (those are never exact).
    """
    if a.device.type == "cpu":
        return F.conv2d(a, w, b, padding=padding)
    return unfold_conv(a, w, b, padding)


def unfold_conv(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor, padding: int) -> torch.Tensor:
    """Convolution as im2col + matrix product."""
    n, _, h, width = a.shape
    cols = F.unfold(a, w.shape[-1], padding=padding)
    return (w.flatten(1) @ cols + b[:, None]).view(n, -1, h, width)


@contextmanager
def exact_arithmetic():
    """Inference with IEEE float32 everywhere: no TF32/BF16 shortcuts, no NNPACK (Winograd), no autograd."""
    props = [torch.backends.mkldnn.conv, torch.backends.mkldnn.matmul, torch.backends.cudnn.conv,
             torch.backends.cuda.matmul]
    before = [p.fp32_precision for p in props]
    try:
        for p in props:
            p.fp32_precision = "ieee"
        with torch.backends.nnpack.flags(enabled=False), torch.no_grad():
            yield
    finally:
        for p, v in zip(props, before):
            p.fp32_precision = v


def shifts_for(base: torch.Tensor, bias: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Per output channel, the largest s such that the weights ``base * 2^s`` rounded keep every partial sum of
    the convolution below 2^24 (inputs bounded by ``bound`` per input channel) and fit int16."""
    base, bias, bound = base.detach().double(), bias.detach().double(), bound.double()
    taps = base[0, 0].numel()
    load = (base.abs() * bound[None, :, None, None]).flatten(1).sum(1) + bias.abs()
    slack = 0.5 * taps * float(bound.sum()) + 0.5            # what rounding every weight up could add
    peak = base.abs().flatten(1).amax(1)
    room = torch.minimum((EXACT - 1 - slack) / load, (WEIGHT_MAX - 0.5) / peak)
    return torch.floor(torch.log2(room)).nan_to_num(SHIFT_RANGE[1], SHIFT_RANGE[1]).clamp(*SHIFT_RANGE)


class QConv(nn.Module):
    """A convolution whose integer weights produce output in units of a given per-channel scale times 2^-shift."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        ref = nn.Conv2d(cin, cout, k)          # PyTorch's default initialization
        self.weight, self.bias = ref.weight, ref.bias
        self.padding = k // 2
        self.mode = "float"
        self.register_buffer("w_int", torch.zeros(cout, cin, k, k))
        self.register_buffer("b_int", torch.zeros(cout))
        self.register_buffer("shift", torch.zeros(cout))

    def integers(self, in_scale: torch.Tensor, in_bound: torch.Tensor, out_scale: torch.Tensor):
        """(weights, bias, shift) from the master weights: inputs in units of ``in_scale`` (C_in,), bounded by
        ``in_bound``, output wanted in units of ``out_scale`` (C_out,)."""
        base = self.weight * (in_scale[None, :, None, None] / out_scale[:, None, None, None])
        bias = self.bias / out_scale
        shift = shifts_for(base, bias, in_bound).to(base)
        scale = torch.exp2(shift)
        return rnd(base * scale[:, None, None, None]), rnd(bias * scale), shift

    def freeze(self, in_scale, in_bound, out_scale) -> None:
        """Store the integer weights and check the exactness bound on them."""
        with torch.no_grad():
            w, b, shift = self.integers(in_scale, in_bound, out_scale)
            load = (w.abs() * in_bound[None, :, None, None]).flatten(1).sum(1) + b.abs()
            if load.max() >= EXACT or w.abs().max() > WEIGHT_MAX:
                raise ValueError("integer weights exceed the exactness bound")
            self.w_int.copy_(w), self.b_int.copy_(b), self.shift.copy_(shift)

    def thaw(self, in_scale, out_scale) -> None:
        """Master weights from the stored integers (to continue training a shipped model)."""
        with torch.no_grad():
            step = out_scale * torch.exp2(-self.shift)
            self.weight.copy_(self.w_int * step[:, None, None, None] / in_scale[None, :, None, None])
            self.bias.copy_(self.b_int * step)

    def forward(self, a, in_scale=None, in_bound=None, out_scale=None):
        """Float mode: the plain convolution. Otherwise: output in units of ``out_scale``, not yet rounded."""
        if self.mode == "float":
            return F.conv2d(a, self.weight, self.bias, padding=self.padding)
        if self.mode == "frozen":
            w, b, shift = self.w_int, self.b_int, self.shift
        else:
            w, b, shift = self.integers(in_scale, in_bound, out_scale)
        return conv(a, w, b, self.padding) * per_channel(torch.exp2(-shift))


class Calibration:
    """Collects, per named site, the per-channel maximum of absolute values over the batches seen."""

    def __init__(self):
        self.ranges: dict[str, torch.Tensor] = {}

    def observe(self, key: str, y: torch.Tensor) -> None:
        peak = y.detach().abs().transpose(0, 1).flatten(1).amax(1).clamp(min=1e-6).cpu() * HEADROOM
        self.ranges[key] = torch.maximum(self.ranges[key], peak) if key in self.ranges else peak


class Site(nn.Module):
    """A per-channel scale of an integer tensor; zero until calibrated."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("scale", torch.zeros(channels))


def _relu_shift(relu_range: torch.Tensor, stream: torch.Tensor) -> torch.Tensor:
    """Power-of-two step from a stream's units to a 0..ACT_MAX activation covering ``relu_range``."""
    return torch.ceil(torch.log2(relu_range / (ACT_MAX * stream))).clamp(0, 24)


class Block(nn.Module):
    """Pre-activation residual block h + conv(relu(conv(relu(h)))) on an integer residual stream."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1, self.conv2 = QConv(width, width, 3), QConv(width, width, 3)
        self.register_buffer("relu_shift", torch.zeros(width))   # stream units -> conv1's input units
        self.act = Site(width)                                     # conv1's output activation

    def forward(self, h, stream, cal: Calibration | None = None, key: str = ""):
        if self.conv1.mode == "float":
            a = F.relu(self.conv1(F.relu(h)))
            if cal is not None:
                cal.observe(key + ".relu", h), cal.observe(key + ".act", a)
            return h + self.conv2(a)
        bound = torch.full_like(stream, ACT_MAX)
        in_scale = stream * torch.exp2(self.relu_shift)
        a = quant(h * per_channel(torch.exp2(-self.relu_shift)), 0, ACT_MAX)
        a = quant(self.conv1(a, in_scale, bound, self.act.scale), 0, ACT_MAX)
        return (h + rnd(self.conv2(a, self.act.scale, bound, stream))).clamp(-STREAM_MAX, STREAM_MAX)

    def calibrate(self, cal: Calibration, key: str, stream: torch.Tensor) -> None:
        self.relu_shift.copy_(_relu_shift(cal.ranges[key + ".relu"], stream))
        self.act.scale.copy_(cal.ranges[key + ".act"] / ACT_MAX)

    def freeze(self, stream) -> None:
        bound = torch.full_like(stream, ACT_MAX)
        self.conv1.freeze(stream * torch.exp2(self.relu_shift), bound, self.act.scale)
        self.conv2.freeze(self.act.scale, bound, stream)

    def thaw(self, stream) -> None:
        self.conv1.thaw(stream * torch.exp2(self.relu_shift), self.act.scale)
        self.conv2.thaw(self.act.scale, stream)


class IntNet(nn.Module):
    """conv 3x3 -> residual blocks -> ReLU -> conv 1x1, from an integer input to outputs in given units.

    ``in_scale``/``in_bound`` (buffers) describe the input's units and bounds per channel; ``out_scale`` the units
    the outputs are wanted in (set by the owner: the coder's grids, or calibrated features). The forward pass
    returns the outputs unrounded; the owner rounds and clamps them to its own range.
    """

    def __init__(self, cin: int, width: int, cout: int, blocks: int):
        super().__init__()
        self.conv_in = QConv(cin, width, 3)
        self.blocks = nn.ModuleList([Block(width) for _ in range(blocks)])
        self.head = QConv(width, cout, 1)
        self.stream = Site(width)
        self.register_buffer("head_shift", torch.zeros(width))
        self.register_buffer("in_scale", torch.zeros(cin))
        self.register_buffer("in_bound", torch.zeros(cin))
        self.register_buffer("out_scale", torch.zeros(cout))

    def forward(self, x, cal: Calibration | None = None, key: str = ""):
        if self.head.mode == "float":
            h = self.conv_in(x)
            for i, block in enumerate(self.blocks):
                if cal is not None:
                    cal.observe(key + ".stream", h)
                h = block(h, None, cal, f"{key}.{i}")
            if cal is not None:
                cal.observe(key + ".stream", h), cal.observe(key + ".relu", h)
            return self.head(F.relu(h))
        s = self.stream.scale
        h = quant(self.conv_in(x, self.in_scale, self.in_bound, s), -STREAM_MAX, STREAM_MAX)
        for block in self.blocks:
            h = block(h, s)
        a = quant(h * per_channel(torch.exp2(-self.head_shift)), 0, ACT_MAX)
        return self.head(a, s * torch.exp2(self.head_shift), torch.full_like(s, ACT_MAX), self.out_scale)

    def calibrate(self, cal: Calibration, key: str) -> None:
        s = cal.ranges[key + ".stream"] / STREAM_UNITS
        self.stream.scale.copy_(s)
        for i, block in enumerate(self.blocks):
            block.calibrate(cal, f"{key}.{i}", s)
        self.head_shift.copy_(_relu_shift(cal.ranges[key + ".relu"], s))

    def freeze(self) -> None:
        s = self.stream.scale
        self.conv_in.freeze(self.in_scale, self.in_bound, s)
        for block in self.blocks:
            block.freeze(s)
        self.head.freeze(s * torch.exp2(self.head_shift), torch.full_like(s, ACT_MAX), self.out_scale)

    def thaw(self) -> None:
        s = self.stream.scale
        self.conv_in.thaw(self.in_scale, s)
        for block in self.blocks:
            block.thaw(s)
        self.head.thaw(s * torch.exp2(self.head_shift), self.out_scale)


def set_mode(model: nn.Module, mode: str) -> None:
    """Switch every QConv of ``model`` to ``mode`` (one of MODES)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    for m in model.modules():
        if isinstance(m, QConv):
            m.mode = mode


def mode_of(model: nn.Module) -> str:
    return next(m.mode for m in model.modules() if isinstance(m, QConv))
