"""Files the project writes: standard JSON (no NaN or inf), atomic writes."""

import json
import math
from pathlib import Path

import numpy as np

from fetalgen.data.synthetic import ManifestEntry
from fetalgen.utils.files import NULL_REASONS, write_json


def strict_json(text: str):
    """Parse as jq or JavaScript would: NaN and Infinity are errors."""

    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_nan_and_inf_are_written_as_null_with_a_reason(tmp_path: Path):
    summary = {"n": np.int64(3), "diversity": {"synthetic": {"ms_ssim": float("nan")}, "train": np.float32(0.5)},
               "kid": [1.0, math.inf], "fid": -np.inf}  # fmt: skip
    data = strict_json(write_json(tmp_path / "summary.json", summary).read_text())
    assert data["n"] == 3 and data["diversity"] == {"synthetic": {"ms_ssim": None}, "train": 0.5}
    assert data["kid"] == [1.0, None] and data["fid"] is None
    assert data[NULL_REASONS] == {"diversity.synthetic.ms_ssim": "NaN: not a number", "kid[1]": "inf: not a number",
                                  "fid": "-inf: not a number"}  # fmt: skip
    assert NULL_REASONS not in strict_json(write_json(tmp_path / "ok.json", {"a": 1.0}).read_text())


def test_a_manifest_line_is_standard_json():
    entry = ManifestEntry(0, "syn_0", "images/syn_0.png", "masks/syn_0.png", 1, "x", "ddpm", 10,
                          qc={"ellipse_iou": float("nan")}, pair_agreement=float("nan"))  # fmt: skip
    line = strict_json(entry.to_json())
    assert line["qc"]["ellipse_iou"] is None and line["pair_agreement"] is None
    assert ManifestEntry(**line).pair_agreement is None  # reads back
