"""Feature pipelines: one second of 16 kHz int16 audio -> 650 float32 features.

* :mod:`tinyfed.features.mfcc` — the paper's Edge Impulse MFCC, stage by stage.
* :mod:`tinyfed.features.align` — the energy-centroid alignment stage (beyond the paper).
* :mod:`tinyfed.features.pipelines` — named, versioned pipelines (``paper`` id 1,
  ``centroid`` id 2) and :data:`~tinyfed.features.pipelines.DEFAULT_PIPELINE`.
* :mod:`tinyfed.features.cli` — the ``tinyfed features`` command.
"""

from tinyfed.features.pipelines import (
    DEFAULT_PIPELINE,
    PAPER,
    PIPELINES,
    Pipeline,
    fit_length,
    get_pipeline,
)

__all__ = ["DEFAULT_PIPELINE", "PAPER", "PIPELINES", "Pipeline", "fit_length", "get_pipeline"]
