"""Ultrasound DICOM input: single- and multi-frame files written here, pixel sizes from the header or the CSV."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from fetalgen.data.cases import DataError  # noqa: E402
from fetalgen.data.dicom import dicom_pixel_size, load_dicom_frame  # noqa: E402
from fetalgen.data.images import read_images  # noqa: E402
from fetalgen.tasks.predict import predict  # noqa: E402

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage (multi-frame: ...3.1)


def write_dicom(path: Path, frames: np.ndarray, region_cm: tuple[float, float] | None = None,
                spacing_mm: tuple[float, float] | None = None, bits: int = 8, photometric: str = "MONOCHROME2") -> Path:  # fmt: skip
    meta = FileMetaDataset()
    meta.TransferSyntaxUID, meta.MediaStorageSOPClassUID = ExplicitVRLittleEndian, US_IMAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = (
        meta,
        US_IMAGE,
        meta.MediaStorageSOPInstanceUID,
        "US",
    )
    ds.Rows, ds.Columns = frames.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, photometric, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits == 8 else 16), bits, bits - 1
    if frames.ndim == 3:
        ds.NumberOfFrames = len(frames)
    if region_cm is not None:
        region = Dataset()
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX, region.PhysicalDeltaY = region_cm
        ds.SequenceOfUltrasoundRegions = [region]
    if spacing_mm is not None:
        ds.PixelSpacing = list(spacing_mm)
    ds.PixelData = frames.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_frames_and_pixel_sizes_are_read_from_the_header_else_the_csv(tmp_path: Path):
    rng = np.random.default_rng(0)
    single = rng.integers(0, 255, (40, 60), dtype=np.uint8)
    write_dicom(tmp_path / "a.dcm", single, region_cm=(0.015, 0.015))  # 0.15 mm, from the ultrasound region
    write_dicom(tmp_path / "b.dcm", rng.integers(0, 255, (3, 30, 50), dtype=np.uint8), spacing_mm=(0.2, 0.2))
    write_dicom(tmp_path / "c.dcm", single)  # no size in the header: the CSV's row
    write_dicom(tmp_path / "d.dcm", single)  # nowhere: unknown
    (tmp_path / "pixel_sizes.csv").write_text("filename,pixel size(mm)\nc.dcm,0.3\n")
    items = read_images(tmp_path, on_bad="skip")
    assert [i.name for i in items] == ["a", "b_f000", "b_f001", "b_f002", "c", "d"]
    sizes = [i.pixel_size_mm for i in items]
    assert sizes[:5] == pytest.approx([0.15, 0.2, 0.2, 0.2, 0.3]) and math.isnan(sizes[5])
    assert (items[0].load() == single).all() and items[2].load().shape == (30, 50)


def test_bit_depth_and_monochrome1_are_converted_and_bad_files_named(tmp_path: Path):
    twelve = np.array([[0, 4095], [2048, 1024]] * 8, np.uint16).reshape(16, 2).repeat(8, axis=1)
    path = write_dicom(tmp_path / "x.dcm", twelve, bits=12, photometric="MONOCHROME1")
    image = load_dicom_frame(path)
    assert image.dtype == np.uint8 and image[0, 0] == 255 and image[0, 8] == 0  # inverted, scaled by 12 bits
    write_dicom(tmp_path / "y.dcm", twelve.astype(np.uint8), region_cm=(0.01, 0.02))
    with pytest.raises(DataError, match="y.dcm: non-square pixels"):
        dicom_pixel_size(tmp_path / "y.dcm")
    write_dicom(tmp_path / "w.dcm", twelve.astype(np.uint8), spacing_mm=(1e300, 1e300))
    with pytest.raises(DataError, match="w.dcm: header: pixel size 1e\\+300 mm is outside the plausible"):
        dicom_pixel_size(tmp_path / "w.dcm")
    (tmp_path / "z.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(DataError, match="z.dcm: unreadable or corrupt DICOM"):
        load_dicom_frame(tmp_path / "z.dcm")


def test_predict_reads_a_dicom_folder(compose_cfg, tmp_path: Path):
    rng = np.random.default_rng(1)
    root = tmp_path / "scans"
    root.mkdir()
    write_dicom(root / "one.dcm", rng.integers(0, 255, (48, 64), dtype=np.uint8), region_cm=(0.02, 0.02))
    write_dicom(root / "cine.dcm", rng.integers(0, 255, (2, 48, 64), dtype=np.uint8))
    cfg = compose_cfg("predict", [f"images.root={root}", "image_size=32", "model.sam.image_size=64",
                                  "progress=false", "allow_random_weights=true"])  # fmt: skip
    summary = predict(cfg)
    rows = pd.read_csv(Path(cfg.paths.output_dir) / "measurements.csv")
    assert rows["name"].tolist() == ["cine_f000", "cine_f001", "one"] and summary["n_without_pixel_size"] == 2
    assert rows.set_index("name").loc["one", "pixel_size_mm"] == pytest.approx(0.2)
    assert (Path(cfg.paths.output_dir) / "masks" / "cine_f001.png").is_file()


def write_colour_dicom(path: Path, rgb: np.ndarray, photometric: str, jpeg: bool = False) -> Path:
    """An RGB image ``[H, W, 3]`` as a colour US Image Storage file: RGB or YBR_FULL uncompressed, or (``jpeg``)
    YBR_FULL_422 in JPEG baseline, as many scanners write it."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    path = write_dicom(path, rgb[..., 0])  # the header, then the colour pixel data
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, photometric, 0
    if jpeg:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, "JPEG", quality=95, subsampling=1)  # 4:2:2
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
    else:
        data = rgb if photometric == "RGB" else pydicom.pixels.convert_color_space(rgb, "RGB", photometric)
        ds.PixelData = data.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_colour_dicom_is_converted_to_gray_once(tmp_path: Path):
    # pydicom 3 already returns RGB for YBR_FULL(_422); converting again read black as grey 79 (issue 30)
    rng = np.random.default_rng(2)
    gray = np.zeros((48, 64), np.uint8)
    gray[10:38, 12:52] = rng.integers(60, 250, (28, 40))
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for photometric, jpeg, tolerance in (
        ("RGB", False, 0.5),
        ("YBR_FULL", False, 1.0),
        ("YBR_FULL_422", True, 4.0),
    ):
        image = load_dicom_frame(write_colour_dicom(tmp_path / f"{photometric}.dcm", rgb, photometric, jpeg))
        assert np.abs(image.astype(float) - gray).mean() < tolerance, photometric
        assert image[0, 0] <= 2, photometric  # black stays black
    mono1 = load_dicom_frame(write_dicom(tmp_path / "m1.dcm", gray, photometric="MONOCHROME1"))
    assert (mono1 == 255 - gray).all()
    assert (load_dicom_frame(write_dicom(tmp_path / "m2.dcm", gray)) == gray).all()


def test_a_long_cine_loop_is_read_frame_by_frame_and_bad_headers_are_named(tmp_path: Path):
    frames = np.arange(120, dtype=np.uint8)[:, None, None].repeat(16, 1).repeat(24, 2)  # frame k is all k
    path = write_dicom(tmp_path / "cine.dcm", frames)
    assert load_dicom_frame(path, 117)[0, 0] == 117 and load_dicom_frame(path, 0).max() == 0
    with pytest.raises(DataError, match="cine.dcm: no frame 120"):
        load_dicom_frame(path, 120)
    bad = pydicom.dcmread(path)
    bad.NumberOfFrames = -5
    bad.save_as(tmp_path / "negative.dcm")
    with pytest.raises(DataError, match="negative.dcm: NumberOfFrames -5"):
        load_dicom_frame(tmp_path / "negative.dcm")
    twelve_in_16 = np.linspace(0, 4095, 16 * 24).reshape(16, 24).astype(np.uint16)
    image = load_dicom_frame(write_dicom(tmp_path / "b16.dcm", twelve_in_16, bits=16))
    assert image.max() == 255 and image.mean() > 100  # scaled by the 12 bits used, not by 65535
    (tmp_path / "fake.dcm").write_bytes(b"\x00" * 200 + b"not a dicom file")
    with pytest.raises(DataError, match="fake.dcm"):
        load_dicom_frame(tmp_path / "fake.dcm")
    items = read_images(tmp_path, on_bad="skip")  # the bad files are skipped, the good ones read
    assert {"b16", "cine_f000"} <= {i.name for i in items} and not {"fake", "negative"} & {
        i.name for i in items
    }
