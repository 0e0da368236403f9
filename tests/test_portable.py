"""Portability of .vz files: the shipped models' networks give the same bits under older CPU kernels
(``ONEDNN_MAX_CPU_ISA`` for torch, ``OPENBLAS_CORETYPE`` for NumPy's matrix products, ``NUMBA_CPU_NAME`` for the
coder's compiled kernels) and other thread counts, in both network runtimes, and files encoded under one setting
decode under every other.

Each setting runs in its own process: oneDNN, OpenBLAS and numba read their settings once, at start-up.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

MODELS = {"photo": "photo-crop.png", "cifar10": "cifar10-test-0.png", "mnist": "mnist-test-0.png"}
SETTINGS = [(None, 3), ("AVX", 1), ("SSE41", 1), (None, 1), ("AVX", 3), ("SSE41", 3)]
OPENBLAS = {"AVX": "Sandybridge", "SSE41": "Prescott"}     # OpenBLAS kernels of about the same CPU generation
NUMBA = {"AVX": "sandybridge", "SSE41": "generic"}          # and numba code for it (generic: baseline x86-64)

WORKER = """
import hashlib, json, sys
from pathlib import Path
import numpy as np, torch
from vaezip.compressor import compress, decompress
from vaezip.container import CodingParams, unpack
from vaezip.image import read_image
from vaezip.intnet import exact_arithmetic
from vaezip.model import TorchNetwork
from vaezip.weights import ASSETS, load_model, load_network

models, threads, encode_dir, decode_dirs = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
torch.set_num_threads(threads)
pictures = {m: read_image((ASSETS / "reference" / f).read_bytes()) for m, f in models.items()}
hashes = {}
for name, pic in pictures.items():
    model = load_model(name)[0]
    c, h, w = pic.color.shape
    g = model.config.grid
    x = np.full((1, model.config.channels, -(-h // g) * g, -(-w // g) * g), 128, np.uint8)
    x[0, :, :h, :w] = pic.color
    x = torch.from_numpy(x)
    h = hashlib.sha256()
    with exact_arithmetic():
        mean, log_std = model.posterior(x)
        feats = model.features(mean + 0.37 * log_std.exp())     # a z off the bucket centres, as in training
        outputs = [mean, log_std, *feats]
        for t in range(model.num_stages):
            outputs += vars(model.stage(t, feats, model.stage_context(x, t))).values()
    for o in outputs:
        h.update(o.double().numpy().tobytes())
    hashes[name] = h.hexdigest()
    for net in (load_network(name)[0], TorchNetwork(model)):     # the coder's view, from either runtime
        h = hashlib.sha256()
        mean, log_std = net.posterior(x.numpy())
        feats = net.features(mean + 0.37 * np.exp(log_std))
        for t in range(model.num_stages):
            for v in net.stage(t, feats, x.numpy()).values():
                h.update(v.tobytes())
        hashes[name + (" numpy" if net.__class__.__name__ == "Network" else " torch")] = h.hexdigest()
    assert hashes[name + " numpy"] == hashes[name + " torch"]
    if encode_dir != "-":
        params = CodingParams(tile=32, batch=2)
        Path(encode_dir, name + ".vz").write_bytes(compress([pic], ["x.png"], name, params))
for folder in decode_dirs:
    for name, pic in pictures.items():
        (back,) = decompress(*unpack(Path(folder, name + ".vz").read_bytes()))
        assert back.pixel_bytes() == pic.pixel_bytes(), (folder, name)
print(json.dumps(hashes))
"""


def run(setting: tuple[str | None, int], encode_dir: str = "-", *decode_dirs: str) -> dict:
    isa, threads = setting
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "NUMBA_CPU_NAME")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
        env["OPENBLAS_CORETYPE"] = OPENBLAS[isa]
        env["NUMBA_CPU_NAME"] = NUMBA[isa]
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(MODELS), str(threads), encode_dir, *decode_dirs],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> tuple[dict, list[str]]:
    """Files of every shipped model encoded under the default setting and under SSE4.1 with one thread."""
    dirs = [str(tmp_path_factory.mktemp(f"encoded{i}")) for i in range(2)]
    hashes = run(SETTINGS[0], dirs[0])
    assert run(SETTINGS[2], dirs[1]) == hashes
    return hashes, dirs


@pytest.mark.parametrize("setting", SETTINGS[1:], ids=lambda s: f"{s[0] or 'default'}-{s[1]}threads")
def test_same_network_bits_and_exact_decoding_under(setting, encoded):
    hashes, dirs = encoded
    assert run(setting, "-", *dirs) == hashes
