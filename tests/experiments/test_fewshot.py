"""``tinyfed experiment fewshot --quick``: the table, the JSON, the plot, and a working pipeline."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyfed.cli import main
from tinyfed.experiments import fewshot

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("text2wave") is None,
    reason="needs espeak-ng and Festival (text2wave); scripts/setup installs both",
)

HAVE_EXTRACTOR = fewshot.EXTRACTOR.is_file()
FAMILIES = ["paper", "dscnn"] if HAVE_EXTRACTOR else ["paper"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("fewshot")
    args = ["experiment", "fewshot", "--quick", "--out", str(out)]
    args += ["--corpus-dir", str(out / "corpus"), "--families", ",".join(FAMILIES)]
    buf = io.StringIO()  # capsys is per test; the run is shared by the module's tests
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    return out, buf.getvalue()


def _rows(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((out / "fewshot.json").read_text())["rows"]
    return rows


def test_table_has_every_family_set_setting_and_shot_count(quick_run: tuple[Path, str]) -> None:
    out, printed = quick_run
    rows = _rows(out)
    names = {r["family"] for r in rows}
    assert {"paper", *FAMILIES} <= names
    want = {
        (f, kw, s, n)
        for f in names
        for kw in fewshot.KEYWORD_SETS
        for s in fewshot.SETTINGS
        for n in fewshot.QUICK.shots
    }
    assert {(r["family"], r["keywords"], r["setting"], r["shots"]) for r in rows} == want
    assert len(rows) == len(want)
    lines = printed.splitlines()
    assert lines[0] == fewshot.HEADER
    assert sum(line.split()[:1] in ([f] for f in names) for line in lines) == len(rows)
    for png in ("fewshot.png", "fewshot-rejection.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_number_is_a_rate(quick_run: tuple[Path, str]) -> None:
    for r in _rows(quick_run[0]):
        for metric in ("accuracy", "keyword_accept", "false_accept", "accuracy_sd"):
            assert set(r[metric]) == {"espeak", "festival"}, metric
            assert all(0.0 <= v <= 1.0 for v in r[metric].values()), (metric, r)
        # a higher threshold accepts no more: both rates fall (or stay) along the sweep
        sweep = [r["sweep"][k] for k in sorted(r["sweep"], key=float)]
        assert [float(k) for k in sorted(r["sweep"], key=float)] == sorted({0.6, *fewshot.SWEEP})
        for rate in ("keyword_accept", "false_accept"):
            for corpus in ("espeak", "festival"):
                values = [s[rate][corpus] for s in sweep]
                assert values == sorted(values, reverse=True), (rate, corpus, r)
        assert r["sweep"]["0.6"]["false_accept"] == r["false_accept"]


@pytest.mark.skipif(not HAVE_EXTRACTOR, reason=f"needs {fewshot.EXTRACTOR} (branch pretrain)")
def test_dscnn_with_20_utterances_beats_chance_clearly(quick_run: tuple[Path, str]) -> None:
    rows = {(r["family"], r["keywords"], r["setting"], r["shots"]): r for r in _rows(quick_run[0])}
    for kw in fewshot.KEYWORD_SETS:
        acc = rows["dscnn", kw, "iid", 20]["accuracy"]
        assert acc["espeak"] > 0.6, (kw, acc)  # chance is 1/3


def test_boards_get_their_own_clips_and_words() -> None:
    labels = np.repeat(np.arange(3), 70)
    rng = np.random.default_rng(0)
    iid = fewshot.board_clips(labels, 3, 20, "iid", rng)
    assert len(iid) == fewshot.BOARDS
    for plan in iid:  # each round: one utterance of each word, in turn
        assert [y for _, y in plan] == [0, 1, 2] * 20
        assert all(labels[i] == y for i, y in plan)
    clips = [i for plan in iid for i, _ in plan]
    assert len(set(clips)) == len(clips)  # no clip heard by two boards
    single = fewshot.board_clips(labels, 3, 4, "single", rng)
    assert [[y for _, y in plan] for plan in single] == [[0, 1, 2] * 4]
    noniid = fewshot.board_clips(labels, 3, 5, "noniid", rng)
    assert [{y for _, y in plan} for plan in noniid] == [{0}, {1}, {2}]
    assert all(len(plan) == 5 for plan in noniid)


def test_unknown_family_and_missing_extractor_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["experiment", "fewshot", "--quick", "--out", str(tmp_path / "o")]
    assert main([*base, "--families", "lstm"]) == 2
    assert "unknown model family 'lstm'" in capsys.readouterr().err
    missing = tmp_path / "nope" / "extractor-v1.bin"
    assert main([*base, "--families", "dscnn", "--extractor", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_dscnn_board_round_is_the_learners_record() -> None:
    # the experiment caches embeddings; a round must still be exactly Learner.record per clip
    from tinyfed.features import logmel  # noqa: PLC0415
    from tinyfed.model.dscnn import head, vectors  # noqa: PLC0415
    from tinyfed.model.dscnn.quantise import quantise  # noqa: PLC0415

    cal = vectors.random_inputs(8, seed=1)
    extractor = quantise(vectors.random_params(cal), cal)
    rng = np.random.default_rng(0)
    audio = (rng.normal(0, 3000, (4, 16000)) * np.hanning(16000)).astype(np.int16)
    fam = fewshot.DscnnFamily(extractor)
    feats = fam.features(audio, train=True)
    state = fam.new_board(3, 0.0)
    clips = [(0, 0), (1, 1), (2, 2), (3, 0)]
    start = np.linspace(-0.1, 0.1, head.n_params(3)).astype(np.float32)
    got = fam.train_round(state, start, clips[:2], feats)
    got = fam.train_round(state, got, clips[2:], feats)
    learner = head.Learner(extractor, 3)
    learner.params[...] = start
    for i, y in clips:
        learner.record(logmel.features_int8(audio[i]), y)
    assert not np.array_equal(got, start)  # it trained
    np.testing.assert_array_equal(got, learner.params)
    scores = fam.outputs(got, fam.features(audio, train=False))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_other_words_were_never_heard_by_the_extractor() -> None:
    vocab = Path(fewshot.__file__).resolve().parents[1] / "pretrain" / "words.txt"
    if not vocab.is_file():
        pytest.skip(f"no {vocab} (branch pretrain)")
    words = {
        w
        for line in vocab.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith(("#", "["))
        for w in line.split("#")[0].split()
    }
    assert not set(fewshot.OTHER_WORDS) & words
