"""The record every reader returns: one image/mask pair on disk plus what is known about it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

# The sizes a reading may take (mm): outside them a value is a unit or typing error, not a measurement. Ultrasound
# pixels are ~0.05-0.5 mm; fetal heads 40-400 mm around.
PLAUSIBLE_MM = {"pixel size": (1e-3, 10.0), "head circumference": (1.0, 1000.0)}


def implausible(value: float, what: str) -> str | None:
    """Why ``value`` (mm) cannot be a ``what`` (a key of :data:`PLAUSIBLE_MM`), or None when it can."""
    low, high = PLAUSIBLE_MM[what]
    if not (math.isfinite(value) and low <= value <= high):
        return f"{what} {value} mm is outside the plausible {low:g}-{high:g} mm"
    return None


class DataError(ValueError):
    """A bad input file or record; the message always names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CaseList(list):
    """The cases a reader returns, with the bad files it skipped (``on_bad="skip"``), so they can be counted."""

    def __init__(self, cases: list = (), skipped: list[DataError] | None = None) -> None:
        super().__init__(cases)
        self.skipped: list[DataError] = list(skipped or [])


@dataclass(frozen=True)
class Case:
    """One labelled image on disk.

    Attributes:
        name: case name, the image file stem (``010_2HC``, ``Patient00188_Plane3_2_of_3``, ``syn_000042``).
        image_path: grayscale or RGB image file.
        mask_path: mask file, a filled mask or a 1-pixel outline (filled on load).
        subject: subject/patient id; splits never put one subject in two splits.
        frame: frame number for subjects with several images (1 for the first).
        pixel_size_mm: size of one pixel of the original image in mm, if known.
        hc_mm: reference head circumference in mm, if known.
        cohort: where the case comes from (``hc18``, ``spanish``, ``african``, ``synthetic``, ``phantom``).
    """

    name: str
    image_path: Path
    mask_path: Path
    subject: str
    frame: int = 1
    pixel_size_mm: float | None = None
    hc_mm: float | None = None
    cohort: str = ""
