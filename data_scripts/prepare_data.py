#!/usr/bin/env python
"""Prepare one real dataset of the protocol: download, verify (sha256/md5), extract safely, lay out.

    python data_scripts/prepare_data.py DATASET --root DATA [--mirror URL] [--keep-archives]

DATASET is one of imagenet, caltech101, oxford_pets, stanford_cars, oxford_flowers, food101,
fgvc_aircraft, sun397, dtd, eurosat, ucf101, imagenet_v2, imagenet_sketch, imagenet_a, imagenet_r,
or ``all``. The files land where CoOp's DATASETS.md puts them (see book/appendix_data.md).
ImageNet needs a login: for it the script fetches classnames.txt and prints the manual steps.
This is the same code as ``capt data prepare``; exit status 0 when the dataset is ready.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from capt.data.cli import add_prepare_arguments, cmd_prepare

    parser = argparse.ArgumentParser(prog="prepare_data.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_prepare_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return cmd_prepare(args)


if __name__ == "__main__":
    raise SystemExit(main())
