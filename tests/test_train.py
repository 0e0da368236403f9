"""Training: a few steps on MNIST, an exact resume from the checkpoint, exported safetensors weights."""
from __future__ import annotations

import json

import pytest
import torch

from codec.data import default_root
from codec.train import TrainSettings, train
from codec.weights import load_model, model_info

pytestmark = pytest.mark.skipif(not (default_root() / "mnist").is_dir(), reason="MNIST data not present")


def test_train_resume_and_export(tmp_path):
    run, out = tmp_path / "run", tmp_path / "m.safetensors"
    train(TrainSettings("mnist", steps=3, batch=4, eval_every=5, stop=2), run, out)   # pauses after step 2
    train(TrainSettings("mnist", steps=3, batch=4, eval_every=5), run, out)           # resumes at step 2
    straight = tmp_path / "straight"
    train(TrainSettings("mnist", steps=3, batch=4, eval_every=5), straight, tmp_path / "s.safetensors")
    resumed = torch.load(run / "checkpoint.pt", weights_only=False)
    direct = torch.load(straight / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == direct["step"] == 3
    for k, v in direct["model"].items():
        assert torch.equal(v, resumed["model"][k]), k                             # fixed seeds, exact resume
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3] and all(r["val_bpd"] > 0 for r in log)
    model, _, _ = load_model(str(out))
    assert model.config.channels == 1 and model_info(out)["steps"] == 3
