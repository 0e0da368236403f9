"""Training loop: Adam on the negative ELBO (or, with ``samples`` M > 1, the IWAE bound with M importance samples)
in bits per dimension, with checkpoints that resume exactly.

The networks are integer networks (``nets.modules``). A model trained from scratch runs as a float network for the
first QUANT_FROM of its steps, then its scales are calibrated and it trains quantization-aware (straight-through
rounding) to the end; a model started from weights (``--init``) trains quantization-aware throughout."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import data
from ..nets.config import Config
from ..nets.vae import VAE, count_parameters, kl_to_prior, set_mode
from ..nets.weights import ModelError, model_info, read_model, resolve, save_model

KL_WARMUP = 0.1   # from scratch, the KL weight ramps from 0 to 1 over this fraction of the steps (posterior collapse)
QUANT_FROM = 0.5  # from scratch, the network is quantized after this fraction of the steps
VALIDATION = 1000  # MNIST and CIFAR-10: images at the end of the training split held out to validate on
VALIDATION_SETS = {"mnist": f"the last {VALIDATION} training images, held out",
                   "cifar10": f"the last {VALIDATION} training images, held out",
                   "photo": "centre crops of photos-val"}
CALIBRATION_BATCHES = 16
PRESETS = {
    "mnist": Config(channels=1, levels=2, latent=1, width=48, stage_width=32, mixtures=3),
    "cifar10": Config(channels=3, levels=3),
    "photo": Config(channels=3, levels=3, stage_blocks=3, coarse_levels=3),
}


@dataclass
class TrainSettings:
    dataset: str
    steps: int
    batch: int = 32
    crop: int = 64            # photo crops (multiple of the model stride)
    lr: float = 2e-3
    seed: int = 0
    eval_every: int = 500
    device: str = "cpu"
    init: str | None = None   # weights (name or .safetensors) to start from when there is no checkpoint
    stop: int | None = None   # pause after this step (checkpointed), keeping the schedule of ``steps``
    samples: int = 1          # importance samples of the objective: 1 is the ELBO, M > 1 the IWAE bound


def _datasets(dataset: str, crop: int, root: Path | None):
    """(training source, fixed validation batch array) for a dataset; never Kodak, never a test split: MNIST and
    CIFAR-10 validate on the last VALIDATION images of their training split, held out of training."""
    if dataset in ("mnist", "cifar10"):
        images = (data.load_mnist if dataset == "mnist" else data.load_cifar10)("train", root)
        return images[:-VALIDATION], images[-VALIDATION:]
    if dataset == "photo":
        return data.load_photos("train", root), data.center_crops(data.load_photos("val", root), crop)
    raise ValueError(f"unknown dataset {dataset!r}")


def bits_per_dim(model: VAE, x: np.ndarray, device: str, batch: int = 250, seed: int = 0) -> float:
    """Negative ELBO (one posterior sample per image, fixed seed) in bits per subpixel."""
    model.eval()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i:i + batch]).to(device)
            nll, kl = model.elbo_terms(xb)
            total += float((nll + kl).sum())
    torch.random.set_rng_state(gen_state)
    model.train()
    return total / (x.size * math.log(2))


def _batch(source, s: TrainSettings, rng: np.random.Generator) -> np.ndarray:
    if isinstance(source, list):
        return data.random_crops(source, s.batch, s.crop, rng)
    idx = rng.integers(len(source), size=s.batch)
    xb = source[idx]
    if s.dataset == "cifar10":       # horizontal flips; digits are not flip-symmetric
        flip = rng.random(s.batch) < 0.5
        xb[flip] = xb[flip][..., ::-1]
    return xb


def lr_at(step: int, s: TrainSettings) -> float:
    """Linear warm-up over 200 steps, then cosine decay to 1 % of the peak."""
    warm = min(1.0, (step + 1) / 200)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, s.steps))))
    return s.lr * warm * (0.01 + 0.99 * cos)


def training_record(info: dict) -> dict:
    """The training part of a model's info (without its test measurements), kept as the history of later runs."""
    return {k: v for k, v in info.items() if k not in ("test", "reference")}


def grow(model: VAE, start: VAE, name: str) -> None:
    """Load ``start`` into ``model``, which may have more residual blocks per stage or more coarse levels.

    Each extra block starts as a copy of the block before it with its second convolution zeroed, so it adds
    nothing: the model begins with exactly ``start``'s likelihood and training continues from there.
    """
    old, new = start.config.stage_blocks, model.config.stage_blocks
    grown = replace(start.config, stage_blocks=new, coarse_levels=model.config.coarse_levels)
    if grown != model.config or old > new:
        raise ModelError(f"--init {name}: its configuration differs from the preset (beyond more stage blocks "
                         "or coarse levels)")
    model.load_state_dict(start.state_dict(), strict=False)
    for net in model.stages:
        for block in net.blocks[old:]:
            block.load_state_dict(net.blocks[old - 1].state_dict())
            nn.init.zeros_(block.conv2.weight)
            nn.init.zeros_(block.conv2.bias)
    set_mode(model, "float" if start.mode == "float" else "train")


def _objective(model: VAE, x: torch.Tensor, samples: int, beta: float) -> tuple[torch.Tensor, float]:
    """The training objective in nats per image, averaged over the batch (the ELBO with its KL weighted by
    ``beta``, or the IWAE bound with ``samples`` > 1), and the mean KL(p(z|x) || q(z)) for the progress bar."""
    if samples == 1:
        nll, kl = model.elbo_terms(x)
        return (nll + beta * kl).mean(), kl.mean().item()
    mean, log_std = model.posterior(x)
    log_w = model.log_weights(x, samples, beta, posterior=(mean, log_std))
    bound = -(torch.logsumexp(log_w, 0) - math.log(samples))
    return bound.mean(), kl_to_prior(mean.detach(), log_std.detach()).mean().item()


def _calibrate(model: VAE, source, s: TrainSettings, rng: np.random.Generator) -> None:
    batches = [torch.from_numpy(np.ascontiguousarray(_batch(source, s, rng))).to(s.device)
               for _ in range(CALIBRATION_BATCHES)]
    model.calibrate_scales(batches)


def train(s: TrainSettings, run_dir: Path, out: Path, root: Path | None = None) -> dict:
    """Train (resuming from ``run_dir/checkpoint.pt`` if present) and export safetensors weights to ``out``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    model = VAE(PRESETS[s.dataset]).to(s.device)
    set_mode(model, "float")
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    source, val = _datasets(s.dataset, s.crop, root)
    dims = int(np.prod(val.shape[1:])) if not isinstance(source, list) else model.config.channels * s.crop ** 2
    rng = np.random.default_rng(s.seed)
    step, elapsed = 0, 0.0
    ckpt = run_dir / "checkpoint.pt"
    start_model = read_model(resolve(s.init)) if s.init else None
    if ckpt.exists():
        state = torch.load(ckpt, map_location=s.device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        set_mode(model, state["mode"])
    elif start_model is not None:
        grow(model, start_model.to(s.device), s.init)
    quant_from = 0 if start_model is not None else int(QUANT_FROM * s.steps)
    warmup = 0 if start_model is not None else KL_WARMUP * s.steps
    with open(run_dir / "log.jsonl", "a") as log:
        start = time.time() - elapsed
        bar = tqdm(total=s.steps, initial=step, desc=f"train {s.dataset}", dynamic_ncols=True)
        model.train()
        end = min(s.steps, s.stop or s.steps)
        while step < end:
            if model.mode == "float" and step >= quant_from:
                _calibrate(model, source, s, rng)
                set_mode(model, "train")
            for g in opt.param_groups:
                g["lr"] = lr_at(step, s)
            xb = torch.from_numpy(np.ascontiguousarray(_batch(source, s, rng))).to(s.device)
            beta = min(1.0, step / warmup) if warmup else 1.0
            objective, kl = _objective(model, xb, s.samples, beta)
            objective, kl = objective / (dims * math.log(2)), kl / (dims * math.log(2))
            opt.zero_grad(set_to_none=True)
            objective.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(bpd=f"{objective.item():.3f}", kl=f"{kl:.3f}")
            if step % s.eval_every == 0 or step == end:
                val_bpd = bits_per_dim(model, val, s.device)
                elapsed = time.time() - start
                log.write(json.dumps({"step": step, "train_bpd": objective.item(), "val_bpd": val_bpd,
                                      "seconds": round(elapsed, 1)}) + "\n")
                log.flush()
                tqdm.write(f"step {step}: validation -ELBO {val_bpd:.4f} bpd ({elapsed / 60:.1f} min)")
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "mode": model.mode},
                           ckpt)
    bar.close()
    if model.mode == "float":           # paused before quantization: export what calibration gives now
        _calibrate(model, source, s, rng)
    info = {"dataset": s.dataset, "steps": step, "batch": s.batch, "crop": s.crop if s.dataset == "photo" else None,
            "lr": s.lr, "seed": s.seed, "wall_seconds": round(time.time() - start), "parameters":
            count_parameters(model), "validation_bpd": round(bits_per_dim(model, val, s.device), 4),
            "stage_blocks": model.config.stage_blocks, "coarse_levels": model.config.coarse_levels,
            "quantized_from_step": quant_from, "samples": s.samples, "validation": VALIDATION_SETS[s.dataset]}
    if start_model is not None:
        c = start_model.config
        info["init"] = {"stage_blocks": c.stage_blocks, "coarse_levels": c.coarse_levels,
                        **training_record(model_info(resolve(s.init)))}
    save_model(model.cpu(), out, info)
    return info
