"""vaezip command line: compress, decompress, info, bound, demo and train."""
from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import click

IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".jpg", ".jpeg"}
ASSETS = Path(__file__).resolve().parent / "assets"


class Failure(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def friendly(fn):
    """Turn expected errors into one line on stderr and exit code 1, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from codec.container import FormatError
        from codec.image import ImageError
        from codec.weights import ModelError
        try:
            return fn(*args, **kwargs)
        except (Failure, FormatError, ImageError, ModelError) as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")) from None
        except MemoryError:
            raise click.ClickException("out of memory") from None
    return wrapper


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    if not p.exists():
        raise Failure(f"{path}: no such file")
    if p.is_dir():
        raise Failure(f"{path}: is a folder")
    return p.read_bytes()


def write_output(path: Path | str, data: bytes, force: bool) -> None:
    """Write atomically (temporary file, then rename); refuse to overwrite without --force."""
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(path)
    if path.exists() and not force:
        raise Failure(f"{path}: already exists (use --force to overwrite)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def progress_bar(total: int, quiet: bool, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, unit="px", unit_scale=True, desc=desc, delay=1.0, leave=False, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty())


def select_device(device: str) -> str:
    import torch
    if device == "cuda" and not torch.cuda.is_available():
        raise Failure("--device cuda: no CUDA device is available")
    return device


def expand_inputs(inputs: tuple[str, ...]) -> list[tuple[str, str]]:
    """(path, name in archive) of every input; folders give their image files, sorted by name."""
    out = []
    for item in inputs:
        p = Path(item)
        if item != "-" and p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise Failure(f"{item}: no image files in this folder")
            out += [(str(f), f.name) for f in files]
        else:
            out.append((item, "stdin.png" if item == "-" else p.name))
    names = [n for _, n in out]
    if len(set(names)) != len(names):
        raise Failure("two inputs share a file name; an archive restores images by name")
    return out


@click.group()
def main():
    """vaezip: learned lossless image compression (bits-back ANS with a VAE)."""


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", default=None, help="Output .vz [default: INPUT with suffix .vz; - for stdout].")
@click.option("--model", default="photo", show_default=True, help="Shipped model name or a .safetensors path.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=4, show_default=True,
              help="Tiles per network call (smaller tiles are grouped up to the same pixel count).")
@click.option("--tile", type=click.IntRange(8, 4096), default=256, show_default=True,
              help="Tile size in pixels (each tile is padded to a multiple of the model's coarsest grid).")
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Intra-op threads of the network; stored in the file, decoding uses the same.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@friendly
def compress(inputs, output, model, force, device, batch_size, tile, threads, quiet):
    """Compress one image to a .vz file, or several images / folders into one .vz archive."""
    from codec.bitsback import CodingParams
    from codec.compressor import compress as encode
    from codec.image import read_image

    items = expand_inputs(inputs)
    archive = len(items) > 1 or any(i != "-" and Path(i).is_dir() for i in inputs)
    if archive and output is None:
        raise Failure("several inputs make one archive: name it with -o SET.vz")
    if output is None:
        output = "-" if items[0][0] == "-" else str(Path(items[0][0]).with_suffix(".vz"))
    if output != "-" and Path(output).exists() and not force:
        raise Failure(f"{output}: already exists (use --force to overwrite)")
    t0 = time.perf_counter()
    raw = [read_input(path) for path, _ in items]
    pictures = [read_image(data, path) for data, (path, _) in zip(raw, items)]
    total = sum(p.size[0] * p.size[1] for p in pictures)
    with progress_bar(total, quiet, "compress") as bar:
        params = CodingParams(tile=tile, batch=batch_size, threads=threads)
        data = encode(pictures, [n for _, n in items], model, params, archive, select_device(device), bar)
    write_output(output, data, force)
    subpixels = sum(p.subpixels for p in pictures)
    in_bytes = sum(len(r) for r in raw)
    click.echo(f"{', '.join(inputs) if archive else inputs[0]} -> {output}: {in_bytes:,} -> {len(data):,} bytes, "
               f"{8 * len(data) / subpixels:.3f} bits/subpixel, {in_bytes / len(data):.2f}x smaller than the "
               f"input, {time.perf_counter() - t0:.1f} s", err=output == "-")


@main.command()
@click.argument("input")
@click.option("-o", "--output", default=None,
              help="Output PNG, or folder for an archive [default: INPUT with suffix .png / without suffix].")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--model", default=None, help="Weights file, for .vz files made with a model that is not shipped.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@friendly
def decompress(input, output, force, model, device, quiet):
    """Restore the exact pixels (and mode, alpha, ICC profile) of a .vz file or archive."""
    from codec.compressor import decompress as decode
    from codec.container import unpack
    from codec.image import write_png

    data = read_input(input)
    header, _ = unpack(data)
    if header.archive:
        folder = Path(output) if output else Path(input).with_suffix("")
        targets = [folder / (Path(r.name).stem + ".png") for r in header.images]
        for r in header.images:
            if Path(r.name).name != r.name or r.name in ("", ".", ".."):
                raise Failure(f"{input}: unsafe image name {r.name!r} in archive")
    else:
        default = "-" if input == "-" else str(Path(input).with_suffix(".png"))
        targets = [Path(output) if output and output != "-" else output or default]
    for t in targets:
        if str(t) != "-" and Path(t).exists() and not force:
            raise Failure(f"{t}: already exists (use --force to overwrite)")
    t0 = time.perf_counter()
    total = sum(r.height * r.width for r in header.images)
    with progress_bar(total, quiet, "decompress") as bar:
        _, pictures = decode(data, select_device(device), model, bar)
    if header.archive:
        folder.mkdir(parents=True, exist_ok=True)
    for pic, target in zip(pictures, targets):
        write_output(target, write_png(pic), force)
    where = folder if header.archive else targets[0]
    click.echo(f"{input} -> {where}: {len(pictures)} image(s), {time.perf_counter() - t0:.1f} s",
               err=str(where) == "-")


@main.command()
@click.argument("input")
@friendly
def info(input):
    """Print the header of a .vz file."""
    from codec.container import VERSION, unpack
    from codec.image import MODES

    data = read_input(input)
    h, payload = unpack(data)
    click.echo(f"format: vaezip .vz version {VERSION}{' archive' if h.archive else ''}")
    click.echo(f"model: {h.model} (weights {h.weights.hex()})")
    click.echo(f"coding: tile {h.tile}, batch {h.batch}, network threads {h.threads}, lanes {h.lanes}, "
               f"latent buckets 2^{h.latent_bits}, posterior precision {h.posterior_precision}, "
               f"pixel precision {h.pixel_precision}, first batch {'fixed latent' if h.fixed_first else 'bits back'}")
    subpixels = 0
    for r in h.images:
        colour, alpha = MODES[r.mode]
        subpixels += (colour + alpha) * r.height * r.width
        extra = f", ICC profile {len(r.icc)} bytes" if r.icc else ""
        click.echo(f"image: {r.name + ' ' if r.name else ''}{r.width}x{r.height} {r.mode}{extra}")
    click.echo(f"size: {len(data):,} bytes (payload {len(payload):,}), {8 * len(data) / subpixels:.3f} bits/subpixel")


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--model", default="photo", show_default=True)
@click.option("-k", "samples", type=click.IntRange(1, 10000), default=1, show_default=True,
              help="Importance samples for the IWAE estimate.")
@click.option("--tile", type=click.IntRange(8, 4096), default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--calibrated", is_flag=True, help="With the coder's per-tile scale offsets, their cost included.")
@friendly
def bound(images, model, samples, tile, seed, calibrated):
    """Negative ELBO and IWAE estimate in bits per subpixel, mean and standard error over IMAGES."""
    from codec.bound import image_bounds, summary
    from codec.image import read_image
    from codec.weights import load_model

    vae, name, _ = load_model(model)
    pics = [read_image(read_input(p), p) for p, _ in expand_inputs(images)]
    b = image_bounds(vae, [p.color for p in pics], samples, tile, seed=seed, calibrated=calibrated)
    e, e_se = summary(b.elbo_bits, b.subpixels)
    i, i_se = summary(b.iwae_bits, b.subpixels)
    click.echo(f"{len(pics)} image(s), model {name}{', calibrated' if calibrated else ''}: -ELBO {e:.4f} ± "
               f"{e_se:.4f}, IWAE (k={samples}) "
               f"{i:.4f} ± {i_se:.4f} bits/subpixel (colour planes)")


@main.command()
@click.option("--model", default="photo", show_default=True)
@friendly
def demo(model):
    """Compress and decompress the example image shipped in assets/ and print the rate."""
    from codec.bitsback import CodingParams
    from codec.compressor import compress as encode, decompress as decode
    from codec.image import read_image

    source = ASSETS / "example.png"
    pic = read_image(source.read_bytes(), str(source))
    t0 = time.perf_counter()
    data = encode([pic], [source.name], model, CodingParams())
    t1 = time.perf_counter()
    _, (back,) = decode(data)
    t2 = time.perf_counter()
    if not ((back.color == pic.color).all() and back.mode == pic.mode):
        raise Failure("demo round trip failed")
    h, w = pic.size
    click.echo(f"assets/example.png ({w}x{h} {pic.mode}, PNG {source.stat().st_size:,} bytes) -> "
               f"{len(data):,} bytes: {8 * len(data) / pic.subpixels:.3f} bits/subpixel "
               f"(PNG {8 * source.stat().st_size / pic.subpixels:.3f}); round trip exact; "
               f"compress {t1 - t0:.1f} s, decompress {t2 - t1:.1f} s")


@main.command()
@click.argument("dataset", type=click.Choice(["mnist", "cifar10", "photo"]))
@click.option("--steps", type=int, required=True, help="Optimizer steps in total (resumes up to this count).")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--crop", type=int, default=64, show_default=True, help="Crop size for photo training.")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=int, default=500, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--stop-at", type=int, default=None,
              help="Pause after this step (checkpointed); a later run with the same --steps resumes the schedule.")
@click.option("--init", default=None, help="Start from these weights (e.g. a shipped model) if no checkpoint exists; "
              "the preset may have more residual blocks per stage (they start as the identity).")
@click.option("--data", "data_root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Dataset folder [default: ../shared/data].")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkpoint folder [default: runs/DATASET].")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Exported weights [default: runs/DATASET/DATASET.safetensors].")
@friendly
def train(dataset, steps, batch, crop, lr, seed, eval_every, device, stop_at, init, data_root, run_dir, out):
    """Train a model on DATASET (resumes from the run folder's checkpoint)."""
    from codec.train import TrainSettings, train as run

    run_dir = run_dir or Path("runs") / dataset
    info = run(TrainSettings(dataset, steps, batch, crop, lr, seed, eval_every, device, init, stop_at),
               run_dir, out or run_dir / f"{dataset}.safetensors", data_root)
    click.echo(f"trained {dataset}: validation -ELBO {info['validation_bpd']} bpd in {info['wall_seconds']} s")


if __name__ == "__main__":
    main()
