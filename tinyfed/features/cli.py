"""``tinyfed features``: WAV clips -> one float32 ``[n, 650]`` .npy file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

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
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IN.wav", help="input clips")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT.npy", help="output file")
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
    clips = np.empty((len(args.inputs), N_SAMPLES), np.int16)
    for i, path in enumerate(args.inputs):
        clips[i], note = fit_length(read_wav(path))
        if note is not None:
            logger.warning("%s: %s", path, note)
    features = pipeline.compute_batch(clips).astype(np.float32, copy=False)
    tmp = out.with_name(out.name + ".tmp.npy")
    np.save(tmp, features)
    tmp.replace(out)
    logger.info(
        "%s: %d x %d features (pipeline %s, id %d)",
        out,
        features.shape[0],
        features.shape[1],
        pipeline.name,
        pipeline.id,
    )
    return 0
