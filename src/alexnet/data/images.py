"""Image files to uint8 tensors: decoding any common file safely, and reading class folders.

Decoding: the header is read first (PIL opens lazily), so an image over the pixel limit is
skipped before a byte of it is decoded. The limit bounds the image once rescaled too: a
60000x1 PNG is 0.06 megapixels, but rescaled to a short side of 256 it would be 256x15.4
million (11.8 GB), so it is skipped like any image over the limit. JPEG, PNG and WebP are then decoded by
``torchvision.io`` (libjpeg-turbo, libpng, libwebp straight into a tensor), measured 1.3-1.9x
faster than PIL with its array conversion on this project's data (CIFAR-10 32x32 JPEGs:
0.10 against 0.19 ms; ImageNet JPEGs at 227: 1.7 against 2.8 ms; 2-core AMD EPYC).
A JPEG at least twice the target size is decoded by PIL at a reduced scale instead
(``draft``: libjpeg scales the DCT by 1/2, 1/4 or 1/8), which bounds memory and time by the
target size rather than the file's. Other formats (BMP, TIFF, GIF, PPM) go through PIL.
16-bit images are scaled to 8 bits, never clipped.

Class folders: ``split/<class>/**/<image>``; entries whose names start with a dot
(``.ipynb_checkpoints``, ``.DS_Store``) are ignored, symbolic links are followed but a folder
already seen (a loop) is not entered twice, and class names must be valid UTF-8 text.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from alexnet.errors import UserError
from alexnet.files import size as in_words

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff", ".gif")
TORCHVISION_FORMATS = ("JPEG", "PNG", "WEBP")
DECODER_VERSION = 2  # part of the decoded cache's key: a change here re-decodes
MAX_PIXELS = 64_000_000  # data.max_megapixels' default


def decode_image(
    path: Path | str,
    channels: int,
    size: int | None = None,
    max_pixels: int = MAX_PIXELS,
    *,
    rescaled: int | None = None,
) -> tuple[torch.Tensor | None, str]:
    """``path`` as uint8 (C, H, W), or (None, why it was skipped). ``size``: the short side
    it will be rescaled to, which also lets a large JPEG decode at a reduced scale;
    ``rescaled``: that side where the image must decode at full size first (published
    weights' own preprocessing). ``max_pixels`` bounds the image as decoded and as rescaled."""
    from PIL import Image

    # PIL refuses images over twice its own limit while opening them, before their size is
    # known here; the header is all it reads then, so its check is lifted for the call (and
    # restored: other code in the process keeps PIL's) and ours decides, giving the size.
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return _decode_checked(Path(path), channels, size, max_pixels, rescaled or size)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _decode_checked(
    path: Path, channels: int, size: int | None, max_pixels: int, rescaled: int | None
) -> tuple[torch.Tensor | None, str]:
    from PIL import Image, UnidentifiedImageError

    data, why = _read_regular(path, 8 * max_pixels)
    if data is None:
        return None, why
    if not data:
        return None, "empty file"
    try:
        header = Image.open(io.BytesIO(data))
        width, height = header.size
        if width * height > max_pixels:
            return None, f"{width}x{height} is over the {max_pixels / 1e6:g}-megapixel limit"
        over = _rescaled_over(width, height, rescaled, max_pixels)
        if over:
            return None, over
        if header.format == "JPEG" and size and min(width, height) >= 2 * size:
            return _decode_pil(header, channels, draft=size), ""
        if header.format in TORCHVISION_FORMATS:
            return _decode_torchvision(data, channels), ""
        return _decode_pil(header, channels), ""
    except UnidentifiedImageError:
        return None, "not an image"
    except (OSError, RuntimeError, ValueError, SyntaxError, EOFError) as exc:
        return None, f"cannot decode: {_decoder_message(exc)}"


def _read_regular(path: Path, most: int) -> tuple[bytes | None, str]:
    """The bytes of ``path`` if it is a regular file of at most ``most`` bytes (no image
    within the pixel limit is larger: 8 bytes a pixel is 16-bit RGBA, uncompressed), or why
    not. Opened without blocking and checked on the open file, so a pipe named ``x.jpg``
    cannot hang the caller and ``/dev/zero`` is not read without end."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "not a regular file (a folder, device, pipe or socket): not read"
        if info.st_size > most:
            return None, (f"{in_words(info.st_size)}, larger than any image within the "
                          f"{most / 8e6:g}-megapixel limit")  # fmt: skip
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(), ""
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    finally:
        os.close(fd)


def _rescaled_over(width: int, height: int, side: int | None, max_pixels: int) -> str:
    """Why ``width`` x ``height`` rescaled to a short side of ``side`` is over the limit, or
    "" where it is not (or will not be rescaled)."""
    short, long = sorted((width, height))
    if not side or short < 1:
        return ""
    long_side = -(-long * side // short)  # the rescaled long side, rounded up
    # Up to four times as long as wide is always allowed (a 4:1 panorama at 256 is 0.26
    # megapixels), so a limit set below the crop's own size does not refuse every image.
    if long_side * side <= max(max_pixels, 4 * side * side):
        return ""
    return (f"{width}x{height} rescaled to {side} on its short side would be {side}x{long_side}, "
            f"over the {max_pixels / 1e6:g}-megapixel limit")  # fmt: skip


def _decoder_message(exc: Exception) -> str:
    """The decoder's own words: torchvision prefixes its messages with the function and the
    C++ source line ("decode_jpeg, .../decode_jpeg.cpp:171, Image is incomplete or
    truncated"), which tell a user nothing."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if ".cpp:" in text:
        text = text.rsplit(".cpp:", 1)[1].partition(", ")[2] or text
    return text[:80]


def _decode_torchvision(data: bytes, channels: int) -> torch.Tensor:
    from torchvision.transforms.v2.functional import to_dtype

    # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec 0.16, which
    # measured the same on ImageNet JPEGs (1.55 ms each) but needs torch 2.11 or newer; a
    # torchvision without them falls back to PIL.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from torchvision.io import ImageReadMode
            from torchvision.io import decode_image as tv_decode
        except ImportError:  # pragma: no cover - a future torchvision
            from PIL import Image

            return _decode_pil(Image.open(io.BytesIO(data)), channels)
        # The WebP decoder cannot convert to grey (it warns and returns RGB): converted below.
        grey = channels == 1 and data[8:12] != b"WEBP"
        mode = ImageReadMode.GRAY if grey else ImageReadMode.RGB
        image = tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = to_dtype(image, torch.uint8, scale=True)
    if image.shape[0] != channels:
        from torchvision.transforms.v2.functional import rgb_to_grayscale

        image = rgb_to_grayscale(image) if channels == 1 else image.expand(3, -1, -1).clone()
    return image


def _decode_pil(image, channels: int, draft: int | None = None) -> torch.Tensor:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    if draft:
        image.draft(mode, (draft, draft))
    if image.mode.startswith("I"):  # 16- or 32-bit grey: scale 16-bit values, do not clip
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        if image.mode.startswith("I;16") or wide.max() > 255:
            wide = wide * 255 // 65535
        image = Image.fromarray(wide.astype(np.uint8))
    if image.mode == "F":  # float grey (TIFF): PIL's convert clips 0-1 values to black
        image = Image.fromarray(_float_to_bytes(np.asarray(image, dtype=np.float64)))
    array = np.asarray(image.convert(mode), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _float_to_bytes(values: np.ndarray) -> np.ndarray:
    """A floating-point image's values as bytes: 0-1 (the usual float convention) or 0-255 is
    scaled to 0-255; any other range has no meaning to guess and is refused (a ValueError,
    which skips and lists the file): a float TIFF of 0-1 became an all-black image silently."""
    if not np.isfinite(values).all():
        raise ValueError("a floating-point image with NaN or infinite values")
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if low < 0 or high > 255:
        raise ValueError(f"a floating-point image of values {low:g} to {high:g}, not 0-1 or 0-255")
    scale = 255.0 if high <= 1.0 else 1.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """Rescale the short side to ``size`` and take the central size x size crop (uint8 in/out)."""
    from torchvision.transforms.v2 import functional as TF

    if image.shape[-2:] == (size, size):
        return image
    image = TF.resize(image, size, antialias=True)
    return TF.center_crop(image, [size, size])


def class_folders(split: Path) -> list[str]:
    """The class folder names of ``split``, sorted; dot-folders and loops left out."""
    if not split.is_dir():
        raise FileNotFoundError(f"{split}: no such folder (expected {split}/<class>/<images>)")
    names = []
    own = split.resolve()
    for entry in sorted(split.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        real = entry.resolve()
        if real == own or real in own.parents:
            continue  # a link back up the tree: a loop, not a class
        try:
            entry.name.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(
                f"{entry}: a class folder name that is not valid UTF-8; rename it "
                "(class names are stored as text in checkpoints and reports)"
            ) from None
        if not entry.name.isprintable():  # trained, then refused by every later command
            raise UserError(f"{entry.parent}: the class folder {entry.name!r} has a name with "
                            "control characters (a newline, a tab); rename it")  # fmt: skip
        names.append(entry.name)
    return names


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def class_files(folder: Path, split: Path | None = None) -> list[Path]:
    """The files under ``folder``, sorted, at any depth; dot-entries skipped, every real
    folder entered once however many links lead to it, and none entered that holds ``split``
    (a link back up the tree would bring other classes' images in)."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    if split is not None:
        up = split.resolve()
        seen |= {(st.st_dev, st.st_ino) for st in map(os.stat, (up, *up.parents))}
    for top, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(top) / f for f in files if not f.startswith(".")]
    return sorted(found)
