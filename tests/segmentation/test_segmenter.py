"""The Python API (load_segmenter -> Segmenter.predict), the refusals that guard it, and models rebuilt safely."""

import doctest
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import fetalgen
from fetalgen.data.cases import DataError
from fetalgen.data.images import read_boxes, read_images
from fetalgen.metrics.biometry import Ellipse, ellipse_circumference, ellipse_mask
from fetalgen.segmentation import segmenter as segmenter_module
from fetalgen.segmentation.predictor import RandomWeightsError, load_finetuned
from fetalgen.segmentation.segmenter import Segmenter, check_box, load_segmenter
from fetalgen.tasks.predict import predict
from fetalgen.utils.checkpoints import CheckpointError


class Batch(list):
    def select(self, indices: list[int]) -> "Batch":
        return Batch(self[i] for i in indices)


class EllipseOracle:
    """A predictor whose 'model' draws a known ellipse at the working size (as a perfect model would)."""

    threshold = 0.5

    def __init__(self, ellipse: Ellipse, image_shape: tuple[int, int], size: int) -> None:
        scale = max(image_shape) / size
        e = ellipse
        self.working = Ellipse(
            (e.cx + 0.5) / scale - 0.5, (e.cy + 0.5) / scale - 0.5, e.semi_major / scale, e.semi_minor / scale,
            e.angle_deg,
        )  # fmt: skip
        self.size = size

    def embed(self, images: torch.Tensor) -> Batch:
        return Batch([None] * len(images))

    def auto_boxes(self, embedded: list, rounds: int) -> np.ndarray:
        return np.array([[0, 0, self.size - 1, self.size - 1]] * len(embedded), np.float32)

    def logits(self, embedded: list, boxes: torch.Tensor) -> np.ndarray:
        mask = ellipse_mask(self.working, (self.size, self.size)).astype(np.float32)
        return np.stack([np.stack([mask] * len(embedded))])


@pytest.mark.parametrize(("size", "tolerance"), [(64, 0.01), (128, 0.005), (256, 0.005)])
def test_hc_is_measured_at_the_images_own_size_within_half_a_percent(size: int, tolerance: float):
    # A perfect working-size mask of a known head: the HC read from it at the image's size is right to 0.5 % from
    # 128 px up (fitted at the working size and scaled up, it read 3-6 % low at 64 px, 0.6-1 % at 256). At 64 px
    # the working mask itself is a coarse rasterisation of the head (12.5 image px a pixel): -0.2 to -0.8 % left.
    shape, truth = (540, 800), Ellipse(410.3, 260.7, 190.0, 140.0, 30.0)
    segmenter = Segmenter(EllipseOracle(truth, shape, size), size)
    [head] = segmenter.predict(np.full(shape, 90, np.uint8), pixel_size_mm=0.15)
    hc = ellipse_circumference(truth.semi_major, truth.semi_minor)
    assert head.status == "ok" and head.prompt == "auto" and head.mask.shape == shape
    assert abs(head.biometry_px()["hc"] - hc) / hc < tolerance
    assert head.hc_mm == pytest.approx(head.biometry_px()["hc"] * 0.15)
    assert abs(head.bpd_mm - 2 * truth.semi_minor * 0.15) / (2 * truth.semi_minor * 0.15) < 0.01


def test_the_docstring_example_runs():
    assert doctest.testmod(segmenter_module, raise_on_error=True).attempted >= 4


def test_load_segmenter_predicts_lists_with_boxes_and_pixel_sizes(tmp_path: Path):
    assert fetalgen.load_segmenter is load_segmenter
    segmenter = load_segmenter(model="tiny", allow_random_weights=True, image_size=32, device="cpu")
    images = [np.random.default_rng(i).integers(0, 255, (48 + 8 * i, 64), dtype=np.uint8) for i in range(2)]
    heads = segmenter.predict(images, boxes=[None, (4, 4, 40, 30)], pixel_size_mm=[0.1, None])
    assert [h.prompt for h in heads] == ["auto", "box"] and [h.mask.shape for h in heads] == [
        (48, 64),
        (56, 64),
    ]
    assert heads[1].box.tolist() == [4, 4, 40, 30] and math.isnan(heads[1].pixel_size_mm)
    with pytest.raises(ValueError, match="image 0: pixel size -0.2 mm must be a finite positive number"):
        segmenter.predict(images, pixel_size_mm=[-0.2, 0.1])
    with pytest.raises(ValueError, match="image 1: pixel size 1e\\+308 mm is outside the plausible"):
        segmenter.predict(images, pixel_size_mm=[0.1, 1e308])
    with pytest.raises(ValueError, match="image 1: box .* lies outside the 64 x 56 image"):
        segmenter.predict(images, boxes=[None, (100, 100, 120, 120)])
    with pytest.raises(ValueError, match="too small to segment"):
        segmenter.predict(np.zeros((1, 1), np.uint8))


def test_boxes_are_checked_against_the_image():
    assert check_box((1, 2, 10, 20), (30, 30), "a").tolist() == [1, 2, 10, 20]
    for box, reason in [((1, 2, float("nan"), 4), "four finite numbers"), ((5, 5, 3, 9), "x1 > x0"),
                        ((40, 0, 50, 10), "outside the 30 x 30 image"), ((-20, -20, -1, -1), "outside")]:  # fmt: skip
        with pytest.raises(ValueError, match=reason):
            check_box(box, (30, 30), "a.png")


def test_bad_pixel_sizes_and_nan_boxes_in_csvs_are_named(tmp_path: Path):
    (tmp_path / "images").mkdir()
    np.save(tmp_path / "x.npy", 0)  # unrelated file, ignored
    import cv2

    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((20, 20), np.uint8))
    for bad in ("-0.1", "0", "nan", "inf"):
        (tmp_path / "pixel_sizes.csv").write_text(f"filename,pixel size(mm)\na.png,{bad}\n")
        with pytest.raises(DataError, match="line 2: 'pixel size\\(mm\\)' must be a finite positive number"):
            read_images(tmp_path)
    for implausible in ("1e308", "1e-300", "25"):  # would write inf / 0 / metres into the submission
        (tmp_path / "pixel_sizes.csv").write_text(f"filename,pixel size(mm)\na.png,{implausible}\n")
        with pytest.raises(
            DataError, match=r"pixel_sizes.csv: line 2 \(a.png\): pixel size .* outside the plausible"
        ):
            read_images(tmp_path)
    (tmp_path / "b.csv").write_text("name,x0,y0,x1,y1\na,nan,1,5,5\n")
    with pytest.raises(DataError, match="b.csv: line 2: box .* not finite"):
        read_boxes(tmp_path / "b.csv")


def test_predict_and_evaluate_refuse_a_random_model(compose_cfg, phantom_dir: Path, tmp_path: Path):
    root = tmp_path / "scans"
    shutil.copytree(phantom_dir / "images", root / "images")
    with pytest.raises(RandomWeightsError, match="no trained weights: give ckpt_path"):
        predict(compose_cfg("predict", [f"images.root={root}"]))
    from fetalgen.tasks.evaluate import evaluate

    with pytest.raises(RandomWeightsError, match="allow_random_weights=true"):
        evaluate(compose_cfg("evaluate", []))
    with pytest.raises(RandomWeightsError):
        load_segmenter(model="tiny")
    assert not (tmp_path / "output" / "measurements.csv").exists()  # refused before anything was written


def crafted_checkpoint(path: Path, target: str, **extra) -> Path:
    """A finetune-kind checkpoint that passes weights_only=True but whose stored model config names ``target``."""
    config = {"model": {"_target_": target, **extra}, "data": {"image_size": 64}}
    torch.save({"state_dict": {"sam.x": torch.zeros(1)}, "fetalgen_config": config}, path)
    return path


SHELL = {"_target_": "asyncio.create_subprocess_shell", "cmd": "touch {marker}"}
OS_SYSTEM = {"_target_": "os.system", "command": "touch {marker}"}


@pytest.mark.parametrize(
    ("target", "extra"),
    [
        ("asyncio.run", {"main": SHELL}),
        ("fetalgen.segmentation.module.SamFinetuneModule", {"sam": OS_SYSTEM}),
        ("fetalgen.segmentation.module.SamFinetuneModule", {"sam": "${oc.env:HOME}"}),
        # a tuple (the audit's payload: OmegaConf turned it into a list that instantiate built)
        ("fetalgen.segmentation.module.SamFinetuneModule", {"sam": ({"_target_": "asyncio.run", "main": SHELL},)}),
        ("fetalgen.segmentation.module.SamFinetuneModule", {"sam": {"model_type": (OS_SYSTEM,)}}),
        # a payload in a section nothing reads (the optimizer): never built; the weights then do not fit
        ("fetalgen.segmentation.module.SamFinetuneModule",
         {"sam": {"model_type": "tiny", "image_size": 64}, "optimizer": (SHELL,), "lr_scheduler": [OS_SYSTEM]}),
    ],
)  # fmt: skip
def test_a_crafted_checkpoint_runs_no_code(tmp_path: Path, target: str, extra: dict):
    marker = tmp_path / "pwned"
    text = repr(extra).replace("{marker}", str(marker))
    path = crafted_checkpoint(tmp_path / "ft.ckpt", target, **eval(text))
    with pytest.raises(CheckpointError, match="ft.ckpt: its"):
        load_finetuned(path)
    with pytest.raises(CheckpointError):
        load_segmenter(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_size", 200_000, "model.sam.image_size = 200000, not a int in \\[16, 4096\\]"),
        ("model_type", "vit_b; rm -rf", "model.sam.model_type = 'vit_b; rm -rf', not one of"),
        ("image_size", True, "model.sam.image_size = True"),
    ],
)
def test_stored_settings_are_typed_and_bounded(tmp_path: Path, field: str, value, message: str):
    sam = {"model_type": "tiny", "image_size": 64} | {field: value}
    path = crafted_checkpoint(tmp_path / "ft.ckpt", "x", sam=sam)
    with pytest.raises(CheckpointError, match=message):
        load_finetuned(path)


def test_the_api_takes_pil_rgb_float_and_tensor_images_in_batches():
    from PIL import Image

    segmenter = load_segmenter(model="tiny", allow_random_weights=True, image_size=32, device="cpu")
    gray = np.random.default_rng(0).integers(0, 256, (40, 56), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    kinds = [
        gray,
        rgb,
        Image.fromarray(rgb),
        gray / 255.0,
        torch.from_numpy(gray),
        np.dstack([rgb, np.full_like(gray, 255)]),
    ]
    heads = segmenter.predict(kinds, batch_size=4)
    assert len(heads) == len(kinds)
    for head in heads[1:]:  # every kind is the same gray image, so the same mask
        assert (head.mask == heads[0].mask).all()
    (one,) = segmenter.predict(torch.from_numpy(gray))  # a tensor is one image, not a list of rows
    assert (one.mask == heads[0].mask).all() and segmenter.predict([]) == []
    for bad, reason in [(gray * 2.0, r"image 0: a float image must hold finite values in \[0, 1\]"),
                        (gray.astype(np.int32) * 300, "needs uint8 .* or float"),
                        (np.zeros((4, 40, 56)), "got shape")]:  # fmt: skip
        with pytest.raises(ValueError, match=reason):
            segmenter.predict([bad])
    with pytest.raises(ValueError, match="one box for a list of images"):
        segmenter.predict([gray, gray], boxes=(1, 2, 30, 30))
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        segmenter.predict([gray], batch_size=0)


def test_odd_api_arguments_are_refused_naming_the_argument(tmp_path):
    segmenter = load_segmenter(model="tiny", allow_random_weights=True, image_size=32, device="cpu")
    gray = np.random.default_rng(0).integers(0, 256, (40, 56), dtype=np.uint8)
    for bad in (5, None):  # before: "'int' object is not iterable"
        with pytest.raises(TypeError, match="images: one image .* or a list of them, got"):
            segmenter.predict(bad)
    with pytest.raises(ValueError, match="pixel size must be a number of mm, got '0.1'"):
        segmenter.predict(gray, pixel_size_mm="0.1")  # before: "1 image(s), 1 box(es), 3 pixel size(s)"
    with pytest.raises(DataError, match="is a folder, not an image file"):
        segmenter.predict(str(tmp_path))  # before: "image file is missing"
    assert len(segmenter.predict(iter([gray, gray]))) == 2  # any iterable of images is a list of them
