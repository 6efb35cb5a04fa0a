"""Image fingerprints for the leakage guard: the same picture is found whatever its file name.

A fingerprint is an exact hash of the decoded pixels (the same image, any lossless file) and a near-duplicate
descriptor: the image averaged down to 16 x 16, mean-centred and unit-normalised. Two images are the same picture
when their hashes match, or when their descriptors' cosine (the mirror image's too) is at least :data:`NEAR`.
On the 809 HC18 images the highest cosine between two different subjects is 0.913; a JPEG re-encoding (quality
70) or a 10 % resize of one image keeps it above 0.9999 (``tests/data/test_fingerprint.py``).
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


@dataclass(frozen=True)
class Fingerprint:
    """``sha256`` of the decoded pixels (with the shape) and the ``descriptor`` (unit vector, SIDE * SIDE)."""

    sha256: str
    descriptor: np.ndarray

    def encode(self) -> str:
        """``<sha256>:<descriptor as base64 float16>``, for CSV and JSON records."""
        packed = base64.b64encode(self.descriptor.astype(np.float16).tobytes()).decode("ascii")
        return f"{self.sha256}:{packed}"

    @classmethod
    def decode(cls, text: str) -> Fingerprint:
        sha, packed = text.split(":", 1)
        descriptor = np.frombuffer(base64.b64decode(packed), dtype=np.float16).astype(np.float32)
        return cls(sha, descriptor)


def fingerprint_image(image: np.ndarray) -> Fingerprint:
    """The fingerprint of a uint8 grayscale image (H x W)."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(np.asarray(image.shape, np.int64).tobytes() + image.tobytes()).hexdigest()
    small = cv2.resize(image.astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_AREA).ravel()
    small -= small.mean()
    return Fingerprint(digest, small / max(float(np.linalg.norm(small)), 1e-9))


def fingerprint_file(path: str | Path) -> Fingerprint:
    """The fingerprint of an image file (read as the data layer reads it)."""
    return fingerprint_image(load_image(path))


def mirrored(descriptor: np.ndarray) -> np.ndarray:
    """The descriptor of the left-right mirror image."""
    return descriptor.reshape(SIDE, SIDE)[:, ::-1].ravel()


def find_copies(
    held: Mapping[str, Fingerprint], seen: Mapping[str, Fingerprint]
) -> list[tuple[str, str, float]]:
    """``(held name, seen name, similarity)`` for every held-out image that is a seen image (exact: 1.0) or a near
    copy of one, mirror images included; at most one (the closest) per held-out image."""
    if not held or not seen:
        return []
    by_hash = {fp.sha256: name for name, fp in seen.items()}
    seen_names = list(seen)
    seen_matrix = np.stack([seen[n].descriptor for n in seen_names])
    found = []
    for name, fp in held.items():
        if fp.sha256 in by_hash:
            found.append((name, by_hash[fp.sha256], "the same pixels"))
            continue
        plain, mirror = seen_matrix @ fp.descriptor, seen_matrix @ mirrored(fp.descriptor)
        best = int(np.argmax(np.maximum(plain, mirror)))
        similarity = max(plain[best], mirror[best])
        if similarity >= NEAR:
            how = "a near copy" if plain[best] >= mirror[best] else "a mirrored near copy"
            found.append((name, seen_names[best], f"{how}, similarity {similarity:.3f}"))
    return found
