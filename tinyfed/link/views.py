"""What the generated link messages (:mod:`tinyfed.link.messages`) add to their fields.

The messages are generated from :mod:`tinyfed.link.spec`; the few derived properties a reader
of a board's frames wants (a HELLO's board id in hex, a LOSS's detected class, a LOG's text)
are written here once, as mixins the generator names as bases (``gen.VIEWS``). The field
annotations below only tell the type checker what the generated dataclass provides.
"""

from __future__ import annotations

import numpy as np

from tinyfed import model
from tinyfed.link import spec


class HelloView:
    """A board's HELLO: who it is, what it runs, and where its model stands."""

    boot_id: int
    board_id: bytes
    fw_version: tuple[int, int, int]
    pipeline: int
    flags: int

    @property
    def board_hex(self) -> str:
        return self.board_id.hex()

    @property
    def boot_hex(self) -> str:
        return f"{self.boot_id:08x}"

    @property
    def firmware(self) -> str:
        return ".".join(str(v) for v in self.fw_version)

    @property
    def virtual(self) -> bool:
        return bool(self.flags & 1)

    @property
    def pipeline_name(self) -> str:
        try:
            return spec.PipelineId(self.pipeline).name.lower()
        except ValueError:
            return f"pipeline-{self.pipeline}"


class LossView:
    """LOSS: one training step (loss and outputs computed before the step's update)."""

    outputs: tuple[float, float, float]

    @property
    def prediction(self) -> int | None:
        """The class whose output is highest and above the detection threshold, else None."""
        best = int(np.argmax(self.outputs))
        return best if self.outputs[best] > model.DETECTION_THRESHOLD else None


class LogView:
    """LOG: a line the board logged (level 0 debug .. 3 error)."""

    tail: str

    @property
    def text(self) -> str:
        return self.tail
