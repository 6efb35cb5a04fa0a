"""The import structure the layout promises: floors that import only downwards, configs read by the tasks alone, the
generator side never reaching into SAM's code, and every task reading training checkpoints through one reader."""

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
    for task_file in ("tasks/finetune.py", "tasks/train_diffusion.py", "tasks/export.py"):
        assert task_file in users, task_file
    # One rebuild: the models are rebuilt only through it, by the builders its whitelist names.
    rebuilders = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if "rebuild(" in p.read_text()}
    assert {"segmentation/predictor.py", "diffusion/checkpoint.py"} <= rebuilders
    builders = {"sam_from_checkpoint(", "unet_from_checkpoint(", "paper_lora_from_checkpoint("}
    for path in ROOT.rglob("*.py"):
        calls = [b for b in builders if b in path.read_text().replace(f"def {b}", "")]
        assert not calls, f"{path.relative_to(ROOT)} calls {calls} itself: go through rebuild"


# The floors of the package, lowest first: a package imports only from its own floor's packages' lower floors.
FLOORS = [
    {"utils", "report"},
    {"metrics"},
    {"data"},
    {"diffusion", "segmentation"},
    {"synthesis", "evaluation", "pseudo", "export"},
    {"tasks"},
    {"cli"},
]


def floor_of(package: str) -> int:
    return next(i for i, names in enumerate(FLOORS) if package in names)


def package_of(path: str) -> str:
    return path.split("/")[0].removesuffix(".py")


def test_every_package_has_a_floor_and_imports_only_from_lower_floors():
    packages = {
        package_of(str(p.relative_to(ROOT))) for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()
    }
    packages -= {"__init__", "__pycache__", "conf"}
    assert packages <= set().union(*FLOORS), packages - set().union(*FLOORS)
    for path, names in imports("").items():
        here = package_of(path)
        if here == "__init__":  # the public API: the segmenter and its loaders
            continue
        for name in names:
            if name.startswith("fetalgen.") and (there := name.split(".")[1]) != here:
                assert floor_of(there) < floor_of(here), f"{path} imports {name}: up or across from {here}"


def test_only_the_tasks_and_the_entry_points_read_hydra_configs():
    for path, names in imports("").items():
        if package_of(path) in ("tasks", "cli"):
            continue
        used = {n for n in names if n.split(".")[0] in ("hydra", "omegaconf")}
        assert not used, f"{path} imports {sorted(used)}: config reading belongs in fetalgen/tasks"


def test_evaluation_lives_in_its_own_room():
    segmentation = {str(p.relative_to(ROOT / "segmentation")) for p in (ROOT / "segmentation").glob("*.py")}
    assert not segmentation & {"evaluate.py", "finetune.py", "predict.py"}, segmentation
    assert {"engine.py", "cases.py", "box_ellipse.py"} <= {p.name for p in (ROOT / "evaluation").glob("*.py")}
