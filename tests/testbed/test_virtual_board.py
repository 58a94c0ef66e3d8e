"""The virtual board over a real pseudo-terminal, driven with pyserial like a gateway.

The board is the firmware's portable core built for the host (``make -C firmware host``); the
host side here is a small synchronous helper on top of :mod:`tinyfed.link.frame`. The training
the board does from its scripted button presses must equal, to 1e-5, what the Python reference
(:mod:`tinyfed.features` + :class:`tinyfed.model.Trainer`) computes from the same WAV clips.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
import wave
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import serial

from tests import link_support
from tinyfed import model
from tinyfed.features import get_pipeline
from tinyfed.link import frame, spec
from tinyfed.testbed.virtual_board import VirtualBoard

T = spec.MsgType
E = spec.ErrorCode
RECORD_MS = 100  #: a fast microphone for the tests (the board's is 1000 ms)


# ----------------------------------------------------------------------------- host helper


class BoardLink:
    """A synchronous link client: send commands, wait for replies, collect events."""

    def __init__(self, port: str) -> None:
        self.serial = serial.Serial(port, spec.BAUD_RATE, timeout=0)
        self.parser = frame.FrameParser()
        self.queue: list[frame.Frame] = []
        self.events: list[tuple[str, dict[str, Any]]] = []  #: every frame received, in order
        self.bad: list[frame.FrameError] = []
        self.seq = 0

    def close(self) -> None:
        self.serial.close()

    def send_raw(self, wire: bytes) -> None:
        self.serial.write(wire)

    def send(self, msg_type: T, tail: bytes | str = b"", **fields: Any) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        self.serial.write(link_support.pack(msg_type, self.seq, tail, **fields))
        return self.seq

    def _pump(self, wait: float) -> None:
        data = self.serial.read(max(1, self.serial.in_waiting))
        if not data:
            time.sleep(wait)
            return
        for item in self.parser.feed(data):
            if isinstance(item, frame.FrameError):
                self.bad.append(item)
                continue
            self.events.append((item.name, link_support.unpack(item)))
            self.queue.append(item)

    def expect(self, *types: T, timeout: float = 5.0) -> tuple[T, dict[str, Any]]:
        """The next frame of one of ``types`` (other frames are skipped, still in events)."""
        deadline = time.monotonic() + timeout
        while True:
            while self.queue:
                f = self.queue.pop(0)
                if f.type in types:
                    return T(f.type), link_support.unpack(f)
            if time.monotonic() > deadline:
                names = [t.name for t in types]
                raise TimeoutError(f"no {names} within {timeout} s; got {self.events[-5:]}")
            self._pump(0.002)

    def reply(self, seq: int, timeout: float = 5.0) -> tuple[T, dict[str, Any]]:
        """The ACK, ERROR or MODEL_INFO answering command ``seq``."""
        while True:
            t, fields = self.expect(T.ACK, T.ERROR, T.MODEL_INFO, timeout=timeout)
            if fields["ref_seq"] == seq:
                return t, fields

    def hello(self) -> dict[str, Any]:
        self.send(T.HELLO_REQ)
        return self.expect(T.HELLO)[1]

    def begin(self, target: spec.XferTarget, data: bytes, meta: int) -> tuple[T, dict[str, Any]]:
        seq = self.send(
            T.XFER_BEGIN,
            target=target,
            total_len=len(data),
            crc32=zlib.crc32(data),
            meta=meta,
        )
        return self.reply(seq)

    def send_chunks(self, data: bytes, start: int = 0, stop: int | None = None) -> int:
        """Windowed go-back-N upload of data[start:stop]; returns the acknowledged offset."""
        stop = len(data) if stop is None else stop
        offset = start
        while offset < stop:
            sent = offset
            for _ in range(spec.DEFAULT_WINDOW):
                if sent >= stop:
                    break
                n = min(spec.CHUNK_BYTES, stop - sent)
                self.send(T.XFER_CHUNK, data[sent : sent + n], offset=sent)
                sent += n
            if sent < stop or sent == len(data):
                offset = self.expect(T.XFER_ACK)[1]["next_offset"]
            else:
                offset = sent  # a partial window at the stop: no acknowledgement is due
        return offset

    def put(self, target: spec.XferTarget, data: bytes, meta: int) -> tuple[T, dict[str, Any]]:
        t, fields = self.begin(target, data, meta)
        assert t == T.ACK, fields
        assert self.send_chunks(data) == len(data)
        return self.reply(self.send(T.XFER_END))

    def put_model(self, params: npt.NDArray[np.float32], round_: int) -> None:
        t, fields = self.put(spec.XferTarget.MODEL, model.to_bytes(params), round_)
        assert t == T.ACK, fields

    def get_model(self) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        t, info = self.reply(self.send(T.GET_MODEL))
        assert t == T.MODEL_INFO, info
        buf = bytearray(info["total_len"])
        offset = 0
        while offset < len(buf):
            count = min(64, -(-(len(buf) - offset) // spec.CHUNK_BYTES))
            self.send(T.READ, offset=offset, count=count)
            for _ in range(count):
                chunk = self.expect(T.MODEL_CHUNK)[1]
                tail = chunk["tail"]
                buf[chunk["offset"] : chunk["offset"] + len(tail)] = tail
                offset = max(offset, chunk["offset"] + len(tail))
        assert zlib.crc32(buf) == info["crc32"], "the model changed while it was read"
        return model.from_bytes(bytes(buf)), info

    def wait_events(self, name: str, n: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while sum(1 for e in self.events if e[0] == name) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} {name} events not seen; log: {self.events[-5:]}")
            self._pump(0.005)
        return [fields for e_name, fields in self.events if e_name == name]


# ----------------------------------------------------------------------------- fixtures


def _word(rng: np.random.Generator, f0: float, f1: float, centre: float) -> npt.NDArray[np.int16]:
    """A synthetic 'word': a chirp with a harmonic under an envelope, in a little noise."""
    n = 16_000
    t = np.arange(n) / 16_000.0
    length = 0.35
    env = np.exp(-0.5 * ((t - centre) / (length / 4)) ** 2)
    sweep = f0 + (f1 - f0) * np.clip((t - centre + length / 2) / length, 0, 1)
    phase = 2 * np.pi * np.cumsum(sweep) / 16_000.0
    x = env * (0.5 * np.sin(phase) + 0.2 * np.sin(2.1 * phase))
    x += 0.003 * rng.standard_normal(n)
    return np.clip(np.rint(x * 32767 * 0.8), -32768, 32767).astype(np.int16)


def _write_wav(path: Path, audio: npt.NDArray[np.int16]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(audio.astype("<i2").tobytes())


@pytest.fixture
def clips(tmp_path: Path) -> dict[str, tuple[int, npt.NDArray[np.int16]]]:
    """Six training clips (two per keyword, the word at different moments) and one to infer."""
    rng = np.random.default_rng(2021)
    spec_ = {
        "red_a": (0, 400, 900, 0.35),
        "green_a": (1, 1200, 700, 0.5),
        "blue_a": (2, 2500, 3200, 0.62),
        "red_b": (0, 420, 950, 0.6),
        "green_b": (1, 1150, 650, 0.4),
        "blue_b": (2, 2400, 3300, 0.45),
        "query": (2, 2450, 3250, 0.55),
    }
    out: dict[str, tuple[int, npt.NDArray[np.int16]]] = {}
    for name, (label, f0, f1, centre) in spec_.items():
        audio = _word(rng, f0, f1, centre)
        _write_wav(tmp_path / f"{name}.wav", audio)
        out[name] = (label, audio)
    return out


TRAIN_ORDER = ("red_a", "green_a", "blue_a", "red_b", "green_b", "blue_b")
BUTTON = {0: "D2", 1: "D3", 2: "D4"}


def _script(tmp_path: Path, clips: dict[str, tuple[int, npt.NDArray[np.int16]]]) -> Path:
    script = tmp_path / "user.txt"
    lines = ["# the user waits for the global model, then trains and asks", "wait model"]
    lines += ["wait 200", "hold 60", "pace 50"]
    lines += [f"press {BUTTON[clips[name][0]]} {name}.wav" for name in TRAIN_ORDER]
    lines += ["press D5 query.wav"]
    script.write_text("\n".join(lines) + "\n")
    return script


def _start(binary: Path, tmp_path: Path, script: Path | None) -> VirtualBoard:
    vb = VirtualBoard(
        script=script,
        board_id="00112233445566ff",
        pipeline="centroid",
        extra_args=["--record-ms", str(RECORD_MS)],
        binary=binary,
        workdir=tmp_path / "vb",
    )
    vb.start()
    return vb


@pytest.fixture
def board(binary: Path, tmp_path: Path) -> Iterator[VirtualBoard]:
    """A virtual board nobody presses."""
    vb = _start(binary, tmp_path, None)
    yield vb
    vb.close()


@pytest.fixture
def scripted_board(
    binary: Path, tmp_path: Path, clips: dict[str, tuple[int, npt.NDArray[np.int16]]]
) -> Iterator[VirtualBoard]:
    """A virtual board whose user waits for a model, trains six clips, then asks about one."""
    vb = _start(binary, tmp_path, _script(tmp_path, clips))
    yield vb
    vb.close()


@pytest.fixture
def link(board: VirtualBoard) -> Iterator[BoardLink]:
    client = BoardLink(board.port)
    yield client
    client.close()


# ----------------------------------------------------------------------------- tests


def test_hello_announces_a_virtual_board(link: BoardLink) -> None:
    # Execute
    hello = link.hello()

    # Assert
    assert hello["protocol"] == spec.PROTOCOL_VERSION
    assert hello["board_id"] == bytes.fromhex("00112233445566ff")
    assert hello["flags"] & 1, "the virtual flag is set"
    assert hello["arch"] == spec.ArchId.FC650_16_3
    assert hello["pipeline"] == spec.PipelineId.CENTROID
    assert hello["window"] == spec.DEFAULT_WINDOW
    assert hello["chunk_bytes"] == spec.CHUNK_BYTES
    assert hello["lr"] == pytest.approx(0.3)
    assert hello["momentum"] == pytest.approx(0.9)
    assert hello["total_steps"] == 0
    assert hello["model_round"] == 0


def test_full_exchange_trains_like_the_python_reference(
    scripted_board: VirtualBoard, clips: dict[str, tuple[int, npt.NDArray[np.int16]]]
) -> None:
    # Prepare: hyper-parameters and a global model of round 3 from the host.
    link = BoardLink(scripted_board.port)
    assert link.hello()["state"] == spec.State.IDLE
    t, reply = link.reply(link.send(T.SET_PARAMS, lr=0.3, momentum=0.9, local_steps=6))
    assert t == T.ACK, reply
    global_model = model.init_params(7)
    link.put_model(global_model, round_=3)
    t, info = link.reply(link.send(T.GET_MODEL))  # one frame: a snapshot before any step
    assert t == T.MODEL_INFO
    assert info["crc32"] == model.crc32(global_model)
    assert info["model_round"] == 3
    assert info["steps_since_global"] == 0

    # Execute: the script, waiting for that model, presses D2/D3/D4 six times, then D5.
    losses = link.wait_events("LOSS", len(TRAIN_ORDER), timeout=30)
    infers = link.wait_events("INFER", 1, timeout=10)
    trained, info = link.get_model()

    # Assert: the Python reference on the same clips, from the same model.
    pipeline = get_pipeline("centroid")
    trainer = model.Trainer(global_model, lr=0.3, momentum=0.9)
    for i, name in enumerate(TRAIN_ORDER):
        label, audio = clips[name]
        step = trainer.step(pipeline.compute(audio), label)
        assert losses[i]["label"] == label
        assert losses[i]["source"] == spec.Source.BUTTON
        assert losses[i]["step"] == i + 1
        assert losses[i]["steps_since_global"] == i + 1
        assert losses[i]["model_round"] == 3
        assert losses[i]["loss"] == pytest.approx(step.loss, abs=1e-5)
        np.testing.assert_allclose(losses[i]["outputs"], step.outputs, atol=1e-5)
    np.testing.assert_allclose(trained, trainer.params, rtol=0, atol=1e-5)
    assert info["steps_since_global"] == len(TRAIN_ORDER)
    assert info["total_steps"] == len(TRAIN_ORDER)
    expected = model.forward(trainer.params, pipeline.compute(clips["query"][1]))
    np.testing.assert_allclose(infers[0]["outputs"], expected, atol=1e-5)
    assert infers[0]["source"] == spec.Source.BUTTON
    log = "\n".join(scripted_board.log_lines())
    assert "led red=1 green=0 blue=0 busy=0" in log, "D2 held: red"
    assert "led red=0 green=0 blue=1 busy=0" in log, "D4 held: blue"
    assert "script: press D5 query.wav" in log
    assert not link.bad, "every frame from the board decodes"
    link.close()


def test_corrupted_frame_is_rejected_and_the_model_is_intact(link: BoardLink) -> None:
    # Prepare
    link.hello()
    before, info_before = link.get_model()
    wire = bytearray(link_support.pack(T.SET_PARAMS, 77, lr=5.0, momentum=0.5, local_steps=1))
    wire[5] ^= 0x01  # one flipped bit inside the frame

    # Execute
    link.send_raw(bytes(wire))
    t, error = link.expect(T.ERROR)

    # Assert
    assert t == T.ERROR
    assert error["code"] == E.BAD_CRC
    assert "CRC" in error["tail"]
    after, info_after = link.get_model()
    np.testing.assert_array_equal(after, before)
    assert info_after["crc32"] == info_before["crc32"]
    assert link.hello()["lr"] == pytest.approx(0.3), "the corrupted SET_PARAMS did nothing"


def test_bad_frames_get_errors_naming_the_problem(link: BoardLink) -> None:
    # Prepare
    link.hello()
    raw = bytes([2, T.HELLO_REQ, 5, 0, 0, 0])
    bad_version = frame.cobs_encode(raw + frame.crc16(raw).to_bytes(2, "little")) + b"\0"

    # Execute / Assert
    link.send_raw(bad_version)
    assert link.expect(T.ERROR)[1]["code"] == E.BAD_VERSION
    link.send_raw(frame.encode_frame(0x3E, 9))
    error = link.expect(T.ERROR)[1]
    assert error["code"] == E.UNKNOWN_TYPE
    assert "0x3e" in error["tail"]
    link.send_raw(frame.encode_frame(T.READ, 10, b"\x00\x00"))
    assert link.expect(T.ERROR)[1]["code"] == E.BAD_LENGTH
    link.send_raw(b"\x55" * 400 + b"\x00")
    assert link.expect(T.ERROR)[1]["code"] == E.OVERFLOW
    t, error = link.reply(link.send(T.XFER_CHUNK, b"\x01\x02", offset=0))
    assert t == T.ERROR
    assert error["code"] == E.BAD_STATE
    t, error = link.reply(link.send(T.SET_PARAMS, lr=0.3, momentum=1.5, local_steps=1))
    assert t == T.ERROR
    assert error["code"] == E.BAD_ARGUMENT
    assert link.hello()["state"] == spec.State.IDLE


def test_interrupted_download_leaves_the_old_model(link: BoardLink) -> None:
    # Prepare: a global model in place.
    link.hello()
    old = model.init_params(11)
    link.put_model(old, round_=1)
    new = model.to_bytes(model.init_params(12))

    # Execute: half of a new model, then the host gives up; then a corrupted one.
    assert link.begin(spec.XferTarget.MODEL, new, 2)[0] == T.ACK
    link.send_chunks(new, 0, 20 * spec.CHUNK_BYTES)
    t, early_end = link.reply(link.send(T.XFER_END))
    half, _ = link.get_model()
    assert link.reply(link.send(T.XFER_ABORT))[0] == T.ACK
    assert link.begin(spec.XferTarget.MODEL, new, 2)[0] == T.ACK
    corrupted = bytearray(new)
    corrupted[1000] ^= 0x40
    assert link.send_chunks(bytes(corrupted)) == len(new)
    t2, checksum = link.reply(link.send(T.XFER_END))

    # Assert
    assert t == T.ERROR
    assert early_end["code"] == E.BAD_STATE
    assert t2 == T.ERROR
    assert checksum["code"] == E.CHECKSUM
    np.testing.assert_array_equal(half, old)
    current, info = link.get_model()
    np.testing.assert_array_equal(current, old)
    assert info["model_round"] == 1
    assert link.hello()["state"] == spec.State.IDLE


def test_download_abandoned_by_a_vanished_host_times_out(
    link: BoardLink, board: VirtualBoard
) -> None:
    # Prepare
    link.hello()
    before, _ = link.get_model()
    data = model.to_bytes(model.init_params(5))
    assert link.begin(spec.XferTarget.MODEL, data, 9)[0] == T.ACK
    link.send_chunks(data, 0, 8 * spec.CHUNK_BYTES)

    # Execute: the gateway disappears mid-transfer and comes back after the board's timeout.
    link.close()
    time.sleep(5.5)
    again = BoardLink(board.port)
    try:
        hello = again.hello()
        after, info = again.get_model()
    finally:
        again.close()

    # Assert
    assert hello["state"] == spec.State.IDLE
    np.testing.assert_array_equal(after, before)
    assert info["model_round"] == 0
    assert any("timed out" in line for line in board.log_lines())


def test_host_sample_trains_and_emits_loss(link: BoardLink) -> None:
    # Prepare
    link.hello()
    start, _ = link.get_model()
    x = np.linspace(-1, 1, 650, dtype=np.float32)

    # Execute
    t, ack = link.put(spec.XferTarget.FEATURES, x.astype("<f4").tobytes(), 2)
    loss = link.expect(T.LOSS)[1]
    after, _ = link.get_model()

    # Assert
    assert t == T.ACK, ack
    trainer = model.Trainer(start)
    step = trainer.step(x, 2)
    assert loss["source"] == spec.Source.HOST
    assert loss["label"] == 2
    assert loss["loss"] == pytest.approx(step.loss, abs=1e-6)
    np.testing.assert_allclose(after, trainer.params, atol=1e-6)


def test_host_audio_is_classified_with_the_board_pipeline(
    link: BoardLink, clips: dict[str, tuple[int, npt.NDArray[np.int16]]]
) -> None:
    # Prepare
    link.hello()
    params, _ = link.get_model()
    audio = clips["query"][1]

    # Execute
    t, ack = link.put(spec.XferTarget.AUDIO, audio.astype("<i2").tobytes(), spec.NO_CLASS)
    infer = link.expect(T.INFER)[1]
    after, _ = link.get_model()

    # Assert
    assert t == T.ACK, ack
    expected = model.forward(params, get_pipeline("centroid").compute(audio))
    np.testing.assert_allclose(infer["outputs"], expected, atol=1e-5)
    assert infer["source"] == spec.Source.HOST
    np.testing.assert_array_equal(after, params)


def test_restart_is_a_power_cycle(link: BoardLink, board: VirtualBoard) -> None:
    # Prepare
    first = link.hello()
    link.put_model(model.init_params(3), round_=4)
    link.close()

    # Execute
    board.restart()
    again = BoardLink(board.port)
    try:
        hello = again.hello()
        params, info = again.get_model()
        t, _ = again.reply(again.send(T.RESET))
        after_reset = again.expect(T.HELLO)[1]
    finally:
        again.close()

    # Assert
    assert hello["boot_id"] != first["boot_id"]
    assert hello["board_id"] == first["board_id"]
    np.testing.assert_array_equal(params, model.init_params(model.DEFAULT_SEED))
    assert info["model_round"] == 0
    assert t == T.ACK
    assert after_reset["boot_id"] != hello["boot_id"]


def test_stdio_mode_answers_a_read_of_the_whole_model(binary: Path) -> None:
    # Regression: with a blocking stdin the board stalled after the first poll's 8 chunks.
    proc = subprocess.Popen(
        [str(binary), "--stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        chunks = -(-model.MODEL_BYTES // spec.CHUNK_BYTES)
        proc.stdin.write(link_support.pack(spec.MsgType.READ, 1, offset=0, count=chunks))
        proc.stdin.flush()
        parser = frame.FrameParser()
        data = bytearray()
        deadline = time.monotonic() + 10
        while len(data) < model.MODEL_BYTES and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.1)[0]:
                for f in parser.feed(os.read(proc.stdout.fileno(), 65536)):
                    if isinstance(f, frame.Frame) and f.type == spec.MsgType.MODEL_CHUNK:
                        data += link_support.unpack(f)["tail"]
        assert bytes(data) == model.to_bytes(model.init_params())
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
