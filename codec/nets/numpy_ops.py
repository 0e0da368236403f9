"""The NumPy arithmetic of the frozen integer networks (``network.Network``): coding on the CPU without torch.

Every value is an integer held in float32 and every partial sum of a convolution stays below 2^24 (docs/CODER.md),
so a matrix product in any BLAS, in any order, gives the bits torch's convolution gives. A 3x3 convolution is one
matrix product over the nine shifted views of the zero-padded input, flattened: the view of tap (dy, dx) is the
flat array offset by dy (W + 2) + dx, so no index arithmetic is needed; the outputs at padding positions are
dropped. Activations are laid out (C, B, H, W), channels first, so a convolution's input is one (C, pixels)
matrix. Inputs and outputs are NumPy arrays in the coder's layout: uint8 pixels (B, C, H, W), float64 latents and
grid values.
"""
from __future__ import annotations

import contextlib
import copy
from types import SimpleNamespace

import numpy as np

from .config import ACT_MAX, COEF_COUNT, COEF_TABLE, EXACT, STREAM_MAX, Z_MAX, Z_STEP, Config

COLUMNS = 1 << 22                             # floats of one chunk of shifted views (16 MiB)


def clip(x: np.ndarray, lo: float, hi: float, out: np.ndarray | None = None) -> np.ndarray:
    """np.clip without its Python-level overhead (NaN-free input; a tenth of a small convolution's time)."""
    x = np.maximum(x, lo, out=out)
    return np.minimum(x, hi, out=x)


def _per_channel(v: np.ndarray) -> np.ndarray:
    return v.reshape(-1, 1, 1, 1)


class Conv:
    """A frozen convolution: integer weights as a (C_out, taps x C_in) float32 matrix, bias, output scale."""

    def __init__(self, tensors: dict, prefix: str):
        w = tensors[prefix + "w_int"].astype(np.float32)
        self.k = w.shape[-1]
        self.weight = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))   # tap-major columns
        self.bias = tensors[prefix + "b_int"].astype(np.float32)[:, None]
        self.scale = _per_channel(np.ldexp(np.float32(1), -tensors[prefix + "shift"].astype(np.int32)))

    def __call__(self, a: np.ndarray) -> np.ndarray:
        """Output (C_out, B, H, W) in units of the output scale, not rounded, of integer input a (C_in, B, H, W)."""
        cin, b, h, w = a.shape
        if self.k == 1:
            out = (self.weight @ a.reshape(cin, -1) + self.bias).reshape(-1, b, h, w)
        else:
            out = self._conv3(a)
        out *= self.scale
        return out

    def _conv3(self, a: np.ndarray) -> np.ndarray:
        cin, b, h, w = a.shape
        padded = np.zeros((cin, b, h + 2, w + 2), np.float32)
        padded[:, :, 1:-1, 1:-1] = a
        flat = padded.reshape(cin, -1)
        row = w + 2
        first, last = row + 1, flat.shape[1] - row - 1      # every interior pixel lies in [first, last)
        offsets = [dy * row + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        out = np.zeros((self.weight.shape[0], flat.shape[1]), np.float32)
        chunk = max(1, COLUMNS // (9 * cin))
        cols = np.empty((9, cin, min(chunk, last - first)), np.float32)
        for lo in range(first, last, chunk):
            hi = min(lo + chunk, last)
            view = cols[:, :, :hi - lo]
            for tap, off in enumerate(offsets):
                view[tap] = flat[:, lo + off:hi + off]
            np.matmul(self.weight, view.reshape(9 * cin, -1), out=out[:, lo:hi])
        out += self.bias
        return out.reshape(-1, b, h + 2, w + 2)[:, :, 1:-1, 1:-1]


def _shift(tensors: dict, key: str) -> np.ndarray:
    """A per-channel power-of-two step 2^-shift, shaped to scale (C, B, H, W)."""
    return _per_channel(np.exp2(-tensors[key]).astype(np.float32))


def parameters(config: Config, tensors: dict) -> SimpleNamespace:
    """The parameter tree ``network.Network`` reads, from a model file's tensors (names as in the torch modules);
    a missing tensor raises KeyError."""
    def intnet(prefix: str, blocks: int) -> SimpleNamespace:
        return SimpleNamespace(
            conv_in=Conv(tensors, prefix + "conv_in."), head=Conv(tensors, prefix + "head."),
            head_shift=_shift(tensors, prefix + "head_shift"), in_bound=tensors[prefix + "in_bound"],
            blocks=[SimpleNamespace(conv1=Conv(tensors, f"{prefix}blocks.{i}.conv1."),
                                    conv2=Conv(tensors, f"{prefix}blocks.{i}.conv2."),
                                    relu_shift=_shift(tensors, f"{prefix}blocks.{i}.relu_shift"))
                    for i in range(blocks)])

    nets = {name: intnet(name + ".", blocks) for name, (_, _, _, blocks) in config.networks.items()}
    return SimpleNamespace(encoder=nets.pop("encoder"), z_net=nets.pop("z_net"), stages=list(nets.values()),
                           ups=[SimpleNamespace(conv=Conv(tensors, f"ups.{i}.conv.")) for i in range(config.levels - 1)])


def _quant(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Round half to even and clamp, in place."""
    np.rint(x, out=x)
    return clip(x, lo, hi, out=x)


class NumpyOps:
    """The arithmetic of ``network.Network`` in NumPy, frozen integer weights (see the module's docstring)."""

    context = staticmethod(contextlib.nullcontext)

    @staticmethod
    def conv(layer: Conv, a: np.ndarray) -> np.ndarray:
        return layer(a)

    @staticmethod
    def quant(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return _quant(x, lo, hi)

    @staticmethod
    def bias_room(layer: Conv, bound: np.ndarray) -> np.ndarray:
        """Per output channel, how far the bias may move with every partial sum still below 2^24, for inputs
        bounded by ``bound`` (one number, or one per input channel)."""
        w, bound = np.abs(layer.weight).astype(np.float64), np.asarray(bound, np.float64)
        load = w.sum(1) * bound if bound.ndim == 0 else w @ np.tile(bound, w.shape[1] // len(bound))
        return EXACT - 1 - load - np.abs(layer.bias[:, 0].astype(np.float64))

    @staticmethod
    def with_bias(layer: Conv, delta: np.ndarray) -> Conv:
        """The convolution with its integer bias moved by ``delta`` (C_out,)."""
        moved = copy.copy(layer)
        moved.bias = layer.bias + delta.astype(np.float32)[:, None]
        return moved

    @staticmethod
    def activation(h: np.ndarray, shift: np.ndarray, key: str) -> np.ndarray:
        return _quant(h * shift, 0, ACT_MAX)

    @staticmethod
    def relu(h: np.ndarray) -> np.ndarray:
        return np.maximum(h, 0)

    @staticmethod
    def residual(h: np.ndarray, y: np.ndarray) -> np.ndarray:
        h += np.rint(y)
        return clip(h, -STREAM_MAX, STREAM_MAX, out=h)

    @staticmethod
    def observe(key: str, value) -> None:
        """Only the float network is calibrated."""

    @staticmethod
    def pixels(x: np.ndarray, channels: int) -> np.ndarray:
        """uint8 pixels (B, C, h, w) as the integers 2x - 255, laid out (C, B, h, w)."""
        u = x.transpose(1, 0, 2, 3).astype(np.float32)
        if u.shape[0] != channels:
            u = np.repeat(u, channels, axis=0)
        u *= 2
        u -= 255
        return u

    @staticmethod
    def latent(z: np.ndarray) -> np.ndarray:
        u = z.transpose(1, 0, 2, 3).astype(np.float32) / np.float32(Z_STEP)
        return _quant(u, -Z_MAX, Z_MAX)

    @staticmethod
    def space_to_depth(u: np.ndarray, s: int) -> np.ndarray:
        c, b, h, w = u.shape
        u = u.reshape(c, b, h // s, s, w // s, s).transpose(0, 3, 5, 1, 2, 4).reshape(c * s * s, b, h // s, w // s)
        return np.ascontiguousarray(u)

    @staticmethod
    def depth_to_space(y: np.ndarray, s: int) -> np.ndarray:
        c, b, h, w = y.shape
        return y.reshape(c // (s * s), s, s, b, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(c // (s * s), b, s * h, s * w)

    @staticmethod
    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate(arrays))

    @staticmethod
    def batch_major(y: np.ndarray) -> np.ndarray:
        return y.transpose(1, 0, 2, 3)

    @staticmethod
    def heads(out: np.ndarray, k: int, per: int) -> np.ndarray:
        """(C_out, B, h, w) -> (B, k, per, h, w), a view."""
        _, b, h, w = out.shape
        return out.reshape(k, per, b, h, w).transpose(2, 0, 1, 3, 4)

    @staticmethod
    def grid(v: np.ndarray, step: float, lo: float, hi: float) -> np.ndarray:
        """Outputs in units of ``step`` as float64 values on the grid lo, lo + step, ..., hi."""
        return _quant(v.copy(), lo / step, hi / step).astype(np.float64) * step

    @staticmethod
    def coefficients(v: np.ndarray) -> np.ndarray:
        return COEF_TABLE[_quant(v.copy(), -COEF_COUNT, COEF_COUNT).astype(np.int64) + COEF_COUNT]
