"""The torch modules that hold an integer network's parameters and train them (the computation itself is
``network.Network``, over ``torch_ops.TorchOps``).

Weights are integers (each output channel's scale is a power of two times the scale its output is wanted in), inputs
are integers with known bounds, and every product and partial sum of a convolution is an integer below 2^24 in
magnitude, so float32 convolution gives the same bits in any summation order, SIMD width, thread count or device.
Between layers values are scaled by a power of two, rounded (ties to even) and clamped: exact IEEE operations too.

A model holds master weights (trained) and the integer weights derived from them (``QConv.freeze``, stored in model
files). Scales: every integer tensor has a per-channel scale, the real value of one unit. Free scales are
calibrated once from the float network (each channel's largest value, with headroom), the others are fixed by their
consumer (the coder's grids) or derived (power-of-two steps from a residual stream): ``conv_units`` lists, for every
convolution, the units of its input and output, from which its integer weights follow.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ACT_MAX, EXACT
from .torch_ops import rnd

WEIGHT_MAX = (1 << 15) - 1  # integer weights are stored as int16
STREAM_UNITS = 1 << 15      # a residual stream resolves its calibrated range into this many units
HEADROOM = 1.25             # calibrated ranges: this times the largest value seen per channel
SHIFT_RANGE = (-30, 30)


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
    """A convolution's master weights, and the integer weights that produce its output in units of a given
    per-channel scale times 2^-shift."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        ref = nn.Conv2d(cin, cout, k)          # PyTorch's default initialization
        self.weight, self.bias = ref.weight, ref.bias
        self.padding = k // 2
        self.register_buffer("w_int", torch.zeros(cout, cin, k, k))
        self.register_buffer("b_int", torch.zeros(cout))
        self.register_buffer("shift", torch.zeros(cout))

    def integers(self, in_scale: torch.Tensor, in_bound: torch.Tensor, out_scale: torch.Tensor):
        """(weights, bias, shift) from the master weights: inputs in units of ``in_scale`` (C_in,), bounded by
        ``in_bound``, output wanted in units of ``out_scale`` (C_out,). Rounded with a straight-through gradient."""
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

    def thaw(self, in_scale, in_bound, out_scale) -> None:
        """Master weights from the stored integers (to continue training a shipped model)."""
        with torch.no_grad():
            step = out_scale * torch.exp2(-self.shift)
            self.weight.copy_(self.w_int * step[:, None, None, None] / in_scale[None, :, None, None])
            self.bias.copy_(self.b_int * step)


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
    """A pre-activation residual block h + conv(act(conv(act(h)))) on an integer residual stream."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1, self.conv2 = QConv(width, width, 3), QConv(width, width, 3)
        self.register_buffer("relu_shift", torch.zeros(width))   # stream units -> conv1's input units
        self.act = Site(width)                                     # conv1's output activation


class IntNet(nn.Module):
    """conv 3x3 -> residual blocks -> ReLU -> conv 1x1, from an integer input to outputs in given units.

    ``in_scale``/``in_bound`` (buffers) describe the input's units and bounds per channel; ``out_scale`` the units
    the outputs are wanted in (set by the owner: the coder's grids, or calibrated features).
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

    def conv_units(self):
        """(convolution, input scale, input bound, output scale) of every convolution."""
        s = self.stream.scale
        bound = torch.full_like(s, ACT_MAX)
        yield self.conv_in, self.in_scale, self.in_bound, s
        for block in self.blocks:
            yield block.conv1, s * torch.exp2(block.relu_shift), bound, block.act.scale
            yield block.conv2, block.act.scale, bound, s
        yield self.head, s * torch.exp2(self.head_shift), bound, self.out_scale

    def calibrate(self, cal: Calibration, key: str) -> None:
        """Free scales from the ranges the float network showed (``network.Network``'s observation sites)."""
        s = cal.ranges[key + ".stream"] / STREAM_UNITS
        self.stream.scale.copy_(s)
        for i, block in enumerate(self.blocks):
            block.relu_shift.copy_(_relu_shift(cal.ranges[f"{key}.{i}.relu"], s))
            block.act.scale.copy_(cal.ranges[f"{key}.{i}.act"] / ACT_MAX)
        self.head_shift.copy_(_relu_shift(cal.ranges[key + ".relu"], s))


class Up(nn.Module):
    """A 1x1 convolution whose output, pixel-shuffled, is z's features at twice the resolution (``site``: their
    scale)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = QConv(width, 4 * width, 1)
        self.site = Site(width)
