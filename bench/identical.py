#!/usr/bin/env python
"""Model-coded .vz files byte for byte against another revision of vaezip.

    python bench/identical.py [--rev REV] [--count 500] [--data PATH] [--keep DIR]

Codes, with ``--model-only`` (``classical=False``) and each dataset's model, the first ``--count`` MNIST and
CIFAR-10 test images as one archive and as one file each, and the 24 Kodak photos one file each, once with the
vaezip of this checkout and once with the vaezip of git revision REV (a worktree, run in another process), and
compares every file. Exits 1 and names the first files that differ. ``--keep DIR`` keeps both sets of files and
the hashes of REV's files (DIR/REV-COUNT.json), which later runs with the same DIR, REV and count reuse.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import hashlib, json, sys
from pathlib import Path
import numpy as np
from PIL import Image
import vaezip

root, count, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
with np.load(root / "mnist" / "mnist-test.npz") as z:
    mnist = list(z["images"][:count])
with Image.open(root / "cifar10" / "cifar10-test-00.webp") as im:
    m = np.asarray(im.convert("RGB"))
cifar = list(m.reshape(100, 32, 100, 32, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 32, 32, 3)[:count])
kodak = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((root / "kodak").glob("kodim*.png"))]
files = {}
for name, model, images, archive in (("mnist", "mnist", mnist, True), ("cifar10", "cifar10", cifar, True),
                                     ("kodak", "photo", kodak, False)):
    if archive:
        files[f"{name}-archive"] = vaezip.compress(images, model, classical=False)
    for i, x in enumerate(images):
        files[f"{name}-{i:04d}"] = vaezip.compress(x, model, classical=False)
out.mkdir(parents=True, exist_ok=True)
for key, data in files.items():
    (out / f"{key}.vz").write_bytes(data)
print(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in files.items()}))
"""


@contextmanager
def revision(rev: str, folder: Path):
    """A folder to put on PYTHONPATH that imports REV's package as ``vaezip`` (its source folder ``codec/`` with
    ``assets/`` inside, as an installation lays them out), in a worktree removed afterwards."""
    tree = folder / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), rev], check=True,
                   capture_output=True)
    try:
        package = folder / "path" / "vaezip"
        package.mkdir(parents=True)
        for entry in (tree / "codec").iterdir():
            (package / entry.name).symlink_to(entry)
        (package / "assets").symlink_to(tree / "assets")
        yield package.parent
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)


def encode(pythonpath: Path | None, data: Path, count: int, out: Path) -> dict[str, str]:
    """sha256 of every file, coded by the vaezip found on ``pythonpath`` (None: this checkout's)."""
    env = None
    if pythonpath is not None:
        import os
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    proc = subprocess.run([sys.executable, "-c", WORKER, str(data), str(count), str(out)], capture_output=True,
                          text=True, env=env, cwd=pythonpath or ROOT)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", default="HEAD")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--keep", type=Path, default=None)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keep = (a.keep or tmp).resolve()
        remembered = keep / f"{a.rev}-{a.count}.json"
        if remembered.exists():
            theirs = json.loads(remembered.read_text())
        else:
            with revision(a.rev, tmp) as path:
                theirs = encode(path, a.data.resolve(), a.count, keep / a.rev)
            remembered.write_text(json.dumps(theirs))
        ours = encode(None, a.data.resolve(), a.count, keep / "this")
    differ = sorted(k for k in theirs if ours.get(k) != theirs[k])
    digest = hashlib.sha256(json.dumps(ours, sort_keys=True).encode()).hexdigest()[:16]
    print(f"{len(theirs)} files against {a.rev}: {len(theirs) - len(differ)} identical, {len(differ)} differ "
          f"(all files: sha256 {digest})")
    if differ:
        print("differ:", ", ".join(differ[:10]))
        sys.exit(1)


if __name__ == "__main__":
    main()
