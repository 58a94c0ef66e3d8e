"""``tinyfed board selftest``: one command that checks a board on the desk, part by part.

(About 580 lines: the checks run in order on one link session and share what earlier ones
found; each is one method.) The checks, in order (each is PASS, FAIL or SKIP, with a line
saying what was seen):

* **link**: HELLO (firmware version, architecture, pipeline, protocol); round trips (HELLO_REQ
  answered, N times: median and worst); the board's model uploaded (``GET_MODEL`` + ``READ``,
  the CRC-32 of what arrived checked against ``MODEL_INFO``) and downloaded back (the board
  checks the CRC-32 before applying it, then ``MODEL_INFO`` must report our CRC and round), each
  with its speed. The board keeps its own model: what is downloaded is what was uploaded.
* **microphone**: the boot report a board sends after HELLO when a host opens its port
  (``board: ...; microphone ok|started but SILENT|FAILED to start ...``), and, with a person,
  the level of a recording (the LOG ``recording level peak=N rms=X`` after a button recording),
  in dBFS; a recording that never completes or a microphone that does not start fails.
* **training**: one host sample (a WAV, a corpus folder's first clip, or a synthesized word)
  sent as AUDIO with label 0; the board answers LOSS; the model uploaded again must be finite,
  changed, with class 0's output risen, and equal to the Python reference step
  (:mod:`tinyfed.features` + :class:`tinyfed.model.Trainer` at the board's lr and momentum).
* **buttons** and **LEDs** (only with a person: a terminal and no ``--no-interactive``): the
  person presses D2..D5 in turn; each press, the LED colour the board sets and the recording's
  result are checked from the board's frames; then the person says whether the LEDs lit.
* **restore**: the board's own model is downloaded back after training (from the host sample
  and from the button presses), so the self-test leaves the model as it found it (its momentum
  and ``steps_since_global`` restart at zero, as after any download).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tinyfed import model
from tinyfed.board.events import LinkEvents
from tinyfed.board.person import Person
from tinyfed.board.report import FAIL, PASS, SKIP, Check, Report, dbfs
from tinyfed.board.sample import Sample
from tinyfed.errors import ModelError, TinyfedError
from tinyfed.features import get_pipeline
from tinyfed.link import spec
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
from tinyfed.link.transports.base import Transport, TransportError
from tinyfed.model import families

#: (button, role, LED bits while held, colour name)
BUTTONS = (
    ("D2", "train keyword 1", 0b001, "red"),
    ("D3", "train keyword 2", 0b010, "green"),
    ("D4", "train keyword 3", 0b100, "blue"),
    ("D5", "inference", 0b111, "white"),
)
QUIET_PEAK = 100  #: a spoken word's peak below this (-50 dBFS) means a deaf microphone
PARAMS_TOLERANCE = 1e-3  #: board step vs the Python reference, per weight
LOSS_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------- the self-test


class SelfTest:
    """The checks against one board; :func:`run_selftest` runs them."""

    def __init__(
        self,
        link: BoardLink,
        report: Report,
        *,
        sample: Sample,
        person: Person | None,
        skip_reason: str,
        round_trips: int,
        press_timeout: float,
        on_check: Callable[[Check], None],
    ) -> None:
        self.link = link
        self.report = report
        self.sample = sample
        self.person = person
        self.skip_reason = skip_reason
        self.round_trips = round_trips
        self.press_timeout = press_timeout
        self.on_check = on_check
        self.events = LinkEvents(link)
        self.hello: Hello | None = None
        self.original: tuple[model.F32, int] | None = None  # the board's model and round
        self.family: families.Family = families.PAPER  #: from the HELLO's arch
        self.trained = False  # the board's model was changed by this test

    def add(self, group: str, name: str, status: str, detail: str, **data: Any) -> Check:
        check = Check(group, name, status, detail, data)
        self.report.checks.append(check)
        self.on_check(check)
        return check

    async def run(self) -> None:
        collector = asyncio.create_task(self.events.run())
        try:
            if not await self.check_hello():
                for group, name in (
                    ("link", "round trips"),
                    ("link", "model upload"),
                    ("link", "model download"),
                    ("microphone", "boot report"),
                    ("training", "one step"),
                ):
                    self.add(group, name, SKIP, "not run: the board did not answer HELLO")
                return
            await self.check_round_trips()
            await self.check_upload()
            await self.check_download()
            self.check_boot_report()
            await self.check_training()
            await self.restore("after the host sample")
            await self.check_person()
            await self.restore("after the button presses")
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector

    # -- link -----------------------------------------------------------------------------

    async def check_hello(self) -> bool:
        try:
            h = await self.link.hello()
        except (LinkError, TransportError) as exc:
            self.add("link", "HELLO", FAIL, f"no HELLO from the board: {exc}")
            return False
        self.hello = h
        try:
            arch = spec.ArchId(h.arch).name
        except ValueError:
            arch = f"unknown ({h.arch})"
        try:
            state = spec.State(h.state).name
        except ValueError:
            state = str(h.state)
        self.report.board = {
            "board_id": h.board_hex,
            "boot_id": h.boot_hex,
            "virtual": h.virtual,
            "firmware": h.firmware,
            "protocol": h.protocol,
            "arch": h.arch,
            "pipeline": h.pipeline_name,
            "lr": round(h.lr, 6),
            "momentum": round(h.momentum, 6),
            "local_steps": h.local_steps,
            "model_round": h.model_round,
            "total_steps": h.total_steps,
            "window": h.window,
            "chunk_bytes": h.chunk_bytes,
        }
        detail = (
            f"{'virtual board' if h.virtual else 'board'} {h.board_hex}, firmware {h.firmware}, "
            f"protocol {h.protocol}, arch {arch}, pipeline {h.pipeline_name}, lr {h.lr:g}, "
            f"momentum {h.momentum:g}, model round {h.model_round}, state {state}"
        )
        problems = []
        if h.protocol != spec.PROTOCOL_VERSION:
            problems.append(f"protocol {h.protocol}, this host speaks {spec.PROTOCOL_VERSION}")
        try:
            self.family = families.by_arch_id(h.arch)
        except ModelError as exc:
            problems.append(str(exc))
        if h.pipeline not in set(spec.PipelineId):
            problems.append(f"unknown feature pipeline {h.pipeline}")
        if problems:
            self.add("link", "HELLO", FAIL, "; ".join(problems) + f" ({detail})")
            return False
        self.add("link", "HELLO", PASS, detail)
        return True

    async def check_round_trips(self) -> None:
        times: list[float] = []
        try:
            for _ in range(self.round_trips):
                t0 = time.perf_counter()
                await self.link.hello()
                times.append((time.perf_counter() - t0) * 1000)
        except (LinkError, TransportError) as exc:
            self.add(
                "link", "round trips", FAIL, f"HELLO {len(times) + 1} of {self.round_trips}: {exc}"
            )
            return
        median, worst = statistics.median(times), max(times)
        self.add(
            "link",
            "round trips",
            PASS,
            f"{len(times)} HELLO_REQ/HELLO: median {median:.1f} ms, worst {worst:.1f} ms",
            median_ms=round(median, 3),
            worst_ms=round(worst, 3),
        )

    async def check_upload(self) -> None:
        try:
            params, info = await self.link.get_model()
        except (LinkError, TransportError, TinyfedError) as exc:
            self.add(
                "link", "model upload", FAIL, f"the board's model did not arrive intact: {exc}"
            )
            return
        rec = self.link.transfers[-1]
        self.original = (params, info.model_round)
        self.add(
            "link",
            "model upload",
            PASS,
            f"{rec.size} B in {rec.seconds * 1000:.0f} ms ({_rate(rec.size, rec.seconds)}), "
            f"CRC-32 {info.crc32:08x} verified, model round {info.model_round}, "
            f"{rec.round_trips} round trips, {rec.retries} retries",
            bytes=rec.size,
            seconds=round(rec.seconds, 4),
            crc32=f"{info.crc32:08x}",
            retries=rec.retries,
        )

    async def check_download(self) -> None:
        if self.original is None:
            paper = self.family is families.PAPER
            params, rnd = (model.init_params() if paper else self.family.init()), 0
            what = "the fresh seeded model (the upload failed; the board now holds it)"
        else:
            params, rnd = self.original
            what = "the board's own model"
        crc = model.crc32(params)
        try:
            rec = await self.link.put_model(params, rnd)
            info = await self.link.model_info()
        except (LinkError, TransportError) as exc:
            self.add("link", "model download", FAIL, f"{what} was not accepted: {exc}")
            return
        if (info.crc32, info.model_round) != (crc, rnd):
            self.add(
                "link",
                "model download",
                FAIL,
                f"the board acknowledged {what} but reports CRC-32 {info.crc32:08x} round "
                f"{info.model_round}, expected {crc:08x} round {rnd}",
            )
            return
        if self.original is None:
            self.original = (params, rnd)
            self.trained = True
        self.add(
            "link",
            "model download",
            PASS,
            f"{what}, {rec.size} B in {rec.seconds * 1000:.0f} ms "
            f"({_rate(rec.size, rec.seconds)}), CRC-32 {crc:08x} verified by the board, "
            f"{rec.round_trips} round trips, {rec.retries} retries",
            bytes=rec.size,
            seconds=round(rec.seconds, 4),
            crc32=f"{crc:08x}",
            retries=rec.retries,
        )

    # -- microphone -----------------------------------------------------------------------

    def check_boot_report(self) -> None:
        reports = [
            e for e in self.events.items if isinstance(e, LogLine) and e.text.startswith("board:")
        ]
        if not reports:
            assert self.hello is not None
            why = (
                "a virtual board sends none"
                if self.hello.virtual
                else "a board sends it after HELLO when a host opens its USB port"
            )
            self.add("microphone", "boot report", SKIP, f"no boot report received ({why})")
            return
        text = reports[-1].text
        mic = next((p.strip() for p in text.split(";") if "microphone" in p), "")
        status = FAIL if ("SILENT" in mic or "FAILED" in mic or not mic) else PASS
        self.add("microphone", "boot report", status, text, report=text)

    # -- training -------------------------------------------------------------------------

    async def check_training(self) -> None:
        if self.original is None or self.hello is None:
            self.add("training", "one step", SKIP, "not run: the board's model is unknown")
            return
        if self.family is not families.PAPER:
            self.add(
                "training",
                "one step",
                SKIP,
                f"not run: the reference step here is the paper family's; the board runs the "
                f"{self.family.name} family ({self.family.arch})",
            )
            return
        start, _ = self.original
        h = self.hello
        features = get_pipeline(h.pipeline_name).compute(self.sample.audio)
        reference = model.Trainer(start, lr=h.lr, momentum=h.momentum)
        expected = reference.step(features, 0)
        mark = self.events.mark()
        try:
            await self.link.send_sample(audio=self.sample.audio, label=0)
            self.trained = True
            found = await self.events.wait(
                lambda e: isinstance(e, LossReport) and e.source == spec.Source.HOST,
                mark,
                timeout=max(3.0, self.link.timeout * 5),
            )
            if found is None:
                self.add(
                    "training", "one step", FAIL, "the board accepted the sample but sent no LOSS"
                )
                return
            loss = found[1]
            assert isinstance(loss, LossReport)
            after, _ = await self.link.get_model()
        except (LinkError, TransportError, TinyfedError) as exc:
            self.add("training", "one step", FAIL, f"{self.sample.description}: {exc}")
            return
        delta = np.abs(after.astype(np.float64) - start.astype(np.float64))
        off = float(np.max(np.abs(after.astype(np.float64) - reference.params)))
        before_out = float(model.forward(start, features)[0])
        after_out = float(model.forward(after, features)[0])
        data = {
            "sample": self.sample.description,
            "loss": loss.loss,
            "reference_loss": expected.loss,
            "weights_changed": int(np.count_nonzero(delta)),
            "max_change": float(np.max(delta)) if np.all(np.isfinite(delta)) else None,
            "max_difference_from_reference": off if math.isfinite(off) else None,
            "output_before": before_out,
            "output_after": after_out,
        }
        problems = []
        if not np.all(np.isfinite(after)):
            problems.append("the trained model has non-finite weights")
        elif not np.any(delta):
            problems.append("the model did not change")
        if abs(loss.loss - expected.loss) > LOSS_TOLERANCE * (1 + abs(expected.loss)):
            problems.append(f"loss {loss.loss:.6f}, the reference step says {expected.loss:.6f}")
        if not off <= PARAMS_TOLERANCE:
            problems.append(f"weights differ from the reference step by up to {off:.3g}")
        if not after_out > before_out:
            problems.append(f"class 0's output did not rise ({before_out:.4f} -> {after_out:.4f})")
        detail = (
            f"{self.sample.description}, label 0: loss {loss.loss:.4f} (reference "
            f"{expected.loss:.4f}), {data['weights_changed']} of {model.N_PARAMS} weights "
            f"changed, max |dw| {np.max(delta):.3g}, class 0 output {before_out:.3f} -> "
            f"{after_out:.3f}, max difference from the Python reference step {off:.2g}"
        )
        if problems:
            self.add("training", "one step", FAIL, "; ".join(problems) + f" ({detail})", **data)
        else:
            self.add("training", "one step", PASS, detail, **data)

    async def restore(self, when: str) -> None:
        if not self.trained or self.original is None or self.link.closed:
            return
        params, rnd = self.original
        try:
            await self.link.put_model(params, rnd)
        except (LinkError, TransportError) as exc:
            self.add("restore", "model", FAIL, f"{when}: the board's model was not put back: {exc}")
            return
        self.trained = False
        self.add(
            "restore",
            "model",
            PASS,
            f"{when}: the board's model (round {rnd}, CRC-32 {model.crc32(params):08x}) put back",
        )

    # -- the person -----------------------------------------------------------------------

    async def check_person(self) -> None:
        if self.person is None:
            for group, name in (
                ("buttons", "D2..D5"),
                ("microphone", "recording level"),
                ("leds", "colours"),
            ):
                self.add(
                    group, name, SKIP, f"skipped: needs a person at the board ({self.skip_reason})"
                )
            return
        if self.link.closed:
            for group, name in (("buttons", "D2..D5"), ("microphone", "recording level")):
                self.add(group, name, SKIP, "not run: the link closed")
            return
        person = self.person
        person.say(
            "Buttons: press and release D2, D3, D4, then D5, one at a time, waiting for the "
            "LEDs to go dark in between (each records one second; the board's model is put back "
            "afterwards). When you release D5, say a word."
        )
        levels: dict[str, tuple[int, float]] = {}
        mic_errors: list[str] = []
        for button, role, bits, colour in BUTTONS:
            hint = "; say a word when you release it" if button == "D5" else ""
            person.say(f"press and release {button} ({role}): it lights {colour}{hint}")
            await self._one_button((button, role, bits, colour), levels, mic_errors)
        self._mic_level(levels, mic_errors)
        answer = await person.ask(
            "Did each button light its colour while held (D2 red, D3 green, D4 blue, D5 "
            "white), the orange LED while it recorded, and the colour blink afterwards?"
        )
        if answer is None:
            self.add("leds", "colours", SKIP, "no answer (end of input)")
        else:
            self.add(
                "leds",
                "colours",
                PASS if answer else FAIL,
                "the person saw them" if answer else "the person did not see them light",
            )

    async def _one_button(
        self,
        which: tuple[str, str, int, str],
        levels: dict[str, tuple[int, float]],
        mic_errors: list[str],
    ) -> None:
        button, role, bits, colour = which
        name = f"{button} ({role})"
        mark = self.events.mark()
        prefix = f"button {button} "
        pressed = await self.events.wait(
            lambda e: (
                isinstance(e, LogLine)
                and e.text.startswith(prefix)
                and "pressed" in e.text
                and "ignored" not in e.text
            ),
            mark,
            self.press_timeout,
        )
        if pressed is None:
            self.add(
                "buttons",
                name,
                FAIL,
                f"no press of {button} seen in {self.press_timeout:.0f} s (check its wiring and "
                'TINYFED_BUTTON_WIRING: firmware/README.md, "Wiring")',
            )
            return

        def done(e: Event) -> bool:
            if isinstance(e, LossReport | InferReport):
                return e.source == spec.Source.BUTTON
            if isinstance(e, LogLine):
                return (e.level >= 3 and "microphone" in e.text) or e.text.startswith(
                    "event round_request"
                )
            return False

        result = await self.events.wait(done, pressed[0], self.press_timeout + 5)
        seen = self.events.since(mark)
        led = any(isinstance(e, StateReport) and e.led & 0b111 == bits for e in seen)
        for e in seen:
            if isinstance(e, LogLine) and e.text.startswith("recording level"):
                parsed = _level(e.text)
                if parsed is not None:
                    levels[button] = parsed
        if result is None:
            self.add("buttons", name, FAIL, f"{button} pressed, but no recording result arrived")
            return
        event = result[1]
        if isinstance(event, LogLine) and event.text.startswith("event round_request"):
            self.add(
                "buttons",
                name,
                PASS if led else FAIL,
                f"held 3 s: a round request, nothing recorded ({event.text}); press it briefly "
                "to check the microphone",
            )
            return
        if isinstance(event, LogLine):
            mic_errors.append(event.text)
            self.add("buttons", name, PASS, f"pressed; recording failed: {event.text}")
            return
        if isinstance(event, LossReport):
            outcome = f"trained (step {event.step}, loss {event.loss:.3f})"
        elif isinstance(event, InferReport):
            outcome = f"inference (prediction {event.prediction})"
        else:
            outcome = "done"

        self.trained = self.trained or isinstance(event, LossReport)
        status = PASS if led else FAIL
        led_text = f"the board lit {colour}" if led else f"the board never set the {colour} LED"
        self.add("buttons", name, status, f"pressed and released; {led_text}; {outcome}")

    def _mic_level(self, levels: dict[str, tuple[int, float]], mic_errors: list[str]) -> None:
        if mic_errors:
            self.add("microphone", "recording level", FAIL, mic_errors[0])
            return
        if not levels:
            self.add("microphone", "recording level", SKIP, "no recording level reported")
            return
        button = "D5" if "D5" in levels else max(levels, key=lambda b: levels[b][0])
        peak, rms = levels[button]
        data = {
            "button": button,
            "peak": peak,
            "rms": rms,
            "peak_dbfs": round(dbfs(peak), 1) if peak else None,
            "rms_dbfs": round(dbfs(rms), 1) if rms else None,
        }
        text = (
            f"recording of {button}: peak {peak} ({dbfs(peak):.1f} dBFS), rms {rms:.1f} "
            f"({dbfs(rms):.1f} dBFS)"
        )
        if peak == 0:
            self.add(
                "microphone", "recording level", FAIL, text + ": SILENT, every sample 0", **data
            )
        elif peak < QUIET_PEAK:
            self.add(
                "microphone",
                "recording level",
                FAIL,
                text + f": too quiet for a spoken word (below {dbfs(QUIET_PEAK):.0f} dBFS); "
                "is the PDM gain 80 (boot report)?",
                **data,
            )
        else:
            self.add("microphone", "recording level", PASS, text, **data)


def _level(text: str) -> tuple[int, float] | None:
    """``recording level peak=N rms=X`` -> (N, X)."""
    fields = dict(p.split("=", 1) for p in text.split() if "=" in p)
    try:
        return int(fields["peak"]), float(fields["rms"])
    except (KeyError, ValueError):
        return None


def _rate(size: int, seconds: float) -> str:
    return f"{size / seconds / 1000:.1f} kB/s" if seconds > 0 else "instant"


async def run_selftest(
    transport: Transport,
    *,
    device: str,
    sample: Sample,
    person: Person | None = None,
    skip_reason: str = "--no-interactive",
    timeout: float = 1.0,
    retries: int = 3,
    round_trips: int = 20,
    press_timeout: float = 60.0,
    on_check: Callable[[Check], None] = lambda c: None,
) -> Report:
    """Run every check against the board behind ``transport`` (not yet open); never raises for
    what the board does: a failure is a FAIL line in the report."""
    report = Report(device=device, interactive=person is not None)
    start = time.perf_counter()
    link = BoardLink(transport, timeout=timeout, retries=retries)
    try:
        await link.start()
    except (TransportError, OSError, TinyfedError) as exc:
        check = Check("link", "open", FAIL, f"could not open {device}: {exc}")
        report.checks.append(check)
        on_check(check)
        report.seconds = time.perf_counter() - start
        return report
    try:
        test = SelfTest(
            link,
            report,
            sample=sample,
            person=person,
            skip_reason=skip_reason,
            round_trips=round_trips,
            press_timeout=press_timeout,
            on_check=on_check,
        )
        await test.run()
    finally:
        await link.close()
    report.seconds = time.perf_counter() - start
    return report
