"""The ``capt`` command: ``capt data ...`` (datasets), ``capt run ...`` (experiments)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="capt", description=__doc__)
    parser.add_argument("command", choices=["data"], help="what to do; `capt COMMAND -h` for more")
    args, rest = parser.parse_known_args(argv[:1])
    if args.command == "data":
        from capt.data.cli import main as data_main

        return data_main(argv[1:])
    return 2  # pragma: no cover - argparse rejects anything else


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
