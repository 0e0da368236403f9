"""A seeded fuzz run in CI: 300 mutated .vz files, each a clean one-line error or the identical image."""
from __future__ import annotations

from fuzz import run


def test_mutated_files_never_decode_to_garbage(tiny_rgb):
    counts = run(tiny_rgb, mutations=300, seed=12)
    failures = {k: n for k, n in counts.items() if k.startswith("FAILURE")}
    assert not failures, failures
    assert counts["rejected"] > 250                      # most mutations must be caught, not survive by luck
