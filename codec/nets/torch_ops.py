"""The torch arithmetic of the integer networks (``network.Network``): the frozen network (coding on a GPU or in
large CPU jobs, bounds), quantization-aware training, and the plain float network that calibrates the scales.

``TorchOps(model, mode)``: ``frozen`` runs the stored integer weights; ``train`` derives the integer weights from
the master weights at every call and rounds with a straight-through gradient, so the network that is trained is
exactly the one that is shipped; ``float`` is the network without rounding (master weights, real-valued inputs: a
bound of 0 is a ReLU, every other rounding and clamp the identity), and with a ``Calibration`` it records the
ranges from which the free scales are set. With ``numpy_io`` (the coder's interface), inputs are NumPy arrays and
outputs float64 NumPy arrays.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from .config import ACT_MAX, COEF_COUNT, COEF_STEP, COEF_TABLE, EXACT, PIXEL_SCALE, STREAM_MAX, Z_MAX, Z_STEP

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



class TorchOps:
    """The arithmetic of ``network.Network`` in torch, layout (B, C, H, W); see the module's docstring. ``unfold``:
    every convolution as im2col + matrix product (a GPU's arithmetic) also on the CPU."""

    def __init__(self, model, mode: str, calibration=None, numpy_io: bool = False, unfold: bool = False):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode, self.calibration, self.numpy_io = mode, calibration, numpy_io
        self.integer = mode != "float"
        self._conv = unfold_conv if unfold else conv
        self.dtype, self.device = model.z_net.in_scale.dtype, model.z_net.in_scale.device
        self.units = {c: u for c, *u in model.conv_units()} if mode == "train" else None

    def context(self):
        return exact_arithmetic() if self.mode == "frozen" else nullcontext()

    def conv(self, layer, a: torch.Tensor) -> torch.Tensor:
        if not self.integer:
            return F.conv2d(a, layer.weight, layer.bias, padding=layer.padding)
        if self.units is None:
            w, b, shift = layer.w_int, layer.b_int, layer.shift
        else:
            w, b, shift = layer.integers(*self.units[layer])
        return self._conv(a, w, b, layer.padding) * per_channel(torch.exp2(-shift))

    @staticmethod
    def bias_room(layer, bound) -> np.ndarray:
        """Per output channel, how far the stored integer bias may move with every partial sum still below 2^24,
        for inputs bounded by ``bound`` (one number, or one per input channel)."""
        bound = torch.as_tensor(bound).double().cpu()
        load = (layer.w_int.detach().double().abs().cpu() * (bound[:, None, None] if bound.ndim else bound))
        load = load.flatten(1).sum(1)
        return EXACT - 1 - (load + layer.b_int.detach().double().abs().cpu()).numpy()

    @staticmethod
    def with_bias(layer, delta: np.ndarray) -> SimpleNamespace:
        """The frozen convolution with its integer bias moved by ``delta`` (C_out,)."""
        return SimpleNamespace(w_int=layer.w_int, b_int=layer.b_int + torch.from_numpy(delta).to(layer.b_int),
                               shift=layer.shift, padding=layer.padding)

    def quant(self, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        if self.integer:
            return quant(x, lo, hi)
        return F.relu(x) if lo == 0 else x

    def activation(self, h: torch.Tensor, shift: torch.Tensor, key: str) -> torch.Tensor:
        if self.integer:
            return quant(h * per_channel(torch.exp2(-shift)), 0, ACT_MAX)
        self.observe(key, h)
        return F.relu(h)

    @staticmethod
    def relu(h: torch.Tensor) -> torch.Tensor:
        return h.clamp(min=0)

    def residual(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (h + rnd(y)).clamp(-STREAM_MAX, STREAM_MAX) if self.integer else h + y

    def observe(self, key: str, value: torch.Tensor) -> None:
        if self.calibration is not None:
            self.calibration.observe(key, value)

    def _tensor(self, a) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device) if self.numpy_io else a

    def pixels(self, x, channels: int) -> torch.Tensor:
        """Pixels (B, C, h, w) as the integers 2x - 255 (the float network: its [-1, 1] value)."""
        u = 2 * self._tensor(x).to(self.dtype) - 255
        if u.shape[1] != channels:
            u = u.repeat(1, channels, 1, 1)
        return u if self.integer else u * PIXEL_SCALE

    def latent(self, z) -> torch.Tensor:
        z = self._tensor(z.astype(np.float32)) if self.numpy_io else z
        return quant(z / Z_STEP, -Z_MAX, Z_MAX) if self.integer else z

    @staticmethod
    def space_to_depth(u: torch.Tensor, s: int) -> torch.Tensor:
        return F.pixel_unshuffle(u, s)

    @staticmethod
    def depth_to_space(y: torch.Tensor, s: int) -> torch.Tensor:
        return F.pixel_shuffle(y, s)

    @staticmethod
    def cat(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors, dim=1)

    @staticmethod
    def batch_major(y: torch.Tensor) -> torch.Tensor:
        return y

    @staticmethod
    def heads(out: torch.Tensor, k: int, per: int) -> torch.Tensor:
        b, _, h, w = out.shape
        return out.view(b, k, per, h, w)

    def _out(self, t: torch.Tensor):
        return t.detach().cpu().double().numpy() if self.numpy_io else t

    def grid(self, v: torch.Tensor, step: float, lo: float, hi: float):
        """Outputs in units of ``step`` as values on the grid lo, lo + step, ..., hi (the float network: clamped)."""
        return self._out(quant(v, lo / step, hi / step) * step if self.integer else v.clamp(lo, hi))

    def coefficients(self, v: torch.Tensor):
        """The channel coefficients: tanh of a fine grid, from a table (the float network: tanh)."""
        if not self.integer:
            return torch.tanh(v)
        v = quant(v, -COEF_COUNT, COEF_COUNT)
        table = torch.from_numpy(COEF_TABLE).to(v)[v.long().detach() + COEF_COUNT]
        return self._out(ste(torch.tanh(v * COEF_STEP), table) if v.requires_grad else table)
