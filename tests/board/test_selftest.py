"""``tinyfed board selftest``: the real command against the compiled virtual board over a real
pty (with and without a person at a terminal), and failing boards: one that never answers
(a TCP server that stays silent), a corrupted model transfer (the in-process fake board
damaging the data of valid frames), and a silent microphone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import select
import socket
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.board import selftest
from tinyfed.board.report import FAIL, PASS, SKIP, Check
from tinyfed.board.sample import load_sample, synthesized_word
from tinyfed.errors import UsageError
from tinyfed.link import frame, messages
from tinyfed.link.frame import Frame
from tinyfed.link.spec import MsgType
from tinyfed.testbed.fake_board import FakeBoard
from tinyfed.testbed.virtual_board import VirtualBoard

TINYFED = [sys.executable, "-m", "tinyfed.cli"]


def _write_wav(path: Path, audio: npt.NDArray[np.int16]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(audio.astype("<i2").tobytes())


def _statuses(report: dict[str, Any]) -> dict[str, str]:
    return {f"{c['group']}/{c['name']}": c["status"] for c in report["checks"]}


def _details(report: dict[str, Any]) -> dict[str, str]:
    return {f"{c['group']}/{c['name']}": c["detail"] for c in report["checks"]}


def _board(binary: Path, tmp_path: Path, script: Path | None = None) -> VirtualBoard:
    vb = VirtualBoard(
        script=script,
        board_id="00112233445566aa",
        extra_args=["--record-ms", "100"],
        binary=binary,
        workdir=tmp_path / "vb",
    )
    vb.start()
    return vb


@pytest.fixture
def board(binary: Path, tmp_path: Path) -> Iterator[VirtualBoard]:
    vb = _board(binary, tmp_path)
    yield vb
    vb.close()


def _person_script(tmp_path: Path, d5_clip: npt.NDArray[np.int16]) -> Path:
    """A person who waits for the self-test's two model downloads (the link check's and the
    restore after training), then presses D2, D3, D4 with a word and D5 with ``d5_clip``."""
    _write_wav(tmp_path / "word.wav", synthesized_word(7))
    _write_wav(tmp_path / "d5.wav", d5_clip)
    script = tmp_path / "person.txt"
    script.write_text(
        "wait model\nwait model\nwait 300\nhold 200\npace 300\n"
        "press D2 word.wav\npress D3 word.wav\npress D4 word.wav\npress D5 d5.wav\n"
    )
    return script


def _run_on_a_terminal(args: list[str], answers: bytes, timeout: float = 90.0) -> tuple[int, str]:
    """Run the command with stdin and stdout on a new pty (a person's terminal); type
    ``answers``; return its exit code and everything it printed."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [*TINYFED, *args], stdin=slave, stdout=slave, stderr=subprocess.STDOUT, close_fds=True
    )
    os.close(slave)
    os.write(master, answers)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError("selftest hung:\n" + out.decode(errors="replace"))
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            out += data
    finally:
        os.close(master)
    return proc.wait(timeout=10), out.decode(errors="replace")


# ----------------------------------------------------------------------------- passing


def test_selftest_passes_against_the_virtual_board(board: VirtualBoard) -> None:
    # Execute
    proc = subprocess.run(
        [*TINYFED, "board", "selftest", "--device", f"serial://{board.port}", "--json"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    status = _statuses(report)
    assert report["passed"] is True
    for check in (
        "link/HELLO",
        "link/round trips",
        "link/model upload",
        "link/model download",
        "training/one step",
        "restore/model",
    ):
        assert status[check] == PASS, check
    assert status["buttons/D2..D5"] == SKIP
    assert "stdin is not a terminal" in _details(report)["buttons/D2..D5"]
    # The virtual board's boot report follows the selftest's HELLO, as a real board's does.
    assert status["microphone/boot report"] == PASS
    assert "board: virtual; microphone ok" in _details(report)["microphone/boot report"]
    assert report["board"]["virtual"] is True
    assert report["board"]["board_id"] == "00112233445566aa"
    training = next(c for c in report["checks"] if c["group"] == "training")
    assert training["data"]["max_difference_from_reference"] < 1e-5
    assert training["data"]["output_after"] > training["data"]["output_before"]
    assert "CRC-32" in _details(report)["link/model upload"]
    # the human-readable report went to stderr, ending with the verdict
    assert "result: PASS" in proc.stderr


def test_selftest_with_a_person_at_a_terminal(binary: Path, tmp_path: Path) -> None:
    # Prepare: the person presses every button and answers "yes" about the LEDs
    vb = _board(binary, tmp_path, _person_script(tmp_path, synthesized_word(3)))
    try:
        # Execute
        code, out = _run_on_a_terminal(
            ["board", "selftest", "--device", f"serial://{vb.port}", "--press-timeout", "20"],
            b"y\n",
        )
    finally:
        vb.close()

    # Assert
    assert code == 0, out
    assert "· interactive" in out
    for button, colour in (("D2", "red"), ("D3", "green"), ("D4", "blue"), ("D5", "white")):
        assert f">>> press and release {button}" in out
        line = next(x for x in out.splitlines() if x.startswith(f"buttons     PASS  {button} "))
        assert f"the board lit {colour}" in line
    level = next(x for x in out.splitlines() if "recording level:" in x)
    assert "PASS" in level
    assert "dBFS" in level
    assert "leds        PASS  colours: the person saw them" in out
    assert "after the button presses: the board's model" in out
    assert "result: PASS" in out


# ----------------------------------------------------------------------------- failing


def test_a_silent_microphone_fails_the_selftest(binary: Path, tmp_path: Path) -> None:
    vb = _board(binary, tmp_path, _person_script(tmp_path, np.zeros(16_000, np.int16)))
    try:
        code, out = _run_on_a_terminal(
            ["board", "selftest", "--device", f"serial://{vb.port}", "--press-timeout", "20"],
            b"y\n",
        )
    finally:
        vb.close()

    assert code == 1, out
    level = next(x for x in out.splitlines() if "recording level:" in x)
    assert "FAIL" in level
    assert "SILENT, every sample 0" in level
    assert "result: FAIL" in out


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP 'board' that accepts and reads everything but never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        conns = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.setblocking(False)
                conns.append(conn)
            except TimeoutError:
                pass
            for c in conns:
                with contextlib.suppress(OSError):
                    c.recv(4096)
        for c in conns:
            c.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_a_board_that_never_answers_fails_with_the_reason(silent_server: int) -> None:
    proc = subprocess.run(
        [
            *TINYFED,
            "board",
            "selftest",
            "--device",
            f"tcp://127.0.0.1:{silent_server}",
            "--no-interactive",
            "--json",
            "--timeout",
            "0.2",
            "--retries",
            "1",
        ],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    status = _statuses(report)
    assert report["passed"] is False
    assert status["link/HELLO"] == FAIL
    assert "no HELLO from the board" in _details(report)["link/HELLO"]
    assert "no answer" in _details(report)["link/HELLO"]
    assert status["training/one step"] == SKIP
    assert "did not answer HELLO" in _details(report)["training/one step"]
    assert "result: FAIL" in proc.stderr
    assert "failed: link/HELLO: no HELLO from the board" in proc.stderr


def _damage(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
    """Every model chunk, both ways, arrives as a valid frame carrying a wrong byte."""
    if (direction, msg_type) not in (
        ("to_host", MsgType.MODEL_CHUNK),
        ("to_board", MsgType.XFER_CHUNK),
    ):
        return wire
    (f,) = frame.FrameParser().feed(wire)
    assert isinstance(f, Frame)
    payload = bytearray(f.payload)
    payload[-1] ^= 0x01
    return frame.encode_frame(f.type, f.seq, bytes(payload))


def test_a_corrupted_transfer_is_a_fail_naming_the_crc() -> None:
    checks: list[Check] = []
    report = asyncio.run(
        selftest.run_selftest(
            FakeBoard(fault=_damage),
            device="fake://board",
            sample=load_sample(None),
            timeout=0.2,
            retries=1,
            round_trips=3,
            on_check=checks.append,
        )
    )

    status = {f"{c.group}/{c.name}": c for c in report.checks}
    assert not report.passed
    assert checks == report.checks  # each check was shown as it finished
    assert status["link/HELLO"].status == PASS
    assert status["link/round trips"].status == PASS
    assert status["link/model upload"].status == FAIL
    assert "did not arrive intact" in status["link/model upload"].detail
    assert "CRC-32" in status["link/model upload"].detail
    assert status["link/model download"].status == FAIL
    assert "CHECKSUM" in status["link/model download"].detail
    assert status["training/one step"].status == SKIP
    assert "failed: link/model upload" in report.summary()
    assert report.to_json()["counts"] == {"pass": 2, "fail": 2, "skip": 5}


def test_load_sample_reads_a_wav_or_a_corpus_folder(tmp_path: Path) -> None:
    word = synthesized_word(5)
    (tmp_path / "corpus" / "verd").mkdir(parents=True)
    _write_wav(tmp_path / "corpus" / "verd" / "a_nohash_0.wav", word[:8000])

    from_dir = load_sample(tmp_path / "corpus")
    from_file = load_sample(tmp_path / "corpus" / "verd" / "a_nohash_0.wav")

    assert from_dir.audio.shape == (16_000,)
    np.testing.assert_array_equal(from_dir.audio[:8000], word[:8000])
    assert "padded with zeros" in from_dir.description
    np.testing.assert_array_equal(from_file.audio, from_dir.audio)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no WAV file"):
        load_sample(tmp_path / "empty")
    with pytest.raises(UsageError, match="no such file"):
        load_sample(tmp_path / "missing.wav")


def test_a_port_that_cannot_be_opened_is_a_fail(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TINYFED, "board", "selftest", "--device", f"serial://{tmp_path / 'ttyNONE'}"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "link        FAIL  open: could not open serial://" in proc.stdout
    assert "result: FAIL (0 passed, 1 failed, 0 skipped)" in proc.stdout


def _selftest_fake(board: FakeBoard) -> dict[str, Check]:
    report = asyncio.run(
        selftest.run_selftest(
            board,
            device="fake://board",
            sample=load_sample(None),
            timeout=0.2,
            retries=1,
            round_trips=3,
        )
    )
    return {f"{c.group}/{c.name}": c for c in report.checks}


def test_a_dscnn_board_moves_its_head_and_skips_the_paper_step() -> None:
    status = _selftest_fake(FakeBoard(family="dscnn"))
    assert status["link/HELLO"].status == PASS
    assert "arch DSCNN_HEAD, pipeline logmel40" in status["link/HELLO"].detail
    assert status["link/model upload"].status == PASS
    assert status["link/model download"].status == PASS
    assert status["training/one step"].status == SKIP
    assert "runs the dscnn family (dscnn64-head-v1)" in status["training/one step"].detail


def test_a_board_of_an_unknown_architecture_fails_hello_naming_it() -> None:
    def arch_9(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
        if direction != "to_host" or msg_type != MsgType.HELLO:
            return wire
        (f,) = frame.FrameParser().feed(wire)
        assert isinstance(f, Frame)
        hello = dataclasses.replace(frame.unpack_as(f, messages.Hello), arch=9)
        return frame.pack(hello, f.seq)

    status = _selftest_fake(FakeBoard(fault=arch_9))
    assert status["link/HELLO"].status == FAIL
    assert "unknown architecture id 9; known: paper (arch 1" in status["link/HELLO"].detail
