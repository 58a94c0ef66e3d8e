"""Simulated gateways: the real gateway's MQTT side with a simulated board.

* :class:`SimulatedGateway` is the real gateway on the MQTT side, because it *is* the real one
  there: :class:`~tinyfed.gateway.uplink.Uplink` and :class:`~tinyfed.gateway.outbox.Outbox`,
  unchanged (same status and Last Will, same resend rules, same receipts, optional spool folder).
  Only the board is replaced: when a global model arrives it "trains" for a short random delay, then
  makes an update (the global parameters plus a small seeded random delta, float32) with a fresh
  upload id, exactly once per global round, as :class:`~tinyfed.gateway.state.BridgeState` does for
  one boot of a board. A newer global model arriving mid-training replaces the one being trained on,
  as a push to a real board does. It records every update it made (:attr:`SimulatedGateway.made`)
  and every receipt it saw (:attr:`SimulatedGateway.receipts`).
Both model families (:mod:`tinyfed.model.families`) work unchanged: the update has the global
model's size and ``arch`` (195 floats for a ``dscnn`` fleet, 10,467 for the paper's).
They serve the chaos scenario (:mod:`tinyfed.fleet.chaos`), the cluster tests and
``tinyfed bench fleet`` (:mod:`tinyfed.bench.fleet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyfed import model
from tinyfed.gateway.outbox import RESEND_MAX, RESEND_MIN, Outbox
from tinyfed.gateway.settings import DEFAULT_BUFFER
from tinyfed.gateway.uplink import Uplink, WorkerState
from tinyfed.mqtt.contract import (
    GlobalModel,
    LossSummary,
    ModelUpdate,
    Receipt,
    Topics,
    WorkerStatus,
)
from tinyfed.mqtt.session import BrokerUrl

log = logging.getLogger(__name__)

#: Standard normal noise shared by every simulated board (seeded: runs repeat).
_NOISE = np.random.default_rng(20261130).standard_normal(1 << 20)


def db_round(path: Path) -> int:
    """The latest global model's round in an aggregator's database, read while it runs (-1 if
    there is none yet or it cannot be read at this moment)."""
    if not path.exists():
        return -1
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=1)) as db:
            (r,) = db.execute("SELECT MAX(round) FROM globals").fetchone()
            return -1 if r is None else int(r)
    except sqlite3.Error:
        return -1


# ----------------------------------------------------------------------------- the gateway


@dataclass(frozen=True)
class Made:
    """An update a simulated gateway made (and handed to its uplink)."""

    worker_id: str
    base_round: int
    params: model.F32 = field(repr=False)
    local_steps: int


class SimulatedGateway:
    """One gateway with a simulated board; the MQTT side is the real :class:`Uplink`.

    Args:
        broker: the broker.
        topics: the fleet's topics.
        worker_id: the worker it speaks for.
        seed: seeds the training delays and the updates' deltas.
        spool: folder where undelivered updates wait on disk (None: memory only).
        buffer: most MQTT messages kept undelivered (the real gateway's ``--buffer``).
        resend_min: first wait for a receipt before an update is sent again (doubling).
        resend_max: longest wait between two sends of an update.
        train_delay: the simulated training takes a uniform random time in this range (s).
        delta_scale: standard deviation of the random delta added to the global model.
        threaded: paho's network loop in a thread per gateway (like the real one); False
            drives every client from the asyncio loop (thousands of gateways in one process).
        keep_params: keep each update's parameters in :attr:`made` (the chaos checks need
            them; a fleet of thousands need not hold them twice).
    """

    def __init__(
        self,
        broker: BrokerUrl,
        topics: Topics,
        worker_id: str,
        *,
        seed: int = 0,
        spool: Path | None = None,
        buffer: int = DEFAULT_BUFFER,
        resend_min: float = RESEND_MIN,
        resend_max: float = RESEND_MAX,
        train_delay: tuple[float, float] = (0.2, 1.0),
        delta_scale: float = 0.01,
        threaded: bool = True,
        keep_params: bool = True,
    ) -> None:
        self.keep_params = keep_params
        self.sent_at: dict[int, float] = {}  #: round -> monotonic time its update was sent
        self.worker_id = worker_id
        self.topics = topics
        self.train_delay = train_delay
        self.delta_scale = delta_scale
        self._rng = np.random.default_rng(seed)
        self.outbox = Outbox(buffer, spool, resend_min=resend_min, resend_max=resend_max)
        self.uplink = Uplink(
            broker,
            topics,
            worker_id,
            self.outbox,
            status=self._status,
            on_global=self._on_global,
            threaded=threaded,
        )
        self.made: dict[str, Made] = {}  #: every update made, by upload id
        self.uploaded: set[int] = set()  #: rounds an update was made for
        self.held: GlobalModel | None = None  #: the global model on the simulated board
        self.latest_round = -1  #: the highest global round received
        #: global models received with a lower round than one received before (a broker that
        #: restarted from an older persistence file serves an older retained model)
        self.older_globals = 0
        self.made_from_older = 0  #: updates made from such an older global model
        self._training: asyncio.Task[None] | None = None

    @property
    def receipts(self) -> dict[str, Receipt]:
        """The receipts seen for this gateway's pending updates, by upload id."""
        return self.uplink.receipts

    def start(self) -> None:
        """Connect (from the running loop); updates left in the spool are sent again."""
        restored = self.outbox.load_spool()
        if restored:
            log.info("%s: %d update(s) restored from the spool", self.worker_id, restored)
        self.uplink.start("online")

    async def stop(self) -> None:
        """Stop training, publish ``offline`` and disconnect (undelivered updates stay spooled)."""
        task, self._training = self._training, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.uplink.stop()

    def _status(self, state: WorkerState) -> WorkerStatus:
        held = self.held
        return WorkerStatus(
            worker_id=self.worker_id,
            state=state,
            transport="simulated",
            firmware="simulated",
            pipeline=held.pipeline if held else "",
            model_round=held.round if held else None,
            time=time.time(),
        )

    def _on_global(self, g: GlobalModel) -> None:
        if g.round < self.latest_round:
            self.older_globals += 1
        self.latest_round = max(self.latest_round, g.round)
        held = self.held
        if held is not None and held.sha256 == g.sha256:
            return  # the same model again (retained on reconnect, or republished)
        # The board gets the new model: training on the old one is lost, as on a real board.
        self.held = g
        task, self._training = self._training, None
        if task is not None:
            task.cancel()
        self.uplink.publish_status("online")
        if g.round in self.uploaded:
            return  # once per round: this round's update was made already
        self._training = asyncio.get_running_loop().create_task(
            self._train(g), name=f"train-{self.worker_id}-{g.round}"
        )

    async def _train(self, g: GlobalModel) -> None:
        low, high = self.train_delay
        await asyncio.sleep(float(self._rng.uniform(low, high)))
        # A window of a shared pool of normal noise: 10,000 gateways in one process cannot
        # afford to draw 10,467 normals each per round (0.2 ms apiece).
        start = int(self._rng.integers(0, _NOISE.size - g.params.size))
        delta = _NOISE[start : start + g.params.size] * self.delta_scale
        params = (g.params.astype(np.float64) + delta).astype(np.float32)
        if not np.isfinite(params).all():  # a global model near float32's limits
            params = g.params.copy()
        steps = g.hyper.local_steps
        losses = self._rng.uniform(0.05, 0.5, max(1, steps))
        update = ModelUpdate(
            worker_id=self.worker_id,
            base_round=g.round,
            local_steps=steps,
            params=params,
            upload_id=uuid.uuid4().hex,
            pipeline=g.pipeline,
            arch=g.arch,
            loss=LossSummary(count=steps, mean=float(losses.mean()), last=float(losses[-1])),
            created=time.time(),
        )
        self.uploaded.add(g.round)
        if g.round < self.latest_round:
            self.made_from_older += 1
        kept = params if self.keep_params else np.empty(0, np.float32)
        self.made[update.upload_id] = Made(self.worker_id, g.round, kept, steps)
        self.sent_at[g.round] = time.monotonic()
        if self._training is asyncio.current_task():
            self._training = None
        self.uplink.send_update(update)
        log.info("%s: update %s for round %d", self.worker_id, update.upload_id, g.round)
