"""vaezip command line: compress, decompress, info, bound, demo and train."""
from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import click

IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".jpg", ".jpeg"}


class Failure(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def friendly(fn):
    """Turn expected errors into one line on stderr and exit code 1, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .format.container import FormatError
        from .format.image import ImageError
        from .nets.weights import ModelError
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


def refuse_existing(paths: list[Path], force: bool) -> None:
    for p in paths:
        if str(p) != "-" and p.exists() and not force:
            raise Failure(f"{p}: already exists (use --force to overwrite)")


def write_all(outputs: list[tuple[Path | str, bytes]]) -> None:
    """Write every output or none: each goes to a temporary file first, then all are renamed into place."""
    temps: list[tuple[str, Path]] = []
    umask = os.umask(0)
    os.umask(umask)
    try:
        for path, data in outputs:
            if str(path) == "-":
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
        if str(path) == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()


def progress_bar(total: int, quiet: bool, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, unit="px", unit_scale=True, desc=desc, delay=1.0, leave=False, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty())


def select_device(device: str) -> str:
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
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
    return out


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


def print_version(ctx, _, value) -> None:
    """--version: the package's version and every model version present (a file names its weights by hash)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    from .nets.weights import catalogue
    click.echo(f"vaezip {version('vaezip-codec')}")
    for row in catalogue():
        click.echo(f"  {row['name']} {row['hash']} ({row['where']})")
    ctx.exit()


@click.group()
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=print_version,
              help="Show the version and the models present, then exit.")
def main():
    """vaezip: learned lossless image compression (bits-back ANS with a VAE)."""


@main.command()
@friendly
def models():
    """List the models: the shipped ones (every version) and those in $VAEZIP_MODELS, with their cards."""
    from .nets.weights import catalogue
    for row in catalogue():
        if "error" in row:
            click.echo(f"{row['name']:16s} {row['hash']}  {row['where']}: {row['path']}: {row['error']}")
            continue
        card = [f"{row['parameters']:,} parameters" if row.get("parameters") else "",
                f"trained on {row['data'] or row['dataset']}" if row.get("data") or row.get("dataset") else "",
                f"{row['steps']} steps" if row.get("steps") else "",
                f"validation {row['validation_bpd']} bits/subpixel" if row.get("validation_bpd") else ""]
        where = row["where"] if row["where"] != "user" else str(row["path"])
        click.echo(f"{row['name']:16s} {row['hash']}  {where}: {', '.join(c for c in card if c)}")


def coding_options(fn):
    from .format.container import RANGES
    fn = click.option("--tile", type=click.IntRange(*RANGES["tile"]), default=256, show_default=True,
                      help="Tile size in pixels (each tile is padded to a multiple of the model's coarsest grid).")(fn)
    fn = click.option("--particles", type=click.IntRange(*RANGES["particles"]), default=1, show_default=True,
                      help="Importance samples per tile: Monte Carlo bits back, closer to the IWAE bound and that "
                      "many times slower.")(fn)
    return click.option("--batch-size", type=click.IntRange(*RANGES["batch"]), default=4, show_default=True,
                        help="Tiles per network call (smaller tiles are grouped up to the same pixel count).")(fn)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", default=None, help="Output .vz [default: INPUT with suffix .vz; - for stdout].")
@click.option("--model", default=None,
              help="Shipped model name or a .safetensors path [default: the shipped model that codes it shortest].")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@coding_options
@click.option("--classical/--model-only", default=True, show_default=True,
              help="Code an image by JPEG XL or PNG, or store it, where that is shorter than the model.")
@click.option("--effort", type=click.Choice(["default", "max"]), default="default", show_default=True,
              help="max: code every image by the model (none screened out) and JPEG XL at its highest effort; "
                   "several times slower, a little shorter on photos.")
@click.option("--strip", is_flag=True, help="Drop EXIF, XMP, text, dpi and gamma (ICC and transparency stay).")
@click.option("--verify", is_flag=True, help="Decode the result before writing it and check every pixel.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary, no warnings.")
@friendly
def compress(inputs, output, model, force, device, batch_size, particles, tile, classical, effort, strip, verify,
             quiet):
    """Compress one image to a .vz file, or several images / folders into one .vz archive."""
    from .api import compress as encode, decompress as decode
    from .format.container import unpack
    from .format.image import is_lossy, read_image

    device = select_device(device)
    items = expand_inputs(inputs)
    archive = len(items) > 1 or any(i != "-" and Path(i).is_dir() for i in inputs)
    if archive and output is None:
        raise Failure("several inputs make one archive: name it with -o SET.vz")
    if output is None:
        output = "-" if items[0][0] == "-" else str(Path(items[0][0]).with_suffix(".vz"))
    refuse_existing([Path(output)], force)
    t0 = time.perf_counter()
    raw = [read_input(path) for path, _ in items]
    pictures = [read_image(data, path) for data, (path, _) in zip(raw, items)]
    if not quiet:
        for data, (path, _) in zip(raw, items):
            if is_lossy(data):
                click.echo(f"warning: {path} is lossy (JPEG or lossy WebP): the .vz stores its decoded pixels "
                           f"exactly and will be larger than it", err=True)
    names = [n for _, n in items]
    with progress_bar(sum(p.size[0] * p.size[1] for p in pictures), quiet, "compress") as bar:
        data = encode(pictures if archive else pictures[0], model, names=names, tile=tile, batch=batch_size,
                      particles=particles, classical=classical, effort=effort, device=device,
                      strip=strip, progress=bar)
    if verify:
        back = decode(data, pictures=True, model=model, device=device)
        if any(a.mode != b.mode or a.pixel_bytes() != b.pixel_bytes() for a, b in zip(pictures, back)):
            raise Failure("verification failed: the decoded pixels differ; nothing was written")
    write_all([(output, data)])
    if not quiet:
        subpixels = sum(p.subpixels for p in pictures)
        in_bytes = sum(len(r) for r in raw)
        ratio = (f"{in_bytes / len(data):.2f}x smaller than" if len(data) <= in_bytes else
                 f"{len(data) / in_bytes:.2f}x larger than")
        click.echo(f"{', '.join(inputs) if archive else inputs[0]} -> {output}: {in_bytes:,} -> {len(data):,} "
                   f"bytes, {8 * len(data) / subpixels:.3f} bits/subpixel, {ratio} the input, model "
                   f"{model_of(unpack(data)[0])}{', verified' if verify else ''}, {time.perf_counter() - t0:.1f} s",
                   err=output == "-")


def model_of(header) -> str:
    """The name of the model that coded a file's images: a shipped name, the name the file records, or "none"."""
    from .nets.weights import shipped_with_hash
    if not header.model_coded:
        return "none"
    shipped = shipped_with_hash(header.weights)
    return header.model or (shipped.stem if shipped else "a model this vaezip does not ship")


@main.command()
@click.argument("input")
@click.option("-o", "--output", default=None,
              help="Output PNG, or folder for an archive [default: INPUT with suffix .png / without suffix].")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--model", default=None, help="Weights file, for .vz files made with a model that is not shipped.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary.")
@friendly
def decompress(input, output, force, model, device, quiet):
    """Restore the exact pixels (and mode, alpha, ICC profile) of a .vz file or archive."""
    from .api import decompress as decode
    from .format.container import unpack
    from .format.image import write_png

    device = select_device(device)
    data = read_input(input)
    header, _ = unpack(data)
    if header.archive:
        folder = Path(output) if output else Path(input).with_suffix("")
        if folder.exists() and not folder.is_dir():
            raise Failure(f"{folder}: exists and is not a folder")
        targets = [folder / n for n in output_names([r.name for r in header.images])]
    else:
        default = "-" if input == "-" else str(Path(input).with_suffix(".png"))
        targets = [Path(output or default)]
    refuse_existing(targets, force)
    t0 = time.perf_counter()
    with progress_bar(sum(r.height * r.width for r in header.images), quiet, "decompress") as bar:
        pictures = decode(data, pictures=True, model=model, device=device, progress=bar)
    if header.archive:
        folder.mkdir(parents=True, exist_ok=True)
    write_all([(t, write_png(p)) for t, p in zip(targets, pictures)])
    if not quiet:
        where = folder if header.archive else targets[0]
        click.echo(f"{input} -> {where}: {len(pictures)} image(s), {time.perf_counter() - t0:.1f} s",
                   err=str(where) == "-")


@main.command()
@click.argument("input")
@friendly
def info(input):
    """Print the header of a .vz file."""
    from dataclasses import asdict

    from .format.container import unpack

    data = read_input(input)
    h, payload = unpack(data)
    click.echo(f"format: vaezip .vz version {h.version}{' archive' if h.archive else ''}")
    if h.model_coded:
        click.echo(f"model: {model_of(h)} (weights {h.weights.hex()})")
        params = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in asdict(h.params).items())
        click.echo(f"coding: {params}, lanes {h.lanes}")
    else:
        click.echo("model: none (every image is coded outside the model)")
    for r in h.images:
        extra = [f"ICC profile {len(r.icc)} bytes"] if r.icc else []
        extra += [f"palette of {len(r.palette) // 3}"] if r.palette else []
        extra += [f"{key} {len(value)} bytes" for key, value in r.metadata]
        click.echo(f"image: {r.name + ' ' if r.name else ''}{r.width}x{r.height} {r.mode}"
                   f"{''.join(', ' + e for e in extra)}")
    click.echo(f"size: {len(data):,} bytes (payload {len(payload):,}), "
               f"{8 * len(data) / h.subpixels:.3f} bits/subpixel")


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--model", default="photo", show_default=True)
@click.option("-k", "samples", type=click.IntRange(1, 10000), multiple=True, default=[1], show_default=True,
              help="Importance samples for the IWAE estimate; repeat for several (-k 1 -k 4 -k 16).")
@click.option("--tile", type=click.IntRange(8, 4096), default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--as-coded", is_flag=True,
              help="With the coder's per-tile scale offsets, their cost included: what a file pays.")
@friendly
def bound(images, model, samples, tile, seed, as_coded):
    """Negative ELBO and IWAE estimate in bits per subpixel, mean and standard error over IMAGES."""
    from .format.image import read_image
    from .format.planes import coding_of, split
    from .nets.weights import load_model
    from .policy import require_channels
    from .training.bound import image_bounds, summary

    vae, name, _ = load_model(model)
    pics = [read_image(read_input(p), p) for p, _ in expand_inputs(images)]
    require_channels(vae.config, name, pics)
    planes = [color for p in pics for color, _ in split(p, coding_of(p))]
    for k in samples:
        b = image_bounds(vae, planes, k, tile, seed=seed, offsets=as_coded)
        e, e_se = summary(b.elbo_bits, b.subpixels)
        i, i_se = summary(b.iwae_bits, b.subpixels)
        click.echo(f"{len(planes)} image layer(s), model {name}{', as coded' if as_coded else ''}: -ELBO "
                   f"{e:.4f} ± {e_se:.4f}, IWAE (k={k}) {i:.4f} ± {i_se:.4f} bits/subpixel (colour planes)")


@main.command()
@click.option("--model", default="photo", show_default=True)
@friendly
def demo(model):
    """Compress and decompress the example image shipped with vaezip and print the rate."""
    from .api import compress as encode, decompress as decode
    from .format.image import read_image
    from .nets.weights import ASSETS

    source = ASSETS / "example.png"
    pic = read_image(source.read_bytes(), source.name)
    t0 = time.perf_counter()
    data = encode(pic, model)
    t1 = time.perf_counter()
    (back,) = decode(data, pictures=True)
    t2 = time.perf_counter()
    if back.mode != pic.mode or back.pixel_bytes() != pic.pixel_bytes():
        raise Failure("demo round trip failed")
    h, w = pic.size
    png = source.stat().st_size
    click.echo(f"example.png ({w}x{h} {pic.mode}, PNG {png:,} bytes) -> {len(data):,} bytes: "
               f"{8 * len(data) / pic.subpixels:.3f} bits/subpixel (PNG {8 * png / pic.subpixels:.3f}); "
               f"round trip exact; compress {t1 - t0:.1f} s, decompress {t2 - t1:.1f} s")


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
@click.option("--samples", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Importance samples of the objective: 1 trains on the ELBO, M > 1 on the IWAE bound.")
@click.option("--data", "data_root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Dataset folder [default: ../shared/data].")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkpoint folder [default: runs/DATASET].")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Exported weights [default: runs/DATASET/DATASET.safetensors].")
@friendly
def train(dataset, steps, batch, crop, lr, seed, eval_every, device, stop_at, init, samples, data_root, run_dir, out):
    """Train a model on DATASET (resumes from the run folder's checkpoint)."""
    from .training.train import TrainSettings, train as run

    run_dir = run_dir or Path("runs") / dataset
    info = run(TrainSettings(dataset, steps, batch, crop, lr, seed, eval_every, device, init, stop_at, samples),
               run_dir, out or run_dir / f"{dataset}.safetensors", data_root)
    click.echo(f"trained {dataset}: validation -ELBO {info['validation_bpd']} bpd in {info['wall_seconds']} s")
