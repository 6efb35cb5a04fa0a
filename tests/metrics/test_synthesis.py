import json

import cv2
import numpy as np
import pytest

from fetalgen.metrics.synthesis import (
    QCResult,
    ellipse_fit_iou,
    format_summary,
    max_similarity,
    qc_mask,
    summarise_synthetic,
)


def ellipse(shape=(128, 128), centre=(64, 64), axes=(40, 28), angle=20.0) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, centre, axes, angle, 0, 360, 1, thickness=-1)
    return m.astype(bool)


def names(result: QCResult) -> set[str]:
    return {r.split(":")[0] for r in result.reasons}


def test_clean_ellipse_passes():
    r = qc_mask(ellipse(), border_margin=0.05)
    assert r.passed and r.reasons == []
    assert r.ellipse_iou > 0.95
    assert r.area_frac == pytest.approx(np.pi * 40 * 28 / 128**2, rel=0.03)
    assert r.centroid == pytest.approx((0.5, 0.5), abs=0.01)
    assert json.loads(json.dumps(r.to_dict()))["passed"] is True


def test_two_blobs_fail_on_ellipse_iou():
    m = ellipse(centre=(35, 64), axes=(20, 20)) | ellipse(centre=(93, 64), axes=(20, 20))
    r = qc_mask(m)
    assert not r.passed and names(r) == {"ellipse_iou"}
    assert r.ellipse_iou == pytest.approx(0.5, abs=0.03)  # the fit covers one of two equal discs


def test_thin_line_fails():
    m = np.zeros((128, 128), bool)
    m[64, 10:110] = True
    r = qc_mask(m)
    assert not r.passed and names(r) == {"ellipse_iou", "area_frac"}
    thick = np.zeros((128, 128), bool)
    thick[60:63, 10:110] = True  # a 3 x 100 bar: rectangle vs ellipse IoU ~ pi/4
    assert names(qc_mask(thick)) == {"ellipse_iou"}


def test_tiny_spot_and_huge_mask_fail_on_area():
    spot = ellipse(axes=(4, 3))
    r = qc_mask(spot)
    assert not r.passed and names(r) == {"area_frac"} and "<" in r.reasons[0]
    big = ellipse(axes=(60, 50), angle=0.0)  # area fraction pi * 60 * 50 / 128^2 = 0.575
    assert qc_mask(big).passed
    r = qc_mask(big, area_range=(0.01, 0.5))
    assert names(r) == {"area_frac"} and ">" in r.reasons[0]


def test_border_margin_and_empty():
    m = ellipse(centre=(30, 64), angle=0.0)  # columns -10..70: touches the left edge
    assert qc_mask(m).passed
    r = qc_mask(m, border_margin=0.1)
    assert names(r) == {"border"}
    empty = qc_mask(np.zeros((32, 32), bool))
    assert not empty.passed and names(empty) == {"empty"} and empty.centroid is None
    assert json.dumps(empty.to_dict())


def test_ellipse_fit_iou_edge_cases():
    assert ellipse_fit_iou(np.zeros((16, 16), bool)) == 0.0
    square = np.zeros((64, 64), bool)
    square[12:52, 12:52] = True
    assert 0.75 < ellipse_fit_iou(square) < 0.85  # a square is not a head (inscribed circle: pi/4)
    for radius in (3, 6, 12, 30):  # drawn discs score high whatever their size
        assert ellipse_fit_iou(ellipse(axes=(radius, radius))) > 0.95


def test_max_similarity():
    rng = np.random.default_rng(0)
    train = rng.random((5, 96, 80)).astype(np.float32)
    smooth = cv2.GaussianBlur(train[2], (0, 0), 3)
    synthetic = np.stack([train[3], 2 * train[1] + 0.5, rng.random((96, 80)), np.zeros((96, 80))])
    sim = max_similarity(synthetic, train, size=32)
    assert sim.shape == (4,)
    assert sim[0] == pytest.approx(1.0) and sim[1] == pytest.approx(1.0)  # copy, and copy up to contrast
    assert abs(sim[2]) < 0.3 and sim[3] == 0.0  # noise, constant image
    assert max_similarity([smooth], [smooth[::2, ::2]], size=24)[0] > 0.95  # sizes may differ
    with pytest.raises(ValueError, match="training"):
        max_similarity(synthetic, train[:0])


def test_best_mask_iou_finds_copied_and_mirrored_masks():
    from fetalgen.diffusion.sampling import head_mask
    from fetalgen.metrics.synthesis import best_mask_iou

    train = np.stack([head_mask(32, 0.3, 0.7, (0.4, 0.5), 20.0), head_mask(32, 0.2, 0.9, (0.5, 0.5), 0.0)])
    other = head_mask(32, 0.25, 0.8, (0.6, 0.4), 70.0)
    masks = np.stack([train[1], train[0][:, ::-1], other, np.zeros((32, 32), bool)])
    best = best_mask_iou(masks, train)
    assert best[0] == 1.0 and best[1] == 1.0 and best[3] == 0.0  # a copy, a mirrored copy, an empty mask
    union = [(other | t).sum() for t in train] + [(other | t[:, ::-1]).sum() for t in train]
    inter = [(other & t).sum() for t in train] + [(other & t[:, ::-1]).sum() for t in train]
    assert best[2] == pytest.approx(max(i / u for i, u in zip(inter, union, strict=True))) and best[2] < 0.9
    assert best_mask_iou(masks, train, flip_invariant=False)[1] < 1.0
    assert best_mask_iou(masks, train[:0]).tolist() == [0.0] * 4


def test_summary_is_json_and_prints():
    qc = [qc_mask(ellipse()), qc_mask(ellipse(axes=(30, 20))), qc_mask(ellipse(axes=(3, 3)))]
    sim = np.array([0.2, 0.97, 0.5])
    syn_hc = np.array([210.0, 160.0, np.nan])
    train_hc = np.array([200.0, 170.0, 150.0, 220.0])
    s = summarise_synthetic(qc, sim, threshold=0.95, synthetic_hc_px=syn_hc, train_hc_px=train_hc)
    assert json.loads(json.dumps(s)) == s
    assert s["n"] == 3 and s["qc_pass_rate"] == pytest.approx(2 / 3)
    assert s["qc_failures"] == {"area_frac": 1}
    assert s["memorisation"]["rate"] == pytest.approx(1 / 3) and s["memorisation"]["count"] == 1
    assert s["ellipse_iou"]["min"] == min(r.ellipse_iou for r in qc)
    head = s["head_size_px"]
    assert head["synthetic"]["n"] == 2 and head["synthetic"]["mean"] == pytest.approx(185.0)
    assert head["train"]["median"] == pytest.approx(185.0)
    assert 0.0 <= head["ks_statistic"] <= 1.0
    table = format_summary(s)
    assert "QC pass rate" in table and "0.667" in table and "185.000" in table
    empty = summarise_synthetic([], np.zeros(0), 0.95, [], train_hc)
    assert empty["qc_pass_rate"] is None and "synthetic pairs" in format_summary(empty)


def test_the_fidelity_table_shows_the_own_pairs_agreement_only_when_it_differs():
    from fetalgen.metrics.synthesis import format_fidelity

    own = {"synthetic": 0.8, "normalised": 0.5, "ceiling": 0.9, "floor": 0.7}
    base = {"features": "f", "over": "all", "realism": {}, "diversity": {}, "nearest_neighbours":
            {"median_similarity": 0.5, "max_similarity": 0.6}}  # fmt: skip
    alone = "\n".join(format_fidelity({**base, "agreement": own, "agreement_own": own}))
    assert alone.count("ceiling (real)") == 1 and "by the own pairs" not in alone
    measured = {**own, "synthetic": 0.85, "normalised": 0.75}
    both = "\n".join(format_fidelity({**base, "agreement": measured, "agreement_own": own}))
    assert both.count("ceiling (real)") == 2 and "by the own pairs" in both and "0.850" in both
