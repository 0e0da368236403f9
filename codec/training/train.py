"""Training loop: Adam on the negative ELBO (or, with ``samples`` M > 1, the IWAE bound with M importance samples)
in bits per dimension, over a built-in dataset or a user's images, in one process or several (``torchrun``), with
checkpoints that resume exactly and a time budget as well as a step count.

The networks are integer networks (``nets.modules``). A model started from weights (``init``, the default: a shipped
model) trains quantization-aware throughout; one trained from scratch runs as a float network for the first
QUANT_FROM of its progress, then its scales are calibrated and it trains quantization-aware to the end. Either way
the exported model is an integer network.

Several processes (``distributed``) each take a slice of the same global batch and average their gradients
(DistributedDataParallel): the run equals one process with that batch, up to the order of float summation.
"""
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
from .bound import image_bounds
from .distributed import Group
from .images import DataError, ImageSet, as_channels, built_in, read_image_set
from ..format.classical import jpeg_xl
from ..format.image import Picture
from ..nets.config import Config
from ..nets.vae import VAE, count_parameters, set_mode
from ..nets.weights import ModelError, model_info, read_config, read_model, resolve, save_model

KL_WARMUP = 0.1     # from scratch, the KL weight ramps from 0 to 1 over this fraction of the progress
QUANT_FROM = 0.5    # from scratch, the network is quantized at this fraction of the progress
EVALUATIONS = 10    # with a time budget, the held-out images are also measured after every tenth of it
CALIBRATION_BATCHES = 16
LR = {"scratch": 2e-3, "init": 3e-4}
PRESETS = {
    "mnist": Config(channels=1, levels=2, latent=1, width=48, stage_width=32, mixtures=3),
    "cifar10": Config(channels=3, levels=3),
    "photo": Config(channels=3, levels=3, stage_blocks=3, coarse_levels=3),
}


@dataclass
class TrainSettings:
    source: str               # a built-in dataset (mnist, cifar10, photo) or a folder, glob pattern or list of images
    steps: int | None = None  # stop after this many steps ...
    minutes: float | None = None  # ... or after this much time, whichever comes first (the schedule follows both)
    batch: int = 32
    crop: int | None = None   # training crops [default: the source's typical image side, at most 64]
    lr: float | None = None   # peak learning rate [default: LR by init]
    seed: int = 0
    eval_every: int = 500     # steps between measurements of the held-out images
    device: str = "cpu"
    init: str = "auto"        # weights to start from (a model name or file), "auto" (a shipped model) or "none"
    stop: int | None = None   # pause after this step (checkpointed), keeping the schedule of ``steps``
    samples: int = 1          # importance samples of the objective: 1 is the ELBO, M > 1 the IWAE bound
    flip: bool = True         # random horizontal flips (not for the built-in MNIST)
    root: Path | None = None  # where the built-in datasets are [default: ../shared/data]

    def __post_init__(self):
        if not self.steps and not self.minutes:
            raise ValueError("give --steps or --minutes (or both)")


def initial_weights(s: TrainSettings) -> str | None:
    """The model to start from: ``init``, or for "auto" the shipped model of a built-in dataset, else photo."""
    if s.init == "none":
        return None
    if s.init != "auto":
        return s.init
    return s.source if built_in(s.source) else "photo"


def fitted(config: Config, crop: int) -> Config:
    """``config`` with as many coarse levels as fit a crop: its grid (the first stage's stride) divides the crop."""
    coarse = config.coarse_levels
    while coarse and crop % (config.stride << coarse):
        coarse -= 1
    return replace(config, coarse_levels=coarse)


def grow(model: VAE, start: VAE, name: str) -> None:
    """Load ``start`` into ``model``, which may have more residual blocks per stage or other coarse levels (they
    share the networks of the first level below z, so their count changes no parameter).

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


def lr_at(step: int, progress: float, peak: float) -> float:
    """Linear warm-up over 200 steps, then cosine decay with the progress to 1 % of the peak."""
    warm = min(1.0, (step + 1) / 200)
    return peak * warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def training_record(info: dict) -> dict:
    """The training part of a model's info (without its test measurements), kept as the history of later runs."""
    return {k: v for k, v in info.items() if k not in ("test", "reference")}


class Batches:
    """The global batch of every step, drawn from one generator so that every process draws the same: crops of
    training layers of one channel count (chosen in proportion to their numbers) and the posterior's noise."""

    def __init__(self, images: ImageSet, s: TrainSettings, config: Config, crop: int):
        self.kinds = {}
        for x in images.train:
            self.kinds.setdefault(x.shape[0], []).append(x)
        self.weights = np.array([len(v) for v in self.kinds.values()], float) / len(images.train)
        self.s, self.config, self.crop = s, config, crop
        self.flip = s.flip and not (built_in(s.source) and s.source == "mnist")   # digits are not mirror-symmetric
        self.rng = np.random.default_rng(s.seed)
        self.noise = torch.Generator().manual_seed(s.seed)

    def draw(self) -> tuple[np.ndarray, int, torch.Tensor]:
        """(crops (B, C, crop, crop) uint8 with C the model's channels, coded channels, noise (M, B, latent, h, w))."""
        kind = list(self.kinds)[self.rng.choice(len(self.kinds), p=self.weights)]
        x = data.random_crops(self.kinds[kind], self.s.batch, self.crop, self.rng, self.flip)
        side = self.crop // self.config.stride
        noise = torch.randn((self.s.samples, self.s.batch, self.config.latent, side, side), generator=self.noise)
        return as_channels(x, self.config.channels, axis=1), kind, noise

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "noise": self.noise.get_state()}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.noise.set_state(state["noise"])


class Objective(nn.Module):
    """The training objective as a module's forward, for DistributedDataParallel: nats per image, averaged over the
    batch (the ELBO with its KL weighted by ``beta``, or the IWAE bound with M = noise.shape[0] samples)."""

    def __init__(self, model: VAE):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, channels: int, noise: torch.Tensor, beta: float):
        if len(noise) == 1:             # the ELBO, its KL in closed form
            nll, kl = self.model.elbo_terms(x, noise=noise[0], channels=channels)
            return (nll + beta * kl).mean()
        log_w = self.model.log_weights(x, len(noise), beta, channels=channels, noise=noise)
        return -(torch.logsumexp(log_w, 0) - math.log(len(noise))).mean()


class Validation:
    """The held-out images, measured as whole images (centre crops of at most VALIDATION_SIDE pixels) the way the
    coder tiles them: the model's -ELBO beside JPEG XL's rate on the same images, in bits per subpixel."""

    def __init__(self, planes: list[np.ndarray], device: str):
        self.planes, self.device = planes, device
        self.subpixels = sum(x.size for x in planes)
        self.jpeg_xl = 8 * sum(len(jpeg_xl(Picture("RGB" if len(x) == 3 else "L", x))) for x in planes) / self.subpixels

    def measure(self, model: VAE) -> float:
        model.eval()
        bits = image_bounds(model, self.planes, device=self.device).elbo_bits     # its own noise generator
        model.train()
        return float(math.fsum(bits)) / self.subpixels


def _new_model(s: TrainSettings, images: ImageSet, crop: int, start: VAE | None) -> VAE:
    channels = max(x.shape[0] for x in images.train)
    if start is not None:
        if start.config.channels < channels:
            raise ModelError(f"--init {s.init}: a grayscale model cannot learn colour images")
        config = fitted(start.config, crop)
    else:
        preset = PRESETS[s.source] if built_in(s.source) else replace(PRESETS["photo"], channels=channels)
        config = fitted(preset, crop)
    model = VAE(config).to(s.device)
    if start is not None:
        grow(model, start.to(s.device), s.init)
    else:
        set_mode(model, "float")
    return model


def train(s: TrainSettings, run_dir: Path, out: Path) -> dict:
    """Train (resuming from ``run_dir/checkpoint.pt`` if present) and export the integer model to ``out`` with its
    card: the data, the steps and time, the held-out rate and JPEG XL's on the same images."""
    group = Group.start(s.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    if s.batch % group.size:
        raise DataError(f"a batch of {s.batch} does not split evenly over {group.size} processes")
    images = read_image_set(s.source, s.crop, s.root)
    crop = images.description["crop"]
    torch.manual_seed(s.seed)
    init = initial_weights(s)
    s = replace(s, init=init or "none")
    ckpt = run_dir / "checkpoint.pt"
    state = torch.load(ckpt, map_location=s.device, weights_only=False) if ckpt.exists() else None
    start = read_model(resolve(init)) if init and state is None else None
    model = _new_model(s, images, crop, start) if state is None else VAE(Config(**state["config"])).to(s.device)
    if crop % model.config.grid:
        raise DataError(f"the crop ({crop}) is not a multiple of the model's grid ({model.config.grid})")
    peak = s.lr or LR["init" if init else "scratch"]
    opt = torch.optim.Adam(model.parameters(), lr=peak)
    batches = Batches(images, s, model.config, crop)
    step, elapsed, quantized = 0, 0.0, 0 if init else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed, quantized = state["step"], state["elapsed"], state["quantized"]
        batches.restore(state["batches"])
        set_mode(model, state["mode"])
    objective = group.wrap(Objective(model))
    validation = Validation(images.held_out, s.device) if group.main else None
    log = open(run_dir / "log.jsonl", "a") if group.main else None
    bar = tqdm(total=s.steps or round(60 * s.minutes), initial=step if s.steps else round(elapsed),
               desc=f"train {Path(s.source).name}", dynamic_ncols=True, disable=not group.main, unit="step",
               bar_format=None if s.steps else "{l_bar}{bar}| {elapsed}<{remaining}{postfix}")
    clock = time.time() - elapsed
    evaluated = elapsed

    def progress(step: int, elapsed: float) -> float:
        return max(step / s.steps if s.steps else 0.0, elapsed / (60 * s.minutes) if s.minutes else 0.0)

    def checkpoint(val_bpd: float, train_bpd: float) -> None:
        log.write(json.dumps({"step": step, "minutes": round(elapsed / 60, 2), "train_bpd": round(train_bpd, 4),
                              "val_bpd": round(val_bpd, 4), "jpeg_xl_bpd": round(validation.jpeg_xl, 4)}) + "\n")
        log.flush()
        tqdm.write(f"step {step}, {elapsed / 60:.1f} min: held-out {val_bpd:.4f} bits/subpixel "
                   f"(JPEG XL {validation.jpeg_xl:.4f})")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                    "batches": batches.state(), "mode": model.mode, "quantized": quantized,
                    "config": model.config.__dict__}, ckpt)

    train_bpd, done, val_bpd = float("nan"), progress(step, elapsed) >= 1, None
    model.train()
    while not done and (s.stop is None or step < s.stop):
        x, channels, noise = batches.draw()
        if model.mode == "float" and progress(step, elapsed) >= QUANT_FROM:
            calibrate(model, batches, s.device)
            set_mode(model, "train")
            quantized = step
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress(step, elapsed), peak)
        beta = 1.0 if init else min(1.0, progress(step, elapsed) / KL_WARMUP)
        mine = group.slice(s.batch)
        loss = objective(torch.from_numpy(x[mine]).to(s.device), channels, noise[:, mine].to(s.device), beta)
        loss = loss / (crop * crop * channels * math.log(2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        elapsed = group.agree(time.time() - clock)
        train_bpd = group.mean(loss.item())
        done = progress(step, elapsed) >= 1
        if group.main:
            bar.update(1 if s.steps else round(elapsed) - bar.n)
            bar.set_postfix(step=step, bpd=f"{train_bpd:.3f}")
            due = s.minutes and elapsed - evaluated >= 60 * s.minutes / EVALUATIONS
            if step % s.eval_every == 0 or done or step == s.stop or due:     # always the loop's last step
                val_bpd = validation.measure(model)
                checkpoint(val_bpd, train_bpd)
                evaluated = elapsed
    bar.close()
    if not group.main:
        group.finish()
        return {}
    if model.mode == "float":           # paused before quantization: export what calibration gives now
        calibrate(model, batches, s.device)
        val_bpd = None
    if val_bpd is None:                 # not measured since the last step (or since calibration)
        val_bpd = validation.measure(model)
    info = {"dataset": s.source if built_in(s.source) else None, "data": images.description["data"],
            "images": images.description, "steps": step, "minutes": round(elapsed / 60, 1), "batch": s.batch,
            "crop": crop, "lr": peak, "seed": s.seed, "wall_seconds": round(elapsed), "processes": group.size,
            "parameters": count_parameters(model), "validation_bpd": round(val_bpd, 4),
            "validation_jpeg_xl_bpd": round(validation.jpeg_xl, 4), "validation": images.description["held_out"],
            "stage_blocks": model.config.stage_blocks, "coarse_levels": model.config.coarse_levels,
            "quantized_from_step": quantized, "samples": s.samples}
    if init:
        c = read_config(resolve(init))
        info["init"] = {"name": init, "stage_blocks": c.stage_blocks, "coarse_levels": c.coarse_levels,
                        **training_record(model_info(resolve(init)))}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model.cpu(), out, info)
    group.finish()
    return info


def calibrate(model: VAE, batches: Batches, device: str) -> None:
    """Activation ranges of the float network on CALIBRATION_BATCHES global batches (the same in every process)."""
    model.calibrate_scales([torch.from_numpy(batches.draw()[0]).to(device) for _ in range(CALIBRATION_BATCHES)])
