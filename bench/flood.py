"""A worker floods the aggregator with stale uploads: what does it cost, and does an honest
update still get through promptly?

Usage: ``.venv/bin/python bench/flood.py [--uploads 3000] [--seed N]``. Starts a private
Mosquitto (the project's test settings), the real ``tinyfed aggregator`` as a subprocess
(``--expect a,b``), then worker ``a`` publishes ``--uploads`` stale 42 KB updates (based on
round 7 while round 0 is open) as fast as its client can, and worker ``b`` publishes one honest
update right after. Prints: rejections per second (from the aggregator's receipts), the time
from the honest update's publish to its receipt, the aggregator's peak RSS (VmHWM), the rows
the flood left in the database, and the size of the round's event once ``a`` also reports.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho

from tinyfed import model
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import ModelUpdate, Topics
from tinyfed.mqtt.session import connect, make_client, parse_broker_url
from tinyfed.testbed.broker import Mosquitto


class Recorder:
    """Every receipt and round event of the fleet, with arrival times."""

    def __init__(self, url: str, topics: Topics) -> None:
        self.topics = topics
        self.lock = threading.Condition()
        self.receipts: list[tuple[float, contract.Receipt]] = []
        self.rounds: list[bytes] = []
        self.global_round = -1
        broker = parse_broker_url(url)
        self.client = make_client(broker, "flood-recorder")
        self.client.on_connect = lambda c, *a: c.subscribe(topics.base + "#", qos=1)
        self.client.on_message = self._on_message
        connect(self.client, broker)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.endswith("/receipt") and msg.payload:
                self.receipts.append(
                    (time.monotonic(), contract.decode_receipt(bytes(msg.payload)))
                )
            elif msg.topic == self.topics.rounds:
                self.rounds.append(bytes(msg.payload))
            elif msg.topic == self.topics.global_model and msg.payload:
                self.global_round = contract.decode_global(bytes(msg.payload)).round
            self.lock.notify_all()

    def wait(self, what: str, check: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not check():  # type: ignore[operator]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"timed out waiting for {what}")
                self.lock.wait(left)


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    return peak_rss_mb(pid, "VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=3000, help="stale uploads in the flood")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    fleet = "flood"
    topics = Topics(fleet)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        db = Path(tmp) / "agg.db"
        log = open(Path(tmp) / "aggregator.log", "wb")  # noqa: SIM115
        agg = subprocess.Popen(
            [
                *(sys.executable, "-m", "tinyfed.cli", "aggregator", "--broker", broker.url),
                *("--fleet", fleet, "--db", str(db), "--expect", "a,b"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        rec = Recorder(broker.url, topics)
        try:
            rec.wait("global model 0", lambda: rec.global_round == 0, 30)
            idle_rss = rss_mb(agg.pid)
            url = parse_broker_url(broker.url)
            workers = {}
            for w in ("a", "b"):
                c = make_client(url, f"flood-{w}")
                connect(c, url)
                c.loop_start()
                workers[w] = c

            def update(worker: str, base: int, upload: str) -> bytes:
                params = model.init_params() + rng.normal(0, 0.05, model.N_PARAMS)
                return contract.encode_update(
                    ModelUpdate(
                        worker_id=worker,
                        base_round=base,
                        local_steps=10,
                        params=params.astype(np.float32),
                        upload_id=upload,
                        pipeline="centroid",
                    )
                )

            stale = update("a", 7, "stale")
            time.sleep(0.5)
            start = time.monotonic()
            for _ in range(args.uploads):
                info = workers["a"].publish(topics.worker_update("a"), stale, qos=1)
            info.wait_for_publish(timeout=600)  # the whole flood is at the broker, queued
            base_rss = rss_mb(agg.pid)
            honest_sent = time.monotonic()
            workers["b"].publish(topics.worker_update("b"), update("b", 0, "b-honest"), qos=1)
            rec.wait(
                "the honest receipt",
                lambda: any(r.upload_id == "b-honest" for _, r in rec.receipts),
                600,
            )
            honest_at = next(t for t, r in rec.receipts if r.upload_id == "b-honest")
            receipts = sum(r.upload_id == "stale" for _, r in rec.receipts)
            workers["a"].publish(topics.worker_update("a"), update("a", 0, "a-honest"), qos=1)
            rec.wait("round 0's event", lambda: bool(rec.rounds), 60)
            event = rec.rounds[0]
            rss = peak_rss_mb(agg.pid)
            with sqlite3.connect(db) as conn:
                (rows,) = conn.execute("SELECT COUNT(*) FROM rejections").fetchone()
        finally:
            agg.terminate()
            agg.wait(timeout=20)
            rec.client.disconnect()
            rec.client.loop_stop()
    # The aggregator's session queue is first in, first out: the honest update, queued behind
    # the whole flood, is decided once the flood is.
    flood_s = honest_at - start
    judged = contract.decode_round_event(event).rejected_count
    print(f"first flood upload published -> honest update's receipt: {flood_s:.1f} s")
    print(f"flood of {args.uploads:,} stale {len(stale):,}-byte uploads from one worker")
    print(f"  rejections decided per second     {args.uploads / flood_s:10.0f}")
    print(
        f"  honest update: publish -> receipt  {honest_at - honest_sent:10.2f} s (sent behind it)"
    )
    print(f"  aggregator RSS idle / mid-flood    {idle_rss:6.1f} / {base_rss:.1f} MB")
    print(f"  aggregator peak RSS (VmHWM)        {rss:10.1f} MB")
    print(f"  rejections counted in the round    {judged:10,d}")
    print(f"  rejection receipts sent            {receipts:10,d} (5/s per worker after 20)")
    print(f"  rejection rows stored              {rows:10d}")
    print(f"  round event                        {len(event):10,d} bytes")
    print(
        f"rejections_per_s={args.uploads / flood_s:.0f} honest_s={honest_at - honest_sent:.2f} "
        f"peak_rss_mb={rss:.1f} rows={rows} event_bytes={len(event)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
