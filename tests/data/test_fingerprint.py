"""Fingerprints: a copy is found through re-encoding, resizing and mirroring; different subjects stay apart."""

import cv2
import numpy as np
import pytest

from fetalgen.data.fingerprint import (
    NEAR,
    SYMMETRIES,
    Fingerprint,
    _transformed,
    find_copies,
    fingerprint_image,
    mirrored,
    picture,
)


def test_copies_are_found_and_the_record_round_trips():
    image = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (120, 160), dtype=np.uint8), (9, 9), 3)
    fp = fingerprint_image(image)
    assert Fingerprint.decode(fp.encode()).sha256 == fp.sha256
    assert np.allclose(Fingerprint.decode(fp.encode()).descriptor, fp.descriptor, atol=1e-3)
    _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    variants = {"same": image.copy(), "jpeg": cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE),
                "smaller": cv2.resize(image, None, fx=0.9, fy=0.9), "mirror": image[:, ::-1],
                "upside_down": image[::-1], "rotated": np.rot90(image), "inverted": 255 - image}  # fmt: skip
    found = find_copies(
        {k: fingerprint_image(np.ascontiguousarray(v)) for k, v in variants.items()}, {"seen": fp}
    )
    assert [(held, how.split(",")[0]) for held, _, how in found] == [
        ("same", "the same pixels"), ("jpeg", "a near copy"), ("smaller", "a near copy"),
        ("mirror", "a mirrored near copy"), ("upside_down", "a mirrored rotated 180 degrees near copy"),
        ("rotated", "a rotated 90 degrees near copy"), ("inverted", "an inverted near copy")]  # fmt: skip
    # Two records of one name (two cohorts): both are compared, so neither hides a copy of the other's image.
    other = fingerprint_image(np.random.default_rng(1).integers(0, 255, (120, 160), dtype=np.uint8))
    (hit,) = find_copies({"held": fp}, [("case_1", other), ("case_1", fp)])
    assert hit[2] == "the same pixels"
    assert np.allclose(mirrored(mirrored(fp.descriptor)), fp.descriptor)


def _scan_like(seed: int = 0) -> np.ndarray:
    """A textured picture inside a black margin, as an ultrasound frame is."""
    texture = np.random.default_rng(seed).integers(0, 255, (100, 140), dtype=np.uint8)
    return cv2.copyMakeBorder(
        cv2.GaussianBlur(texture, (9, 9), 3), 12, 8, 20, 6, cv2.BORDER_CONSTANT, value=0
    )


def test_borders_and_gamma_do_not_hide_a_copy():
    image = _scan_like()
    fp = fingerprint_image(image)
    gamma = (255 * (image / 255.0) ** 0.5).astype(np.uint8)
    variants = {"gamma_0.5": gamma, "darker": (image * 0.6).astype(np.uint8),
                "black_border_10": cv2.copyMakeBorder(image, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=0),
                "white_border": cv2.copyMakeBorder(image, 25, 5, 40, 0, cv2.BORDER_CONSTANT, value=255),
                "margin_cut": image[12:, 20:]}  # fmt: skip
    found = find_copies({k: fingerprint_image(v) for k, v in variants.items()}, {"seen": fp})
    assert sorted(held for held, _, _ in found) == sorted(variants)
    # Without the frame trimmed and the histogram equalised, these were missed (cosine below NEAR).
    raw = cv2.resize(image.astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA).ravel()
    border = cv2.resize(
        variants["white_border"].astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA
    ).ravel()
    raw, border = raw - raw.mean(), border - border.mean()
    assert raw @ border / np.linalg.norm(raw) / np.linalg.norm(border) < NEAR
    assert picture(image).shape == (100, 140)
    assert picture(np.zeros((5, 7), np.uint8)).shape == (5, 7)  # a uniform image stays whole


def test_an_older_records_fingerprint_is_compared_by_its_pixels_only():
    image = _scan_like()
    current = fingerprint_image(image)
    older = Fingerprint.decode(f"{current.sha256}:" + current.encode().split(":", 2)[2])
    assert not older.framed and Fingerprint.decode(current.encode()).framed
    assert find_copies({"same": current}, {"seen": older})[0][2] == "the same pixels"
    assert find_copies({"jpeg_like": fingerprint_image(image // 2 * 2)}, {"seen": older}) == []


@pytest.mark.hc18
def test_no_two_hc18_subjects_look_alike_and_a_jpeg_copy_does(hc18_dir):
    from fetalgen.data.hc18 import read_hc18

    cases = read_hc18(hc18_dir)
    prints = np.stack([fingerprint_image(cv2.imread(str(c.image_path), cv2.IMREAD_GRAYSCALE)).descriptor
                       for c in cases])  # fmt: skip
    subjects = np.array([c.subject for c in cases])
    similarity = np.full((len(prints), len(prints)), -1.0)
    for k, flip in SYMMETRIES:  # every rotation and flip, each also inverted: what find_copies compares
        cos = prints @ _transformed(prints, k, flip).T
        similarity = np.maximum(similarity, np.abs(cos))
    other_subject = subjects[:, None] != subjects[None, :]
    assert similarity[other_subject].max() < NEAR  # measured: 0.916 on all 809 images, every kind
    image = cv2.imread(str(cases[0].image_path), cv2.IMREAD_GRAYSCALE)
    _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert fingerprint_image(cv2.imdecode(jpeg, 0)).descriptor @ prints[0] > 0.999
