"""``python -m kgworker`` is the ``kgworker`` command."""

from kgworker.cli import main

if __name__ == "__main__":
    main()
