"""The behaviour check of a refactor: two output folders compared by their case lists, sets and figures."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "experiments"))
from same_results import compare  # noqa: E402


def write_run(root: Path, dice: float, seconds: float, image: bytes) -> None:
    (root / "split").mkdir(parents=True)
    (root / "split" / "test.txt").write_text("000_HC\n")
    (root / "sweep" / "run0").mkdir(parents=True)
    metrics = {"test/hc18/dice": dice, "train/seconds": seconds, "data/num_real": 3}
    (root / "sweep" / "run0" / "metrics.json").write_text(json.dumps(metrics))
    (root / "synthetic" / "images").mkdir(parents=True)
    (root / "synthetic" / "images" / "syn_000000.png").write_bytes(image)
    line = {
        "index": 0,
        "seed": 7,
        "qc_pass": True,
        "image": str(root / "synthetic" / "images" / "syn_000000.png"),
    }
    (root / "synthetic" / "manifest.jsonl").write_text(json.dumps(line) + "\n")


def test_equal_runs_match_whatever_their_times_and_paths_and_any_other_number_is_a_difference(tmp_path: Path):
    write_run(tmp_path / "a", 0.91, 12.0, b"png")
    write_run(tmp_path / "b", 0.91, 30.5, b"png")  # another wall time, another folder in the paths
    problems, compared = compare(tmp_path / "a", tmp_path / "b")
    assert problems == [] and compared == 4
    write_run(tmp_path / "c", 0.92, 12.0, b"PNG")
    problems, _ = compare(tmp_path / "a", tmp_path / "c")
    assert "sweep/run0/metrics.json: test/hc18/dice 0.91 -> 0.92" in problems
    assert "synthetic/images/syn_000000.png: the files differ" in problems and len(problems) == 2
