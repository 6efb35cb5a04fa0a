"""``fetalgen-report <runs dir>``: tables and charts from any sweep (e.g. a Hydra multirun directory)."""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs_dir", help="directory holding runs (each with metrics.json and .hydra/)")
    parser.add_argument("--out", default=None, help="output directory (default: <runs_dir>/report)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from fetalgen.report.build import build_report  # after parsing: --help stays quick

    report = build_report(args.runs_dir, args.out)
    print(f"Report: {report}")


if __name__ == "__main__":
    main()
