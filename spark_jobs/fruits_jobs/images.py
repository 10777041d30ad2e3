"""Bytes -> RGB uint8 array of the model's input size, or a reasoned rejection.

Pure (no Spark, no TensorFlow) so every bad-input kind is unit-testable. Real users drop
phone photos (EXIF rotation, CMYK, 16-bit PNG, transparency), screenshots, text files,
half-copied files and, sometimes, decompression bombs into the landing folder.
"""

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fruits_jobs.contract import reject_reason

# Formats PIL decodes reliably into still images. Anything else PIL recognises is rejected with
# its name ("unsupported_format") rather than guessed at.
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "MPO", "WEBP", "BMP", "GIF", "TIFF"})
# 100 Mpx: above any phone's default output, far below what would exhaust a worker's memory.
DEFAULT_MAX_PIXELS = 100_000_000
# White, like the Fruits-360 backdrop, so transparent areas don't turn black.
_BACKGROUND = (255, 255, 255)


class RejectedImage(Exception):
    """An input that cannot become a feature vector; `code` is the rejects table's reason."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = reject_reason(code)
        self.detail = detail


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of letting PIL clip everything to white.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() <= 65535 else float(arr.max())
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8))  # 2-D uint8 -> mode L
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(np.nan_to_num(scaled).astype(np.uint8))  # 2-D uint8 -> mode L
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_image(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode `data` into a (size, size, 3) uint8 RGB array; raise RejectedImage otherwise."""
    if data is None or len(data) == 0:
        raise RejectedImage("empty_file", "0 bytes")
    # PIL's own guard at the same limit, one setting for the job and the CLI (its default, 89.5 Mpx,
    # rejected photos below the documented 100 Mpx). PIL warns above it, errors above twice it.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # A rejection for either.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in ACCEPTED_FORMATS:
                raise RejectedImage("unsupported_format", fmt)
            width, height = img.size
            if width * height > max_pixels:
                raise RejectedImage("decompression_bomb", f"{width}x{height} pixels > {max_pixels}")
            if fmt in ("JPEG", "MPO"):
                # Let libjpeg decode at a reduced scale (1/2..1/8) when the photo is far larger
                # than the model input: the biggest single speed-up for phone photos.
                img.draft("RGB", (size, size))
            img.load()
            upright = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(upright)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(rgb, dtype=np.uint8)
    except RejectedImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RejectedImage("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError:
        raise RejectedImage("not_an_image", "not a decodable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        code = "truncated" if "truncated" in msg.lower() or isinstance(exc, EOFError) else "corrupt"
        raise RejectedImage(code, msg) from None
    if arr.shape != (size, size, 3):
        raise RejectedImage("corrupt", f"decoded to shape {arr.shape}")
    return arr


def decode_many(contents, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, list]:
    """Decode a batch: (stacked arrays of the good ones, per-input (code, detail) or None)."""
    good: list[np.ndarray] = []
    errors: list[tuple[str, str] | None] = []
    for data in contents:
        try:
            good.append(decode_image(data, size, max_pixels))
            errors.append(None)
        except RejectedImage as rej:
            errors.append((rej.code, rej.detail))
        except Exception as exc:  # never let one odd file kill the batch
            errors.append((reject_reason("decode_error"), f"{type(exc).__name__}: {exc}"))
    stacked = np.stack(good) if good else np.zeros((0, size, size, 3), dtype=np.uint8)
    return stacked, errors
