"""The whole pre-training run behind ``tinyfed pretrain`` (imports PyTorch: the train extra).

Corpus (:mod:`tinyfed.pretrain.corpus`), training (:mod:`tinyfed.pretrain.train`), the export
checked against the reference :func:`tinyfed.model.dscnn.extractor.forward_float`, the
reference quantiser and model file (:mod:`tinyfed.model.dscnn`), and the manifest.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyfed.errors import ModelError
from tinyfed.model import dscnn
from tinyfed.model.dscnn.extractor import forward_float
from tinyfed.model.dscnn.quantise import cosine
from tinyfed.pretrain import corpus, train
from tinyfed.pretrain.cli import MODEL_NAME, say

N_CALIBRATION = 512  #: training clips the quantiser calibrates its activation ranges on
EXPORT_TOLERANCE = 1e-3  #: max |forward_float - torch| of the embedding, relative to its max


def run(
    *,
    words_per_language: int,
    clips_per_word: int,
    epochs: int,
    seed: int,
    exclude: tuple[str, ...],
    out: Path,
    jobs: int,
    threads: int,
) -> dict[str, Any]:
    """The whole pre-training; returns the manifest written next to the model file."""
    started = time.monotonic()
    selection = corpus.select_words(corpus.load_vocabulary(), exclude, words_per_language)
    per_lang = Counter(lang for lang, _ in selection.words)
    counts = ", ".join(f"{k} {v}" for k, v in per_lang.items())
    say(
        f"corpus: {len(selection.words)} words ({counts}) + _silence; "
        f"{len(selection.excluded)} vocabulary words excluded as keywords or look-alikes of "
        f"{len(exclude)} excluded words"
    )
    config = corpus.CorpusConfig(selection.words, clips_per_word, seed, jobs=jobs)
    t0 = time.monotonic()

    def progress(done: int, total: int) -> None:
        say(f"corpus: {done}/{total} clips rendered, {time.monotonic() - t0:.0f} s")

    data = corpus.build(config, progress)
    corpus_s = time.monotonic() - t0
    x_tr, y_tr = data.split(validation=False)
    x_va, y_va = data.split(validation=True)
    say(
        f"corpus: {len(x_tr)} training clips, {len(x_va)} validation clips "
        f"(variants {','.join(data.variants.get('validation', ()))}) in {corpus_s:.0f} s"
    )

    def epoch_line(s: train.EpochStats) -> None:
        say(
            f"epoch {s.epoch}/{epochs}: loss {s.loss:.3f}, train accuracy "
            f"{s.train_accuracy:.3f}, validation accuracy {s.validation_accuracy:.3f}, "
            f"{s.seconds:.1f} s"
        )

    cfg = train.TrainConfig(epochs=epochs, seed=seed, threads=threads)
    trained = train.train(
        x_tr, y_tr, x_va, y_va, n_classes=len(data.classes), config=cfg, log=epoch_line
    )
    train_s = time.monotonic() - t0 - corpus_s
    params = train.export(trained.model, x_tr)

    # The exported parameters must compute what the torch model computes.
    probe = x_va[:64] if len(x_va) else x_tr[:64]
    ref = forward_float(params, probe.astype(np.float32) / 16)
    mine = train.embeddings(trained.model, probe)
    drift = float(np.abs(ref - mine).max() / max(float(np.abs(mine).max()), 1e-12))
    if drift > EXPORT_TOLERANCE:
        raise ModelError(f"exported parameters drift {drift:.2e} from the torch model")

    calib_idx = np.random.default_rng([seed, 0xCA1]).permutation(len(x_tr))[:N_CALIBRATION]
    extractor = dscnn.quantise(params, x_tr[np.sort(calib_idx)])
    acc_float = train.accuracy(train.predict(trained.model, x_va), y_va)
    e_q = extractor.embed_batch(x_va)  # standardised, as the head sees it
    pooled_q = e_q * params["embed.sd"] + params["embed.mean"]
    acc_int8 = train.accuracy(
        train.classifier_logits(trained.model, pooled_q).argmax(1).astype(np.int64), y_va
    )
    # Compared as the head sees them: standardised (centred, so the cosine is not flattered).
    e_f = (train.embeddings(trained.model, x_va) - params["embed.mean"]) / params["embed.sd"]
    cos = float(np.mean(cosine(e_q, e_f))) if len(x_va) else float("nan")
    say(
        f"export: float parameters match torch (relative drift {drift:.1e}); int8 validation "
        f"accuracy {acc_int8:.3f} (float {acc_float:.3f}), embedding cosine int8/float {cos:.4f}"
    )
    last = trained.history[-1]
    manifest: dict[str, Any] = {
        "name": MODEL_NAME,
        "command": "tinyfed pretrain"
        + f" --words-per-language {words_per_language} --clips-per-word {clips_per_word}"
        + f" --epochs {epochs} --seed {seed} --threads {threads}",
        "corpus": {
            "vocabulary": f"tinyfed/pretrain/{corpus.WORDS_FILE}",
            "languages": list(per_lang),
            "words_per_language": words_per_language,
            "clips_per_word": clips_per_word,
            "word_count": len(selection.words),
            "classes": len(data.classes),
            "words": [f"{lang}:{w}" for lang, w in selection.words],
            "excluded_words": list(exclude),
            "exclusion_rule": "same word, same first 3 letters, or edit distance <= 2 after "
            "lower-casing and stripping accents",
            "vocabulary_words_excluded": len(selection.excluded),
            "training_clips": len(x_tr),
            "validation_clips": len(x_va),
            "validation_variants": list(data.variants.get("validation", ())),
            "reverb_share": round(corpus.REVERB_SHARE, 4),
            "seconds": round(corpus_s, 1),
        },
        "training": {
            "seed": seed,
            "epochs": epochs,
            "batch": cfg.batch,
            "lr": cfg.lr,
            "optimizer": "AdamW, cosine decay, label smoothing 0.1",
            "augmentation": "time shift +-3 frames (edge repeat); int8 noise [-8, 7] on half",
            "threads": threads,
            "final_loss": round(last.loss, 4),
            "train_accuracy": round(last.train_accuracy, 4),
            "seconds": round(train_s, 1),
            "seconds_per_epoch": round(train_s / epochs, 1),
        },
        "validation_accuracy": {"float": round(acc_float, 4), "int8": round(acc_int8, 4)},
        "embedding_cosine_int8_float": round(cos, 5),
        "export_relative_drift": drift,
        "calibration_clips": len(calib_idx),
        "torch_version": torch.__version__,
        "reproducibility": "bit-identical for the same command, machine type, PyTorch build "
        "and --threads (seeded torch, batch order and augmentation; deterministic "
        "algorithms); --jobs does not matter. Another CPU or thread count may round "
        "differently.",
        "duration_s": round(time.monotonic() - started, 1),
    }
    bin_path = dscnn.save(extractor, out / MODEL_NAME, manifest)
    _, saved = dscnn.load(bin_path)
    return saved
