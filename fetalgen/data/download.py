"""Downloads with checksums: the HC18 release (Zenodo record 1327317) and the official SAM checkpoints.

Files stream into a temporary file beside the target, are hashed on the way, and are renamed into place only
when the checksum matches; a mismatch removes the bad file and raises. Present data is never fetched again.
Only the standard library (``urllib``) is used, so ``file://`` URLs work too (the tests use them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from urllib.error import URLError
from urllib.parse import quote

from fetalgen.utils.bars import progress_bar

log = logging.getLogger(__name__)

ZENODO_RECORD_URL = "https://zenodo.org/api/records/1327317"
HC18_FILES = (
    "training_set.zip",
    "test_set.zip",
    "training_set_pixel_size_and_HC.csv",
    "test_set_pixel_size.csv",
)
SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything"
# model -> (file name, sha256 or None when not pinned here)
SAM_CHECKPOINTS: dict[str, tuple[str, str | None]] = {
    "vit_b": ("sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "vit_l": ("sam_vit_l_0b3195.pth", None),
    "vit_h": ("sam_vit_h_4b8939.pth", None),
}
_TIMEOUT_S = 60


class DownloadError(RuntimeError):
    """A download failed or its checksum did not match."""


def _open(url: str):
    try:
        return urllib.request.urlopen(url, timeout=_TIMEOUT_S)
    except (URLError, OSError) as err:
        raise DownloadError(
            f"cannot fetch {url}: {err} (no internet? fetch it elsewhere and copy it here)"
        ) from err


def fetch_json(url: str) -> dict:
    """GET ``url`` and parse it as JSON."""
    with _open(url) as resp:
        return json.loads(resp.read().decode("utf-8"))


def download(url: str, dest: str | Path, checksum: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, verifying ``checksum``.

    Args:
        url: http(s) or file URL.
        dest: target file (its folder is created).
        checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"``, or ``None`` to skip the check.
        progress: show a tqdm progress bar.

    Raises:
        DownloadError: the fetch failed, or the checksum did not match (nothing is left at ``dest``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    algo, expected = checksum.split(":", 1) if checksum else ("sha256", None)
    if algo not in ("md5", "sha256"):
        raise ValueError(f"unsupported checksum {checksum!r} (md5:... or sha256:...)")
    digest = hashlib.new(algo)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _open(url) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress_bar(total, dest.name, "B", disable=not progress, unit_scale=True) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        got = digest.hexdigest()
        if expected is not None and got != expected.lower():
            raise DownloadError(
                f"{dest.name} from {url}: {algo} {got} does not match the expected {expected}; "
                "the file was removed, try again"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("downloaded %s (%s %s)", dest, algo, digest.hexdigest())
    return dest


def _safe_extract(archive: Path, target: Path) -> None:
    """Unpack ``archive`` so that its content ends up in ``target`` (a single top folder is stripped)."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                resolved = (tmp / member).resolve()
                if not resolved.is_relative_to(tmp.resolve()):
                    raise DownloadError(f"{archive}: unsafe path {member!r} in the archive")
            zf.extractall(tmp)
        entries = [p for p in tmp.iterdir() if p.name != "__MACOSX"]
        src = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(src, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _record_files(record: dict, record_url: str) -> dict[str, tuple[str, str]]:
    """``{file name: (download url, checksum)}`` of a Zenodo record (new and legacy API field names).

    For an http(s) record the file is fetched from ``<record_url>/files/<name>/content`` (``links.self`` of
    the current API can name a file id that does not resolve, zenodo/zenodo#2486); otherwise from its link.
    """
    out = {}
    for f in record.get("files", []):
        name = f.get("key") or f.get("filename")
        links = f.get("links", {})
        if record_url.startswith(("http://", "https://")) and name:
            url = f"{record_url.rstrip('/')}/files/{quote(name)}/content"
        else:
            url = links.get("content") or links.get("self") or links.get("download")
        checksum = f.get("checksum", "")
        if name and url:
            out[name] = (url, checksum if ":" in checksum else f"md5:{checksum}")
    return out


def _present(out: Path, name: str) -> bool:
    if name.endswith(".zip"):
        folder = out / name[: -len(".zip")]
        return folder.is_dir() and any(folder.iterdir())
    return (out / name).is_file()


def download_hc18(
    out: str | Path,
    record_url: str = ZENODO_RECORD_URL,
    files: tuple[str, ...] = HC18_FILES,
    progress: bool = True,
) -> Path:
    """Download the HC18 release into ``out`` in the official layout; files already there are skipped.

    Result: ``<out>/training_set/``, ``<out>/test_set/``, ``<out>/training_set_pixel_size_and_HC.csv``,
    ``<out>/test_set_pixel_size.csv``. Checksums (md5) come from the Zenodo record.

    Raises:
        DownloadError: the record or a file cannot be fetched, a checksum mismatches, or the record lacks a file.
    """
    out = Path(out)
    todo = [name for name in files if not _present(out, name)]
    if not todo:
        log.info("HC18 already present in %s: nothing to do", out)
        return out
    available = _record_files(fetch_json(record_url), record_url)
    missing = [n for n in todo if n not in available]
    if missing:
        raise DownloadError(
            f"Zenodo record {record_url} has no file(s) {missing}; it lists {sorted(available)}"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in todo:
        url, checksum = available[name]
        target = out / name
        if name.endswith(".zip"):
            archive = download(url, out / f".{name}", checksum, progress)
            try:
                _safe_extract(archive, out / name[: -len(".zip")])
            finally:
                archive.unlink(missing_ok=True)
        else:
            download(url, target, checksum, progress)
    log.info("HC18 ready in %s", out)
    return out


def _check_state_dict(path: Path) -> int:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is not a usable checkpoint
        raise DownloadError(f"{path} does not load as a PyTorch state dict: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DownloadError(f"{path} is not a state dict of tensors")
    return len(state)


def download_sam(model: str, out: str | Path, base_url: str = SAM_BASE_URL, progress: bool = True) -> Path:
    """Download the official SAM checkpoint of ``model`` (``vit_b``, ``vit_l``, ``vit_h``) into ``out``.

    ViT-B is checked against its pinned sha256; for ViT-L/H (sha256 not pinned here) the file is checked to
    load as a state dict of tensors instead, and its sha256 is logged. An existing file is not fetched again.

    Raises:
        ValueError: unknown model. DownloadError: fetch failed, checksum mismatch or not a state dict.
    """
    if model not in SAM_CHECKPOINTS:
        raise ValueError(f"unknown SAM model {model!r}; valid: {', '.join(SAM_CHECKPOINTS)}")
    name, sha = SAM_CHECKPOINTS[model]
    dest = Path(out) / name
    if dest.is_file():
        log.info("%s already present: nothing to do", dest)
        return dest
    download(f"{base_url.rstrip('/')}/{name}", dest, f"sha256:{sha}" if sha else None, progress)
    if sha is None:
        try:
            n = _check_state_dict(dest)
        except DownloadError:
            dest.unlink(missing_ok=True)
            raise
        log.warning(
            "%s: no pinned sha256; verified instead that it loads as a state dict (%d tensors)", dest, n
        )
    return dest
