"""tinyfed: federated keyword spotting for microcontrollers.

The shared package holds what several services use: the MQTT contract
(:mod:`tinyfed.contract`), the device link protocol (:mod:`tinyfed.link`), the paper's
features (:mod:`tinyfed.features`) and network (:mod:`tinyfed.model`), the keyword corpus
(:mod:`tinyfed.data`) and the command line (:mod:`tinyfed.cli`).
"""

__version__ = "0.1.0"
