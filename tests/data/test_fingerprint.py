"""Fingerprints: a copy is found through re-encoding, resizing and mirroring; different subjects stay apart."""

import cv2
import numpy as np
import pytest

from fetalgen.data.fingerprint import NEAR, Fingerprint, find_copies, fingerprint_image, mirrored


def test_copies_are_found_and_the_record_round_trips():
    image = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (120, 160), dtype=np.uint8), (9, 9), 3)
    fp = fingerprint_image(image)
    assert Fingerprint.decode(fp.encode()).sha256 == fp.sha256
    assert np.allclose(Fingerprint.decode(fp.encode()).descriptor, fp.descriptor, atol=1e-3)
    _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    variants = {"same": image.copy(), "jpeg": cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE),
                "smaller": cv2.resize(image, None, fx=0.9, fy=0.9), "mirror": image[:, ::-1]}  # fmt: skip
    found = find_copies({k: fingerprint_image(v) for k, v in variants.items()}, {"seen": fp})
    assert [(held, how.split(",")[0]) for held, _, how in found] == [
        ("same", "the same pixels"), ("jpeg", "a near copy"), ("smaller", "a near copy"),
        ("mirror", "a mirrored near copy")]  # fmt: skip
    assert np.allclose(mirrored(mirrored(fp.descriptor)), fp.descriptor)


@pytest.mark.hc18
def test_no_two_hc18_subjects_look_alike_and_a_jpeg_copy_does(hc18_dir):
    from fetalgen.data.hc18 import read_hc18

    cases = read_hc18(hc18_dir)
    prints = np.stack([fingerprint_image(cv2.imread(str(c.image_path), cv2.IMREAD_GRAYSCALE)).descriptor
                       for c in cases])  # fmt: skip
    subjects = np.array([c.subject for c in cases])
    similarity = np.maximum(prints @ prints.T, prints @ np.stack([mirrored(d) for d in prints]).T)
    other_subject = subjects[:, None] != subjects[None, :]
    assert similarity[other_subject].max() < NEAR  # measured: 0.913 (plain), the mirror included here
    image = cv2.imread(str(cases[0].image_path), cv2.IMREAD_GRAYSCALE)
    _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert fingerprint_image(cv2.imdecode(jpeg, 0)).descriptor @ prints[0] > 0.999
