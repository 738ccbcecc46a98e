"""A production node for the fallback test: ``python -m tests.llm.fallback_worker``.

``run_worker`` with no handler: the chaishu handler with ``LLMExtractor`` for AI providers
and the rules extractor for ``rules``, plus the supervised pipeline duties (which run the
fallback mover). Settings come from the environment.
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
