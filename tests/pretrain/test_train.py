"""The PyTorch DS-CNN, its export against the reference float network, and `tinyfed pretrain`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.cli import main
from tinyfed.model import dscnn
from tinyfed.model.dscnn.extractor import OUTPUT_SHAPES, PARAM_SHAPES, forward_float_layers

torch = pytest.importorskip("torch", reason="needs PyTorch: pip install 'tinyfed[train]'")

from tinyfed.pretrain import train  # noqa: E402 (after the skip: it imports PyTorch)


def _randomised(n_classes: int, seed: int) -> train.DSCNN:
    """A model whose batch norms hold non-trivial statistics, as after training."""
    torch.manual_seed(seed)
    model = train.DSCNN(n_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs(n: int, seed: int) -> npt.NDArray[np.int8]:
    """Random int8 inputs whose level differs from clip to clip (so embeddings differ too)."""
    rng = np.random.default_rng(seed)
    level = rng.integers(-60, 60, (n, 1, 1))
    x: npt.NDArray[np.int8] = np.clip(level + rng.integers(-40, 40, (n, 50, 40)), -128, 127)
    return x.astype(np.int8)


def test_export_computes_what_torch_computes() -> None:
    model = _randomised(5, seed=1)
    x = _inputs(16, seed=2)
    params = train.export(model, x)
    assert {k: v.shape for k, v in params.items()} == PARAM_SHAPES
    layers = forward_float_layers(params, x.astype(np.float32) / 16)
    for name, shape in OUTPUT_SHAPES.items():  # the spec's shapes: ds1.dw has stride 2
        assert layers[name].shape == (16, *shape)
    mine = train.embeddings(model, x)
    np.testing.assert_allclose(layers["pool"], mine, rtol=1e-4, atol=1e-5)
    # embed.mean / embed.sd standardise the training clips' embeddings
    # (channels that never fire, common in a random network, keep the sd floor)
    live = mine.std(axis=0) > 1e-3
    assert live.sum() > 4
    std = (mine - params["embed.mean"]) / params["embed.sd"]
    np.testing.assert_allclose(std.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(std[:, live].std(axis=0), 1, atol=1e-3)


def test_augment_shifts_with_edge_repeat_and_adds_saturating_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.arange(50, dtype=torch.int8)[None, :, None].expand(400, 50, 40).contiguous()
    out = train.augment(q, gen)
    assert out.dtype == torch.int8
    assert out.shape == q.shape
    diff = out.to(torch.int16) - q.to(torch.int16)
    # without noise a row is a shifted ramp: frame t holds clamp(t + s, 0, 49), |s| <= 3
    clean = [i for i in range(400) if bool((out[i] == out[i, :, :1]).all())]
    assert clean, "half the clips get no noise"
    shifts = {int(out[i, 10, 0]) - 10 for i in clean}
    assert shifts <= set(range(-3, 4))
    assert len(shifts) > 3
    for i in clean:
        s = int(out[i, 10, 0]) - 10
        want = torch.arange(50).add(s).clamp(0, 49)
        assert torch.equal(out[i, :, 0].to(torch.int64), want)
    assert int(diff.min()) >= -3 - 8
    assert int(diff.max()) <= 3 + 7
    loud = torch.full((64, 50, 40), 125, dtype=torch.int8)
    assert int(train.augment(loud, gen).max()) == 127  # saturated, not wrapped


def test_training_learns_separable_classes() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(-40, 40, (3, 50, 40))
    y = np.repeat(np.arange(3), 40).astype(np.int64)
    x = np.clip(base[y] + rng.integers(-10, 10, (120, 50, 40)), -128, 127).astype(np.int8)
    seen: list[int] = []
    result = train.train(
        x,
        y,
        x[::4],
        y[::4],
        n_classes=3,
        config=train.TrainConfig(epochs=6, seed=0, threads=1, batch=16),
        log=lambda s: seen.append(s.epoch),
    )
    assert seen == [1, 2, 3, 4, 5, 6]
    assert result.history[-1].validation_accuracy >= 0.9
    assert result.history[-1].loss < result.history[0].loss


def _pretrain(out: Path, jobs: int) -> int:
    return main(
        [
            "pretrain",
            "--words-per-language", "2",
            "--clips-per-word", "6",
            "--epochs", "2",
            "--seed", "4",
            "--jobs", str(jobs),
            "--threads", "1",
            "--out", str(out),
        ]
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_pretrain_command_writes_a_loadable_reproducible_extractor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pretrain(tmp_path / "a", jobs=2) == 0
    err = capsys.readouterr().err
    assert "corpus: 14 words (ca 2, es 2, en 2, fr 2, it 2, pt 2, de 2) + _silence" in err
    assert "epoch 2/2: loss" in err
    assert "validation accuracy" in err
    assert "int8 validation accuracy" in err
    extractor, manifest = dscnn.load(tmp_path / "a" / "extractor-v1.bin")
    assert manifest["corpus"]["word_count"] == 14
    assert manifest["corpus"]["classes"] == 15
    assert manifest["training"]["epochs"] == 2
    assert manifest["training"]["seed"] == 4
    assert set(manifest["validation_accuracy"]) == {"float", "int8"}
    assert manifest["torch_version"] == torch.__version__
    assert "vermell" in manifest["corpus"]["excluded_words"]
    x = _inputs(3, seed=9)
    assert extractor.embed_batch(x).shape == (3, 64)
    # the same command again (other espeak-ng job count): the same bytes
    assert _pretrain(tmp_path / "b", jobs=1) == 0
    assert (tmp_path / "a" / "extractor-v1.bin").read_bytes() == (
        tmp_path / "b" / "extractor-v1.bin"
    ).read_bytes()
    again = json.loads((tmp_path / "b" / "extractor-v1.json").read_text())
    assert again["validation_accuracy"] == manifest["validation_accuracy"]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--epochs", "0", "--epochs must be at least 1, got 0"),
        ("--clips-per-word", "1", "--clips-per-word must be at least 2"),
        ("--seed", "-1", "--seed must be a non-negative integer, got -1"),
        ("--exclude", "red,,blue", "keyword 2 of 3 is empty"),
    ],
)
def test_bad_options_are_named(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", flag, value]) == 2
    assert message in capsys.readouterr().err


def test_missing_torch_says_which_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    assert main(["pretrain", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "install the train extra: pip install 'tinyfed[train]'" in err
    assert "Traceback" not in err
