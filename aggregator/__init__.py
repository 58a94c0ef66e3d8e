"""The aggregator service: rounds, FedAvg and robust strategies, persistence, MQTT.

The layout follows the layers of the service, from pure maths to I/O:

* :mod:`tinyfed.aggregator.strategies` — aggregation as pure functions on float32 arrays, plus the
  per-round accumulator (streaming for FedAvg/FedAvgM);
* :mod:`tinyfed.aggregator.rounds` — the round state machine (no sockets, injected clock);
* :mod:`tinyfed.aggregator.store` — SQLite persistence (rounds, participants, rejections, metrics,
  every global model);
* :mod:`tinyfed.aggregator.service` — the thin MQTT shell around the machine and the store;
* :mod:`tinyfed.aggregator.settings` — the one validated settings object;
* :mod:`tinyfed.aggregator.cli` and :mod:`tinyfed.bench.aggregate` — ``tinyfed aggregator`` and
  ``tinyfed bench aggregate``.
"""
