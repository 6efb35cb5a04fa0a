"""File helpers: atomic writes (JSON, PNG verified by reading back) and content hashes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(tmp_path)`` into a temporary file, then rename it into place.

    A crash leaves either the old file or no file, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode of a new file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


NULL_REASONS = (
    "null_reasons"  # in a JSON object written by write_json: {"dotted.key": "NaN" | "inf" | "-inf"}
)


def json_safe(obj: Any, reasons: dict[str, str] | None = None, where: str = "") -> Any:
    """``obj`` with every non-finite float (NaN, inf; numpy's too) replaced by None, which JSON can hold; each
    replacement recorded in ``reasons`` as ``{dotted path: "NaN" | "inf" | "-inf"}``."""
    if isinstance(obj, dict):
        return {k: json_safe(v, reasons, f"{where}.{k}" if where else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, reasons, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if math.isfinite(value):
            return value
        if reasons is not None:
            reasons[where] = "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def json_text(obj: Any, **dumps: Any) -> str:
    """Standard JSON for ``obj`` (:func:`json_safe`: no NaN or inf, which jq and JavaScript reject); an object gets
    the replaced values' reasons under :data:`NULL_REASONS`."""
    reasons: dict[str, str] = {}
    safe = json_safe(obj, reasons)
    if reasons and isinstance(safe, dict):
        safe[NULL_REASONS] = {key: f"{what}: not a number" for key, what in reasons.items()}
    return json.dumps(safe, allow_nan=False, default=str, **dumps)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, standard JSON (:func:`json_text`)."""
    return atomic_write(path, lambda p: p.write_text(json_text(obj, indent=2) + "\n"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_png(path: str | Path, array: np.ndarray, compression: int = 3) -> Path:
    """Atomically write a uint8 image (HxW grayscale or HxWx3 RGB) as PNG, verified by reading it back.

    Raises:
        OSError: the file could not be written whole (a full disk leaves a short or empty file).
    """

    def _write(tmp: Path) -> None:
        data = np.ascontiguousarray(array[..., ::-1] if array.ndim == 3 else array)
        params = [cv2.IMWRITE_PNG_COMPRESSION, compression]
        if not cv2.imwrite(str(tmp), data, params) or not png_intact(tmp, data.shape):
            raise OSError(f"could not write {path} whole (disk full?)")

    return atomic_write(path, _write)


def png_intact(path: str | Path, shape: tuple[int, ...] | None = None) -> bool:
    """Whether ``path`` is a non-empty, decodable image (of ``shape`` if given)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return array is not None and (shape is None or array.shape == tuple(shape))


def append_line(path: str | Path, line: str) -> None:
    """Append one line and make it durable (flush + fsync) before returning."""
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


HYDRA_OWN = (".hydra",)  # what Hydra writes into a run folder before the task starts (and ``*.log``)


def claim_folder(folder: str | Path, settings: dict[str, Any], marker: str) -> bool:
    """Make ``folder`` this run's own: empty (but for Hydra's files) or holding an earlier run with the same
    ``settings`` (recorded in ``<folder>/<marker>``); returns whether it resumes such a run. Temporary files of
    an interrupted atomic write are removed.

    Raises:
        FileExistsError: the folder holds other files, or a run with other settings (naming the difference).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / marker
    wanted = json.loads(json_text(settings))
    if record.is_file():
        earlier = json.loads(record.read_text())
        if earlier != wanted:
            changed = sorted(k for k in set(earlier) | set(wanted) if earlier.get(k) != wanted.get(k))
            raise FileExistsError(f"{folder} holds a run with other settings ({', '.join(changed)} differ): "
                                  "give a new output folder, or repeat the earlier settings to resume it")  # fmt: skip
        for tmp in folder.rglob(".*"):  # atomic_write's temporary files (.<name>.<random><suffix>) of a kill
            if tmp.is_file() and not set(HYDRA_OWN) & set(tmp.relative_to(folder).parts):
                tmp.unlink()
        return True
    others = [p.name for p in folder.iterdir() if p.name not in HYDRA_OWN and p.suffix != ".log"]
    if others:
        raise FileExistsError(f"{folder} is not empty ({', '.join(sorted(others)[:5])}): give a new output folder "
                              "(results of two runs would mix)")  # fmt: skip
    write_json(record, settings)
    return False
