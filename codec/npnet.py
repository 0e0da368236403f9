"""The integer networks of a frozen model, run in NumPy: coding on the CPU without torch.

Every value is an integer held in float32 and every partial sum of a convolution stays below 2^24 (``intnet``), so
a matrix product in any BLAS, in any order, gives the bits torch's convolution gives. A 3x3 convolution is one
matrix product over the nine shifted views of the zero-padded input, flattened: the view of tap (dy, dx) is the
flat array offset by dy (W + 2) + dx, so no index arithmetic is needed; the outputs at padding positions are
dropped. Activations are laid out (C, B, H, W), channels first, so a convolution's input is one (C, pixels) matrix.

``Network.posterior``, ``features`` and ``stage`` mirror ``model.VAE`` in frozen mode; tests/test_npnet.py
checks that they agree to the bit.
"""
from __future__ import annotations

import numpy as np

from .codecs import (LOG_SCALE_RANGE, LOG_SCALE_STEP, LOGIT_STEP, MEAN_RANGE, MEAN_STEP, POST_LOG_SIGMA_STEP,
                     POST_MEAN_RANGE, POST_MEAN_STEP, clip)
from .config import ACT_MAX, COEF_COUNT, COEF_TABLE, LOG_STD_RANGE, LOGIT_MAX, STREAM_MAX, Z_MAX, Z_STEP, Config

COLUMNS = 1 << 22                             # floats of one chunk of shifted views (16 MiB)


def _quant(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Round half to even and clamp, in place."""
    np.rint(x, out=x)
    return clip(x, lo, hi, out=x)


def _per_channel(v: np.ndarray) -> np.ndarray:
    return v.reshape(-1, 1, 1, 1)


class Conv:
    """A frozen ``intnet.QConv``: integer weights as a (C_out, taps x C_in) float32 matrix, bias, output scale."""

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


class IntNet:
    """A frozen ``intnet.IntNet``: conv 3x3, residual blocks on an integer stream, ReLU, conv 1x1."""

    def __init__(self, tensors: dict, prefix: str, blocks: int):
        self.conv_in, self.head = Conv(tensors, prefix + "conv_in."), Conv(tensors, prefix + "head.")
        self.head_shift = _per_channel(np.exp2(-tensors[prefix + "head_shift"]).astype(np.float32))
        self.blocks = [(Conv(tensors, f"{prefix}blocks.{i}.conv1."), Conv(tensors, f"{prefix}blocks.{i}.conv2."),
                        _per_channel(np.exp2(-tensors[f"{prefix}blocks.{i}.relu_shift"]).astype(np.float32)))
                       for i in range(blocks)]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = _quant(self.conv_in(x), -STREAM_MAX, STREAM_MAX)
        for conv1, conv2, relu_shift in self.blocks:
            a = _quant(conv1(_quant(h * relu_shift, 0, ACT_MAX)), 0, ACT_MAX)
            h += np.rint(conv2(a))
            clip(h, -STREAM_MAX, STREAM_MAX, out=h)
        return self.head(_quant(h * self.head_shift, 0, ACT_MAX))


def _pixels(x: np.ndarray) -> np.ndarray:
    """uint8 pixels (B, C, h, w) as the networks' input 2x - 255, laid out (C, B, h, w)."""
    u = x.transpose(1, 0, 2, 3).astype(np.float32)
    u *= 2
    u -= 255
    return u


class Network:
    """A frozen model's networks in NumPy, with the coder's interface: NumPy in, float64 grid values out."""

    def __init__(self, config: Config, tensors: dict):
        self.config = c = config
        self.encoder = IntNet(tensors, "encoder.", 2)
        self.z_net = IntNet(tensors, "z_net.", 1)
        self.ups = [Conv(tensors, f"ups.{i}.conv.") for i in range(c.levels - 1)]
        self.stages = [IntNet(tensors, f"stages.{i}.", c.stage_blocks) for i in range(1 + 3 * c.levels)]

    def posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and log std of p(z|x), (B, latent, h, w) float64, for uint8 pixels x (B, C, H, W)."""
        s = self.config.stride
        u = _pixels(x)
        c, b, h, w = u.shape
        u = u.reshape(c, b, h // s, s, w // s, s).transpose(0, 3, 5, 1, 2, 4).reshape(c * s * s, b, h // s, w // s)
        y = self.encoder(np.ascontiguousarray(u)).transpose(1, 0, 2, 3)
        mean, log_std = np.split(y, 2, axis=1)
        mean = _quant(mean.copy(), POST_MEAN_RANGE[0] / POST_MEAN_STEP, POST_MEAN_RANGE[1] / POST_MEAN_STEP)
        log_std = _quant(log_std.copy(), LOG_STD_RANGE[0] / POST_LOG_SIGMA_STEP, LOG_STD_RANGE[1] / POST_LOG_SIGMA_STEP)
        return mean.astype(np.float64) * POST_MEAN_STEP, log_std.astype(np.float64) * POST_LOG_SIGMA_STEP

    def features(self, z: np.ndarray) -> list[np.ndarray]:
        """Features of latent values z (B, latent, h, w) for every stage resolution, coarsest first."""
        u = z.transpose(1, 0, 2, 3).astype(np.float32) / np.float32(Z_STEP)
        hs = [_quant(self.z_net(_quant(u, -Z_MAX, Z_MAX)), -ACT_MAX, ACT_MAX)]
        for up in self.ups:
            y = _quant(up(np.maximum(hs[-1], 0)), -ACT_MAX, ACT_MAX)
            c4, b, h, w = y.shape
            hs.append(y.reshape(c4 // 4, 2, 2, b, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(c4 // 4, b, 2 * h, 2 * w))
        return hs

    def stage(self, t: int, features: list[np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
        """The mixture of stage t given z's features and the decoded pixels x (B, C, H, W): float64 arrays
        ``logit_weights``, ``means``, ``log_scales`` (B, K, C, h, w) and ``coefficients`` (B, K, C(C-1)/2, h, w)."""
        f, step, i = self.config.stage_network(t)
        inputs = [features[f][:, :, ::step, ::step]] + [_pixels(c) for c in self.config.stage_context(x, t)]
        out = self.stages[i](np.ascontiguousarray(np.concatenate(inputs)))
        return self._mixture(out)

    def _mixture(self, out: np.ndarray) -> dict[str, np.ndarray]:
        c = self.config
        ch = c.channels
        _, b, h, w = out.shape
        out = out.reshape(c.mixtures, 3 * ch + c.coefficients, b, h, w).transpose(2, 0, 1, 3, 4)

        def grid(v, step, lo, hi):
            return _quant(v.copy(), lo / step, hi / step).astype(np.float64) * step

        coef = _quant(out[:, :, 3 * ch:].copy(), -COEF_COUNT, COEF_COUNT).astype(np.int64)
        return {"logit_weights": grid(out[:, :, :ch], LOGIT_STEP, -LOGIT_MAX, LOGIT_MAX),
                "means": grid(out[:, :, ch:2 * ch], MEAN_STEP, *MEAN_RANGE),
                "log_scales": grid(out[:, :, 2 * ch:3 * ch], LOG_SCALE_STEP, *LOG_SCALE_RANGE),
                "coefficients": COEF_TABLE[coef + COEF_COUNT]}
