"""``python -m rtml.train``: the ``rtml train`` command on its own."""

from __future__ import annotations

import argparse
import sys

from rtml.train.cli import register


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rtml.train")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *sys.argv[1:]])
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
