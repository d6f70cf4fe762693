"""``python -m api``: serve the API with uvicorn, or ``python -m api hash-token TOKEN``."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from api.app import create_app
from api.auth import TokenConfigError, hash_token
from api.settings import describe_settings, load_settings
from store.runtime import tune_garbage_collector


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line and serve (settings come from ``API_*`` variables)."""
    parser = argparse.ArgumentParser(
        prog="python -m api",
        description="Serve the barrier bridge's REST and WebSocket API.",
        epilog=describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    hashing = sub.add_parser("hash-token", help="print the SHA-256 of a token for API_TOKENS")
    hashing.add_argument("token")
    args = parser.parse_args(argv)
    if args.command == "hash-token":
        print(hash_token(args.token).hex())
        return 0
    try:
        settings = load_settings()
        app = create_app(settings)
    except (ValueError, TokenConfigError) as exc:
        print(f"bad setting: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    tune_garbage_collector()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli())
