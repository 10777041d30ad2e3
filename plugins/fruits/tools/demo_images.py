"""Deterministic, fruit-like demo photos in the Fruits-360 layout, plus the odd files users drop.

The repository ships no copy of the dataset. These images let a newcomer run the whole pipeline
offline; point `landing_dir` at a real Fruits-360 folder for real results (see README).

    fruits demo data/landing [--per-class 6] [--no-odd-files]
"""

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

# class name -> (RGB body colour, (width, height) of the fruit as a fraction of the frame, stalk?)
CLASSES = {
    "Apple Red": ((190, 30, 45), (0.70, 0.66), True),
    "Banana": ((240, 210, 60), (0.85, 0.32), False),
    "Lemon": ((245, 230, 70), (0.62, 0.50), False),
    "Orange": ((245, 140, 20), (0.72, 0.72), False),
    "Kiwi": ((120, 95, 50), (0.62, 0.50), False),
    "Blueberry": ((60, 70, 140), (0.40, 0.40), False),
}
SIZE = 100  # Fruits-360 images are 100x100


def fruit_image(name: str, index: int) -> Image.Image:
    """One photo: the fruit on a white backdrop, with seeded jitter in size, place, tint, angle."""
    colour, (fw, fh), stalk = CLASSES[name]
    rng = random.Random(f"{name}/{index}")
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    scale = rng.uniform(0.85, 1.1)
    w, h = fw * SIZE * scale, fh * SIZE * scale
    cx, cy = SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-6, 6)
    tint = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour)
    draw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=tint)
    shine = tuple(min(255, c + 70) for c in tint)  # a highlight, as under studio light
    draw.ellipse([cx - w / 4, cy - h / 3, cx - w / 12, cy - h / 6], fill=shine)
    if stalk:
        draw.line([cx, cy - h / 2, cx + 3, cy - h / 2 - 9], fill=(90, 60, 20), width=3)
    img = img.rotate(rng.uniform(-30, 30), resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
    return img.filter(ImageFilter.GaussianBlur(0.6))


def _jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def odd_files(class_dir: Path) -> dict:
    """What real folders contain besides clean JPEGs: each must end featurized or rejected."""
    sample = fruit_image("Orange", 99)
    png16 = Image.new("I;16", (SIZE, SIZE), 30000)
    rgba = sample.convert("RGBA")
    rgba.putalpha(200)
    files = {
        class_dir / "photo_rgba.png": rgba,  # accepted: transparency on white
        class_dir / "photo_cmyk.jpg": sample.convert("CMYK"),  # accepted: print-shop JPEG
        class_dir / "photo_16bit.png": png16,  # accepted: 16-bit greyscale
        class_dir / "notes.txt": b"bought at the market on Tuesday\n",  # rejected: not an image
        class_dir / "half_copied.jpg": _jpeg_bytes(sample)[:700],  # rejected: truncated
        class_dir / "empty.jpg": b"",  # rejected: empty file
    }
    return files


def generate(out_dir: Path, per_class: int = 6, with_odd_files: bool = True) -> dict:
    """Write Training/ and Test/ class folders (3 of every 4 images to Training). Returns counts."""
    out_dir = Path(out_dir)
    written = {"images": 0, "odd_files": 0}
    for name in CLASSES:
        for i in range(per_class):
            split = "Test" if i % 4 == 3 else "Training"
            dest = out_dir / split / name / f"{i}_100.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(_jpeg_bytes(fruit_image(name, i)))
            written["images"] += 1
    if with_odd_files:
        for path, content in odd_files(out_dir / "Training" / "Orange").items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Image.Image):
                content.save(path)
            else:
                path.write_bytes(content)
            written["odd_files"] += 1
    return written
