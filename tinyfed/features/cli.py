"""``tinyfed features``: WAV clips -> one float32 ``[n, 650]`` .npy file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.data import dataset as ds
from tinyfed.data.synth import SPLITS
from tinyfed.data.wav import read_wav
from tinyfed.errors import UsageError
from tinyfed.features.pipelines import (
    DEFAULT_PIPELINE,
    N_SAMPLES,
    PIPELINES,
    fit_length,
    get_pipeline,
)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``features`` command."""
    parser = subparsers.add_parser(
        "features",
        help="compute the 650 features of WAV clips into a .npy file",
        description=(
            "Compute the features of one-second WAV clips (any PCM WAV; mixed down to mono and "
            "resampled to 16 kHz). A clip shorter or longer than 1 s is padded with zeros or "
            "cut, and a log line says so. Writes float32 [n, 650], one row per input, in the "
            "order given. Pipelines: "
            + "; ".join(f"{p.name} (id {p.id}): {p.description}" for p in PIPELINES.values())
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="*", type=Path, metavar="IN.wav", help="input clips")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT.npy", help="output file")
    parser.add_argument(
        "--corpus",
        type=Path,
        metavar="DIR",
        help="instead of clips: every clip of one split of a corpus folder (Speech Commands "
        "layout), in an order that trains (one clip of each word in turn, as a user would say "
        "them), with their labels in --labels-out",
    )
    parser.add_argument(
        "--split", default="train", choices=SPLITS, help="the corpus split to read (--corpus)"
    )
    parser.add_argument(
        "--labels-out",
        type=Path,
        metavar="Y.npy",
        help="with --corpus: the int64 labels, row for row, for `tinyfed train --labels`",
    )
    parser.add_argument(
        "--pipeline",
        default=DEFAULT_PIPELINE,
        metavar="NAME",
        help=f"feature pipeline, one of: {', '.join(PIPELINES)}",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the clips, compute their features, write the .npy; return the exit code."""
    pipeline = get_pipeline(args.pipeline)
    out: Path = args.out
    if out.suffix != ".npy":
        raise UsageError(f"--out {out}: expected a .npy file name")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    if bool(args.inputs) == bool(args.corpus):
        raise UsageError("give either WAV clips or --corpus DIR (not both, not neither)")
    labels_out: Path | None = args.labels_out
    if labels_out is not None and not args.corpus:
        raise UsageError("--labels-out goes with --corpus (clips given one by one have no label)")
    if labels_out is not None and (labels_out.suffix != ".npy" or not labels_out.parent.is_dir()):
        raise UsageError(f"--labels-out {labels_out}: expected a .npy file in an existing folder")
    labels: npt.NDArray[np.int64] | None = None
    if args.corpus:
        corpus = ds.load(args.corpus, splits=(args.split,))
        if not len(corpus.labels):
            raise UsageError(f"{args.corpus}: no clips in the {args.split} split")
        order = training_order(corpus.labels)
        clips = np.ascontiguousarray(corpus.audio[order])
        labels = corpus.labels[order].astype(np.int64)
        print("classes: " + ", ".join(f"{i} {name}" for i, name in enumerate(corpus.classes)))
    else:
        clips = np.empty((len(args.inputs), N_SAMPLES), np.int16)
        for i, path in enumerate(args.inputs):
            clips[i], note = fit_length(read_wav(path))
            if note is not None:
                logger.warning("%s: %s", path, note)
    features = pipeline.compute_batch(clips).astype(np.float32, copy=False)
    _save(out, features)
    if labels is not None and labels_out is not None:
        _save(labels_out, labels)
    logger.info(
        "%s: %d x %d features (pipeline %s, id %d)",
        out,
        features.shape[0],
        features.shape[1],
        pipeline.name,
        pipeline.id,
    )
    return 0


def training_order(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Indices that take one clip of each class in turn (in corpus order within a class): a
    file order online training learns from, where a corpus sorted by class makes the network
    forget the first words."""
    per_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    order = [int(ix[k]) for k in range(max(map(len, per_class))) for ix in per_class if k < len(ix)]
    return np.array(order, dtype=np.int64)


def _save(path: Path, array: npt.NDArray[np.generic]) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
