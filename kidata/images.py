"""Images, in one place: decoding (robot frames and shard images fast, VLM corpus files robustly),
resizing with padding to a square (aspect ratio kept), and loading files.

Coordinates given in original pixels are mapped to [0, 1] of the padded image with the same
integer geometry the resize uses, so ``<loc>`` targets land on the pixels the model sees.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ImageDefect(ValueError):
    """An image that cannot be used; ``reason`` is the quarantine key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PadGeometry:
    """How an image of width x height sits inside the padded size x size square."""

    width: int
    height: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.width, self.height)

    @property
    def resized(self) -> tuple[int, int]:
        return max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale))

    @property
    def offset(self) -> tuple[int, int]:
        new_width, new_height = self.resized
        return (self.size - new_width) // 2, (self.size - new_height) // 2

    def normalize_xy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates of the original image -> [0, 1] of the padded square."""
        new_width, new_height = self.resized
        left, top = self.offset
        return ((left + np.asarray(x) * new_width / self.width) / self.size,
                (top + np.asarray(y) * new_height / self.height) / self.size)


def decode_frame(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] of a robot frame or a shard's image: JPEG through libjpeg-turbo (simplejpeg,
    ~3x PIL), anything else through PIL. Data we wrote or a dataset's own frames: trusted."""
    if data[:2] == b"\xff\xd8":
        import simplejpeg

        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:  # CMYK and other layouts libjpeg-turbo's fast path refuses
            pass
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def decode_image(data: bytes, *, name: str = "image") -> np.ndarray:
    """uint8 [H, W, 3] of an image file from a VLM corpus (untrusted): grayscale, CMYK, palette
    and alpha images converted to RGB; anything undecodable is an ``ImageDefect`` (quarantined)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode != "RGB":
                if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                    background = Image.new("RGB", image.size, (0, 0, 0))
                    rgba = image.convert("RGBA")
                    background.paste(rgba, mask=rgba.getchannel("A"))
                    image = background
                else:
                    image = image.convert("RGB")
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageDefect("corrupt_image", f"{name}: cannot decode ({error})") from error


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: aspect-preserving resize (bilinear), centred on black. An image
    already at the target size comes back as is (PIL's resize would return the same pixels)."""
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size and image.dtype == np.uint8:
        return image

    geometry = PadGeometry(image.shape[1], image.shape[0], size)
    new_width, new_height = geometry.resized
    resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    left, top = geometry.offset
    canvas[top : top + new_height, left : left + new_width] = resized
    return canvas


def load_image(path: str | Path, size: int) -> tuple[np.ndarray, PadGeometry, bytes]:
    """(padded uint8 [size, size, 3], geometry, file bytes) of an image file."""
    path = Path(path)
    if not path.is_file():
        raise ImageDefect("missing_image", f"{path}: no such image file")
    data = path.read_bytes()
    image = decode_image(data, name=str(path))
    return resize_with_pad(image, size), PadGeometry(image.shape[1], image.shape[0], size), data
