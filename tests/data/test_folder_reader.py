"""read_folder: stem matching, _Annotation masks, subject parsing, CSVs, list files, bad inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fetalgen.data.cases import DataError
from fetalgen.data.folder import parse_subject, read_folder
from fetalgen.data.io import load_pair


def _pair(root: Path, stem: str, mask_name: str | None = None, rgb: bool = False) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    image = np.full((40, 60), 90, np.uint8)
    cv2.imwrite(
        str(root / "images" / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if rgb else image
    )
    if mask_name is not None:
        mask = np.zeros((40, 60), np.uint8)
        cv2.ellipse(mask, (30, 20), (15, 10), 0, 0, 360, 255, 1)
        cv2.imwrite(str(root / "masks" / mask_name), mask)


def test_parse_subject() -> None:
    assert parse_subject("Patient00188_Plane3_2_of_3") == ("Patient00188", 2)
    assert parse_subject("010_2HC") == ("010", 2) and parse_subject("010_HC") == ("010", 1)  # HC18's rule
    assert parse_subject("patient001_DZA_plane1") == ("patient001", 1)
    assert parse_subject("phantom_0003") == ("phantom_0003", 1)


def test_spanish_and_african_names(tmp_path: Path) -> None:
    _pair(tmp_path, "Patient00188_Plane3_2_of_3", "Patient00188_Plane3_2_of_3_Annotation.png", rgb=True)
    _pair(tmp_path, "Patient00188_Plane3_1_of_3", "Patient00188_Plane3_1_of_3_Annotation.png")
    _pair(tmp_path, "patient001_DZA_plane1", "patient001_DZA_plane1.png")
    (tmp_path / "pixel_sizes.csv").write_text(
        "filename,pixel size(mm)\nPatient00188_Plane3_2_of_3.png,0.2\nPatient00188_Plane3_1_of_3.png,0.2\n"
        "patient001_DZA_plane1.png,0.15\n"
    )
    cases = read_folder(tmp_path, cohort="spanish")
    assert [(c.name, c.subject, c.frame) for c in cases] == [
        ("Patient00188_Plane3_1_of_3", "Patient00188", 1),
        ("Patient00188_Plane3_2_of_3", "Patient00188", 2),
        ("patient001_DZA_plane1", "patient001", 1),
    ]
    assert cases[2].pixel_size_mm == pytest.approx(0.15) and cases[2].hc_mm is None
    assert all(c.cohort == "spanish" for c in cases)
    image, mask = load_pair(cases[1])  # RGB image, outline mask
    assert image.shape == mask.shape == (40, 60) and mask[20, 30]


def test_image_without_mask_raises_or_skips(tmp_path: Path) -> None:
    _pair(tmp_path, "a", "a.png")
    _pair(tmp_path, "b")
    with pytest.raises(DataError, match=r"b.png: no mask in .*masks"):
        read_folder(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 1 bad file\(s\):\n.*b.png"):
        cases = read_folder(tmp_path, on_bad="skip")
    assert [c.name for c in cases] == ["a"]


def test_missing_csv_row_and_missing_folder(tmp_path: Path) -> None:
    _pair(tmp_path, "a", "a.png")
    _pair(tmp_path, "b", "b_Annotation.png")
    (tmp_path / "pixel_sizes.csv").write_text("filename,pixel size(mm)\na.png,0.1\n")
    with pytest.raises(DataError, match=r"b.png: no row in .*pixel_sizes.csv"):
        read_folder(tmp_path)
    with pytest.raises(DataError, match="images.*folder missing.*set FETALGEN_X"):
        read_folder(tmp_path / "absent", hint="set FETALGEN_X")


def test_list_file(tmp_path: Path) -> None:
    for s in ("a", "b", "c"):
        _pair(tmp_path, s, f"{s}.png")
    lst = tmp_path / "cases.txt"
    lst.write_text("c\na.png\n")
    assert [c.name for c in read_folder(tmp_path, list_file=lst)] == ["c", "a"]
    lst.write_text("a\nzz\n")
    with pytest.raises(DataError, match="cases.txt.*zz"):
        read_folder(tmp_path, list_file=lst)


def test_phantom_folder_reads_pixel_size_and_hc(phantom_dir: Path) -> None:
    cases = read_folder(phantom_dir, cohort="phantom")
    assert len(cases) == 24
    assert all(c.pixel_size_mm > 0 and c.hc_mm > 0 for c in cases)


def test_duplicate_names_are_errors_naming_both(tmp_path: Path) -> None:
    import shutil

    from fetalgen.data.cases import DataError
    from fetalgen.data.folder import read_column_csv, read_folder
    from fetalgen.data.phantom import write_phantom_dataset

    root = tmp_path / "d"
    write_phantom_dataset(root, n=2, seed=0, shape=(68, 100))
    extra_mask = root / "masks" / "phantom_0000_Annotation.png"  # a second mask for one image
    shutil.copy(root / "masks" / "phantom_0000.png", extra_mask)
    with pytest.raises(DataError, match="a second mask of case phantom_0000"):
        read_folder(root)
    extra_mask.unlink()
    shutil.copy(root / "images" / "phantom_0000.png", root / "images" / "phantom_0000.jpg")  # x.png + x.jpg
    with pytest.raises(DataError, match="a second image of case phantom_0000"):
        read_folder(root)
    table = tmp_path / "sizes.csv"
    table.write_text("filename,pixel size(mm)\na.png,0.1\nb.png,0.2\na.png,0.3\n")
    with pytest.raises(DataError, match=r"a.png has two rows \(lines 2 and 4\)"):
        read_column_csv(table, "pixel size(mm)")
