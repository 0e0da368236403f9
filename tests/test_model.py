"""The VAE: a normalized discretized likelihood, fully convolutional shapes, the IWAE bound, shipped weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codec.bound import image_bounds
from codec.model import VAE, Config, Mixture, mixture_log_prob
from codec.weights import ASSETS, load_model, model_info, reference_planes, resolve
from conftest import TINY, smooth_image


def _random_mixture(k: int, c: int, h: int, w: int, scale: float) -> Mixture:
    g = torch.Generator().manual_seed(k * 10 + c)
    r = lambda *s: torch.randn(*s, generator=g)
    return Mixture(logit_weights=r(1, k, c, h, w) * 2, means=r(1, k, c, h, w) * scale,
                   log_scales=(r(1, k, c, h, w) * 2 - 3).clamp(min=-7.0),
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


@pytest.mark.parametrize("levels,h,w", [(2, 12, 20), (3, 24, 40), (3, 8, 8), (2, 28, 28)])
def test_fully_convolutional_shapes(levels, h, w):
    torch.manual_seed(0)
    model = VAE(Config(channels=3, **{**TINY, "levels": levels}))
    x = torch.from_numpy(smooth_image(h, w, 3).transpose(2, 0, 1).copy())[None].repeat(2, 1, 1, 1)
    mean, log_std = model.posterior(x)
    s = model.config.stride
    assert mean.shape == log_std.shape == (2, model.config.latent, h // s, w // s)
    feats = model.features(mean)
    covered = torch.zeros(h, w, dtype=torch.int64)
    for t in range(model.num_stages):
        stride, (oy, ox) = model.stage_grid(t)
        mix = model.stage(t, feats, model.stage_context(x, t))
        assert mix.means.shape == (2, model.config.mixtures, 3, h // stride, w // stride)
        covered[oy::stride, ox::stride] += 1
    assert bool((covered == 1).all()), "every pixel is coded by exactly one stage"
    nll, kl = model.elbo_terms(x)
    assert nll.shape == kl.shape == (2,) and torch.isfinite(nll).all() and (kl >= 0).all()


def test_iwae_is_not_looser_than_the_elbo():
    torch.manual_seed(0)
    model = VAE(Config(channels=3, **TINY))
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

