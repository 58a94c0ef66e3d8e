"""The aggregator service: rounds, FedAvg and robust strategies, persistence, MQTT.

The layout follows the layers of the service, from pure maths to I/O:

* :mod:`aggregator.strategies` — aggregation as pure functions on float32 arrays, plus the
  per-round accumulator (streaming for FedAvg/FedAvgM);
* :mod:`aggregator.rounds` — the round state machine (no sockets, injected clock);
* :mod:`aggregator.store` — SQLite persistence (rounds, participants, rejections, metrics,
  every global model);
* :mod:`aggregator.service` — the thin MQTT shell around the machine and the store;
* :mod:`aggregator.settings` — the one validated settings object;
* :mod:`aggregator.cli` and :mod:`aggregator.bench` — ``tinyfed aggregator`` and
  ``tinyfed bench aggregate``.
"""
