"""The reference against the shared vectors (vectors/dscnn/), and the drift check."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.features import align, logmel, mfcc
from tinyfed.model.dscnn import head, modelfile, vectors
from tinyfed.model.dscnn.extractor import LAYER_NAMES, OUTPUT_SHAPES, Extractor

DIR = vectors.VECTORS_DIR
CLIPS = (DIR / "clips.txt").read_text().split()


def _load(name: str, dtype: str, shape: tuple[int, ...] = (-1,)) -> npt.NDArray[np.generic]:
    return np.fromfile(DIR / name, dtype).reshape(shape)


@pytest.fixture(scope="module")
def vec_extractor() -> Extractor:
    ex, manifest = modelfile.load(DIR / "extractor.bin")
    assert manifest["seed"] == vectors.SEED
    return ex


def test_the_model_file_is_the_quantised_random_model(
    vec_extractor: Extractor, extractor: Extractor
) -> None:
    assert modelfile.to_bytes(vec_extractor) == modelfile.to_bytes(extractor)


def test_every_file_is_described_in_the_readme() -> None:
    readme = (DIR / "README.md").read_text()
    for path in DIR.iterdir():
        if path.is_file() and path.name != "README.md":
            generic = re.sub(r"^(" + "|".join(CLIPS) + r")", "NAME", path.name)
            generic = re.sub(r"ds\d_", "dsI_", generic)
            assert f"`{generic}`" in readme, path.name


@pytest.mark.parametrize("name", CLIPS)
def test_features_match_stage_by_stage(name: str) -> None:
    audio = _load(f"{name}.i16", "<i2").astype(np.int16)
    aligned, _ = align.align(audio)
    energy = logmel.band_energies(mfcc.power_spectrum(mfcc.preemphasis(aligned)))
    np.testing.assert_array_equal(energy, _load(f"{name}_band_energy.f32", "<f4", (50, 40)))
    logs = logmel.log_energies(energy)
    np.testing.assert_array_equal(logs, _load(f"{name}_log.f32", "<f4", (50, 40)))
    np.testing.assert_array_equal(
        logmel.logmel40(audio), _load(f"{name}_logmel.f32", "<f4", (50, 40))
    )
    q = logmel.features_int8(audio)
    np.testing.assert_array_equal(q, _load(f"{name}_input.i8", "i1", (50, 40)))
    assert np.abs(q.astype(int)).max() > 20, "a clip whose features are all near zero tests little"


def test_mel_table_file() -> None:
    np.testing.assert_array_equal(logmel.mel_table(), _load("mel_table.f32", "<f4", (40, 129)))


def test_layers_and_embeddings_are_bit_exact(vec_extractor: Extractor) -> None:
    layers_in = _load("layers_in.i8", "i1", (2, 50, 40)).astype(np.int8)
    outs = vec_extractor.run_q(layers_in)
    for name in LAYER_NAMES:
        want = _load(f"layers_{name.replace('.', '_')}.i8", "i1", (2, *OUTPUT_SHAPES[name]))
        np.testing.assert_array_equal(outs[name], want)
    embed_in = _load("embed_in.i8", "i1", (8, 50, 40)).astype(np.int8)
    np.testing.assert_array_equal(
        vec_extractor.embed_q_batch(embed_in), _load("embed_q.i8", "i1", (8, 64))
    )
    np.testing.assert_array_equal(
        vec_extractor.embed_batch(embed_in), _load("embed.f32", "<f4", (8, 64))
    )
    for i, name in enumerate(CLIPS):
        np.testing.assert_array_equal(embed_in[i], _load(f"{name}_input.i8", "i1", (50, 40)))


def test_augmentation_and_xorshift() -> None:
    x = _load("augment_in.i8", "i1", (2, 50, 40)).astype(np.int8)
    want = _load("augment.i8", "i1", (2, 4, 50, 40))
    for i in range(2):
        np.testing.assert_array_equal(head.augment(x[i]), want[i])
    states = _load("xorshift_seed1.u32", "<u4")
    assert states[0] == 270369
    assert head.xorshift32(int(states[14])) == states[15]


def test_head_sequence(vec_extractor: Extractor) -> None:
    embed_in = _load("embed_in.i8", "i1", (8, 50, 40)).astype(np.int8)
    idx = _load("head_input_index.i32", "<i4")
    labels = _load("head_labels.i32", "<i4")
    params = _load("head_params.f32", "<f4", (70, 195))
    losses = _load("head_loss.f32", "<f4")
    lengths = _load("head_order_len.i32", "<i4")
    orders = np.split(_load("head_order.i32", "<i4"), np.cumsum(lengths)[:-1])
    step_losses = np.split(_load("head_step_loss.f32", "<f4"), np.cumsum(lengths)[:-1])
    assert lengths.tolist() == [min(5 * (r + 1), 320) for r in range(70)]
    learner = head.Learner(vec_extractor, classes=3, lr=head.DEFAULT_LR)
    for r in range(70):
        rec = learner.record(embed_in[idx[r]], int(labels[r]))
        np.testing.assert_array_equal(rec.order, orders[r])
        np.testing.assert_array_equal(rec.losses, step_losses[r])
        assert rec.mean_loss == losses[r]
        np.testing.assert_array_equal(learner.params, params[r])
    np.testing.assert_array_equal(
        learner.store.embeddings, _load("head_store_q.i8", "i1", (320, 64))
    )
    np.testing.assert_array_equal(learner.store.labels, _load("head_store_labels.i32", "<i4"))
    probs = np.stack([learner.probabilities(x) for x in embed_in])
    np.testing.assert_array_equal(probs, _load("head_probs.f32", "<f4", (8, 3)))
    decisions = [head.decide(p) for p in probs]
    assert [-1 if d is None else d for d in decisions] == _load("head_decide.i32", "<i4").tolist()
    assert losses[-1] < 0.1 * losses[1], "the sequence should show the head learning"


def test_check_is_clean_and_names_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vectors.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    good = tmp_path / "a.i8"
    good.write_bytes(b"\x01")
    bad = tmp_path / "b.i8"
    bad.write_bytes(b"\x02")
    files = {good: b"\x01", bad: b"\x03", tmp_path / "missing.i8": b""}
    assert vectors.stale(files) == [bad, tmp_path / "missing.i8"]
