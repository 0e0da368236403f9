"""The VAE: a normalized discretized likelihood, fully convolutional shapes, the IWAE bound, shipped weights."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vaezip.coding.offsets import NO_SHIFT, OFFSET_NATS, SCALE_OFFSETS, choose_offsets
from vaezip.nets.config import Config
from vaezip.nets.mixture import Mixture
from vaezip.nets.vae import VAE, mixture_log_prob, set_mode
from vaezip.nets.weights import ASSETS, load_model, model_info, resolve
from vaezip.training.bound import image_bounds, with_offsets
from vaezip.training.data import reference_planes
from conftest import TINY, calibrated_model, smooth_image


def choose(x: torch.Tensor, mix: Mixture) -> torch.Tensor:
    """``choose_offsets`` for a stage's tensors: (B, C) int64."""
    return torch.from_numpy(choose_offsets(x.numpy(), mix.map(lambda v: v.double().numpy()))[1])


def shifted(mix: Mixture, picks: torch.Tensor) -> Mixture:
    """``mix`` with the log-scales of each tile and channel shifted by SCALE_OFFSETS[picks] (B, C)."""
    offsets = torch.from_numpy(SCALE_OFFSETS).to(mix.log_scales)[picks]
    return mix.with_log_scales(mix.log_scales + offsets[:, None, :, None, None])


def _random_mixture(k: int, c: int, h: int, w: int, scale: float) -> Mixture:
    g = torch.Generator().manual_seed(k * 10 + c)
    r = lambda *s: torch.randn(*s, generator=g)
    return Mixture(logit_weights=r(1, k, c, h, w) * 2, means=127.5 * (1 + r(1, k, c, h, w) * scale),
                   log_scales=(r(1, k, c, h, w) * 2 + 1).clamp(min=-7.0),
                   coefficients=torch.tanh(r(1, k, c * (c - 1) // 2, h, w)))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_discretized_likelihood_sums_to_one(channels, scale):
    """For every channel, the 256 level probabilities (other channels fixed) sum to 1."""
    mix = _random_mixture(4, channels, 3, 5, scale)
    base = torch.randint(0, 256, (1, channels, 3, 5))
    for c in range(channels):
        total = torch.zeros(1, 3, 5, dtype=torch.float64)
        for v in range(256):
            x = base.clone()
            x[:, c] = v
            total += mixture_log_prob(x, mix)[:, c].double().exp()
        assert torch.allclose(total, torch.ones_like(total), atol=2e-4), total


@pytest.mark.parametrize("levels,coarse,h,w", [(2, 0, 12, 20), (3, 0, 24, 40), (3, 0, 8, 8), (2, 0, 28, 28),
                                               (2, 1, 24, 40), (1, 2, 8, 16), (2, 2, 32, 16)])
def test_fully_convolutional_shapes(levels, coarse, h, w):
    model = calibrated_model(Config(channels=3, coarse_levels=coarse, **{**TINY, "levels": levels}))
    x = torch.from_numpy(smooth_image(h, w, 3).transpose(2, 0, 1).copy())[None].repeat(2, 1, 1, 1)
    mean, log_std = model.posterior(x)
    s = model.config.stride
    assert mean.shape == log_std.shape == (2, model.config.latent, h // s, w // s)
    feats = model.features(mean)
    covered = torch.zeros(h, w, dtype=torch.int64)
    for t in range(model.config.num_stages):
        stride, (oy, ox) = model.config.stage_grid(t)
        mix = model.stage(t, feats, x)
        assert mix.means.shape == (2, model.config.mixtures, 3, h // stride, w // stride)
        covered[oy::stride, ox::stride] += 1
    assert bool((covered == 1).all()), "every pixel is coded by exactly one stage"
    nll, kl = model.elbo_terms(x)
    assert nll.shape == kl.shape == (2,) and torch.isfinite(nll).all() and (kl >= 0).all()


def test_coarse_levels_reuse_the_networks_below_them():
    """Coarse levels add stages but no parameters; the stages below z's stride are the plain model's, unchanged."""
    plain = calibrated_model(Config(channels=3, **TINY))
    coarse = VAE(Config(channels=3, coarse_levels=2, **TINY))
    coarse.load_state_dict(plain.state_dict())
    set_mode(coarse, "frozen")
    p, c = plain.config, coarse.config
    assert c.num_stages == p.num_stages + 6
    x = torch.from_numpy(smooth_image(32, 48, 3).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        feats = plain.features(plain.posterior(x)[0])
        for t in range(1, p.num_stages):
            assert p.stage_grid(t) == c.stage_grid(t + 6)
            a, b = plain.stage(t, feats, x), coarse.stage(t + 6, feats, x)
            assert torch.equal(a.means, b.means) and torch.equal(a.log_scales, b.log_scales)
        # the first coarse level interpolates with the first level's network, on a 4x sparser grid
        assert c.stage_grid(1) == (16, (8, 8)) and p.stage_grid(1) == (4, (2, 2))
        sparse = plain.stage(1, [feats[0][..., ::4, ::4]], x[..., ::4, ::4])
        assert torch.equal(coarse.stage(1, feats, x).means, sparse.means)


@pytest.mark.parametrize("shift", [-0.2, 0.0, 0.25, 0.4])
def test_scale_offsets_undo_a_log_scale_shift(shift):
    """Pixels drawn from logistics of scale 3 levels, modelled with log-scales ``shift`` too small: each tile and
    channel picks the offset that undoes it."""
    g = torch.Generator().manual_seed(1)
    b, c, h, w = 2, 3, 64, 64
    means = torch.rand(b, 1, c, h, w, generator=g) * 180 + 38
    log_s = math.log(3)
    u = torch.rand(b, c, h, w, generator=g).clamp(1e-6, 1 - 1e-6)
    x = (means[:, 0] + 3 * torch.log(u / (1 - u))).round().clamp(0, 255)
    mix = Mixture(logit_weights=torch.zeros(b, 1, c, h, w), means=means,
                  log_scales=torch.full((b, 1, c, h, w), log_s - shift), coefficients=torch.zeros(b, 1, 3, h, w))
    picks = choose(x, mix)
    assert picks.shape == (b, c)
    step = SCALE_OFFSETS[1] - SCALE_OFFSETS[0]
    assert np.abs(SCALE_OFFSETS[picks.numpy()] - shift).max() <= step + 1e-9      # the best offset or its neighbour


def test_scale_offsets_are_the_cheapest_with_saturated_pixels():
    """Pixels drawn around means near and beyond the ends of the range, clamped (so many are 0 or 255: the open
    outer bins), under 2-component mixtures with channel dependence: every tile and channel's pick codes its pixels
    within a millibit per pixel of the cheapest offset, found by trying them all with ``mixture_log_prob``."""
    b, c, h, w = 4, 3, 32, 32
    g = torch.Generator().manual_seed(5)
    means = torch.rand(b, 1, c, h, w, generator=g) * 330 - 40
    u = torch.rand(b, c, h, w, generator=g).clamp(1e-6, 1 - 1e-6)
    x = (means[:, 0] + 6 * torch.log(u / (1 - u))).round().clamp(0, 255)
    assert ((x == 0) | (x == 255)).float().mean() > 0.2
    mix = _random_mixture(2, c, h, w, scale=0.1)
    mix = Mixture(mix.logit_weights.expand(b, -1, -1, -1, -1), means + mix.means - 127.5,
                  torch.tensor([[math.log(4)], [math.log(9)]]).view(1, 2, 1, 1, 1).expand(b, 2, c, h, w),
                  mix.coefficients * 0.01)
    picks = choose(x, mix)
    tried = [shifted(mix, torch.full((b, c), i)) for i in range(len(SCALE_OFFSETS))]
    nats = torch.stack([-mixture_log_prob(x, m).double().sum((-2, -1)) for m in tried])          # (offsets, B, C)
    nats += torch.from_numpy(OFFSET_NATS)[:, None, None]
    chosen = nats.gather(0, picks[None]).squeeze(0)
    assert torch.all(chosen - nats.min(0).values <= 1e-3 * math.log(2) * h * w)


def test_likelihood_with_offsets_is_at_least_the_plain_one_less_the_offsets_cost():
    model = calibrated_model(Config(channels=3, **TINY))
    x = torch.from_numpy(smooth_image(32, 32, 3).transpose(2, 0, 1).copy())[None].repeat(2, 1, 1, 1)
    z = torch.randn(2, TINY["latent"], 8, 8)
    with torch.no_grad():
        plain, offset = model.log_likelihood(x, z), model.log_likelihood(x, z, offsets=with_offsets)
    no_shift_cost = OFFSET_NATS[NO_SHIFT] * 3 * model.config.num_stages   # every offset index NO_SHIFT
    assert torch.all(offset >= plain - no_shift_cost - 1e-3)
    assert torch.all(offset > plain + 1.0)                                # a random model is far from calibrated


def test_iwae_is_not_looser_than_the_elbo():
    model = calibrated_model(Config(channels=3, **TINY))
    planes = [smooth_image(16, 16, 3, seed=i).transpose(2, 0, 1).copy() for i in range(4)]
    one = image_bounds(model, planes, k=1, tile=16, seed=1)
    many = image_bounds(model, planes, k=64, tile=16, seed=2)
    assert np.all(many.iwae_bits <= many.elbo_bits + 1e-9)            # log-mean-exp >= mean, same samples
    noise = 3 * np.abs(one.elbo_bits - many.elbo_bits).max() + 1.0
    assert many.iwae_bits.sum() <= one.elbo_bits.sum() + noise
    assert many.iwae_bits.sum() < many.elbo_bits.sum()                 # the bound tightens with k


SHIPPED = ["mnist", "cifar10", "photo"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_recorded_elbo(name):
    """Each shipped model records its -ELBO on fixed images; loading must reproduce it."""
    model, loaded_name, digest = load_model(name)
    assert loaded_name == name and len(digest) == 32
    ref = model_info(resolve(name))["reference"]
    planes = reference_planes(ref["images"])
    b = image_bounds(model, planes, k=1, tile=ref["tile"], seed=ref["seed"])
    assert np.allclose(b.elbo_bits, ref["elbo_bits"], rtol=1e-4), (b.elbo_bits, ref["elbo_bits"])


def test_shipped_weights_are_small_safetensors():
    files = sorted(ASSETS.glob("*.safetensors"))
    assert sorted(p.stem for p in files) == sorted(SHIPPED)
    assert sum(p.stat().st_size for p in files) <= 30 * 2 ** 20
    for p in files:
        header_len = int.from_bytes(p.read_bytes()[:8], "little")
        assert json.loads(p.read_bytes()[8:8 + header_len])["__metadata__"]["config"]

