"""vaezip command line: compress, decompress, info, bound, demo and train."""
from __future__ import annotations

import functools
import sys
import time
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
        from .training.images import DataError
        try:
            return fn(*args, **kwargs)
        except (Failure, FormatError, ImageError, ModelError, DataError) as e:
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
    """Write every output or none (``datasets.write_all``); "-" is standard output, written last."""
    from .datasets import write_all as write_files
    write_files([(path, data) for path, data in outputs if str(path) != "-"])
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
              help="max: code every image by the model (none screened out), fit the model's biases to each large "
                   "image (about a minute per photo) and run JPEG XL at its highest effort; a little shorter on "
                   "photos.")
@click.option("--strip", is_flag=True, help="Drop EXIF, XMP, text, dpi and gamma (ICC and transparency stay).")
@click.option("--verify", is_flag=True, help="Decode the result before writing it and check every pixel.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary, no warnings.")
@click.option("--jobs", type=click.IntRange(1), default=None,
              help="A dataset: code each image (or each --shard) on its own, in this many processes; -o names a "
                   "folder [default: each .vz beside its image].")
@click.option("--shard", type=click.IntRange(1), default=None,
              help="A dataset in archives of this many images each: -o FOLDER/shard-00000.vz, ...")
@friendly
def compress(inputs, output, model, force, device, batch_size, particles, tile, classical, effort, strip, verify,
             quiet, jobs, shard):
    """Compress one image to a .vz file, several images / folders into one .vz archive, or a whole dataset in
    parallel (--jobs, --shard)."""
    from .api import compress as encode, decompress as decode
    from .format.container import unpack
    from .format.image import is_lossy, read_image

    device = select_device(device)
    items = expand_inputs(inputs)
    if jobs or shard:
        from .datasets import compress_job, per_image, shards
        if shard and not output:
            raise Failure("--shard writes several archives: name their folder with -o FOLDER")
        options = dict(model=model, tile=tile, batch=batch_size, particles=particles, classical=classical,
                       effort=effort, device=device, strip=strip)
        work = shards(items, shard, output, verify=verify, **options) if shard else \
            per_image(items, output, verify=verify, **options)
        return run_dataset(work, compress_job, jobs or 1, force, quiet, "compress")
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
        if not all(a.same_pixels(b) for a, b in zip(pictures, back)):
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


def run_dataset(work: list, job, processes: int, force: bool, quiet: bool, desc: str) -> None:
    """Run dataset jobs with one progress bar (images) and a summary; each failed job is one line on stderr."""
    from tqdm import tqdm

    from .datasets import run
    if desc == "compress":
        refuse_existing([Path(j.output) for j in work], force)
    else:
        refuse_existing([Path(j.output + ".png") for j in work] + [Path(j.output) for j in work
                                                                   if Path(j.output).is_file()], force)
        # an archive's images are checked by its job, which knows their names
    t0 = time.perf_counter()
    failed, done = [], []
    with tqdm(total=sum(len(j.inputs) for j in work), unit="img", desc=desc, delay=1.0, leave=False,
              file=sys.stderr, disable=quiet or not sys.stderr.isatty()) as bar:
        for outcome in run(work, job, processes, bar.update):
            (failed if outcome.error else done).append(outcome)
    for outcome in failed:
        click.echo(f"error: {outcome.error}", err=True)
    seconds = time.perf_counter() - t0
    if not quiet and done:
        images = sum(o.images for o in done)
        coded = sum(o.bytes_out if desc == "compress" else o.bytes_in for o in done)
        click.echo(f"{images} images, {len(done)} files: {sum(o.bytes_in for o in done):,} -> "
                   f"{sum(o.bytes_out for o in done):,} bytes, {8 * coded / sum(o.subpixels for o in done):.4f} "
                   f"bits/subpixel; {seconds:.1f} s, {images / seconds:.1f} images/s in {processes} process(es)")
    if failed:
        raise Failure(f"all {len(work)} jobs failed" if not done else
                      f"{len(failed)} of {len(work)} jobs failed (above); the others were written")


def model_of(header) -> str:
    """The name of the model that coded a file's images: a shipped name, the name the file records, or "none"."""
    from .nets.weights import shipped_with_hash
    if not header.model_coded:
        return "none"
    shipped = shipped_with_hash(header.weights)
    return header.model or (shipped.stem if shipped else "a model this vaezip does not ship")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", default=None,
              help="Output PNG, or folder for an archive or for several inputs [default: INPUT with suffix .png / "
                   "without suffix].")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--model", default=None, help="Weights file, for .vz files made with a model that is not shipped.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary.")
@click.option("--jobs", type=click.IntRange(1), default=None, help="Decode several .vz files in this many processes.")
@friendly
def decompress(inputs, output, force, model, device, quiet, jobs):
    """Restore the exact pixels (and mode, alpha, ICC profile) of a .vz file or archive, or of many (.vz files and
    folders of them) in parallel with --jobs."""
    from .api import decompress as decode
    from .format.container import unpack
    from .format.image import write_png

    device = select_device(device)
    if jobs or len(inputs) > 1 or any(i != "-" and Path(i).is_dir() for i in inputs):
        from .datasets import decompress_job, restorations
        files = [str(f) for i in inputs for f in (sorted(Path(i).glob("*.vz")) if Path(i).is_dir() else [Path(i)])]
        work = restorations(files, output, force, model=model, device=device)
        return run_dataset(work, decompress_job, jobs or 1, force, quiet, "decompress")
    input = inputs[0]
    data = read_input(input)
    header, _ = unpack(data)
    if header.archive:
        folder = Path(output) if output else Path(input).with_suffix("")
        if folder.exists() and not folder.is_dir():
            raise Failure(f"{folder}: exists and is not a folder")
        from .datasets import output_names
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
    if not back.same_pixels(pic):
        raise Failure("demo round trip failed")
    h, w = pic.size
    png = source.stat().st_size
    click.echo(f"example.png ({w}x{h} {pic.mode}, PNG {png:,} bytes) -> {len(data):,} bytes: "
               f"{8 * len(data) / pic.subpixels:.3f} bits/subpixel (PNG {8 * png / pic.subpixels:.3f}); "
               f"round trip exact; compress {t1 - t0:.1f} s, decompress {t2 - t1:.1f} s")


@main.command()
@click.argument("source")
@click.option("--steps", type=click.IntRange(1), default=None, help="Stop after this many optimizer steps.")
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this much time (with --steps too: whichever comes first; the schedule follows both).")
@click.option("--init", default="auto", show_default=True,
              help="Weights to fine-tune (a model name or .safetensors file), auto (the shipped model of a built-in "
                   "dataset, else photo) or none (from scratch).")
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True, help="Global batch (all processes).")
@click.option("--crop", type=click.IntRange(4), default=None,
              help="Training crop side [default: the images' typical side, at most 64].")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Peak learning rate [default: 3e-4 fine-tuning, 2e-3 from scratch].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=click.IntRange(1), default=500, show_default=True,
              help="Steps between measurements of the held-out images (with --minutes, also every tenth of it).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--stop-at", type=click.IntRange(1), default=None,
              help="Pause after this step (checkpointed); a later run with the same settings resumes.")
@click.option("--samples", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Importance samples of the objective: 1 trains on the ELBO, M > 1 on the IWAE bound.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Random horizontal flips of the crops.")
@click.option("--data", "data_root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the built-in datasets are [default: ../shared/data].")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkpoint and log folder [default: runs/NAME].")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The model file [default: RUN_DIR/NAME.safetensors].")
@friendly
def train(source, steps, minutes, init, batch, crop, lr, seed, eval_every, device, stop_at, samples, flip, data_root,
          run_dir, out):
    """Train a model on SOURCE: a built-in dataset (mnist, cifar10, photo), a folder of images (searched
    recursively), a glob pattern or a .txt list of image paths. Resumes from the run folder's checkpoint; several
    processes with torchrun --nproc-per-node N -m vaezip train ..."""
    from .training.train import TrainSettings, train as run

    if not steps and not minutes:
        raise click.UsageError("give --steps or --minutes (or both)")
    name = Path(source.rstrip("/")).stem.split("*")[0] or "model"
    run_dir = run_dir or Path("runs") / name
    out = out or run_dir / f"{name}.safetensors"
    info = run(TrainSettings(source, steps, minutes, batch, crop, lr, seed, eval_every, device, init, stop_at, samples,
                             flip, data_root), run_dir, out)
    if info:
        skipped = info["images"].get("skipped")
        click.echo(f"trained {out}: {info['data']}{f' ({skipped} skipped)' if skipped else ''}; {info['steps']} "
                   f"steps, {info['minutes']} min; held-out {info['validation_bpd']} bits/subpixel, JPEG XL "
                   f"{info['validation_jpeg_xl_bpd']} on the same images")
