"""Integer networks: every partial sum stays exact, every evaluation path gives the same bits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from vaezip.nets.modules import EXACT, SHIFT_RANGE, WEIGHT_MAX, QConv
from vaezip.nets.torch_ops import exact_arithmetic, unfold_conv
from vaezip.nets.vae import set_mode
from vaezip.nets.weights import load_model, save_model
from vaezip.training.train import PRESETS
from conftest import calibrated_model, smooth_image


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cin=st.integers(1, 200), k=st.sampled_from([1, 3]),
       scale=st.floats(1e-4, 1e2), bound=st.sampled_from([255, 1023, 1024]))
def test_integer_weights_keep_every_partial_sum_below_2_24(seed, cin, k, scale, bound):
    g = torch.Generator().manual_seed(seed)
    conv = QConv(cin, 8, k)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * scale)
        conv.weight[0] = 0                                     # a dead channel
        conv.bias.copy_(torch.randn(8, generator=g) * scale * 10)
    in_scale, out_scale = torch.rand(cin, generator=g) + 0.01, torch.rand(8, generator=g) + 0.01
    in_bound = torch.full((cin,), float(bound))
    w, b, shift = conv.integers(in_scale, in_bound, out_scale)
    assert torch.equal(w, w.round()) and torch.equal(b, b.round())
    load = (w.abs() * in_bound[None, :, None, None]).flatten(1).sum(1) + b.abs()
    assert load.max() < EXACT and w.abs().max() <= WEIGHT_MAX
    # and no coarser than it has to be: one more bit would break a limit (up to rounding slack)
    base = conv.weight.detach().double() * (in_scale[None, :, None, None] / out_scale[:, None, None, None]).double()
    finer = base * torch.exp2(shift.double() + 1)[:, None, None, None]
    finer_bias = conv.bias.detach().double() / out_scale * torch.exp2(shift + 1)
    finer_load = (finer.abs() * bound).flatten(1).sum(1) + finer_bias.abs()
    slack = 0.5 * k * k * cin * bound + 0.5
    tight = (finer_load >= EXACT - 1 - slack) | (finer.abs().flatten(1).amax(1) > WEIGHT_MAX - 0.5) \
        | (shift >= SHIFT_RANGE[1])                              # negligible weights: the finest shift there is
    assert bool(tight[1:].all())


@pytest.mark.parametrize("cin,k", [(60, 3), (192, 3), (48, 1)])
def test_convolution_paths_agree_bit_for_bit(cin, k):
    """oneDNN's convolution, im2col + matmul and a float64 evaluation all give the same integers at the bound."""
    g = torch.Generator().manual_seed(cin)
    a = torch.randint(-1023, 1024, (3, cin, 17, 23), generator=g).float()
    w = torch.randint(-40, 41, (16, cin, k, k), generator=g).float()
    limit = (EXACT - 1) // (1023 * cin * k * k)
    w = (w * limit / 40).round()                       # as large as the bound allows
    b = torch.randint(-1000, 1000, (16,), generator=g).float()
    reference = F.conv2d(a.double(), w.double(), b.double(), padding=k // 2)
    with exact_arithmetic():
        for threads in (1, 3):
            torch.set_num_threads(threads)
            direct = F.conv2d(a, w, b, padding=k // 2)
            unfolded = unfold_conv(a, w, b, k // 2)
            assert torch.equal(direct.double(), reference) and torch.equal(unfolded.double(), reference)
    torch.set_num_threads(2)


def _outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Every number the coder takes from the network: posterior parameters and every stage's mixture."""
    with exact_arithmetic():
        mean, log_std = model.posterior(x)
        feats = model.features(mean)
        out = [mean, log_std]
        for t in range(model.config.num_stages):
            mix = model.stage(t, feats, x)
            out += [mix.logit_weights, mix.means, mix.log_scales, mix.coefficients]
    return [o.double() for o in out]


@pytest.fixture(scope="module")
def photo_size():
    return calibrated_model(PRESETS["photo"], seed=7)


def test_float32_network_equals_its_float64_evaluation(photo_size):
    """Were any partial sum beyond 2^24, float32 would round it and differ from float64."""
    x = torch.from_numpy(smooth_image(128, 64, 3).transpose(2, 0, 1).copy())[None].repeat(2, 1, 1, 1)
    single = _outputs(photo_size, x)
    double = _outputs(calibrated_model(PRESETS["photo"], seed=7).double(), x)
    assert all(torch.equal(a, b) for a, b in zip(single, double))


def test_training_mode_computes_the_frozen_network(photo_size):
    """Quantization-aware training evaluates exactly the integer network that is shipped."""
    x = torch.from_numpy(smooth_image(64, 64, 3).transpose(2, 0, 1).copy())[None]
    frozen = _outputs(photo_size, x)
    set_mode(photo_size, "train")
    try:
        trained = _outputs(photo_size, x)
    finally:
        set_mode(photo_size, "frozen")
    assert all(torch.equal(a, b) for a, b in zip(frozen, trained))


def test_saved_model_loads_the_same_integers(photo_size, tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(photo_size, path)
    loaded, _, _ = load_model(str(path))
    x = torch.from_numpy(smooth_image(64, 64, 3).transpose(2, 0, 1).copy())[None]
    assert all(torch.equal(a, b) for a, b in zip(_outputs(photo_size, x), _outputs(loaded, x)))
    # the master weights rebuilt from the file (to continue training) are the stored integers, rescaled
    net = loaded.stages[3]
    block = net.blocks[0]
    scale = net.stream.scale * torch.exp2(block.relu_shift)
    rebuilt = block.conv1.weight * scale[None, :, None, None] / block.act.scale[:, None, None, None]
    rebuilt = rebuilt * torch.exp2(block.conv1.shift)[:, None, None, None]
    assert torch.allclose(rebuilt, block.conv1.w_int, atol=1e-3) and block.conv1.w_int.abs().max() > 100


@pytest.mark.parametrize("encoder, decoder", [("unfold", "numpy"), ("numpy", "unfold"), ("numpy", "torch"),
                                              ("torch", "numpy")])
def test_files_decode_across_network_backends(encoder, decoder, photo_size, tmp_path, monkeypatch):
    """A file encoded with one backend's arithmetic decodes with another's: NumPy, torch's oneDNN convolutions on
    the CPU, and the GPU's arithmetic (``unfold``: im2col + matrix product) run here on the CPU. The file is coded
    by the model, and each side's convolutions ran in the backend it names."""
    import vaezip
    from vaezip.format.container import unpack
    from vaezip.nets import numpy_ops, torch_ops
    path = str(tmp_path / "m.safetensors")
    save_model(photo_size, path)
    arr = smooth_image(70, 50, 3, seed=4)
    ran = []
    count = lambda name, fn: lambda *a: ran.append(name) or fn(*a)
    monkeypatch.setattr(numpy_ops.Conv, "__call__", count("numpy", numpy_ops.Conv.__call__))
    monkeypatch.setattr(torch_ops, "conv", count("torch", torch_ops.conv))
    monkeypatch.setattr(torch_ops, "unfold_conv", count("unfold", torch_ops.unfold_conv))
    vz = vaezip.compress(arr, path, tile=64, batch=2, classical=False, backend=encoder)
    assert set(ran) == {encoder} and unpack(vz)[0].model_coded
    ran.clear()
    back = vaezip.decompress(vz, arrays=True, model=path, backend=decoder)[0]
    assert set(ran) == {decoder} and np.array_equal(back, arr)


def test_cuda_without_a_gpu_is_refused_in_one_line(tmp_path):
    """--device cuda on a machine without a GPU: a one-line error, exit status 1, no output file."""
    from click.testing import CliRunner
    from vaezip.cli import main
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    src = tmp_path / "a.png"
    from PIL import Image
    Image.fromarray(smooth_image(16, 16, 3)).save(src)
    for args in (["compress", str(src)], ["decompress", str(tmp_path / "a.vz")]):
        res = CliRunner().invoke(main, [*args, "--device", "cuda"])
        assert res.exit_code == 1 and res.output.strip() == "Error: --device cuda: no CUDA device is available"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    with pytest.raises(ValueError, match="no CUDA device is available"):
        import vaezip
        vaezip.compress(smooth_image(16, 16, 3), "cifar10", classical=False, device="cuda")
