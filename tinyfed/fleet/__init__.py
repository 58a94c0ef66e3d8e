"""A whole fleet on one machine: the demo, the monitor, the runs of the full-stack experiments.

* :mod:`tinyfed.fleet.scenario`: which board hears which words and voices (pure);
* :mod:`tinyfed.fleet.orchestrator`: starts and stops the broker, the aggregator, the virtual
  boards and their gateways, and leaves nothing behind;
* :mod:`tinyfed.fleet.recorder`: records the fleet's MQTT topics and scores every global model
  on held-out voices;
* :mod:`tinyfed.fleet.dashboard`: the live terminal view (plain ANSI, or log lines);
* :mod:`tinyfed.fleet.report`: ``global.bin``, ``metrics.json`` and the figures;
* :mod:`tinyfed.fleet.cli`: ``tinyfed demo``, ``tinyfed monitor`` and ``tinyfed plot``.
"""
