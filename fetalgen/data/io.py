"""Reading and validating one image/mask pair from disk.

Every problem raises :class:`~fetalgen.data.cases.DataError` naming the file: missing or unreadable image,
mask size different from the image, empty mask, non-binary mask. Masks that are outlines (HC18's 1-pixel
ellipses) are filled; masks already filled are kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from fetalgen.data.cases import Case, DataError
from fetalgen.utils.masks import fill_holes, largest_component

ON_BAD = ("raise", "skip")
MASK_REGIONS = ("raise", "largest")  # a mask of several separate regions: refuse, or keep the largest


MAX_PIXELS = 50_000_000  # an image or mask larger than this is refused before decoding (ultrasound: < 2 M)


def decoded_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header without decoding its pixels (None: a format PIL cannot tell)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except Image.DecompressionBombError:  # PIL's own limit (far above ours) on what its header says
        return (MAX_PIXELS + 1, 1)
    except Exception:  # not an image PIL knows: cv2 decides below
        return None


def _read(path: str | Path, what: str) -> np.ndarray:
    path = Path(path)
    if path.is_dir():
        raise DataError(path, f"is a folder, not {'an' if what[0] in 'aeiou' else 'a'} {what} file")
    if not path.is_file():
        raise DataError(path, f"{what} file is missing")
    size = decoded_size(path)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        shown = f"{size[0]} x {size[1]} pixels" if size[1] > 1 else "more pixels than PIL opens"
        raise DataError(path, f"{what} of {shown} exceeds the {MAX_PIXELS:,}-pixel limit "
                              "(a decompression bomb, or a scan to downsample first)")  # fmt: skip
    data = np.fromfile(str(path), dtype=np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if array is None or array.size == 0:
        raise DataError(path, f"unreadable or corrupt {what} (not a decodable image)")
    return array


def _to_uint8(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """8-bit pixels; 16-bit files are scaled by the bit depth their values use (0..255 stored in 16 bits
    stays as is, 12-bit data 0..4095 maps to 0..255), so no range is lost or read as black."""
    if array.dtype == np.uint8:
        return array
    if array.dtype != np.uint16:
        raise DataError(path, f"{what} has unsupported pixel type {array.dtype}")
    top = int(array.max())
    if top <= 255:
        return array.astype(np.uint8)
    full = (1 << top.bit_length()) - 1
    return np.round(array.astype(np.float64) * (255.0 / full)).astype(np.uint8)


def _to_gray(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    array = _to_uint8(array, path, what)
    if array.ndim == 3:
        if array.shape[2] == 1:
            array = array[:, :, 0]
        elif array.shape[2] == 3:
            array = cv2.cvtColor(array, cv2.COLOR_BGR2GRAY)
        elif array.shape[2] == 4:
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2GRAY)
        else:
            raise DataError(path, f"{what} has {array.shape[2]} channels (expected 1, 3 or 4)")
    if array.ndim != 2:
        raise DataError(path, f"{what} has shape {array.shape} (expected HxW or HxWxC)")
    return np.ascontiguousarray(array)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 HxW grayscale (RGB/RGBA converted; 16-bit scaled by the bit depth it uses).

    Raises:
        DataError: the file is missing, unreadable or corrupt.
    """
    path = Path(path)
    return _to_gray(_read(path, "image"), path, "image")


def _fill_outline(fg: np.ndarray) -> np.ndarray | None:
    """Fill an ellipse outline; ``None`` if ``fg`` is already a filled region."""
    filled = fill_holes(fg)
    if filled.sum() > 1.2 * fg.sum():  # a closed outline: its inside was a hole
        return filled
    core = cv2.erode(fg.astype(np.uint8), np.ones((5, 5), np.uint8), borderType=cv2.BORDER_REPLICATE)
    if np.count_nonzero(core) >= 0.2 * np.count_nonzero(fg):  # thick: a filled mask (any small holes filled)
        return filled
    # A thin outline that is not closed (the head leaves the image): fit an ellipse to its pixels.
    ys, xs = np.nonzero(fg)
    if len(xs) < 5:
        return None
    (cx, cy), (d1, d2), angle = cv2.fitEllipse(np.stack([xs, ys], 1).astype(np.float32))
    out = np.zeros(fg.shape, np.uint8)
    shift = 4  # sub-pixel rasterisation
    f = 1 << shift
    cv2.ellipse(
        out,
        (round(cx * f), round(cy * f)),
        (round(d1 / 2 * f), round(d2 / 2 * f)),
        angle,
        0,
        360,
        1,
        thickness=-1,
        lineType=cv2.LINE_8,
        shift=shift,
    )
    return out.astype(bool) | fg


def _foreground(gray: np.ndarray, path: Path) -> np.ndarray:
    """The foreground of a two-level mask (the higher level); a mask of one level or more than two, or one whose
    foreground runs all round the border (inverted), is refused naming ``path``."""
    levels = np.flatnonzero(np.bincount(gray.ravel(), minlength=256))
    if len(levels) > 2:
        shown = ", ".join(str(int(v)) for v in levels[:10]) + (", ..." if len(levels) > 10 else "")
        raise DataError(path, f"mask is not binary: {len(levels)} grey levels found ({shown}); expected 2")
    if len(levels) == 1:
        if levels[0] == 0:
            raise DataError(path, "mask is empty (all pixels are 0)")
        raise DataError(path, f"mask covers the whole image (every pixel is {int(levels[0])})")
    fg = gray > levels[0]
    border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]])
    if border.all():  # foreground all round the image: filled, it would be the whole image
        raise DataError(path, "mask foreground runs all round the image border: an inverted mask (the head drawn "
                              f"as {int(levels[0])} on {int(levels[1])})? A head mask is the head's pixels only")  # fmt: skip
    return fg


def load_mask(
    path: str | Path, shape: tuple[int, int], regions: str = "raise", repaired: list[Path] | None = None
) -> np.ndarray:
    """Read a binary mask as bool HxW, filling outlines.

    The mask may be grayscale or RGB with exactly two levels (background = the lower one), e.g. 0/255 or 0/1.
    A closed outline is filled (holes filled as by ``binary_fill_holes``); a thin outline that is not closed (an ellipse leaving
    the image) is completed by an ellipse fitted to its pixels; a filled mask is kept.

    Args:
        path: mask file.
        shape: ``(H, W)`` of the image the mask belongs to.
        regions: a head is one region; for a mask of several separate (8-connected) regions, ``raise`` or
            keep the ``largest`` (the path is then appended to ``repaired``, for a counted warning).
        repaired: collects the paths of masks cut down to their largest region.

    Raises:
        DataError: missing/unreadable file, size different from ``shape``, empty mask, mask covering the
            whole image, more than two grey levels (e.g. a JPEG-compressed mask), or several regions.
    """
    if regions not in MASK_REGIONS:
        raise ValueError(f"mask_regions must be one of {MASK_REGIONS}, got {regions!r}")
    path = Path(path)
    raw = _read(path, "mask")
    if raw.ndim == 3 and raw.shape[2] in (3, 4):  # brightest channel: a coloured outline counts as foreground
        b, g, r = cv2.split(raw)[:3]
        raw = cv2.max(cv2.max(b, g), r)
    gray = _to_gray(raw, path, "mask")
    if gray.shape != tuple(shape):
        raise DataError(
            path,
            f"mask size {gray.shape[1]}x{gray.shape[0]} (WxH) differs from its image "
            f"size {shape[1]}x{shape[0]}",
        )
    fg = _foreground(gray, path)
    filled = _fill_outline(fg)
    if filled is None:
        raise DataError(path, f"mask has only {int(fg.sum())} foreground pixels: too few to form a region")
    count, _ = cv2.connectedComponents(filled.astype(np.uint8), connectivity=8)
    if count - 1 > 1:
        if regions == "raise":
            raise DataError(
                path,
                f"mask has {count - 1} separate regions, a head is one (mask_regions=largest keeps the largest)",
            )
        filled = largest_component(filled)
        if repaired is not None:
            repaired.append(path)
    return filled


def load_pair(
    case: Case, regions: str = "raise", repaired: list[Path] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate one case: ``(image uint8 HxW, mask bool HxW)``, outlines filled (see :func:`load_mask`)."""
    image = load_image(case.image_path)
    return image, load_mask(case.mask_path, image.shape, regions, repaired)


def check_on_bad(on_bad: str) -> None:
    """Raise ``ValueError`` unless ``on_bad`` is ``"raise"`` or ``"skip"``."""
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")


@contextmanager
def bad_input(on_bad: str, skipped: list[DataError]) -> Iterator[None]:
    """The one handling of a bad file: a :class:`DataError` raised in the block is raised on (``on_bad="raise"``)
    or added to ``skipped`` (``"skip"``), the rest of the block then left out."""
    try:
        yield
    except DataError as err:
        if on_bad == "raise":
            raise
        skipped.append(err)


def warn_skipped(errors: list[DataError], what: str) -> None:
    """Warn once about skipped bad files, with their count and each file's problem."""
    if errors:
        listing = "\n  ".join(str(e) for e in errors)
        warnings.warn(f"{what}: skipped {len(errors)} bad file(s):\n  {listing}", UserWarning, stacklevel=3)
