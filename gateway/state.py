"""The gateway's decisions: from what it was told, the next thing to do (no I/O).

:class:`BridgeState` decides, from the retained global model, the board's HELLO and LOSS
events and what was pushed and uploaded, the next thing to do: push the global model down
(:class:`Push`), pull the board's model up (:class:`Pull`), or nothing. It has no sockets and is
tested alone; :class:`~tinyfed.gateway.bridge.Bridge` carries its decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyfed.errors import ModelError
from tinyfed.link.client import Hello, LossReport
from tinyfed.model import families
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import GlobalModel


def family_name(arch: str) -> str:
    """``arch`` as people say it: ``the dscnn family (dscnn64-head-v1)``, or the bare string."""
    try:
        return f"the {families.by_arch(arch).name} family ({arch})"
    except ModelError:
        return f"an unknown family ({arch})"


def default_worker_id(hello: Hello) -> str:
    """The worker id of a board that was given none: stable across its reboots."""
    return f"board-{hello.board_hex}"


@dataclass(frozen=True)
class Held:
    """The global model the gateway put on the board in its current boot."""

    boot_id: int
    round: int
    sha256: str
    local_steps: int


@dataclass(frozen=True)
class Push:
    """Download this global model (and its hyper-parameters) to the board."""

    model: GlobalModel


@dataclass(frozen=True)
class Pull:
    """Upload the board's model: it has done its local steps on ``held``."""

    held: Held


Action = Push | Pull


@dataclass
class BridgeState:
    """What the gateway knows, and what it should do next (no I/O).

    Rules:

    * a board whose boot id has not received the current global model gets it (a new boot id
      means the board rebooted with a fresh model; a new global model replaces the old one);
    * once the board has done ``local_steps`` (from the global model's hyper-parameters) on a
      global model pushed in its current boot, its model is pulled and published, once per
      boot and round; a board that rebooted in between lost those steps and uploads nothing;
    * when the aggregator's status says ``upload_now`` for the round the board holds (someone
      asked for a round without a quorum), the board's model is pulled as soon as it has done
      at least one step on it, still once per boot and round;
    * an upload comes before the push of a newer global model, so finished work is not lost;
    * a global model the board cannot run (another architecture or feature pipeline) is never
      pushed, and :attr:`problem` says why.
    """

    worker_id: str
    global_model: GlobalModel | None = None
    board: Hello | None = None
    held: Held | None = None
    steps: int = 0  #: the board's steps since ``held`` was pushed
    losses: list[float] = field(default_factory=list)  #: their losses
    uploaded: set[tuple[int, int]] = field(default_factory=set)  #: (boot id, round)
    problem: str | None = None
    upload_now: int | None = None  #: the round the aggregator wants uploaded now (its status)

    def _upload_now_for(self, model_round: int) -> bool:
        """Round N asks for the work done on global model N - 1 (docs/protocol.md)."""
        return self.upload_now is not None and model_round == self.upload_now - 1

    def on_global(self, g: GlobalModel) -> None:
        self.global_model = g

    def on_hello(self, hello: Hello) -> None:
        self.board = hello
        if self.held is not None and self.held.boot_id == hello.boot_id:
            if hello.model_round == self.held.round:
                self.steps = max(self.steps, hello.steps_since_global)
        else:
            self.steps = 0
            self.losses = []

    def on_upload_now(self, round_: int | None) -> None:
        self.upload_now = round_

    def on_board_lost(self) -> None:
        self.board = None

    def on_loss(self, loss: LossReport) -> None:
        if (
            self.held is not None
            and self.board is not None
            and self.held.boot_id == self.board.boot_id
            and loss.model_round == self.held.round
        ):
            self.steps = max(self.steps, loss.steps_since_global)
            self.losses.append(loss.loss)

    def pushed(self, boot_id: int, g: GlobalModel) -> None:
        self.held = Held(boot_id, g.round, g.sha256, g.hyper.local_steps)
        self.steps = 0
        self.losses = []

    def pulled(self, held: Held) -> None:
        self.uploaded.add((held.boot_id, held.round))

    def loss_summary(self) -> contract.LossSummary:
        if not self.losses:
            return contract.LossSummary()
        return contract.LossSummary(
            count=len(self.losses),
            mean=float(sum(self.losses) / len(self.losses)),
            last=float(self.losses[-1]),
        )

    def compatible(self, g: GlobalModel, board: Hello) -> str | None:
        """Why ``g`` cannot go on ``board``, or None if it can."""
        try:
            family = families.by_arch_id(board.arch)
        except ModelError as exc:
            return f"board {board.board_hex} reports {exc}"
        if g.arch != family.arch:
            return (
                f"board {board.board_hex} runs the {family.name} family ({family.arch}), the "
                f"fleet runs {family_name(g.arch)}: flash the board with the fleet's family "
                f"or give it a fleet of its own"
            )
        if g.params.shape != (family.n_params,):
            return (
                f"global model round {g.round} has {g.params.size} parameters, the "
                f"{family.name} family {family.n_params}"
            )
        if g.pipeline != board.pipeline_name:
            return (
                f"global model uses the {g.pipeline!r} feature pipeline but board "
                f"{board.board_hex} computes {board.pipeline_name!r}"
            )
        return None

    def next_action(self) -> Action | None:
        board, held, g = self.board, self.held, self.global_model
        if board is None:
            return None
        current = held is not None and held.boot_id == board.boot_id
        if (
            current
            and held is not None
            and self.steps >= (1 if self._upload_now_for(held.round) else held.local_steps)
            and (held.boot_id, held.round) not in self.uploaded
        ):
            return Pull(held)
        if g is None:
            return None
        if current and held is not None and held.sha256 == g.sha256:
            return None
        self.problem = self.compatible(g, board)
        if self.problem is not None:
            return None
        return Push(g)
