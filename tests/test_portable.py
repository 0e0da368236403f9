"""Portability of .vz files: the shipped models' networks (and the photo model tuned to an image, ``coding.tuning``)
give the same bits under older CPU kernels (``ONEDNN_MAX_CPU_ISA`` for torch, ``OPENBLAS_CORETYPE`` for NumPy's
matrix products, ``NUMBA_CPU_NAME`` for the coder's compiled kernels) and other thread counts, in every network
backend, and files coded by the model under one setting decode under every other, in NumPy and in torch.

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
import vaezip
from vaezip.coding import tuning
from vaezip.format.container import unpack
from vaezip.format.image import read_image
from vaezip.nets.weights import ASSETS, BACKENDS, load_network

models, threads, encode_dir, decode_dirs = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
torch.set_num_threads(threads)

def changes(net):
    # bias changes on a 2^6 grid within every bias's room, the same in every process
    out = []
    for j, room in enumerate(net.rooms()):
        q = np.clip((np.arange(len(room)) * 5 + j) % 7 - 3, -(room // 64), room // 64).astype(np.int64)
        out.append(q << 6)
    return out

tuning.TUNED_PIXELS = 1 << 12                  # the photo crop is tuned, by ``changes``
tuning.tune = lambda model, net, layers, params, report: changes(net)
pictures = {m: read_image((ASSETS / "reference" / f).read_bytes()) for m, f in models.items()}
hashes = {}
for name, pic in pictures.items():
    for backend in BACKENDS:
        net = load_network(name, backend=backend)[0]
        c, h, w = pic.color.shape
        g = net.config.grid
        x = np.full((1, net.config.channels, -(-h // g) * g, -(-w // g) * g), 128, np.uint8)
        x[0, :, :h, :w] = pic.color
        digest = hashlib.sha256()
        mean, log_std = net.posterior(x)
        outputs = [mean, log_std]
        z = mean + 0.37 * np.exp(log_std)                                          # off the bucket centres
        for stages in [net] + ([net.tuned(changes(net))] if name == "photo" else []):
            for _, mix in stages.stages(stages.features(z), x):
                outputs += vars(mix).values()
        for o in outputs:
            digest.update(o.tobytes())
        hashes[f"{name} {backend}"] = digest.hexdigest()
    assert len({hashes[f"{name} {backend}"] for backend in BACKENDS}) == 1
    if encode_dir != "-":
        data = vaezip.compress(pic, name, tile=64, batch=2, classical=False)   # photo: adapted 64 x 64 tiles
        assert unpack(data)[0].model_coded
        Path(encode_dir, name + ".vz").write_bytes(data)
        if name == "photo":
            data = vaezip.compress(pic, name, tile=64, batch=2, classical=False, effort="max")
            assert unpack(data)[0].params.tuning
            Path(encode_dir, "photo-tuned.vz").write_bytes(data)
pictures["photo-tuned"] = pictures["photo"]
for folder in decode_dirs:
    for name, pic in pictures.items():
        for backend in ("numpy", "torch"):
            back = vaezip.decompress(Path(folder, name + ".vz").read_bytes(), pictures=True, backend=backend)[0]
            assert back.pixel_bytes() == pic.pixel_bytes(), (folder, name, backend)
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
