"""Adaptive coding: the residual feedback finds a bias and leaves an unbiased model alone, the encoder's mean offsets
and the feedback win back a biased model's loss, and files with and without adaptation decode exactly."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import vaezip
from vaezip.coding.adaptation import ADAPTED_PIXELS, Feedback
from vaezip.format.container import unpack
from vaezip.nets.mixture import Mixture
from vaezip.training.data import kodak_paths


def _mixture(rng, b: int, h: int, w: int) -> tuple[Mixture, np.ndarray]:
    """A one-component logistic mixture per pixel (scale 3 levels, means on the coder's 1/64 grid) and pixels drawn
    from it."""
    means = np.round(rng.uniform(60, 190, (b, 1, 1, h, w)) * 64) / 64
    u = rng.uniform(1e-6, 1 - 1e-6, (b, 1, h, w))
    x = np.clip(np.rint(means[:, 0] + 3 * np.log(u / (1 - u))), 0, 255).astype(np.uint8)
    log_scales = np.full((b, 1, 1, h, w), np.round(np.log(3) * 32) / 32)
    return Mixture(np.zeros((b, 1, 1, h, w)), means, log_scales, np.zeros((b, 1, 0, h, w))), x


@pytest.mark.parametrize("bias", [0.0, 2.5])
def test_feedback_finds_a_bias_and_leaves_an_unbiased_model_alone(bias):
    rng = np.random.default_rng(3)
    mix, x = _mixture(rng, 2, 64, 64)
    biased = Mixture(mix.logit_weights, mix.means - bias, mix.log_scales, mix.coefficients)   # predicts too low
    feedback = Feedback(2, 1)
    corrected, buckets = feedback.correct(biased, 1)
    assert np.array_equal(corrected.means, biased.means)                        # nothing seen yet
    feedback.update(biased, x, np.ones((2, 64, 64), bool), buckets)
    corrected, _ = feedback.correct(biased, 1)
    shift = corrected.means - biased.means                 # shrunk towards 0 by 3 standard errors (0.26 level here)
    assert np.all((shift > 0.8 * bias) & (shift < bias)) if bias else np.all(shift == 0)


def test_adaptation_wins_back_the_photo_models_bias_on_kodak_and_decodes():
    """The photo model on a 128 x 128 crop of a Kodak photo (where it is biased): with adaptation (the default) the
    file is shorter than without (measured: 1.9 %), and both decode exactly."""
    paths = kodak_paths()
    if not paths:
        pytest.skip("Kodak not found in ../shared/data")
    arr = np.asarray(Image.open(paths[0]))[128:256, 128:256].copy()
    files = {a: vaezip.compress(arr, "photo", tile=64, classical=False, adaptation=a) for a in (False, True)}
    assert 64 * 64 >= ADAPTED_PIXELS and unpack(files[True])[0].params.adaptation == 1
    assert len(files[True]) < 0.99 * len(files[False])
    for data in files.values():
        assert np.array_equal(vaezip.decompress(data, arrays=True)[0], arr)
