"""The import structure the layout promises: the generator side never reaches into SAM's code, and every task
reads training checkpoints through one reader."""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1] / "fetalgen"


def imports(folder: str) -> dict[str, set[str]]:
    """``{file: modules it imports}`` for every module under ``fetalgen/<folder>``."""
    found = {}
    for path in (ROOT / folder).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_generator_and_the_synthetic_set_stage_import_nothing_from_segmentation():
    for folder in ("diffusion", "synthesis"):
        for path, names in imports(folder).items():
            assert not any(n.startswith("fetalgen.segmentation") for n in names), (path, names)


def test_metrics_train_no_network_and_stay_below_the_task_packages():
    for path, names in imports("metrics").items():
        assert not any(n.startswith(("fetalgen.segmentation", "fetalgen.diffusion", "fetalgen.synthesis",
                                     "pytorch_lightning")) for n in names), (path, names)  # fmt: skip
        assert "torch.optim" not in (ROOT / path).read_text(), path


def test_one_checkpoint_reader():
    # Files that read something else with torch.load: cached embeddings, and a downloaded SAM state dict checked.
    other_files = {"segmentation/cache.py", "data/download.py"}
    for path in ROOT.rglob("*.py"):
        rel = str(path.relative_to(ROOT))
        if "torch.load(" in path.read_text() and rel != "utils/checkpoints.py":
            assert rel in other_files, f"{rel} reads a checkpoint itself: use read_run_checkpoint"
    users = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if "read_run_checkpoint(" in p.read_text()}
    for task_file in ("segmentation/predictor.py", "segmentation/finetune.py", "diffusion/train.py",
                      "diffusion/checkpoint.py", "export.py"):  # fmt: skip
        assert task_file in users, task_file
