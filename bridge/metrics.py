"""Prometheus metrics of one bridge process, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)
POLL_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2)


class BridgeMetrics:
    """Command outcomes, latencies, poll round trips, link states and consumer lag."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.outcomes = Counter(
            "bridge_commands_total",
            "Commands that reached a terminal state, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "bridge_dead_letters_total",
            "Command records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.consumed_to_written = Histogram(
            "bridge_command_consumed_to_written_seconds",
            "From consuming a command to its request coil written on the PLC.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.written_to_confirmed = Histogram(
            "bridge_command_written_to_confirmed_seconds",
            "From the coil written to the PLC confirming the end position.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.poll_cycle = Histogram(
            "bridge_poll_cycle_seconds",
            "Round trip of one poll cycle of one PLC endpoint.",
            ["endpoint"],
            buckets=POLL_BUCKETS,
            registry=self.registry,
        )
        self.link_up = Gauge(
            "bridge_plc_link_up",
            "1 while the PLC endpoint answers, 0 while its link is down.",
            ["endpoint"],
            registry=self.registry,
        )
        self.missed_cycles = Gauge(
            "bridge_poll_missed_cycles",
            "Poll cycles of the endpoint that could not start on time, since the bridge started.",
            ["endpoint"],
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "bridge_consumer_lag",
            "Command records not yet committed, per assigned partition.",
            ["partition"],
            registry=self.registry,
        )
        self.owned_barriers = Gauge(
            "bridge_owned_barriers",
            "Barriers this instance polls and drives.",
            registry=self.registry,
        )
        self.running_commands = Gauge(
            "bridge_running_commands",
            "Commands executing now.",
            registry=self.registry,
        )

    def serve(self, port: int) -> None:
        """Expose the metrics over HTTP on `port` (all interfaces, for a scraper)."""
        start_http_server(port, registry=self.registry)
