"""Help pages made from the configs themselves: ``fetalgen-<command> --help`` and ``fetalgen --help``.

A primary config (``conf/<task>.yaml``) opens with comment lines: the command's purpose, then examples (lines
that start with the command's name) and what it writes. The help page shows them, the config groups this
command composes with the options of each, and the config's own settings with their defaults and comments.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

# Every command, in the order of the pipeline: (console script, primary config or None for a plain argparse tool).
COMMANDS = [
    ("fetalgen-split", "split"),
    ("fetalgen-train-diffusion", "train_diffusion"),
    ("fetalgen-sample", "sample"),
    ("fetalgen-finetune", "finetune"),
    ("fetalgen-pseudo-label", "pseudo_label"),
    ("fetalgen-evaluate", "evaluate"),
    ("fetalgen-predict", "predict"),
    ("fetalgen-export", "export"),
    ("fetalgen-report", None),
    ("fetalgen-download", None),
    ("fetalgen-phantom", None),
]
OTHER_PURPOSES = {
    "fetalgen-phantom": "procedurally generated phantom pairs, for trying the pipeline without data",
    "fetalgen-report": "tables and charts of a finished sweep (fetalgen-report <multirun folder>)",
    "fetalgen-download": "HC18 from Zenodo and the official SAM weights, checksums verified",
}


def header(text: str) -> list[str]:
    """The leading comment lines of a config, without their ``#``."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].rstrip()[1:] if line[1:2] == " " else line[1:].rstrip())
    return lines


def purpose(config: Path) -> str:
    """The first sentence of a config's header, without the command name."""
    first = header(config.read_text())[0] if config.is_file() else ""
    return first.split(":", 1)[1].strip() if ":" in first else first


def groups(config: Path, conf_dir: Path) -> list[str]:
    """``group: default  (option, option, ...)`` for each config group the primary config composes."""
    out = []
    for entry in yaml.safe_load(config.read_text()).get("defaults", []):
        if not isinstance(entry, dict):
            continue
        for key, default in entry.items():
            group = key.split("@")[0].removeprefix("optional ").strip()
            if group in ("hydra", "paths", "local"):
                continue
            root = conf_dir / group
            options = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
            if isinstance(default, str) and "/" in default:  # model: sam/tiny -> the sam/ options only
                options = [o for o in options if o.startswith(default.rsplit("/", 1)[0] + "/")]
            options = [o for o in options if not Path(o).name.startswith("_")]
            name = key.split("@")[1] if "@" in key else group
            shown = "null" if default is None else default
            out.append(f"  {name}: {shown}  ({', '.join(options)})")
    return out


def settings(config: Path) -> list[str]:
    """The config's own settings: its lines after the defaults list, comments and defaults as written."""
    lines = config.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("defaults:")), -1) + 1
    while start < len(lines) and (
        lines[start].startswith(" ") or lines[start].startswith("#") or not lines[start]
    ):
        start += 1
    return [f"  {line}" if line else "" for line in lines[start:]]


def command_help(config_name: str, conf_dir: Path) -> str:
    """The help page of the command whose primary config is ``conf/<config_name>.yaml``."""
    config = conf_dir / f"{config_name}.yaml"
    top = header(config.read_text())
    name = top[0].split(":", 1)[0] if top else config_name
    examples = [line for line in top[1:] if line.strip().startswith(name) or line.startswith("    ")]
    notes = [line.strip() for line in top[1:] if line not in examples]
    page = [top[0] if top else name, ""]
    if examples:
        page += ["Examples:", *(f"  {line.strip()}" for line in examples), ""]
    page += notes + ([""] if notes else [])
    page += ["Config groups (group=option; the default first):", *groups(config, conf_dir), ""]
    page += ["Settings (key=value; the defaults):", *settings(config), ""]
    page += [f"The whole composed config: {name} --cfg job. Every command: fetalgen --help. Hydra's own flags: "
             f"{name} --hydra-help."]  # fmt: skip
    return "\n".join(page)


def hydra_template(config_name: str) -> str:
    """:func:`command_help` escaped for Hydra's help template (a ``string.Template``: ``$`` is special)."""
    from fetalgen.cli import config_dir

    return re.sub(r"\$", "$$", command_help(config_name, config_dir()))


def main(argv: list[str] | None = None) -> int:
    """``fetalgen``: the list of commands and what each is for."""
    from fetalgen.cli import config_dir

    argv = sys.argv[1:] if argv is None else argv
    conf = config_dir()
    print("fetalgen: few labelled fetal-head ultrasound images -> synthetic pairs -> a fine-tuned SAM.\n")
    print("Commands (each has --help with its settings and examples):")
    for script, config in COMMANDS:
        text = purpose(conf / f"{config}.yaml") if config else OTHER_PURPOSES[script]
        print(f"  {script:<25} {text}")
    print("\nFrom Python: from fetalgen import load_segmenter. The pipeline at once: make demo.")
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    raise SystemExit(main())
