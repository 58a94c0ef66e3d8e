"""The released extractor: loadable, keyword-free, made by `tinyfed pretrain`'s defaults, and
good enough that a board's head learns the keywords on top of it."""

from __future__ import annotations

import shutil
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tinyfed.cli import build_parser, subcommand_parser
from tinyfed.data import synth
from tinyfed.features import logmel
from tinyfed.model import dscnn
from tinyfed.model.dscnn import head
from tinyfed.pretrain import cli, corpus

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = Path(dscnn.__file__).parent / "weights"
RELEASED = WEIGHTS / f"{cli.MODEL_NAME}.bin"


@pytest.fixture(scope="module")
def released() -> tuple[dscnn.Extractor, dict[str, object]]:
    return dscnn.load(RELEASED)


def test_the_defaults_are_the_released_run(
    released: tuple[dscnn.Extractor, dict[str, object]],
) -> None:
    _, manifest = released
    args = subcommand_parser(build_parser(), "pretrain").parse_args([])
    command = (
        f"tinyfed pretrain --words-per-language {args.words_per_language} --clips-per-word "
        f"{args.clips_per_word} --epochs {args.epochs} --seed {args.seed} --threads {args.threads}"
    )
    assert manifest["command"] == command
    # the vocabulary file and the exclusion rule still give the released corpus's words
    corp = manifest["corpus"]
    assert isinstance(corp, dict)
    assert "exclude" not in args  # no --exclude: the default list
    assert corp["excluded_words"] == list(corpus.DEFAULT_EXCLUDE)
    sel = corpus.select_words(
        corpus.load_vocabulary(), corpus.DEFAULT_EXCLUDE, args.words_per_language
    )
    assert corp["words"] == [f"{lang}:{w}" for lang, w in sel.words]
    assert corp["word_count"] == len(sel.words) >= 300


def test_the_released_manifest_reports_the_training(
    released: tuple[dscnn.Extractor, dict[str, object]],
) -> None:
    _, manifest = released
    acc = manifest["validation_accuracy"]
    assert isinstance(acc, dict)
    assert acc["float"] > 0.5  # 351 classes: chance is 0.003
    assert acc["int8"] > acc["float"] - 0.05  # quantisation costs little
    assert str(manifest["torch_version"]).startswith("2.13.0")
    assert manifest["bytes"] == RELEASED.stat().st_size
    assert manifest["reproducibility"]


def test_weights_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]
    shipped = {p for pattern in data["tinyfed.model.dscnn"] for p in WEIGHTS.parent.glob(pattern)}
    assert {RELEASED, RELEASED.with_suffix(".json")} <= shipped
    assert corpus.WORDS_FILE in data["tinyfed.pretrain"]
    assert config["project"]["optional-dependencies"]["train"] == ["torch==2.13.0"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_a_head_learns_the_colours_on_the_frozen_extractor(
    released: tuple[dscnn.Extractor, dict[str, object]],
) -> None:
    # Prepare: vermell / verd / blau (never in the pre-training corpus) spoken by ca/es/en
    # voices; the head trains on some voice variants and is tested on the others
    extractor, _ = released
    espeak = synth.find_espeak()
    variants = synth.default_variants(synth.list_variants(espeak))
    config = synth.SynthConfig(
        words=("vermell", "verd", "blau"),
        out=Path("."),
        per_word=40,
        seed=11,
        validation_percent=0.0,
        testing_percent=30.0,
    )
    specs = synth.plan(config, variants)
    with ThreadPoolExecutor(2) as pool:
        audio = np.stack([a for a, _ in pool.map(lambda s: synth.render(s, espeak), specs)])
    e = extractor.embed_batch(logmel.features_int8(audio))
    y = np.array([s.label for s in specs])
    test = np.array([s.split == "test" for s in specs])
    # Execute: the board's head, its SGD step, 20 passes over the training clips
    w = head.zeros(3)
    order = np.random.default_rng(0)
    for _ in range(20):
        for i in order.permutation(np.flatnonzero(~test)):
            head.sgd_step(w, e[i], int(y[i]))
    pred = [int(np.argmax(head.probabilities(w, e[i]))) for i in np.flatnonzero(test)]
    # Assert: well above chance (1/3) on voice variants the head never heard (0.97 measured
    # at release)
    accuracy = float(np.mean(np.array(pred) == y[test]))
    print(f"colours on held-out variants: {accuracy:.3f}")
    assert accuracy > 0.8
