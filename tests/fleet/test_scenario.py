"""The scenario builder: who says which words, with which voices, in which order (pure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyfed.data import dataset as ds
from tinyfed.data.synth import SILENCE_CLASS
from tinyfed.errors import UsageError
from tinyfed.fleet import scenario as sc


def fake_train(classes: tuple[str, ...], voices: int, per_voice: int = 1) -> ds.Dataset:
    """A training split's metadata: every voice says every class ``per_voice`` times."""
    rows = [
        (label, f"v{v:02d}", n)
        for v in range(voices)
        for label in range(len(classes))
        for n in range(per_voice)
    ]
    labels = np.array([r[0] for r in rows], dtype=np.int64)
    voice = np.array([r[1] for r in rows], dtype=np.str_)
    paths = tuple(f"{classes[lab]}/{v}_nohash_{n}.wav" for lab, v, n in rows)
    return ds.Dataset(
        audio=np.zeros((len(rows), 16000), np.int16),
        labels=labels,
        classes=classes,
        split=np.array(["train"] * len(rows), dtype=np.str_),
        voice=voice,
        paths=paths,
        lengths=np.full(len(rows), 16000, np.int64),
        root=Path("corpus"),
    )


COLOURS = ("vermell", "verd", "blau")
MOUNTAINS = ("montserrat", "pedraforca", SILENCE_CLASS)


def test_iid_boards_hear_every_word_in_turn() -> None:
    # Prepare
    train = fake_train(COLOURS, voices=10)
    # Execute
    s = sc.build(train, boards=2, rounds=3, local_steps=10)
    # Assert
    assert [b.labels for b in s.boards] == [(0, 1, 2), (0, 1, 2)]
    for b in s.boards:
        assert len(b.presses) == 30
        assert [p.label for p in b.presses[:6]] == [0, 1, 2, 0, 1, 2]
        assert [p.button for p in b.presses[:3]] == ["D2", "D3", "D4"]


def test_each_board_has_its_own_voices() -> None:
    train = fake_train(COLOURS, voices=9)
    s = sc.build(train, boards=3, rounds=2, local_steps=10)
    voice_sets = [set(b.voices) for b in s.boards]
    assert set().union(*voice_sets) == {f"v{i:02d}" for i in range(9)}
    assert sum(len(v) for v in voice_sets) == 9  # disjoint
    for b in s.boards:
        assert {p.voice for p in b.presses} <= set(b.voices)


def test_non_iid_speaks_each_keyword_to_one_board_and_silence_to_all() -> None:
    assert sc.label_split(MOUNTAINS, 2, non_iid=True) == [(0, 2), (1, 2)]
    assert sc.label_split(COLOURS, 2, non_iid=True) == [(0, 2), (1,)]
    # more boards than keywords: the extra board shares a keyword
    assert sc.label_split(MOUNTAINS, 3, non_iid=True) == [(0, 2), (1, 2), (0, 2)]
    assert sc.label_split(COLOURS, 2, non_iid=False) == [(0, 1, 2), (0, 1, 2)]


def test_non_iid_presses_follow_the_split() -> None:
    s = sc.build(fake_train(MOUNTAINS, voices=8), boards=2, rounds=2, local_steps=10, non_iid=True)
    assert {p.label for p in s.boards[0].presses} == {0, 2}
    assert {p.label for p in s.boards[1].presses} == {1, 2}
    assert [p.label for p in s.boards[1].presses[:4]] == [1, 2, 1, 2]
    assert s.words_of(s.boards[0]) == ("montserrat", SILENCE_CLASS)


def test_the_same_seed_builds_the_same_scenario_and_another_seed_another() -> None:
    train = fake_train(COLOURS, voices=12, per_voice=2)
    a = sc.build(train, boards=2, rounds=2, local_steps=10, seed=0)
    b = sc.build(train, boards=2, rounds=2, local_steps=10, seed=0)
    c = sc.build(train, boards=2, rounds=2, local_steps=10, seed=1)
    assert a == b
    assert a.boards[0].presses != c.boards[0].presses


def test_board_ids_and_worker_ids_are_stable() -> None:
    assert sc.board_id(1) == "74696e7966656401"
    assert sc.worker_id(sc.board_id(2)) == "board-74696e7966656402"


def test_script_waits_for_each_global_model_before_its_round() -> None:
    # Prepare
    s = sc.build(fake_train(COLOURS, voices=4), boards=1, rounds=2, local_steps=3)
    # Execute
    text = sc.script_text(s, s.boards[0], "corpus", hold_ms=40, pace_ms=5)
    # Assert
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[:3] == ["hold 40", "pace 5", "wait model"]
    assert lines[3].startswith("press D2 corpus/vermell/v0")
    assert [ln.split()[0] for ln in lines[3:]] == ["press"] * 3 + ["wait"] + ["press"] * 3 + [
        "wait"
    ]


def test_too_few_voices_or_clips_is_a_usage_error_that_says_what_to_do() -> None:
    with pytest.raises(UsageError, match="own voices"):
        sc.build(fake_train(COLOURS, voices=1), boards=2, rounds=1, local_steps=1)
    # a board whose voices never say one of its words
    train = fake_train(COLOURS, voices=2)
    keep = np.flatnonzero(~((train.voice == "v01") & (train.labels == 1)))
    with pytest.raises(UsageError, match="--per-word"):
        sc.build(train.subset(keep), boards=2, rounds=1, local_steps=3)


def test_a_scenario_refuses_test_clips() -> None:
    train = fake_train(COLOURS, voices=2)
    mixed = ds.Dataset(
        audio=train.audio,
        labels=train.labels,
        classes=train.classes,
        split=np.array(["test"] * len(train), dtype=np.str_),
        voice=train.voice,
        paths=train.paths,
        lengths=train.lengths,
        root=train.root,
    )
    with pytest.raises(UsageError, match="training clips only"):
        sc.build(mixed, boards=1, rounds=1, local_steps=1)
