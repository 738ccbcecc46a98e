"""A chaos-suite worker process: ``python -m tests.chaos.worker_app``.

Exactly the production node: ``run_worker`` with no handler builds the chaishu handler
(LLM extractor on the configured providers — the fake server — and the rules extractor),
supervises the pipeline duties and closes everything at the end. Settings come from the
environment.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from kgworker.chaishu.node import run_worker
from kgworker.config import load_settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    return asyncio.run(run_worker(load_settings(dotenv_path=None)))


if __name__ == "__main__":
    sys.exit(main())
