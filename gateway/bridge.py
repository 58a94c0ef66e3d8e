"""The bridge: one board's link on one side, the fleet's MQTT broker on the other.

The gateway's parts, from pure to I/O, one module each:

* :class:`~tinyfed.gateway.state.BridgeState` (:mod:`tinyfed.gateway.state`) decides, from what
  it was told (the retained global model, the board's HELLO and LOSS events, what was pushed and
  uploaded), the next thing to do: push the global model down, pull the board's model up, or
  nothing. It has no sockets and is tested alone; :mod:`tinyfed.gateway.state_file` keeps its
  board record in the spool folder across restarts.
* :class:`~tinyfed.gateway.uplink.Uplink` is the MQTT side: an update is kept in the
  :class:`~tinyfed.gateway.outbox.Outbox` (with a spool folder, on disk) and sent again with the
  same upload id until the aggregator's receipt says it is on the aggregator's disk, so neither
  a broker crash nor a gateway restart loses one.
* :class:`Bridge` (here) runs the board link (reopened with backoff when lost) and the uplink,
  and carries out the state's decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tinyfed.gateway import state_file
from tinyfed.gateway.outbox import Outbox
from tinyfed.gateway.settings import GatewaySettings
from tinyfed.gateway.state import BridgeState, Held, Push, default_worker_id
from tinyfed.gateway.uplink import Uplink, WorkerState
from tinyfed.link.client import (
    BoardLink,
    Event,
    Hello,
    InferReport,
    LinkError,
    LogLine,
    LossReport,
    StateReport,
)
from tinyfed.link.transports import open_transport
from tinyfed.link.transports.base import Transport, TransportError
from tinyfed.mqtt.contract import GlobalModel, LossEvent, ModelUpdate, RoundRequest, WorkerStatus

log = logging.getLogger(__name__)

RETRY_MAX = 30.0  #: longest wait before a failed push or pull is tried again (doubling)
LOG_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
#: How a board's LOG text asking for a round starts (its D5 button held 3 s):
#: ``kRoundRequestEvent`` in firmware/core/device.h (tests/gateway check they agree).
ROUND_REQUEST_EVENT = "event round_request"


class Bridge:
    """One gateway: keeps a board and the broker connected and carries out the state's plan.

    Args:
        settings: the validated settings.
        transport_factory: makes a transport from the device URL (default: by scheme).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        transport_factory: Callable[[str], Transport] = open_transport,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.transport_factory = transport_factory
        self.outbox = Outbox(
            settings.buffer,
            settings.spool,
            resend_min=settings.resend_min,
            resend_max=settings.resend_max,
        )
        self.state: BridgeState | None = None
        self.link: BoardLink | None = None
        self.uplink: Uplink | None = None
        self.uploads = 0  #: updates published (handed to the outbox) by this process
        self.requests = 0  #: round requests published (handed to the outbox) by this process
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._board_ready = asyncio.Event()
        self._pending_global: GlobalModel | None = None
        self._upload_now: int | None = None  #: the aggregator status's (for a state to come)
        self._classes: tuple[str, ...] = ()  #: the words of the outputs (the global model's)

    # -- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop` is called (or the task is cancelled)."""
        self._loop = asyncio.get_running_loop()
        restored = self.outbox.load_spool()
        if restored:
            log.info("%d unpublished update(s) restored from %s", restored, self.settings.spool)
        board_task = asyncio.create_task(self._board_loop(), name="board")
        try:
            if self.settings.worker_id is None:
                log.info("waiting for the board on %s to learn its id", self.settings.device)
                await self._until(self._board_ready)
            if not self._stop.is_set():
                self._start_mqtt()
                await self._act_loop()
        finally:
            board_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await board_task
            await self._stop_mqtt()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe when called through the loop)."""
        self._stop.set()
        self._wake.set()

    async def _until(self, event: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(self._stop.wait())
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({stopper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            waiter.cancel()

    @property
    def worker_id(self) -> str:
        if self.state is not None:
            return self.state.worker_id
        assert self.settings.worker_id is not None, "worker id unknown before the first HELLO"
        return self.settings.worker_id

    def _ensure_state(self, hello: Hello) -> BridgeState:
        if self.state is None:
            worker_id = self.settings.worker_id or default_worker_id(hello)
            self.state = BridgeState(worker_id)
            if self._state_path is not None:
                state_file.restore(self._state_path, self.state)
            if self._pending_global is not None:
                self.state.on_global(self._pending_global)
            self.state.on_upload_now(self._upload_now)
            log.info("gateway for worker %s (board %s)", worker_id, hello.board_hex)
        return self.state

    # -- the board side -------------------------------------------------------------------

    async def _board_loop(self) -> None:
        delay = self.settings.reconnect_min
        while not self._stop.is_set():
            transport = self.transport_factory(self.settings.device)
            link = BoardLink(
                transport,
                timeout=self.settings.link_timeout,
                retries=self.settings.link_retries,
            )
            try:
                async with link:
                    hello = await link.hello()
                    delay = self.settings.reconnect_min
                    self.link = link
                    self._on_hello(hello)
                    while True:
                        self._on_event(await link.next_event())
            except (TransportError, LinkError) as exc:
                log.warning(
                    "board on %s unavailable: %s; retrying in %.1f s",
                    self.settings.device,
                    exc,
                    delay,
                )
            finally:
                self.link = None
                if self.state is not None and self.state.board is not None:
                    self.state.on_board_lost()
                    self._publish_status("board-missing")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(self.settings.reconnect_max, delay * 2)

    def _on_hello(self, hello: Hello) -> None:
        state = self._ensure_state(hello)
        previous = state.board
        state.on_hello(hello)
        if previous is not None and previous.boot_id == hello.boot_id:
            return  # the same HELLO again (answer and event)
        log.info(
            "board %s up: boot %s, firmware %s, %s pipeline, model round %d, %d steps since",
            hello.board_hex,
            hello.boot_hex,
            hello.firmware,
            hello.pipeline_name,
            hello.model_round,
            hello.steps_since_global,
        )
        self._board_ready.set()
        self._publish_status("online")
        self._wake.set()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Hello):
            self._on_hello(event)
        elif isinstance(event, LossReport):
            self._on_loss(event)
        elif isinstance(event, LogLine):
            level = LOG_LEVELS[min(event.level, len(LOG_LEVELS) - 1)]
            log.log(level, "board: %s", event.text)
            if event.text.startswith(ROUND_REQUEST_EVENT):
                self._request_round()
        elif isinstance(event, InferReport | StateReport):
            log.debug("board: %s", event)

    def _request_round(self) -> None:
        """The person at the board asked for a round: tell the aggregator."""
        if self.state is None or self.uplink is None:
            log.warning("the board asked for a round before the MQTT session started: not sent")
            return
        self.uplink.send_request(RoundRequest(worker_id=self.state.worker_id, time=time.time()))
        self.requests += 1
        log.info("round request of worker %s published", self.state.worker_id)

    def _word(self, index: int | None) -> str:
        return self._classes[index] if index is not None and index < len(self._classes) else ""

    def _on_loss(self, loss: LossReport) -> None:
        state = self.state
        assert state is not None
        state.on_loss(loss)
        event = LossEvent(
            worker_id=state.worker_id,
            step=loss.step,
            loss=float(loss.loss),
            label=loss.label,
            outputs=tuple(float(o) for o in loss.outputs),
            prediction=loss.prediction,
            round=loss.model_round,
            time=time.time(),
            word=self._word(loss.label),
            heard=self._word(loss.prediction),
        )
        if not math.isfinite(event.loss) or not all(math.isfinite(o) for o in event.outputs):
            log.warning("board reported a non-finite loss at step %d; not forwarded", loss.step)
        elif self.uplink is not None:
            self.uplink.send_loss(event)
        self._wake.set()

    # -- carrying out decisions -----------------------------------------------------------

    async def _act_loop(self) -> None:
        reported: str | None = None
        retry_delay = self.settings.link_timeout
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            while not self._stop.is_set() and self.state is not None:
                action = self.state.next_action()
                if self.state.problem != reported:
                    reported = self.state.problem
                    if reported:
                        log.error("not pushing the global model: %s", reported)
                link = self.link
                if action is None or link is None:
                    break
                try:
                    if isinstance(action, Push):
                        await self._push(link, action.model)
                    else:
                        await self._pull(link, action.held)
                    retry_delay = self.settings.link_timeout
                except LinkError as exc:
                    log.warning("%s failed: %s; will try again", type(action).__name__, exc)
                    if not link.closed:  # a lost link is retried when the board is back
                        await asyncio.sleep(retry_delay)
                        retry_delay = min(RETRY_MAX, retry_delay * 2)
                        self._wake.set()
                    break

    async def _push(self, link: BoardLink, g: GlobalModel) -> None:
        state = self.state
        assert state is not None
        assert state.board is not None
        boot = state.board.boot_id
        # Hyper-parameters first: a user may press the button the instant the model is applied,
        # and that step must already use the global model's learning rate and momentum.
        await link.set_params(g.hyper.lr, g.hyper.momentum, g.hyper.local_steps)
        record = await link.put_model(g.params, g.round)
        if link.board is None or link.board.boot_id != boot:
            raise LinkError("the board rebooted during the push")
        state.pushed(boot, g)
        self._save_state()
        log.info(
            "pushed global round %d (%s) to board %s: %s",
            g.round,
            g.sha256[:12],
            state.board.board_hex,
            record,
        )
        self._publish_status("online")

    async def _pull(self, link: BoardLink, held: Held) -> None:
        state = self.state
        assert state is not None
        params, info = await link.get_model()
        if link.board is None or link.board.boot_id != held.boot_id:
            raise LinkError("the board rebooted during the upload")
        if info.model_round != held.round:
            log.warning(
                "board model descends from round %d, expected %d: not uploaded",
                info.model_round,
                held.round,
            )
            state.pulled(held)
            return
        update = ModelUpdate(
            worker_id=state.worker_id,
            base_round=info.model_round,
            local_steps=info.steps_since_global,
            params=params,
            upload_id=uuid.uuid4().hex,
            pipeline=state.board.pipeline_name if state.board else "",
            arch=(await link.family()).arch,  # the board's family, from its HELLO
            loss=state.loss_summary(),
            created=time.time(),
        )
        if self.uplink is None:
            raise LinkError("no MQTT session to publish the update on")
        self.uplink.send_update(update)
        state.pulled(held)
        self._save_state()
        self.uploads += 1
        log.info(
            "update %s: round %d, %d local steps, loss mean %s (%s)",
            update.upload_id,
            update.base_round,
            update.local_steps,
            f"{update.loss.mean:.4f}" if update.loss.mean is not None else "-",
            link.transfers[-1] if link.transfers else "",
        )

    @property
    def _state_path(self) -> Path | None:
        return self.settings.spool / "board.json" if self.settings.spool else None

    def _save_state(self) -> None:
        if self._state_path is not None and self.state is not None:
            state_file.save(self._state_path, self.state)

    # -- the MQTT side --------------------------------------------------------------------

    def _start_mqtt(self) -> None:
        self.uplink = Uplink(
            self.settings.broker,
            self.topics,
            self.worker_id,
            self.outbox,
            status=self._status,
            on_global=self._on_global,
            on_upload_now=self._on_upload_now,
        )
        self.uplink.start("online" if self.link is not None else "board-missing")

    async def _stop_mqtt(self) -> None:
        uplink, self.uplink = self.uplink, None
        if uplink is not None:
            await uplink.stop()

    def _on_global(self, g: GlobalModel) -> None:
        self._classes = g.classes or self._classes
        if self.state is None:
            self._pending_global = g
        else:
            self.state.on_global(g)
        self._wake.set()

    def _on_upload_now(self, round_: int | None) -> None:
        self._upload_now = round_
        if self.state is not None:
            self.state.on_upload_now(round_)
        self._wake.set()

    def _status(self, state: WorkerState) -> WorkerStatus:
        board = self.state.board if self.state else None
        held = self.state.held if self.state else None
        return WorkerStatus(
            worker_id=self.worker_id,
            state=state,
            transport=self.settings.device,
            firmware=board.firmware if board else "",
            board_id=board.board_hex if board else "",
            boot_id=board.boot_hex if board else "",
            pipeline=board.pipeline_name if board else "",
            model_round=(held.round if held and board and held.boot_id == board.boot_id else None),
            time=time.time(),
        )

    def _publish_status(self, state: WorkerState) -> None:
        if self.uplink is not None:
            self.uplink.publish_status(state)
