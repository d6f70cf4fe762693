"""``python -m simulator``: serve barrier PLCs over Modbus/TCP until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from simulator.control import ControlServer
from simulator.server import PlcListenError
from simulator.simulation import Simulator


def build_parser() -> argparse.ArgumentParser:
    """Return the command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Serve simulated barrier PLCs (profile barrier-v1) over Modbus/TCP.",
    )
    parser.add_argument("--endpoints", type=int, default=2, help="PLC endpoints (default 2)")
    parser.add_argument(
        "--barriers-per-endpoint", type=int, default=4, help="barriers per PLC (default 4)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=5020,
        metavar="FIRST_PORT",
        help="port of the first PLC, the others follow on (default 5020; 0: any free ports)",
    )
    parser.add_argument("--unit-id", type=int, default=1, help="Modbus unit id (default 1)")
    parser.add_argument(
        "--travel-time", type=float, default=3.0, help="seconds for a full stroke (default 3)"
    )
    parser.add_argument(
        "--scan-interval", type=float, default=0.05, help="seconds per PLC scan (default 0.05)"
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=8502,
        help="port of the HTTP control interface (default 8502; 0 disables it)",
    )
    parser.add_argument(
        "--map",
        type=Path,
        metavar="PATH",
        help="serve this barriers.toml instead of a uniform map",
    )
    return parser


def simulator_from(args: argparse.Namespace) -> Simulator:
    """Return the simulator the command line asks for."""
    timing = {"travel_time": args.travel_time, "scan_interval": args.scan_interval}
    if args.map is not None:
        from plc.config import load_register_map  # only --map needs the TOML loader

        return Simulator(load_register_map(args.map), **timing)
    return Simulator.uniform(
        args.endpoints,
        args.barriers_per_endpoint,
        args.host,
        port=args.port,
        unit_id=args.unit_id,
        **timing,
    )


async def serve(args: argparse.Namespace) -> None:
    """Serve the PLCs (and the control interface) until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    simulator = simulator_from(args)
    async with AsyncExitStack() as stack:
        if args.control_port:
            # Bound first: PLCs listening on OS-chosen ports (--port 0) cannot take its port.
            control = await stack.enter_async_context(
                ControlServer(simulator, args.host, args.control_port)
            )
        await stack.enter_async_context(simulator)
        for endpoint in simulator.register_map.endpoints:
            ids = [b.id for b in simulator.register_map.barriers_on(endpoint.name)]
            print(f"{endpoint.name} modbus://{endpoint.address} barriers {ids}", flush=True)
        if args.control_port:
            print(f"control {control.url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; return the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(serve(args))
    except (OSError, ValueError, PlcListenError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
