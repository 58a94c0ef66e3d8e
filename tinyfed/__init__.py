"""tinyfed: federated keyword spotting for microcontrollers.

The one import package, in three layers whose imports only point down (README, "Layers";
checked by ``tests/test_layers.py``):

* library: the MQTT contract (:mod:`tinyfed.mqtt.contract`) and session helpers
  (:mod:`tinyfed.mqtt.session`), the device link protocol with its transports (:mod:`tinyfed.link`),
  the paper's features (:mod:`tinyfed.features`) and network (:mod:`tinyfed.model`), the
  keyword corpus (:mod:`tinyfed.data`), errors;
* services: :mod:`tinyfed.aggregator` and :mod:`tinyfed.gateway` (symlinks to the top-level
  ``aggregator/`` and ``gateway/`` folders; peers that never import each other), and the test
  and demo infrastructure :mod:`tinyfed.testbed`;
* composition: the command line (:mod:`tinyfed.cli`), the simulated fleet (:mod:`tinyfed.fleet`),
  the experiments, the benchmarks (:mod:`tinyfed.bench`, a symlink to ``bench/``) and the
  deployment tooling.
"""

__version__ = "0.1.0"
