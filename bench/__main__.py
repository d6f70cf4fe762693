"""``python -m bench``: run benchmark scenarios, print their tables, write their JSON results."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from bench.harness import Scenario, run_scenario
from bench.report import render, write_json
from bench.scenarios import SCENARIOS

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PACKAGE_DIR / "results"
DEFAULT_WORK = PACKAGE_DIR.parent / ".stack" / "bench"

EXIT_PROBLEMS = 2
"""Exit status when a scenario failed or broke an invariant (never for a slow figure)."""
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """Return the command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run benchmark scenarios against real processes on 127.0.0.1; print a "
        "table per scenario and write its results as JSON.",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"scenarios to run (default: all of {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke test in well under a minute"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SCENARIO.PARAM=VALUE",
        help="override one parameter, e.g. plc.loop_seconds=5 or bridge.poll_barriers=[1000,2000]",
    )
    parser.add_argument(
        "--label",
        default="",
        help="suffix of the result file and work directory names, e.g. a ladder of sizes",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"directory of the JSON results (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        help=f"directory for service data and logs, emptied per scenario (default {DEFAULT_WORK})",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the scenarios and their parameters, then exit"
    )
    return parser


def _overrides(items: Sequence[str]) -> dict[str, dict[str, str]]:
    parsed: dict[str, dict[str, str]] = {}
    for item in items:
        target, equals, value = item.partition("=")
        scenario, dot, param = target.partition(".")
        if not (equals and dot and param):
            raise ValueError(f"--set {item!r}: expected SCENARIO.PARAM=VALUE")
        if scenario not in SCENARIOS:
            raise ValueError(f"--set {item!r}: no scenario {scenario!r}")
        parsed.setdefault(scenario, {})[param] = value
    return parsed


def describe(scenario: Scenario[Any]) -> str:
    """A scenario's name, description and parameters (full and quick sizes)."""
    full = msgspec.to_builtins(scenario.params())
    quick = msgspec.to_builtins(scenario.quick)
    lines = [f"{scenario.name}: {scenario.description}"]
    lines += [f"    {key} = {value!r}  (quick: {quick[key]!r})" for key, value in full.items()]
    return "\n".join(lines)


async def run_all(
    chosen: Sequence[Scenario[Any]], params: Sequence[msgspec.Struct], args: argparse.Namespace
) -> int:
    """Run each scenario in turn; print and write its result; return the exit status."""
    status = 0
    for scenario, scenario_params in zip(chosen, params, strict=True):
        name = "-".join(n for n in (scenario.name, "quick" * args.quick, args.label) if n)
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = await run_scenario(scenario, scenario_params, args.work / name, quick=args.quick)
        path = args.out / f"{name}.json"
        write_json(result, path)
        print(render(result))
        print(f"results: {path}\n", flush=True)
        if result.problems:
            status = EXIT_PROBLEMS
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    args = build_parser().parse_args(argv)
    if args.list:
        print("\n\n".join(describe(s) for s in SCENARIOS.values()))
        return 0
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 1
    chosen = [SCENARIOS[s] for s in args.scenarios or SCENARIOS]
    try:
        overrides = _overrides(args.overrides)
        params = [s.parameters(args.quick, overrides.get(s.name, {})) for s in chosen]
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(run_all(chosen, params, args))
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
