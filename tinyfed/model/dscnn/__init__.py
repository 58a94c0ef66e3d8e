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

ARCH_ID = "dscnn64-head-v1"  #: the family's arch string (docs/learning.md, the table)
