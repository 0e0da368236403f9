"""Whole datasets: many images coded as independent jobs (one .vz per image, or one archive per shard of images),
run in worker processes here or mapped over a cluster (Dask, Ray) with the same job functions.

A job reads and writes through fsspec when a path names a protocol (``s3://``, ``gs://``, ``memory://``, ...), so
cluster workers can take their inputs from object storage and put their outputs there. Every output is written whole
or not at all.

    from vaezip.datasets import shards, compress_job
    futures = client.map(compress_job, shards(paths, 100, "s3://bucket/vz"))    # a dask.distributed Client
"""
from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path, PurePosixPath

SHARD_NAME = "shard-{:05d}.vz"
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Job:
    """Inputs coded into one output: an image to its .vz, a shard of images to one archive (storing ``names``), or a
    .vz to its image (or an archive to a folder of images)."""
    inputs: tuple[str, ...]
    output: str
    names: tuple[str, ...] = ()
    options: dict = field(default_factory=dict, hash=False)   # ``api.compress`` / ``api.decompress`` keywords
    verify: bool = False                                       # compress: decode the output and compare every pixel
    force: bool = False                                        # decompress: overwrite images that exist


@dataclass
class Outcome:
    job: Job
    images: int = 0
    subpixels: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    error: str | None = None


def per_image(inputs: list[tuple[str, str]] | list[str], folder: str | None, verify: bool = False,
              **options) -> list[Job]:
    """One job per image ((path, name) pairs, or paths): to FOLDER/name.vz, or beside the image."""
    return [Job((path,), _join(folder, str(PurePosixPath(name).with_suffix(".vz"))) if folder else
                str(PurePosixPath(path).with_suffix(".vz")), options=options, verify=verify)
            for path, name in _named(inputs)]


def shards(inputs: list[tuple[str, str]] | list[str], size: int, folder: str, verify: bool = False,
           **options) -> list[Job]:
    """Archives of ``size`` images each, FOLDER/shard-00000.vz, ... in input order, storing each image's name
    ((path, name) pairs, or paths whose file names are stored)."""
    pairs = _named(inputs)
    return [Job(tuple(p for p, _ in part), _join(folder, SHARD_NAME.format(i // size)),
                tuple(n for _, n in part), options, verify) for i in range(0, len(pairs), size)
            for part in [pairs[i:i + size]]]


def restorations(inputs: list[str], folder: str | None, force: bool = False, **options) -> list[Job]:
    """One job per .vz: to FOLDER/stem.png (an archive: the folder FOLDER/stem), or beside it."""
    return [Job((p,), _join(folder, PurePosixPath(p).stem) if folder else str(PurePosixPath(p).with_suffix("")),
                options=options, force=force) for p in inputs]


def compress_job(job: Job) -> Outcome:
    """Code a job's images into its output (an archive when it has names or several inputs)."""
    from .api import compress, decompress
    from .format.image import read_image
    t0 = time.perf_counter()
    raw = [_read(p) for p in job.inputs]
    pictures = [read_image(data, p) for data, p in zip(raw, job.inputs)]
    archive = len(job.inputs) > 1 or bool(job.names)
    data = compress(pictures if archive else pictures[0], names=list(job.names) or None, **job.options)
    if job.verify:
        back = decompress(data, pictures=True, model=job.options.get("model"), device=job.options.get("device", "cpu"))
        if not all(a.same_pixels(b) for a, b in zip(pictures, back)):
            raise ValueError("verification failed: the decoded pixels differ; nothing was written")
    _write([(job.output, data)])
    return Outcome(job, len(pictures), sum(p.subpixels for p in pictures), sum(map(len, raw)), len(data),
                   time.perf_counter() - t0)


def decompress_job(job: Job) -> Outcome:
    """Decode a job's .vz: one image to OUTPUT.png, an archive's images into the folder OUTPUT under their names."""
    from .api import decompress
    from .format.container import unpack
    from .format.image import write_png
    t0 = time.perf_counter()
    data = _read(job.inputs[0])
    header, _ = unpack(data)
    pictures = decompress(data, pictures=True, **job.options)
    if header.archive:
        outputs = [(_join(job.output, n), write_png(p))
                   for n, p in zip(output_names([r.name for r in header.images]), pictures)]
    else:
        outputs = [(job.output + ".png", write_png(pictures[0]))]
    taken = [path for path, _ in outputs if not job.force and not _remote(path) and Path(path).exists()]
    if taken:
        raise ValueError(f"{taken[0]}: already exists (use --force to overwrite); nothing was written")
    _write(outputs)
    return Outcome(job, len(pictures), sum(p.subpixels for p in pictures), len(data), sum(len(b) for _, b in outputs),
                   time.perf_counter() - t0)


def run(jobs: list[Job], work, processes: int = 1, progress=None):
    """Outcomes of ``work`` (``compress_job`` or ``decompress_job``) on every job, as they finish, in ``processes``
    worker processes (one: in this process). A job that fails yields its one-line error; the others go on."""
    if processes == 1:
        for job in jobs:
            yield _guarded(work, job)
            progress and progress(len(job.inputs))
        return
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        # Each worker computes with one thread: the processes are the parallelism (several threads each would
        # contend for the cores and take twice as long). The libraries read these as they load, and the workers
        # start as the jobs are submitted.
        with _environment(SINGLE_THREADED):
            futures = [pool.submit(_guarded, work, job) for job in jobs]
        for future in as_completed(futures):
            outcome = future.result()
            progress and progress(len(outcome.job.inputs))
            yield outcome


@contextmanager
def _environment(values: dict[str, str]):
    """``os.environ`` with ``values`` while the block runs (the worker processes started in it inherit them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def output_names(names: list[str]) -> list[str]:
    """Unique PNG file names for the images of an archive (compared case-insensitively).

    An image stored without a name is called ``image<i>.png`` (i counts from 0); a PNG keeps its name; another image
    becomes STEM.png unless another image wants that name, then NAME.png (``x.bmp`` -> ``x.bmp.png``); an image whose
    name is still taken gets a number (``x-2.png``)."""
    names = [n or f"image{i}.png" for i, n in enumerate(names)]
    is_png = [n.lower().endswith(".png") for n in names]
    stems = [Path(n).stem + ".png" for n in names]
    claims = Counter(s.lower() for s, png in zip(stems, is_png) if not png)
    claims.update(n.lower() for n, png in zip(names, is_png) if png)
    wanted = [n if png else s if claims[s.lower()] == 1 else n + ".png" for n, s, png in zip(names, stems, is_png)]
    used, seen, out = {w.lower() for w in wanted}, set(), []
    for w in wanted:
        if w.lower() in seen:
            k = 2
            while f"{w[:-4]}-{k}.png".lower() in used:
                k += 1
            w = f"{w[:-4]}-{k}.png"
            used.add(w.lower())
        seen.add(w.lower())
        out.append(w)
    return out


def _guarded(work, job: Job) -> Outcome:
    from .format.container import FormatError
    from .format.image import ImageError
    from .nets.weights import ModelError
    try:
        return work(job)
    except (FormatError, ImageError, ModelError, OSError, ValueError) as e:
        return Outcome(job, error=f"{job.inputs[0] if len(job.inputs) == 1 else job.output}: {e}")


def _named(inputs: list[tuple[str, str]] | list[str]) -> list[tuple[str, str]]:
    """(path, name) pairs: those given, or each path with its file name."""
    return [(p, PurePosixPath(p).name) if isinstance(p, str) else p for p in inputs]


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def _remote(path: str) -> bool:
    return "://" in path


def _read(path: str) -> bytes:
    if _remote(path):
        import fsspec
        with fsspec.open(path, "rb") as f:
            return f.read()
    return Path(path).read_bytes()


def _write(outputs: list[tuple[str, bytes]]) -> None:
    """``write_all``, making the folders of local outputs first."""
    for path, _ in outputs:
        if not _remote(path):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_all(outputs)


def write_all(outputs: list[tuple[str | Path, bytes]]) -> None:
    """Write every output or none: each local file goes to a temporary file first (with a new file's permissions),
    then all are renamed into place; fsspec URLs are written after them, each whole."""
    temps: list[tuple[str, Path]] = []
    umask = os.umask(0)
    os.umask(umask)
    try:
        for path, data in outputs:
            if _remote(str(path)):
                continue
            path = Path(path)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~umask)       # a new file's permissions, not mkstemp's owner-only ones
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
    for path, data in outputs:
        if _remote(str(path)):
            import fsspec
            with fsspec.open(str(path), "wb", auto_mkdir=True) as f:
                f.write(data)
