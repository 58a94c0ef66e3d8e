"""The keyword-free vocabulary, the exclusion rule, the corpus plan and the reverberation."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinyfed.data import synth
from tinyfed.errors import UsageError
from tinyfed.pretrain import corpus


def test_fold_lowercases_and_strips_accents() -> None:
    assert corpus.fold("Grün") == "grun"
    assert corpus.fold("FENÊTRE") == "fenetre"
    assert corpus.fold("plàtan") == "platan"


def test_edit_distance_is_levenshtein() -> None:
    assert corpus.edit_distance("kitten", "sitting") == 3
    assert corpus.edit_distance("", "abc") == 3
    assert corpus.edit_distance("verd", "vert") == 1
    assert corpus.edit_distance("abc", "abc") == 0


@pytest.mark.parametrize(
    ("word", "keyword", "why"),
    [
        ("vermell", "vermell", "the same word"),
        ("Vermell", "vermell", "the same word"),  # case does not matter
        ("blàu", "blau", "the same word"),  # neither do accents
        ("verano", "verd", "same first 3 letters"),
        ("montaña", "montserrat", "same first 3 letters"),
        ("bed", "red", "edit distance 1"),
        ("bread", "red", "edit distance 2"),
        ("grun", "grün", "the same word"),
    ],
)
def test_lookalikes_are_caught(word: str, keyword: str, why: str) -> None:
    reason = corpus.lookalike(word, keyword)
    assert reason is not None
    assert reason.startswith(why)


@pytest.mark.parametrize(
    ("word", "keyword"),
    [("cat", "red"), ("casa", "verd"), ("finestra", "vermell"), ("maison", "montserrat")],
)
def test_other_words_are_kept(word: str, keyword: str) -> None:
    # three or more edits apart and a different start: not a look-alike
    assert corpus.lookalike(word, keyword) is None


def test_default_exclusion_covers_keywords_and_translations() -> None:
    for word in ("vermell", "verd", "blau", "montserrat", "pedraforca", "red", "green", "blue"):
        assert word in corpus.DEFAULT_EXCLUDE
    for word in ("rojo", "verde", "azul", "rouge", "vert", "bleu", "rosso", "blu", "rot", "grün"):
        assert word in corpus.DEFAULT_EXCLUDE


def test_vocabulary_is_keyword_free_and_large_enough() -> None:
    vocabulary = corpus.load_vocabulary()
    assert {lang for lang, _ in vocabulary} == set(corpus.LANGUAGES)
    sel = corpus.select_words(vocabulary)
    words = [w for _, w in sel.words]
    assert len(set(words)) == len(words) >= 300
    for w in words:  # the rule, re-checked against every excluded word
        for k in corpus.DEFAULT_EXCLUDE:
            assert corpus.lookalike(w, k) is None, (w, k)
    # the vocabulary does hold look-alikes, and they were dropped for a stated reason
    dropped = dict(sel.excluded)
    assert "verano" not in words
    assert dropped["blanco"].startswith("same first 3 letters")
    assert dropped["bed" if "bed" in dropped else "bread"].startswith("edit distance")


def test_words_per_language_takes_the_first_kept_words() -> None:
    vocabulary = corpus.load_vocabulary()
    sel = corpus.select_words(vocabulary, words_per_language=4)
    assert len(sel.words) == 4 * len(corpus.LANGUAGES)
    full = corpus.select_words(vocabulary).words
    for lang in corpus.LANGUAGES:
        first = [w for wl, w in full if wl == lang][:4]
        assert [w for wl, w in sel.words if wl == lang] == first
    with pytest.raises(UsageError, match="--words-per-language must be at least 1, got 0"):
        corpus.select_words(vocabulary, words_per_language=0)


def test_custom_exclusion_replaces_the_default() -> None:
    vocabulary = corpus.load_vocabulary()
    sel = corpus.select_words(vocabulary, exclude=("casa",))
    words = {w for _, w in sel.words}
    dropped = dict(sel.excluded)
    assert dropped["casa"] == "the same word"
    assert dropped["mesa"] == "edit distance 2 to 'casa'"
    assert "blanco" in words  # a look-alike of blau only: kept when the colours are not excluded
    assert "gato" in words  # three edits from casa


def test_vocabulary_file_errors_name_the_line() -> None:
    with pytest.raises(ValueError, match="line 1: words before the first"):
        corpus.load_vocabulary("casa gat\n")
    with pytest.raises(UsageError, match="cannot be spoken"):
        corpus.load_vocabulary("[ca]\ncasa g4t\n")
    assert corpus.load_vocabulary("# c\n[ca]\ncasa gat  # pets\n[es]\nperro\n") == [
        ("ca", "casa"),
        ("ca", "gat"),
        ("es", "perro"),
    ]


def test_plan_speaks_each_word_in_its_language_and_holds_out_variants() -> None:
    words = (("ca", "casa"), ("es", "perro"), ("fr", "maison"))
    config = corpus.CorpusConfig(words, clips_per_word=10, seed=3, jobs=1)
    variants = tuple(f"v{i}" for i in range(20))
    specs = corpus.plan_corpus(config, variants)
    assert config.classes == ("casa", "perro", "maison", synth.SILENCE_CLASS)
    assert [sum(s.label == k for s in specs) for k in range(4)] == [10, 10, 10, 10]
    for s in specs:
        assert config.classes[s.label] == s.word
        assert s.split in ("train", "validation")
        if s.word != synth.SILENCE_CLASS:
            assert s.language == {w: lang for lang, w in words}[s.word]
    train_v = {s.variant for s in specs if s.split == "train" and s.variant}
    val_v = {s.variant for s in specs if s.split == "validation" and s.variant}
    assert val_v
    assert train_v
    assert not train_v & val_v
    assert specs == corpus.plan_corpus(config, variants)  # a pure function of its inputs


def test_reverberate_adds_a_decaying_tail_and_keeps_the_peak() -> None:
    click = np.zeros(16000, np.int16)
    click[1000] = 20000
    out = corpus.reverberate(click, np.random.default_rng(1))
    again = corpus.reverberate(click, np.random.default_rng(1))
    assert out.dtype == np.int16
    assert np.array_equal(out, again)
    assert int(np.abs(out).max()) == 20000
    mag = np.abs(out.astype(np.float64))
    # the room answers after the click and dies away: at least 12.5 dB per 0.125 s (RT60 <= 0.6)
    assert mag[1001:1801].mean() > 2 * mag[3001:3801].mean() > 0
    assert not mag[1000 + 9601 :].any()  # nothing after the longest tail


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_build_renders_int8_features_reproducibly() -> None:
    words = (("ca", "casa"), ("en", "window"))
    config = corpus.CorpusConfig(words, clips_per_word=4, seed=5, jobs=2)
    first = corpus.build(config)
    again = corpus.build(corpus.CorpusConfig(words, clips_per_word=4, seed=5, jobs=1))
    assert first.x.shape == (12, 50, 40)
    assert first.x.dtype == np.int8
    assert np.array_equal(first.x, again.x)  # the thread count changes nothing
    assert list(first.y) == [0] * 4 + [1] * 4 + [2] * 4
    assert first.validation.sum() == 3  # one clip per class: validation variants
    assert set(first.variants) == {"train", "validation"}
    _x_val, y_val = first.split(validation=True)
    assert sorted(y_val) == [0, 1, 2]


def test_the_command_line_never_imports_torch() -> None:
    # a fleet user's `tinyfed ...` (any command's parser, pretrain's included) loads no PyTorch
    code = (
        "import sys, tinyfed.cli; tinyfed.cli.build_parser(); "
        "import tinyfed.pretrain.corpus; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
