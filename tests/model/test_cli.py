"""``tinyfed model init``, ``train`` and ``eval`` end to end, through the real CLI."""

from __future__ import annotations

import csv
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinyfed import model
from tinyfed.cli import main
from tinyfed.data.wav import read_wav, write_wav
from tinyfed.features import get_pipeline
from tinyfed.model import families
from tinyfed.testbed import vectors


@pytest.fixture
def scenario_a(tmp_path: Path) -> tuple[Path, Path]:
    x = vectors.load("nn/A_inputs.f32", shape=(40, 650))
    y = vectors.load("nn/A_labels.i32", dtype="<i4").astype(np.int64)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "Y.npy", y)
    return tmp_path / "X.npy", tmp_path / "Y.npy"


def test_model_init_writes_the_papers_initial_model(tmp_path: Path) -> None:
    out = tmp_path / "init.bin"
    assert main(["model", "init", "--out", str(out)]) == 0
    expected = np.concatenate(
        [vectors.load("nn/init_hidden_weights.f32"), vectors.load("nn/init_output_weights.f32")]
    )
    assert out.read_bytes() == expected.astype("<f4").tobytes()


def test_train_reproduces_the_reference_final_model(
    tmp_path: Path, scenario_a: tuple[Path, Path]
) -> None:
    # Prepare
    x, y = scenario_a
    out, log = tmp_path / "m.bin", tmp_path / "losses.csv"
    # Execute
    code = main(
        ["train", "--features", str(x), "--labels", str(y), "--out", str(out), "--log", str(log)]
    )
    # Assert
    assert code == 0
    final = np.concatenate(
        [
            vectors.load("nn/A_final_hidden_weights.f32"),
            vectors.load("nn/A_final_output_weights.f32"),
        ]
    )
    np.testing.assert_allclose(model.load(out), final, atol=1e-5, rtol=0)
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 40
    np.testing.assert_allclose(
        [float(r["loss"]) for r in rows],
        vectors.load("nn/A_step_error.f32").astype(np.float32),
        rtol=3e-6,
    )


def test_eval_prints_accuracy_and_confusion_matrix(
    tmp_path: Path, scenario_a: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = scenario_a
    out = tmp_path / "m.bin"
    main(["train", "--features", str(x), "--labels", str(y), "--epochs", "5", "--out", str(out)])
    capsys.readouterr()
    assert main(["eval", str(out), "--features", str(x), "--labels", str(y)]) == 0
    text = capsys.readouterr().out
    accuracy = float(text.split()[1])
    assert accuracy > 0.9
    assert "confusion matrix" in text


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((3, 649), np.float32), r"shape \(3, 649\), expected \[n, 650\]"),
        (np.full((3, 650), np.nan, np.float32), "NaN"),
    ],
)
def test_train_rejects_bad_features_with_a_clear_error(
    tmp_path: Path, bad: np.ndarray, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "X.npy", bad)
    np.save(tmp_path / "Y.npy", np.zeros(3, np.int64))
    args = ["train", "--features", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "Y.npy")]
    assert main([*args, "--out", str(tmp_path / "m.bin")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "m.bin").exists()


def test_eval_names_a_truncated_model_file(
    tmp_path: Path, scenario_a: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 100)
    x, y = scenario_a
    assert main(["eval", str(bad), "--features", str(x), "--labels", str(y)]) == 2
    assert "bad.bin: model is 100 bytes, expected 41868" in capsys.readouterr().err


def test_model_init_refuses_a_seed_numpy_cannot_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "init", "--seed", "-1", "--out", str(tmp_path / "i.bin")]) == 2
    assert "--seed must be 0..4294967295, got -1" in capsys.readouterr().err
    assert not (tmp_path / "i.bin").exists()


def test_train_refuses_an_unwritable_output_before_training(
    tmp_path: Path, scenario_a: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = scenario_a
    out = tmp_path / "missing" / "m.bin"
    args = ["train", "--features", str(x), "--labels", str(y), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: folder {out.parent} does not exist" in err
    assert "trained" not in err


def test_train_refuses_an_empty_features_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "X.npy", np.zeros((0, 650), np.float32))
    np.save(tmp_path / "Y.npy", np.zeros(0, np.int64))
    args = ["train", "--features", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "Y.npy")]
    assert main([*args, "--out", str(tmp_path / "m.bin")]) == 2
    assert "no samples to train on" in capsys.readouterr().err


def test_train_warns_about_labels_in_class_blocks_and_a_one_class_model(
    tmp_path: Path, scenario_a: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: the scenario's samples sorted by class, and a learning rate far too high
    x, y = (np.load(p) for p in scenario_a)
    order = np.argsort(y, kind="stable")
    np.save(tmp_path / "Xs.npy", x[order])
    np.save(tmp_path / "Ys.npy", y[order])
    args = ["train", "--features", str(tmp_path / "Xs.npy"), "--labels", str(tmp_path / "Ys.npy")]
    # Execute
    with caplog.at_level("WARNING"):
        code = main([*args, "--lr", "1e6", "--out", str(tmp_path / "m.bin")])
    # Assert: it still trains (a warning, not a refusal) and says both things
    assert code == 0
    assert "labels come in blocks of one class" in caplog.text
    assert "predicts class" in caplog.text
    assert "the paper uses 0.1" in caplog.text


def test_eval_names_the_classes_it_is_given(
    tmp_path: Path, scenario_a: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = scenario_a
    out = tmp_path / "m.bin"
    main(["train", "--features", str(x), "--labels", str(y), "--out", str(out)])
    capsys.readouterr()
    args = ["eval", str(out), "--features", str(x), "--labels", str(y)]
    assert main([*args, "--classes", "vermell,verd,blau"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index("confusion matrix (rows: true class, columns: predicted)")
    assert lines[header + 1].split() == ["vermell", "verd", "blau"]
    assert [r.split()[0] for r in lines[header + 2 :]] == ["vermell", "verd", "blau"]
    assert main([*args, "--classes", "a,b"]) == 2
    assert "--classes: give 3 names" in capsys.readouterr().err


def test_model_info_names_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init = tmp_path / "init.bin"
    main(["model", "init", "--out", str(init)])
    capsys.readouterr()
    assert main(["model", "info", str(init)]) == 0
    out = capsys.readouterr().out
    params = model.init_params()
    assert f"sha256 {model.sha256(params)}" in out
    assert f"crc32  {zlib.crc32(model.to_bytes(params)) & 0xFFFFFFFF:08x}" in out
    assert "the paper's initial model" in out
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 10)
    assert main(["model", "info", str(tmp_path / "bad.bin")]) == 2


def test_classify_prints_what_the_model_hears_in_each_clip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: two clips and a model
    rng = np.random.default_rng(1)
    clips = [
        (np.sin(np.arange(16000) * f / 16000 * 2 * np.pi) * 9000).astype(np.int16)
        for f in (300, 900)
    ]
    paths = []
    for i, clip in enumerate(clips):
        paths.append(tmp_path / f"c{i}.wav")
        write_wav(paths[-1], clip + rng.normal(0, 50, 16000).astype(np.int16))
    m = tmp_path / "m.bin"
    model.save(model.init_params(seed=3), m)
    # Execute
    args = ["classify", *map(str, paths), "--model", str(m), "--classes", "a,b,c"]
    assert main([*args, "--pipeline", "paper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Assert: one line per clip, the outputs the network gives for the clip's features
    pipeline = get_pipeline("paper")
    expected = model.forward(
        model.init_params(seed=3),
        pipeline.compute_batch(np.stack([read_wav(p) for p in paths])).astype(np.float32),
    )
    assert len(lines) == 2
    for line, out in zip(lines, expected, strict=True):
        assert f"a {out[0]:.3f}  b {out[1]:.3f}  c {out[2]:.3f}" in line
        best = int(np.argmax(out))
        assert ("abc"[best] if out[best] > 0.6 else "none") in line
    assert main(["classify", str(paths[0]), "--model", str(m), "--classes", "a,b"]) == 2


def test_model_info_recognises_both_families_by_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = tmp_path / "head.bin"
    model.save(families.DSCNN.init(), head, None)
    assert main(["model", "info", str(head)]) == 0
    out = capsys.readouterr().out
    assert "780 bytes, 195 float32 parameters" in out
    assert "family dscnn (arch 2, dscnn64-head-v1)" in out
    assert "a new head (all zeros)" in out
    scaled = tmp_path / "scaled.bin"
    assert main(["model", "init", "--scheme", "scaled", "--out", str(scaled)]) == 0
    assert "seed 12345, scaled init" in capsys.readouterr().out
    np.testing.assert_array_equal(model.load(scaled), families.PAPER.init())
    assert main(["model", "info", str(scaled)]) == 0
    out = capsys.readouterr().out
    assert "family paper (arch 1, fc650-16-3-sigmoid-v1)" in out
    assert "a new fleet's scaled initial model" in out
    (tmp_path / "odd.bin").write_bytes(b"\x00" * 400)
    assert main(["model", "info", str(tmp_path / "odd.bin")]) == 2
    err = capsys.readouterr().err
    assert "400 bytes belongs to no family (paper 41,868 bytes, dscnn 780 bytes)" in err
