"""The host side of the link protocol: :class:`BoardLink` drives one board over any transport.

It turns the frames of :mod:`tinyfed.link.spec` into awaitable commands and an event stream:

* commands (:meth:`BoardLink.hello`, :meth:`~BoardLink.set_params`,
  :meth:`~BoardLink.put_model`, :meth:`~BoardLink.get_model`, :meth:`~BoardLink.send_sample`,
  :meth:`~BoardLink.reset`) run one at a time, each retried on a timeout or on a frame the
  board could not read;
* host-to-board transfers are sent in windows of ``window`` chunks (the board's HELLO says
  how many it buffers), acknowledged once per window; a gap acknowledgement or a timeout
  goes back to the first missing byte (go-back-N); ``XFER_END`` makes the board verify the
  end-to-end CRC-32 before it applies anything;
* model uploads read the model in batches of chunks, re-read what is missing, and check the
  CRC-32 of the whole model against ``MODEL_INFO``; a mismatch (the board trained in between)
  starts again;
* a transfer gives up only after ``retries + 1`` tries in a row that moved nothing: any chunk
  newly acknowledged (down) or newly received (up) restores the whole retry budget, so a noisy
  line slows a transfer down but does not fail it while it still makes progress;
* unsolicited frames (LOSS, INFER, STATE, LOG, and a HELLO with a boot id not seen before)
  go to an event queue
  read with :meth:`BoardLink.next_event`. A HELLO with a new boot id while a command runs fails
  that command with :class:`BoardResetError`, so no transfer ever straddles a reboot.

The layers live in modules of their own: :mod:`~tinyfed.link.channel` (the frame reader, the
dispatch table, waiting for answers), :mod:`~tinyfed.link.requests` (one command at a time,
retries), :mod:`~tinyfed.link.download` (the go-back-N sender), :mod:`~tinyfed.link.upload`
(the batched reader), :mod:`~tinyfed.link.events` (the board's messages, the event queue),
:mod:`~tinyfed.link.stats` and :mod:`~tinyfed.link.errors`; this module is the public face and
keeps their public names.

Every command counts its round trips (times the host waited for the board) and the bytes each
way in :attr:`BoardLink.stats`; every transfer is logged with its size and duration and kept in
:attr:`BoardLink.transfers`.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType

import numpy as np
import numpy.typing as npt

from tinyfed import model
from tinyfed.link import messages, spec
from tinyfed.link.channel import Channel, LinkSettings
from tinyfed.link.download import Download, board_family
from tinyfed.link.errors import (
    RETRYABLE_ERRORS,
    BoardError,
    BoardResetError,
    LinkClosedError,
    LinkError,
    LinkTimeoutError,
)
from tinyfed.link.events import (
    EVENT_QUEUE_LIMIT,
    Event,
    Hello,
    InferReport,
    LogLine,
    LossReport,
    ModelInfo,
    StateReport,
)
from tinyfed.link.requests import Requests
from tinyfed.link.spec import XferTarget
from tinyfed.link.stats import LinkStats, TransferRecord
from tinyfed.link.transports.base import Transport
from tinyfed.link.upload import Upload
from tinyfed.model import families

__all__ = [
    "EVENT_QUEUE_LIMIT",
    "N_AUDIO",
    "N_FEATURES",
    "RETRYABLE_ERRORS",
    "BoardError",
    "BoardLink",
    "BoardResetError",
    "Event",
    "Hello",
    "InferReport",
    "LinkClosedError",
    "LinkError",
    "LinkStats",
    "LinkTimeoutError",
    "LogLine",
    "LossReport",
    "ModelInfo",
    "StateReport",
    "TransferRecord",
]

N_FEATURES = model.N_INPUTS  #: one FEATURES sample: 650 float32
N_AUDIO = 16_000  #: one AUDIO sample: 1 s at 16 kHz, int16
N_DSCNN_INPUT = 50 * 40  #: one dscnn FEATURES sample: the int8 extractor input (docs/learning.md)


class BoardLink:
    """Async client of one board over a :class:`~tinyfed.link.transports.base.Transport`.

    Use as ``async with BoardLink(transport) as link:``; that opens the transport and starts the
    reader. Commands are serialised: a second caller waits for the first.

    Args:
        transport: the byte stream to the board (not yet open).
        timeout: seconds to wait for one answer (or for the next chunk of an upload).
        retries: times a command, window or read is sent again before :class:`LinkTimeoutError`;
            in a transfer, tries in a row without progress (a newly acknowledged or received
            chunk restores the budget).
        read_batch: chunks asked for in one READ (at most 255).
        busy_timeout: seconds a command keeps being retried while the board answers BUSY.
        open_transport: whether entering the context opens the transport (and leaving closes).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float = 1.0,
        retries: int = 5,
        read_batch: int = 64,
        busy_timeout: float = 15.0,
        open_transport: bool = True,
    ) -> None:
        if not 1 <= read_batch <= 255:
            raise ValueError(f"read_batch must be 1..255, got {read_batch}")
        self.settings = LinkSettings(timeout, retries, read_batch, busy_timeout)
        self._ch = Channel(transport, self.settings, open_transport=open_transport)
        self._rq = Requests(self._ch)
        self._download = Download(self._rq)
        self._upload = Upload(self._rq)

    # -- lifecycle and state --------------------------------------------------------------

    async def __aenter__(self) -> BoardLink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the transport (unless told not to) and start reading frames."""
        await self._ch.start()

    async def close(self) -> None:
        """Stop reading and close the transport; safe to call twice."""
        await self._ch.close()

    async def wait_closed(self) -> BaseException:
        """Wait until the link fails or closes; return why."""
        return await self._ch.wait_closed()

    @property
    def transport(self) -> Transport:
        return self._ch.transport

    @property
    def url(self) -> str:
        return self._ch.url

    @property
    def closed(self) -> bool:
        return self._ch.closed

    @property
    def board(self) -> Hello | None:
        """The last HELLO seen."""
        return self._ch.board

    @property
    def stats(self) -> LinkStats:
        return self._ch.stats

    @property
    def transfers(self) -> deque[TransferRecord]:
        """The last 100 finished transfers."""
        return self._rq.transfers

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    @property
    def retries(self) -> int:
        return self.settings.retries

    @property
    def read_batch(self) -> int:
        return self.settings.read_batch

    @property
    def busy_timeout(self) -> float:
        return self.settings.busy_timeout

    # -- events ---------------------------------------------------------------------------

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next unsolicited frame (LOSS, INFER, STATE, LOG, HELLO after a reboot).

        Raises :class:`LinkClosedError` once the link is closed and every event was read, and
        :class:`TimeoutError` after ``timeout`` seconds without one.
        """
        return await self._ch.next_event(timeout)

    # -- commands -------------------------------------------------------------------------

    async def hello(self) -> Hello:
        """Ask for a HELLO (also a liveness check)."""
        return await self._rq.command("HELLO_REQ", self._rq.hello_once)

    async def set_params(self, lr: float, momentum: float, local_steps: int) -> None:
        """Set the board's learning rate, momentum and local steps per round."""

        params = messages.SetParams(lr=lr, momentum=momentum, local_steps=local_steps)
        await self._rq.command("SET_PARAMS", lambda: self._rq.request(params))

    async def reset(self) -> Hello:
        """Reboot the board; return its new HELLO (a new boot id, a fresh model)."""

        return await self._rq.command("RESET", self._rq.reset_once)

    async def family(self) -> families.Family:
        """The board's model family (from its HELLO; asks for one if none was seen yet).

        Raises :class:`LinkError` naming an architecture id this host does not know.
        """
        board = self.board or await self.hello()
        return board_family(board, self.url)

    async def put_model(self, params: model.F32, round: int) -> TransferRecord:
        """Download a model to the board; it applies it atomically after the CRC-32 verifies.

        ``params`` must be a model of the board's family (:meth:`family`): the size comes from
        the board's HELLO, a model of another size is a :class:`~tinyfed.errors.ModelError`.
        """
        data = (await self.family()).to_bytes(params)
        return await self._download.run(XferTarget.MODEL, data, round, "model down")

    async def send_sample(
        self,
        *,
        features: npt.ArrayLike | None = None,
        audio: npt.ArrayLike | None = None,
        label: int | None = None,
    ) -> TransferRecord:
        """Send one sample to train on (``label`` 0..2) or to infer (``label`` None).

        Exactly one of ``features`` or ``audio`` (16,000 int16 samples) is given. Features
        are what the board's family computes: 650 float32 MFCC values (``paper``), or the
        extractor's 2,000 int8 inputs, 50 frames x 40 bands (``dscnn``). The board answers
        with a LOSS or an INFER event.
        """
        if (features is None) == (audio is None):
            raise ValueError("give exactly one of features= or audio=")
        meta = spec.NO_CLASS if label is None else label
        if not 0 <= meta <= 255:
            raise ValueError(f"label must be 0..254 or None, got {label}")
        if features is not None and (await self.family()) is families.DSCNN:
            q = np.asarray(features).ravel()
            if q.size != N_DSCNN_INPUT or not np.array_equal(q, q.astype(np.int8)):
                raise ValueError(
                    f"a dscnn board's features are {N_DSCNN_INPUT} int8 values, got {q.size} "
                    f"values of {q.dtype}"
                )
            return await self._download.run(
                XferTarget.FEATURES, q.astype(np.int8).tobytes(), meta, "features down"
            )
        if features is not None:
            arr = np.asarray(features, dtype="<f4").ravel()
            if arr.size != N_FEATURES:
                raise ValueError(f"features must have {N_FEATURES} values, got {arr.size}")
            return await self._download.run(
                XferTarget.FEATURES, arr.tobytes(), meta, "features down"
            )
        raw = np.asarray(audio)
        if raw.size != N_AUDIO:
            raise ValueError(f"audio must have {N_AUDIO} samples, got {raw.size}")
        pcm = raw.astype("<i2").ravel().tobytes()
        return await self._download.run(XferTarget.AUDIO, pcm, meta, "audio down")

    async def model_info(self) -> ModelInfo:
        """Describe the board's model now (MODEL_INFO): round, steps, CRC-32; no upload."""
        return await self._rq.command("GET_MODEL", self._rq.model_info_once)

    async def get_model(self) -> tuple[model.F32, ModelInfo]:
        """Upload the board's model: its parameters and the MODEL_INFO they match (CRC-32).

        Its size is the board's family's (:meth:`family`).
        """
        board = self.board or await self.hello()
        return await self._upload.run(board)
