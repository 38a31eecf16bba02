"""Images as the facial-prior backends read them, and the image files of a batch job.

`load_image` turns every supported input (path, PIL image, numpy array, tensor) into an upright 8-bit RGB image,
with errors that name the file; `find_images` lists the images of files and folders, and `output_names` gives each
image of a batch job one output file name (`photos/sub/a.jpg` -> `sub/a.png`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "ImageInput", "find_images", "load_image", "output_names"]

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
#: File endings read when a folder is given (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels carry arbitrary colour; put them on white, as transformers' `convert_to_rgb` does."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """PIL cannot convert 16-bit / 32-bit / float greyscale to RGB without clipping; scale it to 8 bits first."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        array = array.astype(np.uint16) >> 8
    elif image.mode == "I":
        array = np.clip(array, 0, 65535)
        array = array >> 8 if array.max() > 255 else array
    else:  # "F"
        array = np.nan_to_num(array.astype(np.float64))
        array = array * 255.0 if array.max() <= 1.0 else array
        array = np.clip(np.rint(array), 0, 255)
    return Image.fromarray(array.astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_bit_depth_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    return image.convert("RGB") if image.mode != "RGB" else image


def _apply_exif_orientation(image: Image.Image, name: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # malformed EXIF must not make a readable image unusable
        logger.warning("Ignoring unreadable EXIF orientation of %s: %s", name, error)
        return image


def _array_to_pil(array: np.ndarray, name: str) -> Image.Image:
    """HWC (or CHW, or HW) numpy array -> PIL image; dtype decides the value range."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first, as transformers' image processors also accept
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ValueError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image array, got shape {array.shape}")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(f"{name}: float image arrays must hold values in [0, 1], got "
                             f"[{np.nanmin(array):.3g}, {np.nanmax(array):.3g}]; pass uint8 for 0-255 data")
        array = np.rint(array * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise ValueError(f"{name}: integer image arrays must hold 0-255 (or be uint16), got "
                             f"[{array.min()}, {array.max()}]")
        array = array.astype(np.uint8)
    else:
        raise ValueError(f"{name}: unsupported image dtype {array.dtype}")
    mode = "L" if array.ndim == 2 else ("RGB" if array.shape[-1] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def load_image(image: ImageInput) -> Image.Image:
    """Read any supported image input as an upright 8-bit RGB `PIL.Image`.

    Accepts a file path, a `PIL.Image` or a numpy array (HWC RGB; HW grey; RGBA; uint8, uint16 or float in [0, 1];
    torch tensors too). EXIF orientation is applied (phone photos are stored sideways), greyscale is replicated,
    alpha is composited on white and 16-bit data is scaled to 8 bits. Errors name the file.

    Example:
    ```python
    >>> import numpy as np
    >>> from transformers_emola.facial_prior import load_image
    >>> load_image(np.zeros((4, 6), dtype=np.uint16)).size
    (6, 4)

    ```
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Image file not found: {path}")
        if os.path.isdir(path):
            raise ValueError(f"Cannot read image {path}: it is a directory")
        try:
            with Image.open(path) as opened:
                opened.load()  # decode now, so truncated files fail here and name the file
                loaded = _apply_exif_orientation(opened, path)
                loaded = _to_rgb(loaded)
                loaded.load()
        except Image.DecompressionBombError as error:
            raise ValueError(f"Cannot read image {path}: {error}") from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"Cannot read image {path}: {type(error).__name__}: {error}") from error
        loaded.filename = path  # keep the source name for messages and the precomputed backend
        return loaded
    if isinstance(image, Image.Image):
        name = getattr(image, "filename", "") or "PIL image"
        return _to_rgb(_apply_exif_orientation(image, name))
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return _to_rgb(_array_to_pil(image, "image array"))
    raise TypeError(f"Unsupported image type {type(image).__name__}: expected a path, PIL.Image or numpy array")


def source_name(image: Any, index: int) -> str:
    """How errors and results name an input: its path, a PIL image's file name, or its position and type."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    filename = getattr(image, "filename", "") if isinstance(image, Image.Image) else ""
    if filename:
        return str(filename)
    kind = "PIL image" if isinstance(image, Image.Image) else type(image).__name__
    return f"image {index} ({kind})"


def as_image_list(images: Any) -> list:
    """A single image or a batch of images -> list."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if type(images).__module__.startswith("torch"):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, Iterable):
        return list(images)
    raise TypeError(f"Unsupported images type {type(images).__name__}")


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files of `paths`: files as given, folders walked recursively (sorted, by extension), no duplicates.

    A path that does not exist raises FileNotFoundError naming it (a typo should not start a long run).
    """
    paths = list(paths)
    missing = [os.fspath(path) for path in paths if not os.path.exists(path)]
    if missing:
        raise FileNotFoundError(f"No such file or folder: {', '.join(missing)}")
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in IMAGE_EXTENSIONS:
                    found.setdefault(child.absolute(), None)
        else:
            found.setdefault(path.absolute(), None)
    return list(found)


def output_names(images: list[Path], suffix: str) -> dict[Path, Path]:
    """One relative output file per image, for the results a batch job writes beside each input.

    The path below the images' common folder keeps its folders and takes `suffix` for its extension
    (`photos/sub/a.jpg` -> `sub/a.png`); images that would share a name (`a.jpg` and `a.png`) keep their extension
    in the stem instead (`a_jpg.png`, `a_png.png`).

    Example:
        >>> from pathlib import Path
        >>> names = output_names([Path("/p/a.jpg"), Path("/p/a.png"), Path("/p/sub/b.png")], ".npy")
        >>> [name.as_posix() for name in names.values()]
        ['a_jpg.npy', 'a_png.npy', 'sub/b.npy']
    """
    if not images:
        return {}
    root = Path(os.path.commonpath([str(Path(image).absolute().parent) for image in images]))
    relative = {image: Path(image).absolute().relative_to(root) for image in images}
    plain = {image: path.with_suffix(suffix) for image, path in relative.items()}
    counts: dict[Path, int] = {}
    for name in plain.values():
        counts[name] = counts.get(name, 0) + 1
    names = {}
    for image, name in plain.items():
        if counts[name] > 1:
            source = relative[image]
            name = source.with_name(f"{source.stem}_{source.suffix.lstrip('.').lower()}{suffix}")
        names[image] = name
    taken: dict[Path, Path] = {}
    for image, name in names.items():
        if name in taken:
            raise ValueError(f"{taken[name]} and {image} would both be written as {name}; rename one of them")
        taken[name] = image
    return names
