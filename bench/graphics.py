"""A reproducible set of non-photographic images: text, UI layouts, screenshots (file icons, a terminal, a
spreadsheet, a dialog with its shadow on transparency), charts, diagrams, pixel art, gradients, a logo with alpha, a
palette screenshot, a sparse-histogram photo and noise.

    python bench/graphics.py OUT_DIR [--seed 0] [--data ../shared/data]

Everything is drawn with Pillow and matplotlib (DejaVu and STIX fonts, shipped with matplotlib) from a seed; the
sparse-histogram image is a contrast-stretched grayscale Kodak photo (a test image, used here for benchmarking
only). ``images(seed)`` returns the set as PIL images; ``bench/content.py`` measures it.
"""
from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WORDS = ("the quick brown fox jumps over lazy dog lossless codec image pixel entropy model latent bits back "
         "window button file edit view help settings compress decompress archive layer network integer").split()


def _fonts_dir() -> Path:
    import matplotlib
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_fonts_dir() / name), size)


def sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


def text_page(rng, name: str, size: int, colour: bool) -> Image.Image:
    """A page of wrapped text in one font and size, black on white or coloured on a tint."""
    bg = tuple(int(v) for v in rng.integers(225, 256, 3)) if colour else (255, 255, 255)
    im = Image.new("RGB", (640, 480), bg)
    d = ImageDraw.Draw(im)
    f = font(name, size)
    y = 10
    while y < 470 - size:
        ink = tuple(int(v) for v in rng.integers(0, 120, 3)) if colour else (0, 0, 0)
        d.text((12, y), sentence(rng, max(3, 600 // (size * 3))), font=f, fill=ink)
        y += int(size * 1.4)
    return im


def ui(rng) -> Image.Image:
    """A screenshot-like window: title bar, menu, sidebar list, buttons, text fields and icons."""
    im = Image.new("RGB", (800, 600), (236, 236, 236))
    d = ImageDraw.Draw(im)
    small, bold = font("DejaVuSans.ttf", 13), font("DejaVuSans-Bold.ttf", 14)
    d.rectangle((0, 0, 799, 30), fill=(48, 63, 159))
    d.text((10, 7), "vaezip — settings", font=bold, fill=(255, 255, 255))
    for i, word in enumerate(["File", "Edit", "View", "Help"]):
        d.text((10 + 60 * i, 38), word, font=small, fill=(20, 20, 20))
    d.rectangle((0, 60, 200, 599), fill=(250, 250, 250), outline=(200, 200, 200))
    for i in range(16):
        y = 70 + 32 * i
        if i == 3:
            d.rectangle((2, y - 4, 198, y + 22), fill=(197, 202, 233))
        colour = tuple(int(v) for v in rng.integers(40, 220, 3))
        d.ellipse((10, y, 26, y + 16), fill=colour)
        d.text((34, y), sentence(rng, 2), font=small, fill=(30, 30, 30))
    for i in range(6):
        y = 80 + 60 * i
        d.text((230, y), sentence(rng, 2).title() + ":", font=small, fill=(60, 60, 60))
        d.rectangle((400, y - 4, 760, y + 22), fill=(255, 255, 255), outline=(170, 170, 170))
        d.text((408, y), sentence(rng, 3), font=small, fill=(0, 0, 0))
    for i, label in enumerate(["OK", "Cancel", "Apply"]):
        x = 520 + 90 * i
        d.rounded_rectangle((x, 540, x + 80, 570), 6, fill=(63, 81, 181) if i == 0 else (224, 224, 224),
                            outline=(120, 120, 120))
        d.text((x + 20, 547), label, font=small, fill=(255, 255, 255) if i == 0 else (0, 0, 0))
    return im


def chart(rng, kind: str) -> Image.Image:
    """A matplotlib line or bar chart (antialiased), as a plotting library renders it."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.subplots()
    x = np.arange(24)
    for k in range(3):
        y = np.cumsum(rng.normal(0, 1, len(x))) + 5 * k
        if kind == "line":
            ax.plot(x, y, marker="o", label=f"series {k}")
        else:
            ax.bar(x + 0.27 * k, np.abs(y), width=0.27, label=f"series {k}")
    ax.set_title("measured values per month")
    ax.set_xlabel("month")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Image.open(buf).convert("RGB")


def diagram(rng) -> Image.Image:
    """Boxes with labels connected by arrows, antialiased by drawing at 2x and downsampling."""
    im = Image.new("RGB", (1280, 960), (255, 255, 255))
    d = ImageDraw.Draw(im)
    f = font("DejaVuSans.ttf", 30)
    boxes = []
    for i in range(7):
        x, y = int(rng.integers(40, 1000)), int(rng.integers(40, 800))
        fill = tuple(int(v) for v in rng.integers(170, 250, 3))
        d.rounded_rectangle((x, y, x + 220, y + 100), 18, fill=fill, outline=(40, 40, 40), width=4)
        d.text((x + 20, y + 30), " ".join(rng.choice(WORDS, 2)), font=f, fill=(0, 0, 0))
        boxes.append((x + 110, y + 50))
    for a, b in zip(boxes, boxes[1:]):
        d.line((a, b), fill=(30, 30, 30), width=5)
        angle = math.atan2(b[1] - a[1], b[0] - a[0])
        tip = [(b[0] - 30 * math.cos(angle + s), b[1] - 30 * math.sin(angle + s)) for s in (0.4, -0.4)]
        d.polygon([b, *tip], fill=(30, 30, 30))
    return im.resize((640, 480), Image.Resampling.LANCZOS)


def pixel_art(rng) -> Image.Image:
    """A 32 x 32 sprite in an 8-colour palette, mirrored, scaled 8x with nearest neighbours."""
    palette = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    half = rng.integers(0, 8, (32, 16))
    half[rng.random((32, 16)) < 0.45] = 0
    sprite = palette[np.concatenate([half, half[:, ::-1]], axis=1)]
    return Image.fromarray(sprite).resize((256, 256), Image.Resampling.NEAREST)


def gradients(rng) -> Image.Image:
    """Linear and radial gradients with flat shapes on top."""
    yy, xx = np.mgrid[0:512, 0:512] / 511.0
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    arr = (a * (1 - xx[..., None]) + b * xx[..., None]).astype(np.uint8)
    r = np.hypot(yy - 0.7, xx - 0.3)[..., None]
    arr[:256] = (np.clip(1 - r[:256], 0, 1) * rng.integers(100, 256, 3)).astype(np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x, y = rng.integers(0, 450, 2)
        d.rectangle((int(x), int(y), int(x) + 60, int(y) + 40), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return im


def logo(rng) -> Image.Image:
    """An RGBA logo: antialiased shapes and a word on a transparent background."""
    im = Image.new("RGBA", (1000, 1000), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.ellipse((100, 100, 900, 900), fill=(229, 57, 53, 255))
    d.ellipse((250, 250, 750, 750), fill=(255, 255, 255, 200))
    d.polygon([(500, 180), (800, 760), (200, 760)], fill=(30, 136, 229, 255))
    d.text((300, 430), "vz", font=font("DejaVuSans-Bold.ttf", 220), fill=(255, 255, 255, 255))
    return im.resize((500, 500), Image.Resampling.LANCZOS).filter(ImageFilter.SMOOTH)


def palette_screenshot(rng) -> Image.Image:
    """The UI window quantized to 64 colours: a palette (P) image, as screenshots and GIF conversions often are."""
    return ui(rng).quantize(64, dither=Image.Dither.NONE)


def sparse_histogram(data: Path | None) -> Image.Image:
    """A grayscale Kodak photo, contrast-stretched so that only some of the 256 levels occur."""
    from vaezip.training.data import kodak_paths
    gray = np.asarray(Image.open(kodak_paths(data)[22]).convert("L")).astype(np.float64)
    lo, hi = np.percentile(gray, [2, 98])
    return Image.fromarray(np.clip((gray - lo) / (hi - lo) * 255, 0, 255).round().astype(np.uint8), "L")


def icons(rng) -> Image.Image:
    """A file manager's icon view: antialiased document and folder icons with coloured badges and labels."""
    im = Image.new("RGB", (292 * 2, 178 * 2), (250, 250, 252))
    d = ImageDraw.Draw(im)
    small = font("DejaVuSans.ttf", 18)
    for row in range(2):
        for col in range(5):
            x, y = 18 + col * 114, 14 + row * 172
            if rng.random() < 0.4:
                d.rounded_rectangle((x + 8, y + 18, x + 92, y + 96), 8, fill=(245, 194, 66), outline=(200, 150, 30),
                                    width=2)
                d.rectangle((x + 8, y + 10, x + 44, y + 24), fill=(245, 194, 66))
            else:
                d.polygon([(x + 18, y + 6), (x + 66, y + 6), (x + 86, y + 26), (x + 86, y + 102), (x + 18, y + 102)],
                          fill=(255, 255, 255), outline=(150, 150, 160))
                d.polygon([(x + 66, y + 6), (x + 66, y + 26), (x + 86, y + 26)], fill=(220, 220, 228))
                badge = tuple(int(v) for v in rng.integers(30, 220, 3))
                d.rounded_rectangle((x + 26, y + 60, x + 78, y + 84), 4, fill=badge)
                d.text((x + 31, y + 62), str(rng.choice(["PDF", "PNG", "TXT", "ZIP", "DOC"])), font=small,
                       fill=(255, 255, 255))
            d.text((x + 4, y + 112), str(rng.choice(WORDS))[:9] + ".vz", font=small, fill=(30, 30, 30))
    return im.resize((292, 178), Image.Resampling.LANCZOS)


def dialog(rng) -> Image.Image:
    """A dialog window with rounded corners and a soft drop shadow on a transparent background (RGBA)."""
    im = Image.new("RGBA", (520, 340), (0, 0, 0, 0))
    shadow = Image.new("L", im.size, 0)
    ImageDraw.Draw(shadow).rounded_rectangle((26, 30, 494, 314), 14, fill=120)
    im.putalpha(shadow.filter(ImageFilter.GaussianBlur(9)))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((20, 20, 490, 300), 12, fill=(246, 246, 246, 255), outline=(190, 190, 190, 255))
    d.text((44, 40), "Replace " + sentence(rng, 2) + "?", font=font("DejaVuSans-Bold.ttf", 17), fill=(20, 20, 20))
    f = font("DejaVuSans.ttf", 14)
    for i in range(4):
        d.text((44, 86 + 24 * i), sentence(rng, 6), font=f, fill=(70, 70, 70))
    for i, label in enumerate(["Cancel", "Replace"]):
        x = 290 + 100 * i
        d.rounded_rectangle((x, 246, x + 90, 278), 7, fill=(52, 120, 246, 255) if i else (255, 255, 255, 255),
                            outline=(160, 160, 160, 255))
        d.text((x + 14, 253), label, font=f, fill=(255, 255, 255) if i else (0, 0, 0))
    return im


def terminal(rng) -> Image.Image:
    """A terminal: coloured monospace text on a dark background."""
    im = Image.new("RGB", (720, 400), (30, 31, 41))
    d = ImageDraw.Draw(im)
    f = font("DejaVuSansMono.ttf", 14)
    colours = [(248, 248, 242), (80, 250, 123), (139, 233, 253), (255, 121, 198), (241, 250, 140)]
    for y in range(8, 390, 18):
        x = 8
        for word in rng.choice(WORDS, int(rng.integers(2, 9))):
            d.text((x, y), str(word), font=f, fill=colours[int(rng.integers(len(colours)))])
            x += 9 * (len(word) + 1)
    return im


def spreadsheet(rng) -> Image.Image:
    """A spreadsheet: grid lines, a header row, right-aligned numbers and one highlighted column."""
    im = Image.new("RGB", (640, 420), (255, 255, 255))
    d = ImageDraw.Draw(im)
    f = font("DejaVuSans.ttf", 12)
    d.rectangle((0, 0, 639, 22), fill=(232, 234, 237))
    d.rectangle((200, 22, 290, 419), fill=(232, 240, 254))
    for x in range(0, 640, 90):
        d.line((x, 0, x, 419), fill=(218, 220, 224))
    for row, y in enumerate(range(0, 420, 22)):
        d.line((0, y, 639, y), fill=(218, 220, 224))
        for x in range(0, 630, 90):
            text = str(rng.choice(WORDS)) if row == 0 else f"{rng.normal(1000, 400):,.2f}"
            d.text((x + 84 - 7 * len(text), y + 4), text, font=f, fill=(32, 33, 36))
    return im


def noise(rng) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def images(seed: int = 0, data: Path | None = None) -> dict[str, Image.Image]:
    rng = np.random.default_rng(seed)
    out = {
        "text-sans-13.png": text_page(rng, "DejaVuSans.ttf", 13, False),
        "text-serif-20.png": text_page(rng, "DejaVuSerif.ttf", 20, True),
        "text-mono-11.png": text_page(rng, "DejaVuSansMono.ttf", 11, False),
        "text-stix-28.png": text_page(rng, "STIXGeneral.ttf", 28, True),
        "ui.png": ui(rng),
        "chart-line.png": chart(rng, "line"),
        "chart-bar.png": chart(rng, "bar"),
        "diagram.png": diagram(rng),
        "pixel-art.png": pixel_art(rng),
        "gradients.png": gradients(rng),
        "logo-rgba.png": logo(rng),
        "palette-ui.png": palette_screenshot(rng),
        "icons.png": icons(rng),
        "dialog-rgba.png": dialog(rng),
        "terminal.png": terminal(rng),
        "spreadsheet.png": spreadsheet(rng),
        "noise.png": noise(rng),
    }
    try:
        out["sparse-histogram.png"] = sparse_histogram(data)
    except (IndexError, FileNotFoundError):       # no Kodak here: the rest of the set still works
        pass
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=None)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name, im in images(a.seed, a.data).items():
        im.save(a.out / name, optimize=True)
        print(a.out / name, im.mode, im.size)


if __name__ == "__main__":
    main()
