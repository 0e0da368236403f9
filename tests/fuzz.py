"""Mutation fuzzing of .vz decoding: every mutated file must give a clean one-line error or the identical image.

    python tests/fuzz.py --mutations 10000 [--seed 0]

Mutations: bit flips, truncation, insertion, deletion and overwriting with random bytes, half of them anywhere and
half in the header; half keep the (now wrong) CRC, half get a valid one, as a hostile or buggy writer would make.
``tests/test_fuzz.py`` runs a few hundred of them in CI.
"""
from __future__ import annotations

import argparse
import signal
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from vaezip.format.container import CodingParams, FormatError
from vaezip.pipeline import decode
from vaezip.format.image import ImageError, Picture
from vaezip.format.planes import JPEG_XL, PLANES, PNG, STORED
from vaezip.nets.weights import ModelError

TIME_LIMIT = 60          # seconds per decode before it counts as a hang
HEADER = 80              # bytes at the start where header mutations land


def sample_file(model: str) -> tuple[bytes, list[Picture]]:
    """A small archive with every way of coding: by the model an RGBA image with three alpha values (in several
    batches) and a grayscale one, then a JPEG XL, a PNG and a stored image."""
    rng = np.random.default_rng(0)
    rgba = Picture("RGBA", rng.integers(60, 90, (3, 10, 7), dtype=np.uint8),
                   rng.choice(np.array([0, 128, 255], np.uint8), (10, 7)), b"icc" * 5)
    gray = Picture("L", rng.integers(0, 256, (1, 5, 6), dtype=np.uint8))
    flat = Picture("RGB", np.full((3, 6, 9), 77, np.uint8))
    pictures = [rgba, gray, flat, gray, flat]
    codings = [PLANES, PLANES, JPEG_XL, PNG, STORED]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import encode
    return encode(pictures, model, codings, CodingParams(tile=8, batch=1), archive=True)[0], pictures


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    kind = str(rng.choice(["flip", "truncate", "insert", "delete", "overwrite"]))
    end = min(HEADER, len(data)) if rng.random() < 0.5 else len(data)
    pos = int(rng.integers(0, end))
    out = bytearray(data)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            p = int(rng.integers(0, end))
            out[p] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        out = out[:pos]
    elif kind == "insert":
        out[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        del out[pos:pos + int(rng.integers(1, 17))]
    else:
        span = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
        out[pos:pos + len(span)] = span
    if rng.random() < 0.5 and len(out) >= 4:
        out[-4:] = struct.pack("<I", zlib.crc32(bytes(out[:-4])))
        kind += "+crc"
    return kind, bytes(out)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def outcome(data: bytes, original: list[Picture], model: str) -> str:
    """'rejected', 'identical', 'metadata' (same pixels, other names or ICC: a valid file) or a failure."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT)
    try:
        pictures = decode(data, model)
    except (FormatError, ModelError, ImageError) as e:
        return "rejected" if "\n" not in str(e) and str(e) else f"FAILURE: multi-line error {e!r}"
    except Hang:
        return "FAILURE: hang"
    except Exception as e:          # noqa: BLE001 - anything else is exactly what this looks for
        return f"FAILURE: {type(e).__name__}: {e}"
    finally:
        signal.alarm(0)
    if [(p.mode, p.pixel_bytes()) for p in pictures] != [(p.mode, p.pixel_bytes()) for p in original]:
        return "FAILURE: different pixels"
    same = [p.icc for p in pictures] == [p.icc for p in original]
    return "identical" if same else "metadata"


def run(model: str, mutations: int, seed: int) -> Counter:
    data, original = sample_file(model)
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    for _ in range(mutations):
        kind, bad = mutate(data, rng)
        result = outcome(bad, original, model)
        counts[result] += 1
        counts[kind] += 1
        if result.startswith("FAILURE"):
            counts[f"{result} ({kind})"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutations", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import TINY, calibrated_model
    from vaezip.nets.config import Config
    from vaezip.nets.weights import save_model
    with tempfile.TemporaryDirectory() as tmp:
        model = str(Path(tmp) / "tiny_rgb.safetensors")
        save_model(calibrated_model(Config(channels=3, coarse_levels=1, **TINY), seed=3), model)
        t0 = time.time()
        counts = run(model, args.mutations, args.seed)
    for key, n in sorted(counts.items()):
        print(f"{key}: {n}")
    print(f"{args.mutations} mutations in {time.time() - t0:.0f} s")
    if any(k.startswith("FAILURE") for k in counts):
        sys.exit(1)


if __name__ == "__main__":
    main()
