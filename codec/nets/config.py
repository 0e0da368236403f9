"""The model's architecture and the fixed grids of its inputs and outputs, without torch.

Everything that builds or runs the networks reads the architecture from ``Config`` alone: which integer networks
there are and their sizes (``networks``), and which pixels each of the ``num_stages`` stages codes and what it is
conditioned on.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..entropy.tables import stored, tanh_table

ACT_MAX = 1023              # activations that feed a convolution: 0..1023 (after ReLU) or -1023..1023
EXACT = 1 << 24             # |every partial sum of a convolution| below this: float32 holds it exactly
STREAM_MAX = 1 << 20        # a residual stream is clamped here (headroom for growth through the blocks)
PHASES = ((1, 1), (0, 1), (1, 0))   # order in which a level fills the three non-anchor phases of each 2x2 cell
PIXEL_SCALE = 1 / 255               # network input 2x - 255: the [-1, 1] pixel scale in integer units
Z_STEP, Z_MAX = 1 / 256, 1024       # latent input grid and clamp (|z| <= 4)
LOG_STD_RANGE = (-8.0, 2.0)         # posterior log std, on the coder's grid
LOGIT_MAX = 512.0                   # mixture logits are clamped to +-this (the coder only uses differences < 24)
COEF_STEP, COEF_COUNT, COEF_BITS = 1 / 1024, 5 * 1024, 14   # channel coefficients: tanh of a fine grid on [-5, 5]
COEF_TABLE = stored("coef_tanh", lambda: tanh_table(COEF_STEP, COEF_COUNT, COEF_BITS))


@dataclass(frozen=True)
class Config:
    channels: int = 3       # 1 (grayscale) or 3 (RGB)
    levels: int = 2         # sub-grid levels; z and the first stage live at stride 2**levels
    coarse_levels: int = 0  # extra levels above z's stride that fill its grid from one 2**coarse_levels sparser
    latent: int = 8         # latent channels
    width: int = 64         # channels of the encoder and the z-feature network
    stage_width: int = 48   # channels of each stage network
    stage_blocks: int = 1   # residual blocks per stage network
    mixtures: int = 5       # logistic mixture components per subpixel
    encoder_blocks: int = 2     # residual blocks of the encoder
    z_blocks: int = 1           # residual blocks of the z-feature network

    @property
    def stride(self) -> int:
        return 2 ** self.levels

    @property
    def grid(self) -> int:
        """Stride of the first stage's pixels; tiles are padded to a multiple of it."""
        return self.stride << self.coarse_levels

    @property
    def coefficients(self) -> int:
        """Linear channel-dependence coefficients per mixture component (G|R, B|R, B|G)."""
        return self.channels * (self.channels - 1) // 2

    @property
    def params_per_pixel(self) -> int:
        return self.mixtures * (3 * self.channels + self.coefficients)

    # ---- the networks ------------------------------------------------------------------------------------------
    @property
    def networks(self) -> dict[str, tuple[int, int, int, int]]:
        """Every integer network, by its name in a model file: (input channels, width, output channels, residual
        blocks). Besides them, ``levels - 1`` upsampling convolutions (``ups.i``) carry z's features from one
        level's resolution to the next."""
        s = self.stride
        nets = {"encoder": (self.channels * s * s, self.width, 2 * self.latent, self.encoder_blocks),
                "z_net": (self.latent, self.width, self.stage_width, self.z_blocks)}
        for i in range(1 + len(PHASES) * self.levels):
            context = 0 if i == 0 else self.channels * (1 + (i - 1) % len(PHASES))   # anchor grid, earlier phases
            nets[f"stages.{i}"] = (self.stage_width + context, self.stage_width, self.params_per_pixel,
                                   self.stage_blocks)
        return nets

    # ---- the stages: which pixels each codes, what it sees, which network runs it ------------------------------
    @property
    def num_stages(self) -> int:
        return 1 + len(PHASES) * (self.coarse_levels + self.levels)

    def stage_grid(self, t: int) -> tuple[int, tuple[int, int]]:
        """(stride, offset) of the pixels that stage t codes: pixels x[oy::stride, ox::stride]."""
        if t == 0:
            return self.grid, (0, 0)
        level, k = divmod(t - 1, len(PHASES))
        stride = self.grid >> level
        dy, dx = PHASES[k]
        return stride, (dy * stride // 2, dx * stride // 2)

    def stage_context(self, x, t: int) -> list:
        """The decoded sub-grids stage t sees (anchor grid, then earlier phases of its level), from full x (an
        array or tensor whose last two axes are the image's)."""
        if t == 0:
            return []
        stride, _ = self.stage_grid(t)
        k = (t - 1) % len(PHASES)
        return [x[..., ::stride, ::stride]] + [x[..., dy * stride // 2::stride, dx * stride // 2::stride]
                                               for dy, dx in PHASES[:k]]

    def stage_network(self, t: int) -> tuple[int, int, int]:
        """(index of the z features, subsampling step of those features, index of the stage network) of stage t.

        The coarse levels (above z's stride) reuse the networks of the first level below it, on z's features
        subsampled to their grid: image statistics are close to scale-invariant, so one interpolator serves them all.
        """
        level, k = (0, -1) if t == 0 else divmod(t - 1, len(PHASES))
        step = 1 << max(0, self.coarse_levels - level)
        net = 0 if t == 0 else 1 + len(PHASES) * max(0, level - self.coarse_levels) + k
        return max(0, level - self.coarse_levels), step, net
