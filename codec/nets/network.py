"""The VAE's networks, written once: the posterior p(z|x), z's features at every stage resolution, and the
distribution of every stage's pixels, over an arithmetic (``ops``) and a tree of parameters.

A latent z lives at stride 2^levels; the decoder codes the pixels in ``1 + 3 * (coarse_levels + levels)`` stages
over nested 2x2 sub-grids (DESIGN.md §4, ``Config``). Every network is an integer network: conv 3x3, residual
blocks on an integer stream, ReLU, conv 1x1, on space-to-depth views at the resolution of its stage. Pixels enter
as the integers 2x - 255, z on a 1/256 grid, and the heads output integers on the coder's parameter grids
(``entropy.grids``), so every machine computes the coder's frequencies alike (docs/CODER.md).

The arithmetic is the only part that differs between runs: ``numpy_ops.NumpyOps`` (frozen integer weights, coding
on the CPU) and ``torch_ops.TorchOps`` (frozen, quantization-aware training, or the plain float network). The
parameters are the torch ``vae.VAE`` module itself, or the NumPy tree of a model file (``numpy_ops.parameters``):
the same names, read from ``Config.networks``.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..entropy.grids import (LOG_SCALE_RANGE, LOG_SCALE_STEP, LOGIT_STEP, MEAN_RANGE, MEAN_STEP, POST_LOG_SIGMA_STEP,
                             POST_MEAN_RANGE, POST_MEAN_STEP)
from .config import ACT_MAX, LOG_STD_RANGE, LOGIT_MAX, STREAM_MAX, Config
from .mixture import Mixture


class Network:
    def __init__(self, config: Config, params, ops):
        self.config, self.params, self.ops = config, params, ops

    def posterior(self, x):
        """Mean and log std of the diagonal Gaussian p(z|x), (B, latent, h, w) each, for pixels x (B, C, H, W)."""
        ops, c = self.ops, self.config
        with ops.context():
            y = self._intnet(self.params.encoder, ops.space_to_depth(self._pixels(x), c.stride), "encoder")
            y = ops.batch_major(y)
            return (ops.grid(y[:, :c.latent], POST_MEAN_STEP, *POST_MEAN_RANGE),
                    ops.grid(y[:, c.latent:], POST_LOG_SIGMA_STEP, *LOG_STD_RANGE))

    def features(self, z) -> list:
        """z's features at every stage resolution, coarsest first (in the arithmetic's own layout), for latent
        values z (B, latent, h, w)."""
        ops = self.ops
        with ops.context():
            h = ops.quant(self._intnet(self.params.z_net, ops.latent(z), "z_net"), -ACT_MAX, ACT_MAX)
            ops.observe("features0", h)
            features = [h]
            for i, up in enumerate(self.params.ups):
                h = ops.depth_to_space(ops.quant(ops.conv(up.conv, ops.relu(h)), -ACT_MAX, ACT_MAX), 2)
                ops.observe(f"features{i + 1}", h)
                features.append(h)
            return features

    def stage(self, t: int, features: list, x) -> Mixture:
        """The mixture of stage t given z's features and the pixels x (B, C, H, W) decoded before it (only the
        sub-grids it is conditioned on are read)."""
        f, step, i = self.config.stage_network(t)
        ops = self.ops
        with ops.context():
            inputs = [features[f][..., ::step, ::step]] + [self._pixels(c) for c in self.config.stage_context(x, t)]
            return self._mixture(self._intnet(self.params.stages[i], ops.cat(inputs), f"stage{i}"))

    def stages(self, features: list, x):
        """Every stage in decoding order: (the slices of the last two axes that select its pixels, its mixture).
        A decoder writes each stage's pixels into x before it asks for the next stage."""
        for t in range(self.config.num_stages):
            stride, (oy, ox) = self.config.stage_grid(t)
            yield (slice(oy, None, stride), slice(ox, None, stride)), self.stage(t, features, x)

    # ---- tuning to one image ------------------------------------------------------------------------------------
    def tunable(self) -> list:
        """The biases an encoder may tune to one image (``coding.tuning``): those of every convolution of the
        stage networks, in a fixed order, as (layer, bound of its inputs: one number or one per input channel)."""
        out = []
        for p in self.params.stages:
            out.append((p.conv_in, p.in_bound))
            out += [(conv, ACT_MAX) for block in p.blocks for conv in (block.conv1, block.conv2)]
            out.append((p.head, ACT_MAX))
        return out

    def rooms(self) -> list[np.ndarray]:
        """Per ``tunable`` bias vector, how far each of its biases may move with every partial sum of its
        convolution still below 2^24."""
        return [self.ops.bias_room(layer, bound) for layer, bound in self.tunable()]

    def tuned(self, deltas: list[np.ndarray]) -> Network:
        """This network with the ``tunable`` biases moved by ``deltas`` (integers, one vector per bias, in order);
        ValueError where a move would break the exactness bound of its convolution."""
        moved = {}
        for (layer, _), room, delta in zip(self.tunable(), self.rooms(), deltas, strict=True):
            if np.any(np.abs(delta) > room):
                raise ValueError("a tuned bias breaks the exactness bound")
            moved[id(layer)] = self.ops.with_bias(layer, delta)
        conv = lambda layer: moved[id(layer)]
        stages = [SimpleNamespace(conv_in=conv(p.conv_in), head=conv(p.head), head_shift=p.head_shift,
                                  in_bound=p.in_bound,
                                  blocks=[SimpleNamespace(conv1=conv(b.conv1), conv2=conv(b.conv2),
                                                          relu_shift=b.relu_shift) for b in p.blocks])
                  for p in self.params.stages]
        params = SimpleNamespace(encoder=self.params.encoder, z_net=self.params.z_net, ups=self.params.ups,
                                 stages=stages)
        return Network(self.config, params, self.ops)

    # ---- the building blocks ------------------------------------------------------------------------------------
    def _pixels(self, x):
        """Pixels as the networks' input; a grayscale image through a colour model repeats its plane."""
        return self.ops.pixels(x, self.config.channels)

    def _intnet(self, p, x, key: str):
        """conv 3x3 -> residual blocks h + conv(act(conv(act(h)))) -> act -> conv 1x1, outputs in the units of
        ``p.out_scale``, not rounded (the caller rounds and clamps them to its own range)."""
        ops = self.ops
        h = ops.quant(ops.conv(p.conv_in, x), -STREAM_MAX, STREAM_MAX)
        for i, block in enumerate(p.blocks):
            ops.observe(key + ".stream", h)
            a = ops.quant(ops.conv(block.conv1, ops.activation(h, block.relu_shift, f"{key}.{i}.relu")), 0, ACT_MAX)
            ops.observe(f"{key}.{i}.act", a)
            h = ops.residual(h, ops.conv(block.conv2, a))
        ops.observe(key + ".stream", h)
        return ops.conv(p.head, ops.activation(h, p.head_shift, key + ".relu"))

    def _mixture(self, out) -> Mixture:
        c, ops = self.config, self.ops
        ch = c.channels
        out = ops.heads(out, c.mixtures, 3 * ch + c.coefficients)
        return Mixture(logit_weights=ops.grid(out[:, :, :ch], LOGIT_STEP, -LOGIT_MAX, LOGIT_MAX),
                       means=ops.grid(out[:, :, ch:2 * ch], MEAN_STEP, *MEAN_RANGE),
                       log_scales=ops.grid(out[:, :, 2 * ch:3 * ch], LOG_SCALE_STEP, *LOG_SCALE_RANGE),
                       coefficients=ops.coefficients(out[:, :, 3 * ch:]))
