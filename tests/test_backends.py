"""One network definition, three arithmetics: NumPy, torch's oneDNN convolutions and im2col + matrix product (a
GPU's) give every output the coder reads bit for bit alike, and the right one runs for each job."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vaezip.nets.weights import BACKENDS, load_model, load_network
from conftest import smooth_image


def _outputs(net, x: np.ndarray, z_shift: float) -> list[np.ndarray]:
    """Every output the coder reads: the posterior and every stage's mixture, at a z off the bucket centres."""
    mean, log_std = net.posterior(x)
    feats = net.features(mean + z_shift * np.exp(log_std))
    out = [mean, log_std]
    for _, mix in net.stages(feats, x):
        out += vars(mix).values()
    return out


def _check(name: str, x: np.ndarray) -> None:
    for shift in (0.0, 0.37):                  # z at the posterior mean and off it, as in training
        reference = _outputs(load_network(name, backend="numpy")[0], x, shift)
        for backend in BACKENDS[1:]:
            outputs = _outputs(load_network(name, backend=backend)[0], x, shift)
            assert len(outputs) == len(reference)
            for u, v in zip(reference, outputs):
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


def test_grayscale_through_a_colour_model_repeats_its_plane():
    net = load_network("cifar10")[0]
    gray = smooth_image(32, 32, 1)[None].transpose(0, 3, 1, 2)
    mean, log_std = net.posterior(gray)
    assert np.array_equal(mean, net.posterior(np.repeat(gray, 3, axis=1))[0])


def test_large_convolutions_are_chunked_and_exact(monkeypatch):
    """A chunk of shifted views smaller than one image row: the chunked products equal torch's convolution."""
    from vaezip.nets import numpy_ops
    monkeypatch.setattr(numpy_ops, "COLUMNS", 9 * 48 * 37)
    conv = load_network("photo", backend="numpy")[0].params.stages[3].blocks[0].conv1
    a = np.random.default_rng(1).integers(0, 1024, (48, 2, 20, 30)).astype(np.float32)
    ref = load_model("photo")[0].stages[3].blocks[0].conv1
    with torch.no_grad():
        expected = (torch.nn.functional.conv2d(torch.from_numpy(a.transpose(1, 0, 2, 3).copy()), ref.w_int, ref.b_int,
                                               padding=1) * torch.exp2(-ref.shift)[:, None, None]).numpy()
    assert np.array_equal(conv(a), expected.transpose(1, 0, 2, 3))


def test_small_jobs_run_in_numpy_and_large_ones_in_torch(monkeypatch):
    """torch runs jobs large enough to repay its import, or, once it is imported, jobs of about 128 x 128 pixels."""
    import sys
    from vaezip.nets import numpy_ops, torch_ops, weights
    arithmetic = lambda subpixels: type(load_network("cifar10", "cpu", subpixels)[0].ops)
    assert arithmetic(weights.TORCH_LOADED_SUBPIXELS - 1) is numpy_ops.NumpyOps
    assert arithmetic(weights.TORCH_LOADED_SUBPIXELS) is torch_ops.TorchOps   # this process has imported torch
    monkeypatch.delitem(sys.modules, "torch")
    assert arithmetic(weights.TORCH_SUBPIXELS - 1) is numpy_ops.NumpyOps
    assert arithmetic(weights.TORCH_SUBPIXELS) is torch_ops.TorchOps
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        load_network("cifar10", backend="cuda")
