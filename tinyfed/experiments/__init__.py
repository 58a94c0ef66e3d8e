"""The paper's experiments (composition layer).

* :mod:`tinyfed.experiments.board` — Fig. 5 and Fig. 6 on one board, simulated by the reference
  network;
* :mod:`tinyfed.experiments.fleet` — Fig. 5 to Fig. 8 through the full stack (virtual boards,
  gateways, Mosquitto, the aggregator), with its parts: the figures' table
  (:mod:`~tinyfed.experiments.fleet_table`), the Python replay
  (:mod:`~tinyfed.experiments.replay`), the numbers (:mod:`~tinyfed.experiments.fleet_summary`)
  and the plots (:mod:`~tinyfed.experiments.fleet_plots`);
* :mod:`tinyfed.experiments.cli` — ``tinyfed experiment``.
"""
