"""Download logic without internet: file:// URLs for the Zenodo record, the files and SAM checkpoints."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from fetalgen.cli.download import main as download_main
from fetalgen.data import download as dl
from fetalgen.data.download import DownloadError, download, download_hc18, download_sam


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def zenodo(tmp_path: Path) -> tuple[str, Path]:
    """A fake Zenodo record (new API fields) whose links are file:// URLs; returns (record url, served dir)."""
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "training_set.zip", "w") as zf:
        zf.writestr("training_set/000_HC.png", b"png-bytes")
        zf.writestr("training_set/000_HC_Annotation.png", b"ann-bytes")
    with zipfile.ZipFile(served / "test_set.zip", "w") as zf:  # no top folder inside: unpacked into test_set/
        zf.writestr("000_HC.png", b"test-bytes")
    (served / "training_set_pixel_size_and_HC.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n"
    )
    (served / "test_set_pixel_size.csv").write_text("filename,pixel size(mm)\n")
    files = [
        {"key": p.name, "checksum": f"md5:{_md5(p)}", "links": {"self": p.as_uri()}}
        for p in sorted(served.iterdir())
    ]
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"id": 1327317, "files": files}))
    return record.as_uri(), served


def test_download_verifies_checksum(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 5000)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    out = download(src.as_uri(), tmp_path / "out" / "a.bin", f"sha256:{sha}", progress=False)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(DownloadError, match="b.bin.*does not match the expected"):
        download(src.as_uri(), tmp_path / "out" / "b.bin", "md5:" + "0" * 32, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin"]  # bad file and temp file removed
    with pytest.raises(DownloadError, match="cannot fetch"):
        download((tmp_path / "absent").as_uri(), tmp_path / "out" / "c.bin", progress=False)


def test_hc18_unpacks_official_layout(tmp_path: Path, zenodo) -> None:
    record_url, _ = zenodo
    out = download_hc18(tmp_path / "hc18", record_url=record_url, progress=False)
    assert (out / "training_set" / "000_HC.png").read_bytes() == b"png-bytes"
    assert (out / "training_set" / "000_HC_Annotation.png").is_file()
    assert (out / "test_set" / "000_HC.png").read_bytes() == b"test-bytes"
    assert (out / "training_set_pixel_size_and_HC.csv").is_file() and (
        out / "test_set_pixel_size.csv"
    ).is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        "test_set",
        "test_set_pixel_size.csv",
        "training_set",
        "training_set_pixel_size_and_HC.csv",
    ]  # no archives or temp files left


def test_hc18_present_means_no_download(tmp_path: Path, zenodo, monkeypatch: pytest.MonkeyPatch) -> None:
    record_url, _ = zenodo
    out = download_hc18(tmp_path / "hc18", record_url=record_url, progress=False)

    def no_network(url: str):
        raise AssertionError(f"fetched {url} although the data is present")

    monkeypatch.setattr(dl, "_open", no_network)
    assert download_hc18(out, record_url=record_url, progress=False) == out


def test_hc18_checksum_mismatch_leaves_nothing(tmp_path: Path, zenodo) -> None:
    record_url, served = zenodo
    (served / "training_set.zip").write_bytes(b"tampered")  # record still has the old md5
    out = tmp_path / "hc18"
    with pytest.raises(DownloadError, match="training_set.zip.*does not match"):
        download_hc18(out, record_url=record_url, progress=False)
    assert not (out / "training_set").exists() and not list(out.glob(".*"))


def test_hc18_record_without_a_file(tmp_path: Path, zenodo) -> None:
    record_url, _ = zenodo
    with pytest.raises(DownloadError, match="no file"):
        download_hc18(tmp_path / "hc18", record_url=record_url, files=("missing.zip",), progress=False)


def test_sam_pinned_sha_mismatch_removes_the_file(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    torch.save({"w": torch.zeros(2)}, served / "sam_vit_b_01ec64.pth")  # not the real checkpoint
    with pytest.raises(DownloadError, match="sam_vit_b_01ec64.pth.*sha256 .* does not match"):
        download_sam("vit_b", tmp_path / "ckpt", base_url=served.as_uri(), progress=False)
    assert not list((tmp_path / "ckpt").iterdir())


def test_sam_unpinned_checked_as_state_dict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    served = tmp_path / "served"
    served.mkdir()
    torch.save({"a": torch.zeros(2), "b": torch.ones(3)}, served / "sam_vit_l_0b3195.pth")
    (served / "sam_vit_h_4b8939.pth").write_bytes(b"not a checkpoint")
    with caplog.at_level("WARNING"):
        path = download_sam("vit_l", tmp_path / "ckpt", base_url=served.as_uri(), progress=False)
    assert path.is_file() and "loads as a state dict (2 tensors)" in caplog.text
    with pytest.raises(DownloadError, match="does not load as a PyTorch state dict"):
        download_sam("vit_h", tmp_path / "ckpt", base_url=served.as_uri(), progress=False)
    assert not (tmp_path / "ckpt" / "sam_vit_h_4b8939.pth").exists()
    with pytest.raises(ValueError, match="valid: vit_b, vit_l, vit_h"):
        download_sam("vit_x", tmp_path / "ckpt")


def test_cli(tmp_path: Path, zenodo, capsys: pytest.CaptureFixture) -> None:
    record_url, _ = zenodo
    out = tmp_path / "hc18"
    assert download_main(["hc18", "--out", str(out), "--record-url", record_url, "--no-progress"]) == 0
    assert (out / "training_set").is_dir()
    assert (
        download_main(
            [
                "sam",
                "--model",
                "vit_b",
                "--out",
                str(tmp_path / "c"),
                "--base-url",
                (tmp_path / "nowhere").as_uri(),
                "--no-progress",
            ]
        )
        == 1
    )
    assert "cannot fetch" in capsys.readouterr().err


def test_zenodo_record_parsing_uses_the_content_endpoint() -> None:
    record = {
        "files": [
            {
                "key": "training_set.zip",
                "checksum": "md5:abc",
                "links": {"self": "https://zenodo.org/api/x/uuid"},
            },
            {"filename": "test_set_pixel_size.csv", "checksum": "def", "links": {"download": "file:///x"}},
        ]
    }
    files = dl._record_files(record, "https://zenodo.org/api/records/1327317")
    assert files["training_set.zip"] == (
        "https://zenodo.org/api/records/1327317/files/training_set.zip/content",
        "md5:abc",
    )
    assert files["test_set_pixel_size.csv"][1] == "md5:def"  # legacy: bare md5
