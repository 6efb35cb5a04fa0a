"""Evaluation numbers on constructed masks: a fake predictor with known outputs, the baseline on the same boxes,
summary statistics by hand."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from fetalgen.evaluation.box_ellipse import box_ellipse_mask
from fetalgen.evaluation.cases import case_metrics
from fetalgen.evaluation.engine import (
    flat_metrics,
    format_summary,
    run_evaluation,
)
from fetalgen.metrics.biometry import fitted_ellipse_mask, measure_head
from fetalgen.metrics.surface import assd, hd95
from fetalgen.segmentation.prompts import prompt_boxes

S = 48
SQUARE = np.zeros((S, S), bool)
SQUARE[10:30, 12:32] = True  # 20 x 20
PIXEL_SIZES = [0.5, math.nan, 0.5]
HC_CSV = [40.0, math.nan, math.nan]


class Constructed(Dataset):
    """Three images whose true mask is SQUARE; image 1 has no pixel size, image 0 a reference HC."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> dict:
        return {
            "image": torch.full((1, S, S), 0.1 * (i + 1)),
            "mask": torch.from_numpy(SQUARE.astype(np.float32))[None],
            "name": f"case_{i}",
            "pixel_size_mm": PIXEL_SIZES[i],
            "hc_mm": HC_CSV[i],
            "trimester": -1,
            "index": i,
        }


class FakePredictor:
    """Repetition r: the true square shifted right by r px; image 2 (brightness 0.3): an empty mask. The automatic
    prompt finds the square shifted down by 2 px (image 2: nothing) with its tight box."""

    def __init__(self) -> None:
        self.embedded = 0

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.embedded += len(images)
        return images

    def predict(self, images: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
        reps, batch = boxes.shape[:2]
        out = np.zeros((reps, batch, S, S), bool)
        for r in range(reps):
            for b in range(batch):
                if images[b, 0, 0, 0] < 0.25:
                    out[r, b] = np.roll(SQUARE, r, axis=1)
        return out

    def auto(self, images: torch.Tensor, rounds: int) -> tuple[np.ndarray, np.ndarray]:
        found = np.roll(SQUARE, 2, axis=0)
        masks = np.stack([found if image[0, 0, 0] < 0.25 else np.zeros_like(found) for image in images])
        boxes = np.tile(np.array([12, 12, 31, 31], np.float32), (len(images), 1))
        return masks, boxes


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict, Path]:
    out = tmp_path_factory.mktemp("eval")
    summary = run_evaluation(
        FakePredictor(), Constructed(), out, "constructed", info={"checkpoint": "fake"},
        prompt_modes=["jitter"], repetitions=3, seed=7, batch_size=2, progress=False,
    )["constructed"]  # fmt: skip
    return pd.read_csv(out / "constructed" / "per_image.csv"), summary, out / "constructed"


def test_files_and_rows(evaluated):
    rows, summary, folder = evaluated
    assert (folder / "summary.json").is_file() and (folder / "cases.png").stat().st_size > 1000
    assert json.loads((folder / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert len(rows) == 3 * 3 * 3  # images x repetitions x methods
    assert set(rows["method"]) == {"sam", "sam_ellipse", "box_ellipse"}
    assert set(rows["prompt_mode"]) == {"jitter"}
    assert summary["n_images"] == 3 and summary["repetitions"] == 3 and summary["checkpoint"] == "fake"
    assert summary["prompt_mode"] == "jitter"


def test_sam_rows_are_exact(evaluated):
    rows, _, _ = evaluated
    sam = rows[rows["method"] == "sam"].set_index(["name", "repetition"])
    for r in range(3):
        row = sam.loc[("case_0", r)]
        assert row["dice"] == pytest.approx((20 - r) / 20, abs=1e-12)  # 20 x (20 - r) overlap
        assert row["iou"] == pytest.approx((20 - r) / (20 + r), abs=1e-12)
        pred = np.roll(SQUARE, r, axis=1)
        assert row["hd95_px"] == pytest.approx(hd95(pred, SQUARE)) and row["assd_px"] == pytest.approx(
            assd(pred, SQUARE)
        )
        assert row["hd95_mm"] == pytest.approx(hd95(pred, SQUARE, spacing_mm=0.5))
        assert row["assd_mm"] == pytest.approx(assd(pred, SQUARE, spacing_mm=0.5))
        hc_pred, hc_true = measure_head(pred).hc, measure_head(SQUARE).hc
        assert row["hc_abs_err_px"] == pytest.approx(abs(hc_pred - hc_true))
        assert row["hc_abs_err_mm"] == pytest.approx(0.5 * abs(hc_pred - hc_true))
        assert row["hc_err_mm"] == pytest.approx(0.5 * (hc_pred - hc_true))  # signed: the bias's terms
        assert row["hc_abs_err_csv_mm"] == pytest.approx(abs(0.5 * hc_pred - 40.0))
        assert math.isnan(sam.loc[("case_1", r)]["hd95_mm"]) and math.isnan(
            sam.loc[("case_1", r)]["hc_abs_err_mm"]
        )
        assert not math.isnan(sam.loc[("case_1", r)]["hd95_px"])
        empty = sam.loc[("case_2", r)]
        assert (
            empty["dice"] == 0
            and empty["iou"] == 0
            and math.isnan(empty["hd95_px"])
            and math.isnan(empty["hc_pred_px"])
        )
    assert sam.loc[("case_0", 0)]["hd95_px"] == 0 and sam.loc[("case_0", 0)]["assd_px"] == 0


def test_sam_ellipse_rows_score_the_fitted_ellipse_of_each_prediction(evaluated):
    rows, summary, _ = evaluated
    fitted = rows[rows["method"] == "sam_ellipse"].set_index(["name", "repetition"])
    for r in range(3):
        pred = np.roll(SQUARE, r, axis=1)
        want = case_metrics(fitted_ellipse_mask(pred), SQUARE, 0.5, None, 40.0)
        got = fitted.loc[("case_0", r)]
        for key in ("dice", "iou", "hd95_px", "hc_abs_err_px"):
            assert got[key] == pytest.approx(want[key]), key
        assert got["dice"] != pytest.approx(rows.set_index(["method", "name", "repetition"]).loc[
            ("sam", "case_0", r), "dice"])  # fmt: skip
        assert fitted.loc[("case_2", r)]["dice"] == 0  # no ellipse fits an empty prediction
    flat = flat_metrics(summary, "test/x")
    assert flat["test/x/ellipse_dice"] == pytest.approx(summary["methods"]["sam_ellipse"]["dice"]["mean"])
    assert flat["test/x/ellipse_n_empty"] == 3


def test_boxes_are_seeded_and_the_baseline_uses_them(evaluated):
    rows, _, _ = evaluated
    for name in ("case_0", "case_2"):
        expected = prompt_boxes(SQUARE, name, "jitter", 3, seed=7)
        for method in ("sam", "box_ellipse"):
            got = rows[(rows["name"] == name) & (rows["method"] == method)].sort_values("repetition")
            np.testing.assert_allclose(got[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(), expected)
    assert not np.allclose(
        prompt_boxes(SQUARE, "case_0", "jitter", 3, 7), prompt_boxes(SQUARE, "case_1", "jitter", 3, 7)
    )
    base = rows[rows["method"] == "box_ellipse"]
    for _, row in base.iterrows():
        box = row[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(float)
        want = case_metrics(
            box_ellipse_mask(box, (S, S)), SQUARE, row["pixel_size_mm"], None, row["hc_csv_mm"]
        )
        for key in ("dice", "iou", "hd95_px", "assd_px", "hc_abs_err_px"):
            assert row[key] == pytest.approx(want[key], nan_ok=True), key


def test_summary_is_mean_and_std_over_repetitions(evaluated):
    rows, summary, _ = evaluated
    dice = summary["methods"]["sam"]["dice"]
    per_rep = [2 * (20 - r) / 20 / 3 for r in range(3)]  # images 0 and 1 shifted by r, image 2 empty
    assert dice["per_repetition"] == pytest.approx(per_rep)
    assert dice["mean"] == pytest.approx(38 / 60)
    assert dice["std"] == pytest.approx(2 / 60)  # the sample std (ddof=1) of 40/60, 38/60, 36/60
    hd = summary["methods"]["sam"]["hd95_px"]
    assert hd["per_repetition"] == pytest.approx([hd95(np.roll(SQUARE, r, axis=1), SQUARE) for r in range(3)])
    assert hd["n_nan"] == 3  # the empty prediction, every repetition
    assert summary["methods"]["sam"]["hd95_mm"]["n_nan"] == 6  # + image 1, no pixel size
    base = rows[rows["method"] == "box_ellipse"].groupby("repetition")["dice"].mean()
    assert summary["methods"]["box_ellipse"]["dice"]["mean"] == pytest.approx(base.mean())
    assert summary["methods"]["box_ellipse"]["dice"]["std"] == pytest.approx(base.std(ddof=1))
    flat = flat_metrics(summary, "test/x")
    assert flat["test/x/dice"] == pytest.approx(38 / 60) and flat["test/x/n_images"] == 3
    assert flat["test/x/n_empty"] == 3 and flat["test/x/baseline_n_empty"] == 0
    assert flat["test/x/baseline_dice"] == pytest.approx(base.mean()) and "test/x/baseline_dice_std" in flat
    table = format_summary(summary)
    assert "SAM" in table and "box-ellipse" in table and "0.6333 ± 0.0333" in table


def test_deterministic_prompts_run_once(tmp_path: Path):
    summary = run_evaluation(
        FakePredictor(), Constructed(), tmp_path, "tight", figure=False, prompt_modes=["tight"], repetitions=5,
        progress=False,
    )["tight"]  # fmt: skip
    rows = pd.read_csv(tmp_path / "tight" / "per_image.csv")
    assert (
        summary["repetitions"] == 1 and len(rows) == 3 * 3 and summary["methods"]["sam"]["dice"]["std"] == 0
    )
    np.testing.assert_array_equal(
        rows[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy()[0], [12, 10, 31, 29]
    )
    assert rows[rows["method"] == "sam"]["dice"].tolist() == [1.0, 1.0, 0.0]


def test_every_prompt_mode_from_one_embedding_each_under_its_own_label(tmp_path: Path):
    predictor = FakePredictor()
    summaries = run_evaluation(
        predictor, Constructed(), tmp_path, "c", prompt_modes=["jitter", "tight", "full", "auto"], figure=False,
        repetitions=2, seed=0, progress=False,
    )  # fmt: skip
    assert list(summaries) == ["c", "c@tight", "c@full", "c@auto"] and predictor.embedded == 3
    for label, mode in (("c", "jitter"), ("c@tight", "tight"), ("c@full", "full"), ("c@auto", "auto")):
        rows = pd.read_csv(tmp_path / label / "per_image.csv")
        assert set(rows["prompt_mode"]) == {mode} and summaries[label]["prompt_mode"] == mode
        assert summaries[label]["repetitions"] == (2 if mode == "jitter" else 1)
    auto = pd.read_csv(tmp_path / "c@auto" / "per_image.csv")
    sam = auto[auto["method"] == "sam"].set_index("name")
    assert sam.loc["case_0", "dice"] == pytest.approx(18 / 20)  # shifted down by 2 rows
    np.testing.assert_array_equal(
        sam.loc["case_0", ["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(), [12, 12, 31, 31]
    )
    line = format_summary(summaries["c@auto"])
    assert (
        "best published fully automatic HC18 method reports Dice 0.9775" in line
        and "not a comparison" in line
    )
    assert "fully automatic" not in format_summary(summaries["c@tight"])
    flat = flat_metrics(summaries["c@auto"], "eval/c@auto")
    assert flat["eval/c@auto/dice"] == pytest.approx((18 / 20 * 2) / 3)
    with pytest.raises(ValueError, match="unknown prompt mode 'points'"):
        run_evaluation(predictor, Constructed(), tmp_path, "c", prompt_modes=["points"], progress=False)


def test_sam_predictor_encodes_each_image_once(phantom_dir, tmp_path: Path) -> None:
    from functools import partial

    from fetalgen.data.dataset import PairDataset
    from fetalgen.data.folder import read_folder
    from fetalgen.segmentation.build import build_sam
    from fetalgen.segmentation.module import SamFinetuneModule
    from fetalgen.segmentation.predictor import SamBoxPredictor

    module = SamFinetuneModule(build_sam("tiny", image_size=64, seed=0), optimizer=partial(torch.optim.AdamW))
    calls = []
    module.sam.image_encoder.register_forward_hook(lambda m, inputs, out: calls.append(len(inputs[0])))
    dataset = PairDataset(read_folder(phantom_dir)[:5], 32)
    predictor = SamBoxPredictor(module, "cpu")
    run_evaluation(
        predictor, dataset, tmp_path, "p", prompt_modes=["jitter", "tight", "auto"], figure=True, repetitions=4,
        batch_size=2, progress=False,
    )  # fmt: skip
    assert (
        sum(calls) == predictor.encoded == 5
    )  # 3 modes, 4 repetitions, auto rounds, baseline, figures: one pass
    assert (tmp_path / "p@auto" / "cases.png").is_file()
    assert (tmp_path / "p" / "cases.png").is_file()

    # The batched decoder gives the masks of decoding each box on its own.
    images = torch.stack([dataset[i]["image"] for i in range(2)])
    boxes = (
        torch.tensor([[[2.0, 3.0, 20.0, 25.0], [5.0, 5.0, 30.0, 28.0]]] * 3)
        + torch.arange(3.0)[:, None, None]
    )
    together = predictor(images, boxes)
    alone = np.stack([[predictor(images[b : b + 1], boxes[r : r + 1, b : b + 1])[0, 0] for b in range(2)]
                      for r in range(3)])  # fmt: skip
    assert together.shape == (3, 2, 32, 32) and (together == alone).mean() > 0.999
