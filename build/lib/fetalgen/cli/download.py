"""``fetalgen-download hc18 --out data/hc18`` and ``fetalgen-download sam --model vit_b --out checkpoints``."""

from __future__ import annotations

import argparse
import logging
import sys

from fetalgen.data.download import (
    SAM_BASE_URL,
    SAM_CHECKPOINTS,
    ZENODO_RECORD_URL,
    DownloadError,
    download_hc18,
    download_sam,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetalgen-download",
        description="Download data and weights, with checksums; present files are not fetched again.",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    hc18 = sub.add_parser(
        "hc18", help="the HC18 release from Zenodo (record 1327317), in the official layout"
    )
    hc18.add_argument("--out", default="data/hc18", help="target folder (default: data/hc18)")
    hc18.add_argument("--record-url", default=ZENODO_RECORD_URL, help="Zenodo record API URL")
    sam = sub.add_parser("sam", help="an official Segment Anything checkpoint")
    sam.add_argument("--model", default="vit_b", choices=sorted(SAM_CHECKPOINTS))
    sam.add_argument("--out", default="checkpoints", help="target folder (default: checkpoints)")
    sam.add_argument("--base-url", default=SAM_BASE_URL)
    for p in (hc18, sam):
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.what == "hc18":
            path = download_hc18(args.out, record_url=args.record_url, progress=not args.no_progress)
        else:
            path = download_sam(args.model, args.out, base_url=args.base_url, progress=not args.no_progress)
    except DownloadError as err:
        print(f"fetalgen-download: error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
