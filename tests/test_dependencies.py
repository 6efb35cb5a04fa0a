"""The version floors of pyproject.toml match what the code uses (read from the code, no install needed)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CODE = "\n".join(p.read_text() for p in (ROOT / "fetalgen").rglob("*.py"))

# (package, the first release with the feature, a pattern of the code that uses it)
FEATURES = [
    ("albumentations", (2, 0), r"std_range=|fill_mask=|num_holes_range="),  # the 2.x argument names
    ("albumentations", (1, 4), r"A\.Compose\([^)]*seed="),
    ("torch", (2, 6), r"torch\.load\("),  # weights_only=True by default
]
# torchvision releases built against a torch release (torchvision's README table)
TORCHVISION_FOR_TORCH = {(2, 6): (0, 21), (2, 7): (0, 22), (2, 8): (0, 23), (2, 9): (0, 24)}


def floors() -> dict[str, tuple[int, ...]]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = {}
    for dep in deps:
        name, version = re.fullmatch(
            r"([A-Za-z0-9_.-]+)(?:>=|==)([0-9.]+)(?:,<[0-9.]+)?", dep.split(";")[0].strip()
        ).groups()
        found[name] = tuple(int(v) for v in version.split("."))
    return found


@pytest.mark.parametrize(("package", "needed", "pattern"), FEATURES)
def test_a_floor_admits_no_release_without_a_feature_the_code_uses(package, needed, pattern):
    assert re.search(pattern, CODE), f"the code no longer uses {pattern!r}: drop this rule"
    assert floors()[package][: len(needed)] >= needed, f"{package}>={'.'.join(map(str, needed))} is needed"


def test_torchvision_floor_pairs_with_the_torch_floor():
    found = floors()
    assert found["torchvision"][:2] == TORCHVISION_FOR_TORCH[found["torch"][:2]]
