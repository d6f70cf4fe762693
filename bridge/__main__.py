"""``python -m bridge``: run one bridge instance until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from bridge.metrics import BridgeMetrics
from bridge.service import Bridge
from bridge.settings import BridgeSettings, describe_settings, load_settings
from plc.config import RegisterMapError, load_register_map
from store.cache import StatusCache
from store.kafka import AsyncProducer
from store.postgres import BarrierStore
from store.runtime import tune_garbage_collector

log = logging.getLogger("bridge")


async def main(settings: BridgeSettings) -> int:
    """Run the bridge with `settings` until a termination signal; return the exit status."""
    try:
        register_map = load_register_map(settings.register_map)
    except RegisterMapError as exc:
        log.error("%s", exc)
        return 2
    metrics = BridgeMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    producer = AsyncProducer(settings.kafka_bootstrap)
    store = await BarrierStore.open(settings.database_url)
    cache = StatusCache(settings.redis_url, namespace=settings.cache_namespace)
    bridge = Bridge(settings, register_map, store, cache, producer, metrics=metrics)
    status = 0
    try:
        await bridge.start()
        log.info(
            "bridge %s: %d barriers on %d endpoints, %d partitions",
            settings.instance_id,
            len(register_map.barriers),
            len(register_map.endpoints),
            bridge.partitions,
        )
        stopped = asyncio.create_task(stopping.wait())
        crashed = asyncio.create_task(bridge.crashed.wait())
        await asyncio.wait({stopped, crashed}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        crashed.cancel()
        if bridge.crashed.is_set():
            # Uncommitted commands go to the next owner (or to this one restarted), which
            # resumes them from PostgreSQL.
            log.critical("stopping after an internal error")
            status = 1
        else:
            log.info("stopping: finishing commands in flight")
    finally:
        await bridge.stop()
        producer.close()
        await cache.close()
        await store.close()
    return status


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line (only --help: settings come from the environment) and run."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge",
        description="Consume barrier commands from Kafka, drive the PLCs over Modbus/TCP and "
        "record confirmed outcomes in PostgreSQL and Redis.",
        epilog=describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"bad setting: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    tune_garbage_collector()
    return asyncio.run(main(settings))


if __name__ == "__main__":
    sys.exit(cli())
