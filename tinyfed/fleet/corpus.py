"""The keyword corpus of a fleet run (synthesized once, cached) and its held-out test voices."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed import model
from tinyfed.data import dataset as ds, synth
from tinyfed.errors import UsageError
from tinyfed.features import logmel, pipelines
from tinyfed.model import dscnn
from tinyfed.model.dscnn import firmware_gen, head
from tinyfed.model.dscnn.extractor import Extractor

log = logging.getLogger(__name__)

DEFAULT_CORPUS_DIR = Path("runs/corpus")  #: the cache shared with ``tinyfed experiment``
LOGMEL40 = "logmel40"  #: the dscnn family's pipeline (docs/learning.md)
SILENCE_ALIASES = ("silence", "_silence")  #: how ``--words`` names the noise-only class


def parse_words(text: str) -> tuple[tuple[str, ...], bool]:
    """``"montserrat,pedraforca,silence"`` -> ``(("montserrat", "pedraforca"), True)``.

    Exactly three classes (the board's three buttons); ``silence`` (or ``_silence``) is the
    noise-only class and comes last whatever its position.
    """
    names = [w.strip().lower() for w in text.split(",") if w.strip()]
    silence = any(n in SILENCE_ALIASES for n in names)
    words = tuple(n for n in names if n not in SILENCE_ALIASES)
    if len(words) + int(silence) != 3 or len(set(words)) != len(words):
        raise UsageError(
            f"--words needs three different classes (the board's D2, D3, D4), got {text!r};"
            " e.g. vermell,verd,blau or montserrat,pedraforca,silence"
        )
    return words, silence


def classes_of(words: tuple[str, ...], silence: bool) -> list[str]:
    """Class names in label order."""
    return [*words, *([synth.SILENCE_CLASS] if silence else [])]


def ensure_corpus(
    words: tuple[str, ...],
    silence: bool,
    root: Path = DEFAULT_CORPUS_DIR,
    *,
    per_word: int,
    seed: int = 0,
    name: str | None = None,
) -> Path:
    """The corpus folder for these words, synthesized on first use and reused afterwards.

    ``name`` overrides the folder name (``tinyfed experiment`` caches ``fig5-n300-s0``, which a
    full-stack run of the same figure reuses).
    """
    folder = root / (
        name or "-".join([*words, *(["silence"] if silence else []), f"n{per_word}", f"s{seed}"])
    )
    if (folder / synth.MANIFEST_FILE).is_file():
        log.info("reusing the corpus in %s", folder)
        return folder
    log.info("synthesizing %d clips per class into %s", per_word, folder)
    synth.synthesize(
        synth.SynthConfig(
            words=words, out=folder, per_word=per_word, seed=seed, silence=silence, force=True
        )
    )
    return folder


class HeldOut:
    """The test voices of a corpus: scores models with the Python reference of a pipeline.

    Features are computed once per pipeline (the first time it is asked for, or up front with
    :meth:`prepare`), so scoring a model is one forward pass over the test clips.
    """

    def __init__(self, test: ds.Dataset) -> None:
        if not len(test):
            raise UsageError(f"the corpus in {test.root} has no test clips")
        self.test = test
        self.labels: npt.NDArray[np.int64] = np.asarray(test.labels)
        self._features: dict[str, model.F32] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.labels)

    def prepare(self, pipeline: str) -> HeldOut:
        """Compute the features of ``pipeline`` now; return self."""
        self.features(pipeline)
        return self

    def features(self, pipeline: str) -> model.F32:
        """The test clips' features under ``pipeline`` (cached).

        ``logmel40`` (the dscnn family) gives the frozen extractor's float embeddings
        ``[n, 64]``, the head's inputs: the extractor runs once per clip, not per model.
        """
        with self._lock:
            if pipeline not in self._features:
                if pipeline == LOGMEL40:
                    inputs = logmel.features_int8(self.test.audio)
                    self._features[pipeline] = released_extractor().embed_batch(inputs)
                else:
                    pipe = pipelines.get_pipeline(pipeline)
                    self._features[pipeline] = pipe.compute_batch(self.test.audio)
            return self._features[pipeline]

    def accuracy(self, params: model.F32, pipeline: str) -> float:
        """Fraction of test clips whose most likely class is theirs (the paper's network, or
        the dscnn family's head on the extractor's embeddings)."""
        feats = self.features(pipeline)
        if pipeline == LOGMEL40:
            k = head.check_head(params)  # the layout: W[K][64] row-major, then b[K]
            w, b = params[: k * head.EMBED].reshape(k, head.EMBED), params[k * head.EMBED :]
            predicted = np.argmax(feats @ w.T + b, axis=1)
        else:
            predicted = model.predict(model.forward(params, feats))
        return float(np.mean(predicted == self.labels))


_RELEASED: list[Extractor] = []


def released_extractor() -> Extractor:
    """The pre-trained extractor every dscnn board has in flash (loaded once)."""
    if not _RELEASED:
        path = firmware_gen.RELEASED
        if not path.is_file():
            raise UsageError(
                f"the pre-trained extractor {path} is missing: reinstall tinyfed, or make it "
                "with `tinyfed pretrain` (the train extra)"
            )
        _RELEASED.append(dscnn.load(path)[0])
    return _RELEASED[0]
