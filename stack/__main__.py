"""``python -m stack``: run the whole system locally (what ``./dev up`` does)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from stack.launcher import Stack, StackOptions, check


def parse(argv: list[str] | None) -> tuple[StackOptions, bool]:
    """Options from the command line, and whether to run the end-to-end check and exit."""
    parser = argparse.ArgumentParser(
        prog="python -m stack",
        description="Start a Kafka-protocol broker, PostgreSQL, Redis, the PLC simulator, the "
        "bridge and the API on loopback; Ctrl-C stops everything. All but the API take free "
        "ports; the address of everything is in DATA/stack.json while it runs.",
    )
    parser.add_argument("--data", type=Path, default=Path(".stack"), help="data folder (.stack)")
    parser.add_argument("--endpoints", type=int, default=2, help="simulated PLCs (2)")
    parser.add_argument("--barriers-per-endpoint", type=int, default=4, help="barriers per PLC (4)")
    parser.add_argument("--travel-time", type=float, default=3.0, help="seconds per stroke (3)")
    parser.add_argument("--api-port", type=int, default=8000, help="API port (8000)")
    parser.add_argument("--kafka", help="use this Kafka (bootstrap servers) instead of Tansu")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one")
    parser.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    parser.add_argument(
        "--check", action="store_true", help="start, open barrier 1 end to end, stop, exit 0"
    )
    args = parser.parse_args(argv)
    options = StackOptions(
        data=args.data.resolve(),
        endpoints=args.endpoints,
        barriers_per_endpoint=args.barriers_per_endpoint,
        travel_time=args.travel_time,
        api_port=args.api_port,
        kafka=args.kafka,
        database_url=args.database_url,
        redis_url=args.redis_url,
    )
    return options, args.check


async def main(options: StackOptions, run_check: bool) -> int:
    """Start the stack; serve until a signal (or run the check); stop everything."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    stack = Stack(options)
    try:
        info = await stack.start()
        print(
            f"\nbarrier bridge is up\n"
            f"  dashboard      {info.dashboard_url}\n"
            f"  API            {info.api_url}  (docs {info.api_url}/schema)\n"
            f"  operator token {info.tokens['operator']}\n"
            f"  viewer token   {info.tokens['viewer']}\n"
            f"  simulator      {', '.join(info.simulator_endpoints.values())}"
            f"  (control {info.simulator_control_url})\n"
            f"  addresses of everything: {options.data / 'stack.json'}\n"
            f"Ctrl-C stops it all.\n",
            flush=True,
        )
        if run_check:
            await check(info)
            print(
                "check passed: barrier 1 opened through the API, the bridge and the PLC", flush=True
            )
            return 0
        await stopping.wait()
        return 0
    except RuntimeError as exc:
        print(f"failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("stopping...", flush=True)
        await stack.close()


def cli(argv: list[str] | None = None) -> int:
    """Run ``python -m stack``."""
    options, run_check = parse(argv)
    return asyncio.run(main(options, run_check))


if __name__ == "__main__":
    sys.exit(cli())
