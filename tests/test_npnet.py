"""The NumPy networks (coding on the CPU) give the torch model's outputs bit for bit, and code the same files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vaezip.model import TorchNetwork
from vaezip.weights import load_model, load_network
from conftest import smooth_image


def _outputs(net, x: np.ndarray, z_shift: float) -> list[np.ndarray]:
    """Every output the coder reads: posterior, z features (as float64), every stage's mixture."""
    mean, log_std = net.posterior(x)
    feats = net.features(mean + z_shift * np.exp(log_std))
    out = [mean, log_std] + [np.asarray(f.transpose(1, 0, 2, 3) if isinstance(f, np.ndarray) else f.numpy(), np.float64)
                             for f in feats]
    for t in range(net.config.num_stages):
        out += net.stage(t, feats, x).values()
    return out


def _check(name: str, x: np.ndarray) -> None:
    numpy_net = load_network(name)[0]
    torch_net = TorchNetwork(load_model(name)[0])
    for shift in (0.0, 0.37):                  # z at the posterior mean and off it, as in training
        a, b = _outputs(numpy_net, x, shift), _outputs(torch_net, x, shift)
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert u.shape == v.shape and u.dtype == v.dtype == np.float64
            assert np.array_equal(u, v)


@pytest.mark.parametrize("fixture", ["tiny_rgb", "tiny_gray"])
def test_tiny_models_agree_bit_for_bit(fixture, request):
    name = request.getfixturevalue(fixture)
    channels = load_network(name)[0].config.channels
    x = np.stack([smooth_image(32, 48, channels, seed=s).transpose(2, 0, 1) for s in range(3)])
    _check(name, x)


@pytest.mark.parametrize("name", ["photo", "cifar10", "mnist"])
def test_shipped_models_agree_bit_for_bit(name):
    net = load_network(name)[0]
    g = net.config.grid
    rng = np.random.default_rng(0)
    x = np.stack([smooth_image(g * 2, g, net.config.channels, seed=1).transpose(2, 0, 1),
                  rng.integers(0, 256, (net.config.channels, g * 2, g), dtype=np.uint8)])
    _check(name, x)


def test_large_convolutions_are_chunked_and_exact(monkeypatch):
    """A chunk of shifted views smaller than one image row: the chunked products equal torch's convolution."""
    from vaezip import npnet
    monkeypatch.setattr(npnet, "COLUMNS", 9 * 48 * 37)
    net = load_network("photo")[0]
    conv = net.stages[3].blocks[0][0]
    a = np.random.default_rng(1).integers(0, 1024, (48, 2, 20, 30)).astype(np.float32)
    model = load_model("photo")[0]
    ref = model.stages[3].blocks[0].conv1
    with torch.no_grad():
        expected = (torch.nn.functional.conv2d(torch.from_numpy(a.transpose(1, 0, 2, 3).copy()), ref.w_int, ref.b_int,
                                               padding=1) * torch.exp2(-ref.shift)[:, None, None]).numpy()
    assert np.array_equal(conv(a), expected.transpose(1, 0, 2, 3))


def test_small_jobs_run_in_numpy_and_large_ones_in_torch(monkeypatch):
    """torch runs jobs large enough to repay its import, or, once it is imported, jobs of about 128 x 128 pixels."""
    import sys
    from vaezip import npnet, weights
    runtime = lambda subpixels: type(load_network("cifar10", "cpu", subpixels)[0])
    assert runtime(weights.TORCH_LOADED_SUBPIXELS - 1) is npnet.Network
    assert runtime(weights.TORCH_LOADED_SUBPIXELS) is TorchNetwork      # this test process has imported torch
    monkeypatch.delitem(sys.modules, "torch")
    assert runtime(weights.TORCH_SUBPIXELS - 1) is npnet.Network
    assert runtime(weights.TORCH_SUBPIXELS) is TorchNetwork
