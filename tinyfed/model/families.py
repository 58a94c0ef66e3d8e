"""The model families a fleet can run (docs/learning.md, the table at the top).

A fleet has exactly one family; the board names it in its HELLO (the link's ``arch`` id), every
MQTT model payload in its ``arch`` string, and the aggregator's store with every global model.
:class:`Family` says what each one moves in a round (``n_params`` float32, ``model_bytes``),
which feature pipelines it accepts, and how a new fleet's first global model is made.
Look one up with :func:`by_name` (``--model``), :func:`by_arch_id` (a board's HELLO) or
:func:`by_arch` (an MQTT payload); an unknown value is a :class:`~tinyfed.errors.ModelError`
that names it and lists the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed import model
from tinyfed.errors import ModelError

F32 = model.F32

DSCNN_EMBED = 64  #: the dscnn extractor's embedding: the head's inputs (docs/learning.md, 2)
DSCNN_CLASSES = 3  #: the board's three buttons (docs/learning.md, the table: K = 3)
DSCNN_LR = 0.01  #: the head's learning rate (tinyfed.model.dscnn.head.DEFAULT_LR)


@dataclass(frozen=True)
class Family:
    """One model family: what a board runs and what moves in a round."""

    name: str  #: ``--model``: ``paper`` or ``dscnn``
    arch_id: int  #: the link's ``ArchId`` (HELLO ``arch``)
    arch: str  #: the MQTT contract's ``arch`` string
    pipelines: tuple[str, ...]  #: the feature pipelines its boards may compute
    pipeline: str  #: the fleet's default feature pipeline (``--pipeline`` absent)
    n_params: int  #: float32 values that move in a round
    init_schemes: tuple[str, ...]  #: first global models it can make (the first is the default)
    lr: float  #: the boards' default learning rate
    momentum: float  #: the boards' default momentum
    description: str

    @property
    def model_bytes(self) -> int:
        """Bytes of one model: the file, the link transfer, the MQTT ``params`` field."""
        return 4 * self.n_params

    @property
    def default_scheme(self) -> str:
        """The first global model of a new fleet without ``--init``."""
        return self.init_schemes[0]

    def init(self, seed: int = model.DEFAULT_SEED, scheme: str | None = None) -> F32:
        """A new fleet's first global model (``scheme`` None: :attr:`default_scheme`)."""
        scheme = self.default_scheme if scheme is None else scheme
        if scheme not in self.init_schemes:
            raise ModelError(
                f"family {self.name!r} has no init scheme {scheme!r} "
                f"(it has: {', '.join(self.init_schemes)})"
            )
        if self.name == "paper":
            return model.init_params(seed, scheme)
        return np.zeros(self.n_params, np.float32)  # dscnn: "a new head starts at zeros"

    def check(self, params: npt.NDArray[np.generic]) -> F32:
        """``params`` as this family's float32 vector, or :class:`ModelError` naming why."""
        try:
            return model.check_params(params, self.n_params)
        except ModelError as exc:
            raise ModelError(f"{exc} ({self.name} family, {self.arch})") from None

    def to_bytes(self, params: F32) -> bytes:
        """The model's little-endian float32 bytes, checked against this family."""
        return model.to_bytes(self.check(params), self.n_params)

    def from_bytes(self, data: bytes) -> F32:
        """Parse ``model_bytes`` bytes of this family (see :func:`tinyfed.model.from_bytes`)."""
        try:
            return model.from_bytes(data, self.n_params)
        except ModelError as exc:
            raise ModelError(f"{exc} ({self.name} family, {self.arch})") from None

    def load(self, path: str | Path) -> F32:
        """Read a model file of this family, naming the file in any error."""
        try:
            return model.load(path, self.n_params)
        except ModelError as exc:
            raise ModelError(f"{exc} ({self.name} family, {self.arch})") from None


PAPER = Family(
    name="paper",
    arch_id=1,  # tinyfed.link.spec.ArchId.FC650_16_3
    arch=model.ARCH_ID,
    pipelines=("paper", "centroid"),
    pipeline="centroid",  # tinyfed.features.pipelines.DEFAULT_PIPELINE (docs/features.md)
    n_params=model.N_PARAMS,
    init_schemes=("scaled", "paper"),
    lr=model.DEFAULT_LR,
    momentum=model.DEFAULT_MOMENTUM,
    description="the paper's 650-16-3 sigmoid network; all 10,467 parameters move",
)

DSCNN = Family(
    name="dscnn",
    arch_id=2,  # tinyfed.link.spec.ArchId.DSCNN_HEAD
    arch="dscnn64-head-v1",  # tinyfed.model.dscnn.modelfile.ARCH
    pipelines=("logmel40",),
    pipeline="logmel40",
    n_params=DSCNN_CLASSES * DSCNN_EMBED + DSCNN_CLASSES,
    init_schemes=("zeros",),
    lr=DSCNN_LR,
    momentum=0.0,  # the head trains by plain SGD (docs/learning.md, 3)
    description="frozen int8 DS-CNN extractor + on-board softmax head; only the 195-float "
    "head moves",
)

#: Every family, by name, in the order tools list them.
FAMILIES: dict[str, Family] = {f.name: f for f in (PAPER, DSCNN)}


def _known() -> str:
    return ", ".join(f"{f.name} (arch {f.arch_id}, {f.arch})" for f in FAMILIES.values())


def by_name(name: str) -> Family:
    """The family called ``name`` (``--model``)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unknown model family {name!r}; known: {_known()}") from None


def by_arch_id(arch_id: int) -> Family:
    """The family of a board's HELLO ``arch`` id."""
    for f in FAMILIES.values():
        if f.arch_id == arch_id:
            return f
    raise ModelError(f"unknown architecture id {arch_id!r}; known: {_known()}")


def by_arch(arch: str) -> Family:
    """The family of an MQTT ``arch`` string."""
    for f in FAMILIES.values():
        if f.arch == arch:
            return f
    raise ModelError(f"unknown architecture {arch!r}; known: {_known()}")


def by_size(n_bytes: int) -> Family:
    """The family whose model file is ``n_bytes`` long (``tinyfed model info``)."""
    for f in FAMILIES.values():
        if f.model_bytes == n_bytes:
            return f
    sizes = ", ".join(f"{f.name} {f.model_bytes:,} bytes" for f in FAMILIES.values())
    raise ModelError(f"a model of {n_bytes:,} bytes belongs to no family ({sizes})")


def check_params(family: Family, params: npt.NDArray[np.generic]) -> F32:
    """``params`` as ``family``'s float32 vector (shape, dtype, finite values), or ModelError."""
    return family.check(params)
