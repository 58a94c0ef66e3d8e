"""``tinyfed model init``, ``tinyfed train`` and ``tinyfed eval``: the reference network offline."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinyfed import model
from tinyfed.data.wav import read_wav
from tinyfed.errors import ModelError, UsageError
from tinyfed.features.pipelines import (
    DEFAULT_PIPELINE,
    N_SAMPLES,
    PIPELINES,
    fit_length,
    get_pipeline,
)
from tinyfed.help import HelpFormatter
from tinyfed.model import families

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the ``model``, ``train`` and ``eval`` commands."""
    fmt = HelpFormatter
    p_model = sub.add_parser(
        "model",
        help="create model files in the board's 41,868-byte layout",
        description="Model files hold the 10,467 float32 parameters the board holds, "
        "little-endian, in the board's layout (41,868 bytes).",
        formatter_class=fmt,
    )
    model_sub = p_model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    p_init = model_sub.add_parser(
        "init",
        help="write the paper's seeded initial model",
        description="Write the initial model: uniform in [-0.5, 0.5] from numpy's seeded "
        "stream, hidden layer first; seed 12345 reproduces the paper's. --scheme scaled "
        "writes the scaled initialisation a new fleet starts from (weights uniform in "
        "+-sqrt(3/fan_in), biases 0, the same stream; docs/aggregator.md).",
        formatter_class=fmt,
    )
    p_init.add_argument("--seed", type=int, default=model.DEFAULT_SEED, help="random seed")
    p_init.add_argument(
        "--scheme", choices=model.INIT_SCHEMES, default="paper", help="initialisation scheme"
    )
    p_init.add_argument("--out", type=Path, required=True, help="model file to write")
    p_init.set_defaults(func=_cmd_init)
    p_info = model_sub.add_parser(
        "info",
        help="what a model file holds: size, checksums, weight ranges",
        description="Check a model file of either family (docs/learning.md; told apart by "
        "size: the paper's network 41,868 bytes, the dscnn head 780) and print its family, "
        "size, SHA-256 (as the MQTT contract names models), CRC-32 (as the board reports it "
        "in MODEL_INFO), the range of each layer's weights and whether it is an initial model.",
        formatter_class=fmt,
    )
    p_info.add_argument("model_file", type=Path, metavar="MODEL.bin")
    p_info.set_defaults(func=_cmd_info)

    p_classify = sub.add_parser(
        "classify",
        help="which keyword a model hears in WAV clips",
        description="Compute each clip's features (the pipeline the model was trained with) "
        "and print the model's three outputs and its answer: the class whose output is highest "
        "and above 0.6, as the board lights it, or none.",
        epilog="example:\n  tinyfed classify clip1.wav clip2.wav --model runs/demo/global.bin "
        "--classes vermell,verd,blau",
        formatter_class=fmt,
    )
    p_classify.add_argument("inputs", nargs="+", type=Path, metavar="IN.wav")
    p_classify.add_argument("--model", type=Path, required=True, metavar="MODEL.bin")
    p_classify.add_argument(
        "--pipeline", default=DEFAULT_PIPELINE, help=f"one of: {', '.join(PIPELINES)}"
    )
    p_classify.add_argument("--classes", metavar="W1,W2,W3", help="names of classes 0..2")
    p_classify.set_defaults(func=_cmd_classify)

    p_train = sub.add_parser(
        "train",
        help="train online, one sample per step in file order, as a board does",
        description="Train the paper's network online: one sample per step, in file order, "
        "SGD with momentum starting from zero momentum, exactly the board's step.",
        epilog="example:\n  tinyfed train --features X.npy --labels Y.npy --init init.bin "
        "--lr 0.1 --out m.bin --log losses.csv",
        formatter_class=HelpFormatter,
    )
    p_train.add_argument("--features", type=Path, required=True, help="float32 [n, 650] .npy")
    p_train.add_argument("--labels", type=Path, required=True, help="integer [n] .npy, 0..2")
    p_train.add_argument("--init", type=Path, help="start model (default: the paper's init)")
    p_train.add_argument("--lr", type=float, default=model.DEFAULT_LR, help="learning rate")
    p_train.add_argument("--momentum", type=float, default=model.DEFAULT_MOMENTUM)
    p_train.add_argument("--epochs", type=int, default=1, help="passes over the file")
    p_train.add_argument("--out", type=Path, required=True, help="model file to write")
    p_train.add_argument("--log", type=Path, help="CSV of step, label, loss")
    p_train.set_defaults(func=_cmd_train)

    p_eval = sub.add_parser(
        "eval",
        help="accuracy and confusion matrix of a model on labelled features",
        description="Print accuracy (highest output) and the confusion matrix; also the "
        "fraction of samples the board would light up (highest output above 0.6).",
        formatter_class=fmt,
    )
    p_eval.add_argument("model_file", type=Path, metavar="MODEL.bin")
    p_eval.add_argument("--features", type=Path, required=True, help="float32 [n, 650] .npy")
    p_eval.add_argument("--labels", type=Path, required=True, help="integer [n] .npy, 0..2")
    p_eval.add_argument(
        "--classes",
        metavar="W1,W2,W3",
        help="names of classes 0..2 for the confusion matrix (e.g. vermell,verd,blau)",
    )
    p_eval.set_defaults(func=_cmd_eval)


#: numpy's RandomState takes seeds 0 .. 2**32 - 1
MAX_SEED = 2**32 - 1


def _writable(path: Path, flag: str) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory, give a file name")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path}: folder {parent} is not writable")


def _save(params: model.F32, path: Path) -> None:
    try:
        model.save(params, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _class_blocks(y: npt.NDArray[np.int64]) -> bool:
    """True if the labels come sorted in blocks of one class (more than one class)."""
    return len(np.unique(y)) > 1 and bool(np.all(np.diff(y) >= 0) or np.all(np.diff(y) <= 0))


def _load_model(path: Path) -> model.F32:
    try:
        return model.load(path)
    except ModelError as exc:
        raise UsageError(str(exc)) from exc


def load_xy(features: Path, labels: Path) -> tuple[model.F32, npt.NDArray[np.int64]]:
    """Load and check a features/labels pair, with errors naming the file and the problem."""
    arrays = []
    for path in (features, labels):
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc
    x, y = arrays
    if x.ndim != 2 or x.shape[1] != model.N_INPUTS:
        raise UsageError(f"{features}: shape {x.shape}, expected [n, {model.N_INPUTS}]")
    if not np.all(np.isfinite(x)):
        raise UsageError(f"{features}: contains NaN or infinite values")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"{labels}: expected a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise UsageError(f"{labels} has {len(y)} labels but {features} has {len(x)} samples")
    if len(y) and (y.min() < 0 or y.max() >= model.N_OUTPUTS):
        raise UsageError(f"{labels}: labels must be 0..{model.N_OUTPUTS - 1}")
    return x.astype(np.float32), y.astype(np.int64)


def confusion(params: model.F32, x: model.F32, y: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Confusion matrix [true, predicted] of ``params`` on ``(x, y)``."""
    pred = model.predict(model.forward(params, x))
    matrix = np.zeros((model.N_OUTPUTS, model.N_OUTPUTS), dtype=np.int64)
    np.add.at(matrix, (y, pred), 1)
    return matrix


def _class_names(text: str | None) -> list[str]:
    if not text:
        return [str(c) for c in range(model.N_OUTPUTS)]
    names = [n.strip() for n in text.split(",")]
    if len(names) != model.N_OUTPUTS or not all(names):
        raise UsageError(
            f"--classes: give {model.N_OUTPUTS} names separated by commas, got {text!r}"
        )
    return names


def _load_any(path: Path) -> tuple[families.Family, model.F32]:
    """A model file of either family, told apart by its size."""
    try:
        params = model.load(path, None)
        return families.by_size(4 * params.size), params
    except ModelError as exc:
        raise UsageError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from exc


def _cmd_info(args: argparse.Namespace) -> int:
    family, params = _load_any(args.model_file)
    raw = model.to_bytes(params, None)
    print(f"{args.model_file}: {len(raw)} bytes, {family.n_params} float32 parameters, all finite")
    print(f"family {family.name} (arch {family.arch_id}, {family.arch}): {family.description}")
    print(f"sha256 {model.sha256(params)}")
    print(f"crc32  {zlib.crc32(raw) & 0xFFFFFFFF:08x} (the board's MODEL_INFO)")
    if family is families.DSCNN:
        k = families.DSCNN_CLASSES
        w, b = params[: k * families.DSCNN_EMBED], params[k * families.DSCNN_EMBED :]
        print(
            f"head {k} x {families.DSCNN_EMBED}: weights {w.min():+.4f} .. {w.max():+.4f}, "
            f"mean |w| {np.abs(w).mean():.4f}; biases {b.min():+.4f} .. {b.max():+.4f}"
        )
        if not params.any():
            print("this is a new head (all zeros): it has not been trained")
        return 0
    hidden = params[: model.N_HIDDEN_PARAMS]
    output = params[model.N_HIDDEN_PARAMS :]
    print(
        f"hidden layer {model.N_INPUTS}+1 x {model.N_HIDDEN}: weights "
        f"{hidden.min():+.4f} .. {hidden.max():+.4f}, mean |w| {np.abs(hidden).mean():.4f}"
    )
    print(
        f"output layer {model.N_HIDDEN}+1 x {model.N_OUTPUTS}: weights "
        f"{output.min():+.4f} .. {output.max():+.4f}, mean |w| {np.abs(output).mean():.4f}"
    )
    if np.array_equal(params, model.init_params()):
        print("this is the paper's initial model (seed 12345): it has not been trained")
    elif np.array_equal(params, model.init_params(scheme="scaled")):
        print("this is a new fleet's scaled initial model (seed 12345): it has not been trained")
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    names = _class_names(args.classes)
    params = _load_model(args.model)
    pipeline = get_pipeline(args.pipeline)
    clips = np.empty((len(args.inputs), N_SAMPLES), np.int16)
    for i, path in enumerate(args.inputs):
        try:
            clips[i], note = fit_length(read_wav(path))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc
        if note is not None:
            log.warning("%s: %s", path, note)
    outputs = model.forward(params, pipeline.compute_batch(clips).astype(np.float32))
    width = max(len(str(p)) for p in args.inputs)
    for path, out in zip(args.inputs, outputs, strict=True):
        best = int(np.argmax(out))
        heard = (
            names[best] if out[best] > model.DETECTION_THRESHOLD else "none (no output above 0.6)"
        )
        shown = "  ".join(f"{n} {v:.3f}" for n, v in zip(names, out, strict=True))
        print(f"{path!s:<{width}}  {heard:<10}  [{shown}]")
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be 0..{MAX_SEED}, got {args.seed}")
    _writable(args.out, "--out")
    _save(model.init_params(args.seed, args.scheme), args.out)
    print(f"wrote {args.out} ({model.MODEL_BYTES} bytes, seed {args.seed}, {args.scheme} init)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    x, y = load_xy(args.features, args.labels)
    if not len(y):
        raise UsageError(f"{args.features}: no samples to train on")
    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    _writable(args.out, "--out")  # before training, not after: no work lost
    if args.log:
        _writable(args.log, "--log")
    classes = np.unique(y, return_counts=True)
    if _class_blocks(y):
        log.warning(
            "%s: the labels come in blocks of one class (%s); online training in file order "
            "forgets the first classes: shuffle the samples (the same order in both files)",
            args.labels,
            ", ".join(f"{int(c)} x{int(n)}" for c, n in zip(*classes, strict=True)),
        )
    start = _load_model(args.init) if args.init else model.init_params()
    try:
        trainer = model.Trainer(start, lr=args.lr, momentum=args.momentum)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    rows: list[tuple[int, int, float]] = []
    total = len(x) * args.epochs
    for epoch in range(args.epochs):
        for i in range(len(x)):
            result = trainer.step(x[i], int(y[i]))
            rows.append((trainer.steps, int(y[i]), result.loss))
            if sys.stderr.isatty() and (trainer.steps % 50 == 0 or trainer.steps == total):
                print(
                    f"\rstep {trainer.steps}/{total} loss {result.loss:.4f}",
                    end="",
                    file=sys.stderr,
                )
        log.debug("epoch %d done", epoch + 1)
    if sys.stderr.isatty() and total:
        print(file=sys.stderr)
    _save(trainer.params, args.out)
    predicted = np.unique(model.predict(model.forward(trainer.params, x)))
    if len(np.unique(y)) > 1 and len(predicted) == 1:
        log.warning(
            "the trained model predicts class %d for every training sample: it learnt nothing "
            "useful (--lr %g%s)",
            int(predicted[0]),
            args.lr,
            "; the paper uses 0.1" if args.lr > 1 else "",
        )
    if args.log:
        with args.log.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "label", "loss"])
            writer.writerows(rows)
    mean_last = np.mean([r[2] for r in rows[-10:]]) if rows else float("nan")
    print(f"trained {total} steps; mean loss of the last 10: {mean_last:.4f}; wrote {args.out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    params = _load_model(args.model_file)
    x, y = load_xy(args.features, args.labels)
    if not len(y):
        raise UsageError(f"{args.labels}: no samples to evaluate")
    matrix = confusion(params, x, y)
    outputs = model.forward(params, x)
    lit = float(np.mean(outputs.max(axis=1) > model.DETECTION_THRESHOLD))
    accuracy = float(np.trace(matrix) / matrix.sum())
    print(f"accuracy {accuracy:.4f} ({int(np.trace(matrix))}/{int(matrix.sum())})")
    print(f"above the 0.6 threshold: {lit:.4f}")
    names = _class_names(args.classes)
    width = max(6, *(len(n) for n in names))
    print("confusion matrix (rows: true class, columns: predicted)")
    print(" " * (width + 1) + " ".join(f"{n:>{width}s}" for n in names))
    for name, row in zip(names, matrix, strict=True):
        print(f"{name:>{width}s} " + " ".join(f"{v:>{width}d}" for v in row))
    return 0
