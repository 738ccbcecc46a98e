"""``python -m tests.fakellm --port 0 ...``: the fake provider as its own process.

Prints ``FAKELLM_LISTENING <port>`` once it accepts connections and runs until SIGTERM or
SIGINT, so multi-process tests and benchmarks share one server they do not run in.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from tests.fakellm.faults import FaultPlan
from tests.fakellm.server import FakeLLM


def _faults(items: list[str]) -> dict[str, float]:
    rates = {}
    for item in items:
        name, _, rate = item.partition("=")
        rates[name] = float(rate or 1.0)
    return rates


async def _main(args: argparse.Namespace) -> None:
    plan = FaultPlan(rates=_faults(args.fault), seed=args.seed, retry_after=args.retry_after)
    fake = FakeLLM(
        plan=plan,
        latency=args.latency,
        latency_jitter=args.latency_jitter,
        capacity=args.capacity,
        rpm_limit=args.rpm_limit,
        rpm_window=args.rpm_window,
        host=args.host,
        port=args.port,
    )
    await fake.start()
    print(f"FAKELLM_LISTENING {fake.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakellm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--latency-jitter", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--rpm-limit", type=int, default=None)
    parser.add_argument("--rpm-window", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--fault", action="append", default=[], help="name=rate, repeatable")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
