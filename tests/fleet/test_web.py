"""The web dashboard, its JSON and the Prometheus metrics, from a real fleet's MQTT topics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tinyfed.cli import build_parser
from tinyfed.errors import UsageError
from tinyfed.fleet import web
from tinyfed.fleet.recorder import FleetSnapshot, Recorder, WorkerView
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import AggregatorStatus, Topics
from tinyfed.mqtt.session import parse_broker_url
from tinyfed.testbed.broker import Mosquitto, free_port
from tinyfed.testbed.virtual_board import build_virtual_board

from .test_recorder import WORKERS, held_out_set, play_one_round, publish, publisher


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as res:
            return res.status, res.headers["Content-Type"], res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def metric(text: str, line_start: str) -> float:
    """The value of the one sample whose line starts with ``line_start``."""
    (line,) = [ln for ln in text.splitlines() if ln.startswith(line_start)]
    return float(line.rsplit(" ", 1)[1])


@pytest.fixture
def served(broker: Mosquitto, fleet: str) -> Iterator[web.WebServer]:
    """A recorder on a fleet that played one round (round 2 open, 1 of 2 reported)."""
    t = Topics(fleet)
    recorder = Recorder(parse_broker_url(broker.url), t, held_out=held_out_set())
    recorder.start()
    client = publisher(broker)
    server = web.WebServer(recorder.snapshot, ("127.0.0.1", 0))
    try:
        play_one_round(client, t)
        status = AggregatorStatus(
            "online", round=2, attempt=1, strategy="fedavg", expected_count=2, reported_count=1
        )
        publish(client, t.aggregator_status, contract.encode_aggregator_status(status), True)
        recorder.wait_for(
            lambda s: s.aggregator is not None and s.aggregator.round == 2 and len(s.globals) == 2,
            timeout=15,
        )
        yield server
    finally:
        server.close()
        client.disconnect()
        client.loop_stop()
        recorder.stop()


def test_metrics_follow_the_fleet(served: web.WebServer, fleet: str) -> None:
    status, kind, text = get(served.url + "metrics")
    assert status == 200
    assert kind.startswith("text/plain; version=0.0.4")
    f = f'{{fleet="{fleet}"'
    assert metric(text, f"tinyfed_aggregator_up{f}}}") == 1.0
    assert metric(text, f"tinyfed_round{f}}}") == 2.0  # round 1 closed, round 2 open
    assert metric(text, f"tinyfed_round_expected{f}}}") == 2.0
    assert metric(text, f"tinyfed_round_reported{f}}}") == 1.0
    assert metric(text, f"tinyfed_rounds_closed_total{f}}}") == 1.0
    assert metric(text, f"tinyfed_last_round_participants{f}}}") == 2.0
    assert metric(text, f"tinyfed_global_round{f}}}") == 1.0
    assert 0.0 <= metric(text, f"tinyfed_global_accuracy{f}}}") <= 1.0
    assert metric(text, f'tinyfed_workers{f},state="online"}}') == 2.0
    for w in WORKERS:
        assert metric(text, f'tinyfed_worker_steps{f},worker="{w}"}}') == 3.0
    assert metric(text, f'tinyfed_worker_loss{f},worker="board-a"}}') == pytest.approx(0.15)
    for line in text.splitlines():  # every sample line is "name{labels} value"
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            assert name.startswith("tinyfed_"), line
            assert name.endswith("}"), line
            float(value)


def test_the_json_feeds_the_page_and_unknown_paths_are_404(served: web.WebServer) -> None:
    status, kind, text = get(served.url + "api/fleet")
    assert (status, kind) == (200, "application/json")
    data = json.loads(text)
    assert [w["id"] for w in data["workers"]] == list(WORKERS)
    assert data["workers"][0]["steps"] == 3
    assert data["workers"][0]["losses"] == pytest.approx([0.25, 0.2, 0.15])
    assert data["aggregator"]["round"] == 2
    assert [r["round"] for r in data["rounds"]] == [1]
    assert data["rounds"][0]["accuracy"] == data["global"]["accuracy"]
    assert get(served.url + "nope")[0] == 404
    status, kind, page = get(served.url)
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert "api/fleet" in page


def test_a_large_fleet_is_listed_within_bounds() -> None:
    views = tuple(WorkerView(f"w{i:05d}", f"w{i:05d}") for i in range(2 * web.MAX_WORKERS))
    snap = FleetSnapshot("big", 0.0, views, (), (), (), None, 0, True)
    data = web.fleet_json(snap)
    assert (len(data["workers"]), data["workers_total"]) == (web.MAX_WORKERS, 2 * web.MAX_WORKERS)
    text = web.metrics_text(snap)
    assert sum(ln.startswith("tinyfed_worker_steps") for ln in text.splitlines()) == web.MAX_WORKERS
    assert 'tinyfed_workers{fleet="big",state="unknown"} 1000.0' in text


@pytest.mark.parametrize("bad", ["8080", "host:", ":99999", ":x"])
def test_a_bad_web_address_is_named(bad: str) -> None:
    with pytest.raises(UsageError, match="--web: give HOST:PORT"):
        web.parse_address(bad)


def test_monitor_offers_the_web_option() -> None:
    args = build_parser().parse_args(["monitor", "--broker", "mqtt://h", "--fleet", "f"])
    assert args.web is None
    assert web.parse_address(":8080") == ("127.0.0.1", 8080)


def test_the_page_draws_the_fleet_in_a_real_browser(served: web.WebServer) -> None:
    browser = chromium_driver()
    try:
        browser.get(served.url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-worker="board-a"]'))
        row = browser.find_element(By.CSS_SELECTOR, 'tr[data-worker="board-a"]')
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[:8] == ["board-a", "online", "–", "–", "3", "–", "0.150", "0.200"]
        curve = row.find_element(By.CSS_SELECTOR, "svg.loss path.curve")
        assert (curve.get_attribute("d") or "").startswith("M")
        assert "open round 2" in browser.find_element(By.ID, "round").text
        assert "1 of 2 updates" in browser.find_element(By.ID, "round").text
        assert browser.find_elements(By.CSS_SELECTOR, 'tr[data-round="1"]')
        served.close()  # the monitor goes away: the page says so instead of freezing
        time.sleep(0.1)
        wait.until(lambda b: "cannot reach the monitor" in b.find_element(By.ID, "error").text)
    finally:
        browser.quit()


def chromium_driver() -> webdriver.Chrome:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium, "scripts/setup installs Debian's chromium"
    assert driver_path, "scripts/setup installs Debian's chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(
        service=webdriver.ChromeService(executable_path=driver_path), options=options
    )


@pytest.mark.slow
def test_the_page_follows_a_running_demo_round_by_round(tmp_path: Path) -> None:
    # Prepare: the real demo (private Mosquitto, aggregator, two virtual boards and gateways)
    build_virtual_board()
    port = free_port()
    command = [
        *(sys.executable, "-m", "tinyfed.cli", "demo", "--boards", "2", "--rounds", "3"),
        *("--no-dashboard", "--report", str(tmp_path / "report")),
        *("--corpus-dir", str(tmp_path / "corpus"), "--per-word", "30", "--record-ms", "20"),
        *("--fleet", "web" + uuid.uuid4().hex[:8], "--web", f"127.0.0.1:{port}"),
    ]
    demo = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    browser = chromium_driver()
    try:
        deadline = time.monotonic() + 60
        while True:  # the server starts once the corpus is ready
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/fleet", timeout=2).close()
                break
            except OSError:
                assert demo.poll() is None, demo.stdout.read() if demo.stdout else ""
                assert time.monotonic() < deadline, "the demo's web dashboard never answered"
                time.sleep(0.2)
        # Execute
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 90)
        # Assert: both boards appear, training, then the rounds table grows as rounds close
        # (3 rounds: the last one's close ends the demo and its server, the page may miss it)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "tr[data-worker]")) == 2)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "tr[data-worker] svg path.curve"))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-round="1"]'))
        first = browser.find_element(By.CSS_SELECTOR, 'tr[data-round="1"]').text.split()
        assert first[:3] == ["1", "closed", "2"]
        # the demo's words travel with its global model and its loss events
        assert "words: vermell · verd · blau" in browser.find_element(By.ID, "round").text
        board = browser.find_element(By.CSS_SELECTOR, "tr[data-worker]")
        assert board.find_elements(By.TAG_NAME, "td")[5].text.split()[0] in {
            "vermell",
            "verd",
            "blau",
        }
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-round="2"]'))
    finally:
        browser.quit()
        try:
            out, _ = demo.communicate(timeout=120)
        finally:
            if demo.poll() is None:
                demo.kill()
    assert demo.returncode == 0, out
    assert f"web dashboard: http://127.0.0.1:{port}/" in out
