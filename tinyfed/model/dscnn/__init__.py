"""The ``dscnn`` model family (docs/learning.md, sections 2-3): a frozen int8 extractor and an
on-board float32 softmax head.

* :mod:`~tinyfed.model.dscnn.quant` — the integer rules (requantisation, multipliers);
* :mod:`~tinyfed.model.dscnn.extractor` — the int8 :class:`Extractor` and its float twin;
* :mod:`~tinyfed.model.dscnn.quantise` — float parameters + calibration -> :class:`Extractor`;
* :mod:`~tinyfed.model.dscnn.modelfile` — ``NAME.bin`` / ``NAME.json``;
* :mod:`~tinyfed.model.dscnn.head` — the head, the replay store, augmentation, ``record()``;
* :mod:`~tinyfed.model.dscnn.vectors` — the shared vectors ``vectors/dscnn/``;
* :mod:`~tinyfed.model.dscnn.firmware_gen` — the firmware's generated tables.
"""

from tinyfed.model.dscnn.extractor import Extractor, forward_float
from tinyfed.model.dscnn.head import Learner
from tinyfed.model.dscnn.modelfile import ARCH as ARCH_ID, load, save
from tinyfed.model.dscnn.quantise import quantise

__all__ = ["ARCH_ID", "Extractor", "Learner", "forward_float", "load", "quantise", "save"]
