"""The ``api`` benchmark's pure parts: what it matches and what it reads from its tools.

POSTs are matched to coil writes, rests to WebSocket frames; ``wrk`` and ``redis-benchmark``
output is parsed.
"""

from __future__ import annotations

import math

import msgspec
import pytest

from bench.scenarios.api import (
    Received,
    Sent,
    arrival_delays,
    fanout_delays,
    match_writes,
    parse_redis_benchmark,
    parse_wrk,
)
from simulator.physics import Command
from simulator.server import CoilWrite
from store.types import CommandKind

pytestmark = pytest.mark.unit


def sent(barrier: int, kind: CommandKind, at: float, status: int = 202) -> Sent:
    return Sent(barrier, kind, at, at + 0.01, status, measured=True)


def write(
    seq: int, barrier: int, command: Command, at: float, rests: float | None = None
) -> CoilWrite:
    state = None if rests is None else ("opened" if command is Command.OPEN else "closed")
    return CoilWrite(seq, barrier, command, at, rests, state)


def test_each_post_takes_the_first_later_write_of_its_kind_on_its_barrier() -> None:
    posts = [
        sent(1, CommandKind.OPEN, 10.0),
        sent(2, CommandKind.OPEN, 10.1),
        sent(1, CommandKind.CLOSE, 11.0),
        sent(2, CommandKind.CLOSE, 11.1, status=503),  # refused: never written
    ]
    writes = [
        write(1, 1, Command.OPEN, 10.005),
        write(2, 2, Command.OPEN, 10.106),
        write(3, 1, Command.OPEN, 10.2),  # a retried write of the first open: skipped
        write(4, 1, Command.CLOSE, 11.004),
        write(5, 3, Command.OPEN, 11.5),  # someone else's barrier
    ]
    assert [w.seq if w else None for w in match_writes(posts, writes)] == [1, 2, 4, None]


def test_a_write_before_the_post_is_not_its_write() -> None:
    posts = [sent(1, CommandKind.OPEN, 10.0)]
    assert match_writes(posts, [write(1, 1, Command.OPEN, 9.9)]) == [None]


def test_a_rest_is_seen_by_the_first_matching_status_after_it_before_the_next_write() -> None:
    writes = [
        write(1, 1, Command.OPEN, 10.0, rests=10.3),
        write(2, 1, Command.CLOSE, 11.0, rests=11.3),
        write(3, 2, Command.OPEN, 10.0, rests=10.3),  # its opened never arrives
        write(4, 3, Command.OPEN, 10.0, rests=None),  # never comes to rest
    ]
    statuses = [
        Received(1, "opening", 10.05),
        Received(1, "opened", 10.29),  # before the rest: cannot be it
        Received(1, "opened", 10.36),
        Received(1, "opened", 10.5),
        Received(1, "closed", 11.38),
        Received(2, "opening", 10.1),
        Received(2, "opened", 12.0),
    ]
    delays = arrival_delays(writes, statuses)
    assert delays[0] == pytest.approx(0.06)
    assert delays[1] == pytest.approx(0.08)
    assert delays[2] == pytest.approx(1.7)  # no later write: the late frame still counts
    assert delays[3] is not None
    assert math.isnan(delays[3])


def test_a_rest_cut_short_by_the_next_write_is_not_awaited() -> None:
    writes = [
        write(1, 1, Command.OPEN, 10.0, rests=10.3),
        write(2, 1, Command.CLOSE, 10.2, rests=10.4),  # before the open's rest
    ]
    delays = arrival_delays(writes, [Received(1, "closed", 10.45)])
    assert delays[0] is not None
    assert math.isnan(delays[0])
    assert delays[1] == pytest.approx(0.05)


def test_a_status_after_the_next_write_belongs_to_that_write() -> None:
    writes = [
        write(1, 1, Command.OPEN, 10.0, rests=10.3),
        write(2, 1, Command.OPEN, 11.0, rests=11.0),
    ]
    delays = arrival_delays(writes, [Received(1, "opened", 11.02)])
    assert delays[0] is None
    assert delays[1] == pytest.approx(0.02)


WRK = """Running 10s test @ http://127.0.0.1:8000/barriers/1/status
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.12ms    2.34ms  55.90ms   90.00%
    Req/Sec     4.98k   300.00     5.20k    80.00%
  Latency Distribution
     50%    9.80ms
     75%   11.00ms
     90%   12.50ms
     99%  820.00us
  49800 requests in 10.00s, 12.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   4980.12
Transfer/sec:      1.20MB
"""


def test_wrk_output_is_read_with_its_units() -> None:
    result = parse_wrk(WRK)
    assert result.requests_per_second == pytest.approx(4980.12)
    assert result.percentiles_ms == pytest.approx({50: 9.8, 75: 11.0, 90: 12.5, 99: 0.82})
    assert result.max_ms == pytest.approx(55.9)
    assert (result.requests, result.errors) == (49800, 7)


def test_output_that_is_not_wrks_is_refused() -> None:
    with pytest.raises(ValueError, match="not wrk"):
        parse_wrk("wrk: command failed")


def test_redis_benchmark_csv_is_read() -> None:
    output = (
        '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",'
        '"p99_latency_ms","max_latency_ms"\n'
        '"GET","98039.22","0.270","0.080","0.263","0.375","0.511","1.039"\n'
    )
    limit = parse_redis_benchmark(output)
    assert limit["rps"] == pytest.approx(98039.22)
    assert limit["p99_latency_ms"] == pytest.approx(0.511)
    with pytest.raises(ValueError, match="redis-benchmark"):
        parse_redis_benchmark("Could not connect to Redis")


def frame(kind: str, read_at: str | None) -> bytes:
    view = {"barrier_id": 1, "status": "closed", "read_at": read_at}
    body: dict[str, object] = {"type": kind}
    if kind == "status":
        body["barrier"] = view
    elif kind == "snapshot":
        body["barriers"] = [view]
    return msgspec.json.encode(body)


def test_fanout_delays_know_a_change_by_its_read_time() -> None:
    published = [1_700_000_000.1234, 1_700_000_000.6234]
    fast = [
        (1_700_000_000.0, frame("snapshot", None)),
        (1_700_000_000.1334, frame("status", "2023-11-14T22:13:20.123400+00:00")),
        (1_700_000_000.5, frame("ping", None)),
        (1_700_000_000.6334, frame("status", "2023-11-14T22:13:20.623400+00:00")),
    ]
    slow = [(1_700_000_000.1734, frame("status", "2023-11-14T22:13:20.123400+00:00"))]
    resynced = [(1_700_000_000.7234, frame("snapshot", "2023-11-14T22:13:20.623400+00:00"))]
    delays, slowest, missed = fanout_delays(published, [fast, slow, resynced])
    assert sorted(delays) == pytest.approx([0.01, 0.01, 0.05, 0.1], abs=1e-5)
    assert sorted(slowest) == pytest.approx([0.05, 0.1], abs=1e-5)
    assert missed == 2
