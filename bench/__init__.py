"""Benchmark harness: measure the PLC layer and the bridge honestly, print a table, write JSON.

``python -m bench [--quick] [SCENARIO ...]`` starts what each scenario needs (simulator and
bridge as child processes, embedded Kafka/PostgreSQL/Redis on free loopback ports), measures,
stops everything, prints one table per scenario and writes ``bench/results/<scenario>.json``
(``<scenario>-quick.json`` for ``--quick``; ``--label X`` appends ``-X``). ``--list`` names the
scenarios and their parameters, ``--set SCENARIO.PARAM=VALUE`` changes one (e.g.
``--set 'bridge.poll_barriers=[1000,5000]'``). Service data and logs go to ``.stack/bench/``.
Scenarios live in `bench.scenarios`, one module each.
"""
