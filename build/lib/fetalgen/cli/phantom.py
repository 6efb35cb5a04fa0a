"""``fetalgen-phantom out=DIR n=64 seed=0 [height=270 width=400]``: write N phantom pairs (generic layout)."""

from __future__ import annotations

import argparse
import sys

from fetalgen.data.phantom import PHANTOM_SHAPE, write_phantom_dataset


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not value:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.lstrip("-"), value


def parse_args(argv: list[str] | None = None) -> dict:
    """Parse ``key=value`` arguments (``out`` required; ``n``, ``seed``, ``height``, ``width`` optional)."""
    parser = argparse.ArgumentParser(
        prog="fetalgen-phantom",
        description="Write N procedurally generated fetal-head phantom pairs (images/, masks/, pixel_sizes.csv, "
        "heads.csv).",
        epilog="example: fetalgen-phantom out=data/phantom n=64 seed=0",
    )
    parser.add_argument(
        "settings",
        nargs="+",
        type=_key_value,
        metavar="key=value",
        help="out=DIR (required), n=64, seed=0, height=270, width=400",
    )
    settings = dict(parser.parse_args(argv).settings)
    known = {"out", "n", "seed", "height", "width"}
    unknown = sorted(set(settings) - known)
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; valid: {sorted(known)}")
    if "out" not in settings:
        parser.error("out=DIR is required")
    try:
        return {
            "root": settings["out"],
            "n": int(settings.get("n", 64)),
            "seed": int(settings.get("seed", 0)),
            "shape": (
                int(settings.get("height", PHANTOM_SHAPE[0])),
                int(settings.get("width", PHANTOM_SHAPE[1])),
            ),
        }
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = write_phantom_dataset(**args)
    print(
        f"wrote {len(cases)} phantom pairs ({args['shape'][0]}x{args['shape'][1]}, seed {args['seed']}) "
        f"to {args['root']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
