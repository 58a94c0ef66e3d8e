"""``tinyfed virtual-users``: the scripts it writes make a virtual board train, round after round.

The compose "virtual" profile depends on this: a board started with ``--script board-N.txt``
and the same ``--local-steps`` speaks its words, uploads, waits for the aggregator's next
global model and speaks again. Here with the real aggregator, gateway and Mosquitto.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.test_bridge import gateway_args
from tests.link_support import Gateway, Peer
from tinyfed.cli import main
from tinyfed.errors import UsageError
from tinyfed.fleet.users import UsersPlan, write_users
from tinyfed.testbed.broker import Mosquitto
from tinyfed.testbed.virtual_board import VirtualBoard

WORDS = ("vermell", "verd", "blau")


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("users")
    write_users(
        UsersPlan(out=out, words=WORDS, silence=False, rounds=2, local_steps=3, per_word=12)
    )
    return out


def test_the_folder_holds_a_script_per_board_whose_clips_exist(users: Path) -> None:
    index = json.loads((users / "users.json").read_text())
    assert [b["script"] for b in index["boards"]] == ["board-1.txt", "board-2.txt"]
    for board in index["boards"]:
        lines = (users / board["script"]).read_text().splitlines()
        presses = [line.split() for line in lines if line.startswith("press ")]
        assert len(presses) == 2 * 3 == board["presses"]
        assert lines.count("wait model") == 3  # before round 0, after each round
        for _, button, clip in presses:
            assert button in ("D2", "D3", "D4")
            assert (users / clip).is_file(), clip  # relative to the script, via corpus/
            assert clip.split("/")[1] == WORDS[("D2", "D3", "D4").index(button)]
    assert (users / "corpus").is_symlink()
    assert not Path((users / "corpus").readlink()).is_absolute()  # mountable anywhere


def test_a_scripted_board_trains_through_two_rounds_of_the_real_aggregator(  # noqa: PLR0917
    users: Path, binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    # Prepare: the aggregator expects one worker, whose board runs board-1.txt
    agg_log = (tmp_path / "aggregator.log").open("wb")
    aggregator = subprocess.Popen(
        [
            *(sys.executable, "-m", "tinyfed.cli", "aggregator", "--broker", broker.url),
            *("--fleet", fleet, "--db", str(tmp_path / "agg.db"), "--expect", "b1"),
            *("--local-steps", "3", "--classes", ",".join(WORDS)),
        ],
        stdout=agg_log,
        stderr=subprocess.STDOUT,
    )
    board = VirtualBoard(  # the default family, as compose's virtual boards run it
        script=users / "board-1.txt",
        family="dscnn",
        binary=binary,
        extra_args=["--record-ms", "50", "--local-steps", "3"],
        workdir=tmp_path / "board",
    )
    try:
        with board:
            gw = Gateway(tmp_path, *gateway_args(board, broker, fleet, "--worker-id", "b1"))
            try:
                # Execute: the user speaks 3 words per round and waits for each global model
                peer.wait("two updates from b1", lambda p: len(p.updates()) >= 2, timeout=90)
            finally:
                assert gw.stop() == 0
    finally:
        aggregator.terminate()
        aggregator.wait(timeout=15)
        agg_log.close()
    # Assert: the words the board heard are the script's, in its order
    script = (users / "board-1.txt").read_text().splitlines()
    spoken = [line.split()[2].split("/")[1] for line in script if line.startswith("press ")]
    heard = [WORDS[e.label] for e in peer.losses()]
    assert heard[:6] == spoken[:6]
    rounds = [u.base_round for u in peer.updates()]
    assert rounds[0] < rounds[1]


def test_the_command_prints_what_it_wrote_and_refuses_a_file_as_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "u"
    argv = ["virtual-users", "--out", str(out), "--rounds", "1", "--local-steps", "2"]
    assert main([*argv, "--per-word", "8", "--boards", "1"]) == 0
    printed = capsys.readouterr().out
    assert "board-1.txt: vermell, verd, blau, 2 words" in printed
    assert "--local-steps 2" in printed
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        write_users(UsersPlan(out=blocker, words=WORDS, silence=False))
