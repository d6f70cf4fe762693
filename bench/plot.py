"""``python -m bench.plot RESULT.json ... --out FILE.png``: latency distributions as a PNG.

One panel per result file: the cumulative distribution of every latency figure (in ms) it holds,
on a log scale, with the p50 and p99 marked. The benchmark writes the raw samples for this.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server

import matplotlib.pyplot as plt
import msgspec

from bench.report import ScenarioResult, percentile

MIN_SAMPLES = 20
"""Distributions with fewer samples are left out: their curve would say nothing."""


def latency_series(result: ScenarioResult) -> dict[str, list[float]]:
    """The result's millisecond distributions worth a curve, sorted, by label."""
    return {
        label.removesuffix(" (ms)"): sorted(values)
        for label, values in result.samples.items()
        if label.endswith("(ms)") and len(values) >= MIN_SAMPLES and min(values) > 0
    }


def plot(results: Sequence[ScenarioResult], out: Path) -> None:
    """Draw one panel per result into `out`."""
    panels = [(r, latency_series(r)) for r in results]
    panels = [(r, series) for r, series in panels if series]
    if not panels:
        raise ValueError("no latency samples in these results")
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False, layout="constrained"
    )
    for axis, (result, series) in zip(axes[:, 0], panels, strict=True):
        for label, values in series.items():
            n = len(values)
            share = [(i + 1) / n for i in range(n)]
            p50, p99 = percentile(values, 50), percentile(values, 99)
            axis.step(
                values, share, where="post", label=f"{label}: p50 {p50:.3g}, p99 {p99:.3g} ms"
            )
        axis.set_xscale("log")
        axis.set_xlabel("milliseconds (log scale)")
        axis.set_ylabel("share of samples")
        axis.axhline(0.5, color="grey", linewidth=0.5)
        axis.axhline(0.99, color="grey", linewidth=0.5)
        axis.grid(True, which="both", linewidth=0.3)
        machine = result.machine
        rate = result.params.get("rate")
        load = f", {rate:g} commands/s" if isinstance(rate, int | float) else ""
        axis.set_title(
            f"{result.scenario}{load}: {result.description}\n"
            f"{machine.cores} cores, {result.started_at}",
            fontsize=9,
        )
        axis.legend(fontsize=7, loc="lower right")
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and draw the plot."""
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    parser.add_argument("results", nargs="+", type=Path, help="result JSON files of the bench")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    results = [msgspec.json.decode(path.read_bytes(), type=ScenarioResult) for path in args.results]
    try:
        plot(results, args.out)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
