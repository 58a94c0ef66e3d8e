"""A fleet of the dscnn family end to end on the host side, and families kept apart."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest

from tests.aggregator.test_service import (
    WAIT_S,
    Observer,
    Worker,
    aggregator_in_process,
    fedavg,
    flags,
)
from tinyfed import cli, model
from tinyfed.aggregator import settings
from tinyfed.aggregator.resume import open_machine
from tinyfed.aggregator.store import Store
from tinyfed.errors import UsageError
from tinyfed.gateway.simulated import SimulatedGateway
from tinyfed.model import families
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import ModelUpdate, Topics
from tinyfed.mqtt.session import parse_broker_url
from tinyfed.testbed.broker import Mosquitto

DSCNN = families.DSCNN


@pytest.fixture
def watch(broker: Mosquitto, fleet: str) -> Iterator[Observer]:
    """Everything published under the fleet's topics."""
    obs = Observer(broker.url, Topics(fleet))
    yield obs
    obs.close()


def _dscnn(worker: Worker, params: np.ndarray, *, base: int = 0, steps: int = 10) -> ModelUpdate:
    u = worker.update(params, base=base, steps=steps)
    return ModelUpdate(
        worker_id=u.worker_id,
        base_round=u.base_round,
        local_steps=u.local_steps,
        params=u.params,
        upload_id=u.upload_id,
        pipeline="logmel40",
        arch=DSCNN.arch,
        loss=u.loss,
    )


def test_a_dscnn_fleet_of_simulated_gateways_averages_780_byte_heads(
    broker: Mosquitto, fleet: str, watch: Observer, tmp_path: Path
) -> None:
    # Prepare: the aggregator of a dscnn fleet, two simulated gateways (the real MQTT side)
    topics = Topics(fleet)
    argv = flags(broker.url, fleet, tmp_path / "agg.db", "--model", "dscnn", "--expect", "g1,g2")
    argv += ["--min-workers", "2", "--clip-norm", "off"]
    url = parse_broker_url(broker.url)

    async def fleet_runs() -> list[SimulatedGateway]:
        gateways = [
            SimulatedGateway(url, topics, w, seed=i, train_delay=(0.05, 0.2), delta_scale=0.1)
            for i, w in enumerate(["g1", "g2"])
        ]
        for gw in gateways:
            gw.start()
        try:
            deadline = time.monotonic() + 4 * WAIT_S
            while not all(1 in gw.uploaded for gw in gateways):
                assert time.monotonic() < deadline, "the fleet did not reach round 2"
                await asyncio.sleep(0.05)
        finally:
            await asyncio.gather(*(gw.stop() for gw in gateways))
        return gateways

    # Execute
    with aggregator_in_process(argv):
        g0 = watch.global_model(0)
        gateways = asyncio.run(fleet_runs())
        g1 = watch.global_model(1)
        payload = watch.wait(
            topics.global_model,
            lambda p: bool(p) and contract.decode_global(p).round == 1,
            "global model 1",
        )
    # Assert: zeros at round 0, 195-float updates, FedAvg of them, a 780-byte model on MQTT
    assert g0.arch == "dscnn64-head-v1"
    assert g0.pipeline == "logmel40"
    assert (g0.hyper.lr, g0.hyper.momentum) == (0.01, 0.0)
    np.testing.assert_array_equal(g0.params, np.zeros(195, np.float32))
    made = [m for gw in gateways for m in gw.made.values() if m.base_round == 0]
    assert sorted(m.worker_id for m in made) == ["g1", "g2"]
    assert all(m.params.shape == (195,) for m in made)
    expected = fedavg(*((m.params, float(m.local_steps)) for m in made))
    np.testing.assert_allclose(g1.params, expected, atol=1e-6)
    assert len(msgpack.unpackb(payload)["params"]) == 780
    with Store(tmp_path / "agg.db") as store:
        assert store.meta()["model"] == "dscnn"
        stored, _ = store.global_model(1)
    assert stored.arch == DSCNN.arch
    np.testing.assert_array_equal(stored.params, g1.params)


def test_an_update_of_the_other_family_is_rejected_with_its_reason(
    broker: Mosquitto, fleet: str, watch: Observer, tmp_path: Path
) -> None:
    # Prepare: a dscnn fleet; worker p sends the paper's network, worker h a head
    topics = Topics(fleet)
    argv = flags(broker.url, fleet, tmp_path / "agg.db", "--model", "dscnn", "--expect", "p,h")
    argv += ["--clip-norm", "off"]
    p, h = Worker(broker.url, topics, "p"), Worker(broker.url, topics, "h")
    head = np.full(195, 0.5, np.float32)
    with aggregator_in_process(argv):
        watch.global_model(0)
        # Execute
        p.send(p.update(families.PAPER.init()))
        deadline = time.monotonic() + WAIT_S
        while not watch.receipts("p"):
            assert time.monotonic() < deadline, "no receipt for the paper update"
            time.sleep(0.05)
        h.send(_dscnn(h, head))
        while not watch.receipts("h"):
            assert time.monotonic() < deadline + WAIT_S, "no receipt for the head"
            time.sleep(0.05)
        receipt, accepted = watch.receipts("p")[-1], watch.receipts("h")[-1]
    p.close()
    h.close()
    # Assert
    assert accepted.outcome == "accepted"
    assert receipt.outcome == "rejected"
    assert "architecture 'fc650-16-3-sigmoid-v1' (the paper family's)" in receipt.reason
    assert "the fleet runs the dscnn family" in receipt.reason


def _from(argv: list[str]) -> settings.Settings:
    return settings.from_args(cli.build_parser().parse_args(argv), env={})


def test_model_must_match_the_family_of_the_store(tmp_path: Path) -> None:
    db = tmp_path / "agg.db"
    url = "mqtt://127.0.0.1:1"
    paper = _from(flags(url, "f", db))
    assert paper.family is families.PAPER
    assert paper.pipeline == "centroid"
    assert paper.init_scheme == "scaled"
    with Store(db) as store:
        machine = open_machine(paper, store, now=0.0)
    np.testing.assert_array_equal(machine.current.params, families.PAPER.init())
    # Execute: the same database under --model dscnn
    with Store(db) as store, pytest.raises(UsageError) as err:
        open_machine(_from(flags(url, "f", db, "--model", "dscnn")), store, now=0.0)
    # Assert
    assert "holds a fleet of the paper model family, not dscnn" in str(err.value)
    assert "--model paper" in str(err.value)
    # a database made before families were recorded: the arch of its global models decides
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("DELETE FROM meta WHERE key = 'model'")
    with Store(db) as store, pytest.raises(UsageError, match="paper model family, not dscnn"):
        open_machine(_from(flags(url, "f", db, "--model", "dscnn")), store, now=0.0)
    with Store(db) as store:
        assert open_machine(paper, store, now=0.0).round == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "dscnn", "--pipeline", "centroid"], "'centroid' is not one of the dscnn"),
        (["--model", "dscnn", "--init-scheme", "paper"], "'paper' is not one of the dscnn"),
        (["--pipeline", "logmel40"], "'logmel40' is not one of the paper family's"),
    ],
)
def test_settings_of_another_family_are_usage_errors(extra: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _from(flags("mqtt://127.0.0.1:1", "f", "x.db", *extra))


def test_init_scheme_paper_gives_the_papers_round_0(tmp_path: Path) -> None:
    config = _from(flags("mqtt://127.0.0.1:1", "f", tmp_path / "a.db", "--init-scheme", "paper"))
    with Store(tmp_path / "a.db") as store:
        machine = open_machine(config, store, now=0.0)
    np.testing.assert_array_equal(machine.current.params, model.init_params())


def test_init_file_must_be_of_the_family(tmp_path: Path) -> None:
    head = tmp_path / "head.bin"
    head.write_bytes(np.ones(195, "<f4").tobytes())
    config = _from(
        flags("mqtt://127.0.0.1:1", "f", "x.db", "--model", "dscnn", "--init", str(head))
    )
    assert config.init == head
    with pytest.raises(UsageError, match=r"--init: .*780 bytes, expected 41868"):
        _from(flags("mqtt://127.0.0.1:1", "f", "x.db", "--init", str(head)))
