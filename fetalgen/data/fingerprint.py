"""Image fingerprints for the leakage guard: the same picture is found whatever its file name.

A fingerprint is an exact hash of the decoded pixels (the same image, any lossless file) and a near-duplicate
descriptor: the picture inside its uniform frame (outer rows and columns of one grey level trimmed, so added or
removed borders of any colour do not count), histogram-equalised (so gamma, brightness and contrast changes do not
count), averaged down to 16 x 16, mean-centred and unit-normalised. Two images are the same picture when their
hashes match, or when their descriptors' cosine is at least :data:`NEAR`, whatever the rotation (by 90 degrees),
flip or inversion of one of them.
On the 809 HC18 images the highest cosine between two different subjects is 0.916; a JPEG re-encoding (quality
70), a 10 % resize, a 10 px border, gamma 0.5 keep a copy above 0.99 (``tests/data/test_fingerprint.py``).
Not found: crops that cut more than about 2 % of a side into the picture itself, and borders painted over it
(the descriptor compares whole frames; README, "Leakage guard").
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fetalgen.data.io import load_image

SIDE = 16
NEAR = 0.98
UNIFORM = 8  # grey levels: an outer row or column whose values span at most this is frame, not picture
FRAMED = (
    "f2"  # the descriptor's kind, written in the record (older records' descriptors were of the raw image)
)


@dataclass(frozen=True)
class Fingerprint:
    """``sha256`` of the decoded pixels (with the shape) and the ``descriptor`` (unit vector, SIDE * SIDE).
    ``framed`` is False for a record of an older fetalgen, whose descriptor is not comparable (its hash is)."""

    sha256: str
    descriptor: np.ndarray
    framed: bool = True

    def encode(self) -> str:
        """``<sha256>:f2:<descriptor as base64 float16>``, for CSV and JSON records."""
        packed = base64.b64encode(self.descriptor.astype(np.float16).tobytes()).decode("ascii")
        return f"{self.sha256}:{FRAMED}:{packed}" if self.framed else f"{self.sha256}:{packed}"

    @classmethod
    def decode(cls, text: str) -> Fingerprint:
        sha, packed = text.split(":", 1)
        framed = packed.startswith(FRAMED + ":")
        packed = packed.removeprefix(FRAMED + ":")
        descriptor = np.frombuffer(base64.b64decode(packed), dtype=np.float16).astype(np.float32)
        return cls(sha, descriptor, framed)


def picture(image: np.ndarray) -> np.ndarray:
    """``image`` without its uniform frame: outer rows and columns spanning at most :data:`UNIFORM` grey levels,
    trimmed until none is left (a white border around a black margin goes too). A uniform image is kept whole."""
    while True:
        rows = np.flatnonzero(np.ptp(image, axis=1) > UNIFORM)
        cols = np.flatnonzero(np.ptp(image, axis=0) > UNIFORM)
        if len(rows) < 2 or len(cols) < 2:
            return image
        inner = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        if inner.shape == image.shape:
            return image
        image = inner


def fingerprint_image(image: np.ndarray) -> Fingerprint:
    """The fingerprint of a uint8 grayscale image (H x W)."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(np.asarray(image.shape, np.int64).tobytes() + image.tobytes()).hexdigest()
    equalised = cv2.equalizeHist(np.ascontiguousarray(picture(image)))
    small = cv2.resize(equalised.astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_AREA).ravel()
    small -= small.mean()
    return Fingerprint(digest, small / max(float(np.linalg.norm(small)), 1e-9))


def fingerprint_file(path: str | Path) -> Fingerprint:
    """The fingerprint of an image file (read as the data layer reads it)."""
    return fingerprint_image(load_image(path))


def mirrored(descriptor: np.ndarray) -> np.ndarray:
    """The descriptor of the left-right mirror image."""
    return descriptor.reshape(SIDE, SIDE)[:, ::-1].ravel()


# The eight rotations and flips of a picture (the image's descriptor transforms with it: the 16 x 16 average of a
# rotated image is the rotated average), each also inverted (255 - x: a centred descriptor changes sign).
SYMMETRIES = [(k, flip) for k in range(4) for flip in (False, True)]


def _transformed(descriptors: np.ndarray, k: int, flip: bool) -> np.ndarray:
    grids = np.rot90(descriptors.reshape(-1, SIDE, SIDE), k, axes=(1, 2))
    return (grids[:, :, ::-1] if flip else grids).reshape(len(descriptors), -1)


def _how(k: int, flip: bool, inverted: bool) -> str:
    parts = (["mirrored"] if flip else []) + ([f"rotated {90 * k} degrees"] if k else [])
    parts += ["inverted"] if inverted else []
    return f"a {' '.join(parts) + ' ' if parts else ''}near copy".replace("a inverted", "an inverted")


def find_copies(
    held: Mapping[str, Fingerprint], seen: Mapping[str, Fingerprint] | list[tuple[str, Fingerprint]]
) -> list[tuple[str, str, float]]:
    """``(held name, seen name, how)`` for every held-out image that is a seen image (the same pixels) or a near
    copy of one, rotated, flipped or inverted included; at most one (the closest) per held-out image. ``seen`` may
    hold one name several times (records of several cohorts): every one is compared.

    On HC18's 809 images the highest similarity between two subjects, over every rotation, flip and inversion,
    is 0.916 (:data:`NEAR` is 0.98; ``tests/data/test_fingerprint.py`` checks all of them). A seen fingerprint
    of an older fetalgen (not ``framed``) is compared by its hash only.
    """
    pairs = list(seen.items()) if isinstance(seen, Mapping) else list(seen)
    if not held or not pairs:
        return []
    by_hash = {fp.sha256: name for name, fp in pairs}
    pairs = [(name, fp) for name, fp in pairs if fp.framed]
    seen_names = [name for name, _ in pairs]
    seen_matrix = np.stack([fp.descriptor for _, fp in pairs]) if pairs else None
    variants = [(_transformed(seen_matrix, k, flip), k, flip) for k, flip in SYMMETRIES] if pairs else []
    found = []
    for name, fp in held.items():
        if fp.sha256 in by_hash:
            found.append((name, by_hash[fp.sha256], "the same pixels"))
            continue
        if not pairs or not fp.framed:
            continue
        best = (-1.0, 0, "")
        for matrix, k, flip in variants:
            cos = matrix @ fp.descriptor
            for sign, inverted in ((1.0, False), (-1.0, True)):
                i = int(np.argmax(sign * cos))
                if sign * cos[i] > best[0]:
                    best = (float(sign * cos[i]), i, _how(k, flip, inverted))
        similarity, i, how = best
        if similarity >= NEAR:
            found.append((name, seen_names[i], f"{how}, similarity {similarity:.3f}"))
    return found
