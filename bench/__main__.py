"""``python -m bench NAME [ARGS]``: run the benchmark module ``bench/NAME.py``."""

from __future__ import annotations

import importlib
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python -m bench NAME [ARGS...]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{sys.argv[1]}")
    sys.argv = [f"bench {sys.argv[1]}", *sys.argv[2:]]
    return int(module.main() or 0)


if __name__ == "__main__":
    sys.exit(main())
