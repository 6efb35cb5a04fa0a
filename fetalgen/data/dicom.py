"""Ultrasound DICOM files (single- and multi-frame) as grayscale frames with their pixel size (``pip install
fetalgen[dicom]``: pydicom).

Pixel size, in order: the Sequence of Ultrasound Regions (PhysicalDeltaX/Y of the first region with physical units
in cm, as ultrasound scanners write them), else PixelSpacing (mm), else unknown (the caller may take a CSV).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fetalgen.data.cases import DataError, implausible

DICOM_EXTS = (".dcm", ".dicom")
CM = 3  # PhysicalUnitsXDirection / YDirection: 3 = cm (DICOM PS3.3 C.8.5.5.1.1)


def _pydicom():
    try:
        import pydicom
    except ImportError as err:
        raise ImportError(
            "DICOM input needs pydicom: pip install 'fetalgen[dicom]' (or pip install pydicom)"
        ) from err
    return pydicom


def _header(path: Path):
    try:
        return _pydicom().dcmread(path, stop_before_pixels=True)
    except (
        Exception
    ) as err:  # pydicom raises InvalidDicomError, OSError, ValueError, ... for a file that is not one
        raise DataError(path, f"unreadable or corrupt DICOM file ({type(err).__name__}: {err})") from None


def _frames(ds, path: Path) -> int:
    """The header's NumberOfFrames (1 when absent), checked."""
    value = getattr(ds, "NumberOfFrames", None)
    try:
        frames = 1 if value in (None, "") else int(value)
    except (TypeError, ValueError):
        raise DataError(path, f"NumberOfFrames {value!r} is not a number") from None
    if frames < 1:
        raise DataError(path, f"NumberOfFrames {frames}: a DICOM image has at least one frame")
    return frames


def frame_count(path: str | Path) -> int:
    """Frames in a DICOM file (1 for a single-frame file).

    Raises:
        DataError: not a DICOM file, or a NumberOfFrames below 1.
    """
    path = Path(path)
    return _frames(_header(path), path)


def dicom_pixel_size(path: str | Path) -> float:
    """The pixel size in mm from the file's header (module doc), nan when it has none.

    Raises:
        DataError: a pixel size that is not finite and positive, or non-square pixels.
    """
    path = Path(path)
    ds = _header(path)
    sizes = None
    for region in getattr(ds, "SequenceOfUltrasoundRegions", None) or []:
        units = (
            getattr(region, "PhysicalUnitsXDirection", None),
            getattr(region, "PhysicalUnitsYDirection", None),
        )
        if units == (CM, CM):
            sizes = (10.0 * float(region.PhysicalDeltaX), 10.0 * float(region.PhysicalDeltaY))
            break
    if sizes is None and getattr(ds, "PixelSpacing", None) is not None:
        row, col = (float(v) for v in ds.PixelSpacing)
        sizes = (col, row)
    if sizes is None:
        return math.nan
    if not all(math.isfinite(s) and s > 0 for s in sizes):
        raise DataError(path, f"pixel size {sizes} mm in the header is not finite and positive")
    if why := implausible(sizes[0], "pixel size"):
        raise DataError(path, f"header: {why}")
    if not math.isclose(sizes[0], sizes[1], rel_tol=1e-3):
        raise DataError(path, f"non-square pixels ({sizes[0]} x {sizes[1]} mm): resample before measuring")
    return sizes[0]


def load_dicom_frame(path: str | Path, frame: int = 0) -> np.ndarray:
    """Frame ``frame`` of a DICOM file as uint8 HxW grayscale.

    Only that frame is decoded (pydicom 3's ``pixels.pixel_array(..., index=frame)``: a long cine loop is not read
    whole). Colour frames come from pydicom already as RGB (it converts YBR_FULL / YBR_FULL_422, JPEG included), so
    they are only weighted to gray here (ITU-R 601); MONOCHROME1 is inverted; values above 8 bits are scaled by the
    depth they actually use (``BitsStored`` 16 holding 12-bit values is read as 12-bit, not as near black).

    Raises:
        DataError: unreadable file, no pixel data, or no such frame (naming the file).
    """
    path = Path(path)
    pydicom = _pydicom()
    ds = _header(path)
    frames = _frames(ds, path)
    if not 0 <= frame < frames:
        raise DataError(path, f"no frame {frame} (the file has {frames})")
    try:
        pixels = pydicom.pixels.pixel_array(path, index=frame if frames > 1 else None)
    except Exception as err:  # pydicom raises many kinds for bad or unsupported pixel data
        raise DataError(
            path, f"unreadable or corrupt DICOM pixel data ({type(err).__name__}: {err})"
        ) from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3:  # RGB (pydicom returned YBR as RGB)
        pixels = pixels[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    bits = int(getattr(ds, "BitsStored", 8) or 8)
    if bits > 8:  # the depth the values use, at most the declared one
        top = float(np.max(pixels)) if pixels.size else 0.0
        bits = min(bits, max(8, int(np.ceil(np.log2(top + 1)))))
    scaled = pixels.astype(np.float64) * (255.0 / (2**bits - 1))
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
