"""The built wheel, installed in a fresh virtual environment, works from another folder: weights (every version)
included, importable as ``vaezip`` only."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def test_wheel_in_a_fresh_venv(tmp_path):
    built = sh(sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-w", tmp_path / "dist")
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("vaezip_codec-*.whl")
    venv = tmp_path / "venv"
    assert sh(sys.executable, "-m", "venv", venv).returncode == 0
    python = venv / "bin" / "python"
    installed = sh(python, "-m", "pip", "install", "-q", wheel)
    assert installed.returncode == 0, installed.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    demo = sh(venv / "bin" / "vaezip", "demo", cwd=work)
    assert demo.returncode == 0 and "round trip exact" in demo.stdout, demo.stderr[-2000:]
    for module in ("cli", "codec"):
        assert sh(python, "-c", f"import {module}", cwd=work).returncode != 0
    version = sh(venv / "bin" / "vaezip", "--version", cwd=work)
    assert version.returncode == 0 and version.stdout.startswith("vaezip ")
    assert "(earlier version)" in version.stdout                     # every shipped weights version is in the wheel
