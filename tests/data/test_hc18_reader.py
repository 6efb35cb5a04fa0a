"""read_hc18 on a fake official layout and on the real HC18 data; trimester_from_hc."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fetalgen.data.cases import DataError
from fetalgen.data.hc18 import parse_name, read_hc18, trimester_from_hc
from fetalgen.data.io import load_pair

HEADER = "filename,pixel size(mm),head circumference (mm)\n"


def _fake_hc18(root: Path, names: list[str], csv_rows: list[str] | None = None) -> Path:
    """Small HC18-like layout: gray images and RGB 0/255 1-px outline annotations."""
    folder = root / "training_set"
    folder.mkdir(parents=True)
    rows = []
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / f"{name}.png"), np.full((54, 80), 40 + i, np.uint8))
        outline = np.zeros((54, 80, 3), np.uint8)
        cv2.ellipse(outline, (40, 27), (20 + i, 12), 10, 0, 360, (255, 255, 255), 1)
        cv2.imwrite(str(folder / f"{name}_Annotation.png"), outline)
        rows.append(f"{name}.png,{0.1 + i / 100:.3f},{50 + 10 * i}")
    lines = rows if csv_rows is None else csv_rows
    (root / "training_set_pixel_size_and_HC.csv").write_text(HEADER + "\n".join(lines) + "\n")
    return root


def test_parse_name() -> None:
    assert parse_name("010_2HC") == ("010", 2)
    assert parse_name("010_HC") == ("010", 1)
    assert parse_name("805_3HC") == ("805", 3)
    with pytest.raises(ValueError, match="not an HC18 image name"):
        parse_name("010_HC_Annotation")


def test_trimester_from_hc_boundaries() -> None:
    assert [trimester_from_hc(h) for h in (44.3, 99.9, 100.0, 259.9, 260.0, 330.0)] == [0, 0, 1, 1, 2, 2]
    assert trimester_from_hc(None) == -1
    assert trimester_from_hc(float("nan")) == -1


def test_reader_pairs_parses_and_reads_csv(tmp_path: Path) -> None:
    root = _fake_hc18(tmp_path, ["010_HC", "010_2HC", "011_HC"])
    cases = read_hc18(root)
    by = {c.name: c for c in cases}
    assert [c.name for c in cases] == ["010_2HC", "010_HC", "011_HC"]
    c = by["010_2HC"]
    assert (c.subject, c.frame, c.cohort) == ("010", 2, "hc18")
    assert c.pixel_size_mm == pytest.approx(0.11) and c.hc_mm == pytest.approx(60.0)
    assert c.mask_path.name == "010_2HC_Annotation.png"
    assert by["010_HC"].frame == 1
    image, mask = load_pair(c)
    assert image.shape == mask.shape == (54, 80) and mask[27, 40]  # outline filled


def test_missing_annotation_and_csv_row_raise_naming_the_file(tmp_path: Path) -> None:
    root = _fake_hc18(tmp_path / "a", ["010_HC", "011_HC"])
    (root / "training_set" / "011_HC_Annotation.png").unlink()
    with pytest.raises(DataError, match=r"011_HC.png: annotation 011_HC_Annotation.png is missing"):
        read_hc18(root)
    root = _fake_hc18(tmp_path / "b", ["010_HC", "011_HC"], csv_rows=["010_HC.png,0.1,50"])
    with pytest.raises(DataError, match=r"011_HC.png: no row in .*training_set_pixel_size_and_HC.csv"):
        read_hc18(root)


def test_skip_mode_warns_with_count_and_files(tmp_path: Path) -> None:
    root = _fake_hc18(
        tmp_path, ["010_HC", "011_HC", "012_HC"], csv_rows=["010_HC.png,0.1,50", "011_HC.png,0.1,50"]
    )
    (root / "training_set" / "011_HC_Annotation.png").unlink()
    with pytest.warns(UserWarning, match=r"skipped 2 bad file\(s\)") as rec:
        cases = read_hc18(root, on_bad="skip")
    assert [c.name for c in cases] == ["010_HC"]
    msg = str(rec[0].message)
    assert "011_HC.png" in msg and "012_HC.png" in msg
    with pytest.raises(ValueError, match="on_bad must be one of"):
        read_hc18(root, on_bad="ignore")


def test_missing_folder_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="make data.*FETALGEN_HC18_DIR"):
        read_hc18(tmp_path / "nothing")
    (tmp_path / "only" / "training_set").mkdir(parents=True)
    with pytest.raises(DataError, match="training_set_pixel_size_and_HC.csv.*make data"):
        read_hc18(tmp_path / "only")


def test_list_file_selects_in_order_and_rejects_unknown(tmp_path: Path) -> None:
    root = _fake_hc18(tmp_path, ["010_HC", "010_2HC", "011_HC"])
    lst = tmp_path / "list.txt"
    lst.write_text("# chosen\n011_HC\n010_2HC.png\n")
    assert [c.name for c in read_hc18(root, list_file=lst)] == ["011_HC", "010_2HC"]
    lst.write_text("011_HC\n999_HC\n")
    with pytest.raises(DataError, match="list.txt: 1 listed case.*999_HC"):
        read_hc18(root, list_file=lst)


def test_real_hc18_handful(hc18_dir: Path, tmp_path: Path) -> None:
    lst = tmp_path / "few.txt"
    lst.write_text("010_HC\n010_2HC\n000_HC\n")
    cases = read_hc18(hc18_dir, list_file=lst)
    c = cases[1]
    assert (c.name, c.subject, c.frame) == ("010_2HC", "010", 2)
    assert c.pixel_size_mm == pytest.approx(0.079927246) and c.hc_mm == pytest.approx(72.87)
    assert cases[2].hc_mm == pytest.approx(44.3) and trimester_from_hc(cases[2].hc_mm) == 0
    for case in cases:
        image, mask = load_pair(case)
        assert image.shape == mask.shape == (540, 800) and image.dtype == np.uint8
        assert 0.005 < mask.mean() < 0.8


@pytest.mark.hc18
def test_every_real_hc18_pair_loads(hc18_dir: Path) -> None:
    start = time.perf_counter()
    cases = read_hc18(hc18_dir)
    assert len(cases) >= 800
    assert len({c.name for c in cases}) == len(cases)
    for case in cases:
        image, mask = load_pair(case)
        assert image.shape == mask.shape and mask.any(), case.name
        assert case.pixel_size_mm is not None and case.hc_mm is not None
    assert time.perf_counter() - start < 60
