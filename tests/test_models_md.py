"""The training history that assets/MODELS.md prints for a model grown over several runs."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from vaezip.nets.config import Config  # noqa: E402
from models import training_history  # noqa: E402


def run(steps: int, **extra) -> dict:
    return {"steps": steps, "batch": 16, "lr": 1e-3, "seed": steps, "wall_seconds": 60 * steps,
            "validation_bpd": 4 - steps / 10, "parameters": 1000 * steps, **extra}


def test_single_run():
    assert training_history(run(5), Config(stage_blocks=1)) == [
        "5 steps of batch 16 on the ELBO, Adam lr 0.001 (cosine), seed 5, 5 min, with 1 residual block(s) per "
        "stage (5,000 parameters); validation -ELBO 3.5"]
    assert " on the IWAE bound with M = 4 samples, " in training_history(run(5, samples=4), Config())[0]
    assert training_history(run(5, validation="held-out images"), Config())[0].endswith(
        "validation -ELBO 3.5 on held-out images")


def test_runs_listed_oldest_first_with_their_architecture():
    first = run(1, stage_blocks=1)
    second = run(2, stage_blocks=2, init=first)
    third = run(3, stage_blocks=3, coarse_levels=0, init=second, crop=64)
    lines = training_history(run(4, init=third, crop=256), Config(stage_blocks=3, coarse_levels=2))
    assert [line.split(" steps")[0] for line in lines] == ["1", "2", "3", "4"]
    assert "with 1 residual" in lines[0]
    assert "grown to 2 residual" in lines[1] and "grown to 3 residual block(s) per stage (" in lines[2]
    assert "batch 16 of 64 px crops" in lines[2] and "batch 16 of 256 px crops" in lines[3]
    assert "grown to 3 residual block(s) per stage and 2 coarse levels" in lines[3]
    assert lines[3].endswith("validation -ELBO 3.6")
