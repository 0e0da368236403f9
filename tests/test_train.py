"""Training: a few steps on MNIST, an exact resume from the checkpoint, exported safetensors weights."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from vaezip.training.data import default_root
from vaezip.nets.config import Config
from vaezip.nets.vae import VAE, set_mode
from vaezip.training.train import TrainSettings, grow, train
from vaezip.nets.weights import ModelError, load_model, model_info
from conftest import calibrated_model

needs_mnist = pytest.mark.skipif(not (default_root() / "mnist").is_dir(), reason="MNIST data not present")
SMALL = Config(channels=3, levels=1, latent=2, width=8, stage_width=8, stage_blocks=1, mixtures=2)


def test_grow_keeps_the_likelihood():
    start = calibrated_model(SMALL)
    with torch.no_grad():
        for p in start.parameters():              # non-trivial weights, not just the initialization
            p.add_(torch.randn_like(p) * 0.05)
    set_mode(start, "train")
    deeper = VAE(replace(SMALL, stage_blocks=3))
    grow(deeper, start, "start")
    assert len(deeper.stages[0].blocks) == len(start.stages[0].blocks) + 2
    x, z = torch.randint(0, 256, (2, 3, 8, 10)), torch.randn(2, 2, 4, 5)
    with torch.no_grad():
        assert torch.equal(deeper.log_likelihood(x, z), start.log_likelihood(x, z))
        assert torch.equal(deeper.posterior(x)[0], start.posterior(x)[0])
    loss = -deeper.log_likelihood(x, z).sum()
    loss.backward()
    assert deeper.stages[1].blocks[2].conv2.weight.grad.abs().sum() > 0   # the new blocks do train


def test_grow_adds_coarse_levels():
    start = calibrated_model(SMALL)
    grown = VAE(replace(SMALL, stage_blocks=2, coarse_levels=2))
    grow(grown, start, "start")
    x = torch.randint(0, 256, (1, 3, 16, 24))
    with torch.no_grad():
        feats = start.features(start.posterior(x)[0])
        last = start.config.num_stages - 1
        assert torch.equal(start.stage(last, feats, x).means, grown.stage(last + 6, feats, x).means)


@pytest.mark.parametrize("other", [replace(SMALL, stage_width=16), replace(SMALL, stage_blocks=3)])
def test_grow_refuses_other_architectures(other):
    with pytest.raises(ModelError, match="--init start: its configuration differs"):
        grow(VAE(replace(SMALL, stage_blocks=2)), VAE(other), "start")


@needs_mnist
def test_train_resume_and_export(tmp_path):
    run, out = tmp_path / "run", tmp_path / "m.safetensors"
    settings = TrainSettings("mnist", steps=3, batch=4, eval_every=5, init="none")
    train(replace(settings, stop=2), run, out)                                # pauses after step 2
    train(settings, run, out)                                                 # resumes at step 2
    straight = tmp_path / "straight"
    train(settings, straight, tmp_path / "s.safetensors")
    resumed = torch.load(run / "checkpoint.pt", weights_only=False)
    direct = torch.load(straight / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == direct["step"] == 3
    for k, v in direct["model"].items():
        assert torch.equal(v, resumed["model"][k]), k                             # fixed seeds, exact resume
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3] and all(r["val_bpd"] > 0 and r["jpeg_xl_bpd"] > 0 for r in log)
    model, _, _ = load_model(str(out))
    assert model.config.channels == 1 and model_info(out)["steps"] == 3
    assert model_info(out)["quantized_from_step"] == 2                        # the first at QUANT_FROM of 3
    continued = tmp_path / "continued.safetensors"
    train(replace(settings, steps=1, init=str(out)), tmp_path / "run2", continued)
    history = model_info(continued)["init"]
    assert history["steps"] == 3 and history["stage_blocks"] == model.config.stage_blocks


@needs_mnist
def test_iwae_objective_trains_and_is_recorded(tmp_path):
    out = tmp_path / "iwae.safetensors"
    info = train(TrainSettings("mnist", steps=2, batch=4, eval_every=5, samples=4), tmp_path / "run", out)
    assert info["samples"] == 4 and model_info(out)["samples"] == 4
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and log[-1]["train_bpd"] > 0


def test_iwae_bound_is_below_the_elbo_and_equal_for_one_sample():
    import math
    model = calibrated_model(SMALL)
    x = torch.randint(0, 256, (3, 3, 8, 8))
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        one = model.log_weights(x, 1, generator=g)
        g = torch.Generator().manual_seed(0)
        many = model.log_weights(x, 16, generator=g)
    assert torch.equal(one[0], many[0])                             # the same first sample
    iwae = -(torch.logsumexp(many, 0) - math.log(16))
    assert torch.all(iwae <= -many.mean(0) + 1e-4)                  # log-mean-exp >= mean (Jensen)
