"""The shared vectors of the ``dscnn`` family (``vectors/dscnn/``), made by the Python reference.

The C++ tests (firmware, ``dscnn-fw``) and the Python tests (``tests/model/dscnn/``) read the
same files; ``vectors/dscnn/README.md`` describes every file's layout. The extractor in them is a
deterministic *random* float model (seed :data:`SEED`) quantised with
:func:`~tinyfed.model.dscnn.quantise.quantise` on deterministic calibration inputs, so the
vectors do not depend on the pre-trained weights::

    .venv/bin/python -m tinyfed.model.dscnn.vectors           # (re)write vectors/dscnn/
    .venv/bin/python -m tinyfed.model.dscnn.vectors --check   # exit 1 naming a stale file

The ``--check`` also covers the generated firmware tables (:mod:`.firmware_gen`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.features import align, logmel, mfcc
from tinyfed.model.dscnn import firmware_gen, head, modelfile
from tinyfed.model.dscnn.extractor import (
    PARAM_SHAPES,
    Extractor,
    forward_float,
)
from tinyfed.model.dscnn.quantise import quantise

F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]
I8 = npt.NDArray[np.int8]

SEED = 20261130  #: seed of the random model, the calibration and the random inputs
REPO = Path(__file__).resolve().parents[3]  #: the repository (tinyfed/model/dscnn/ -> ../../..)
VECTORS_DIR = REPO / "vectors" / "dscnn"
MODEL_NAME = "extractor"  #: vectors/dscnn/extractor.bin and .json
N_CALIBRATION = 64  #: random calibration inputs besides the clips
N_RANDOM_INPUTS = 4  #: random int8 inputs in the embedding vectors besides the clips
HEAD_CLASSES = 3  #: classes of the head sequence
HEAD_RECORDINGS = 70  #: recordings of the head sequence: the 320-slot store wraps after 64
LR = head.DEFAULT_LR  #: learning rate of the head sequence


def _int16(x: F64) -> I16:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def clips() -> dict[str, I16]:
    """The synthesized audio clips, by name (deterministic)."""
    rng = np.random.default_rng(SEED)
    t = np.arange(logmel.N_SAMPLES) / mfcc.SAMPLE_RATE
    burst = np.exp(-0.5 * ((t - 0.3) / 0.08) ** 2)  # a 0.2 s event early in the second
    f0 = 140 + 80 * t
    phase = 2 * np.pi * np.cumsum(f0) / mfcc.SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10))
    syllables = np.sin(np.pi * np.clip((t - 0.45) / 0.4, 0, 1) * 2) ** 2
    glide = 2 * np.pi * np.cumsum(200 + 3800 * t) / mfcc.SAMPLE_RATE
    return {
        "tone1k_early": _int16(
            12000 * burst * np.sin(2 * np.pi * 1000 * t) + rng.normal(0, 30, t.size)
        ),
        "word_like": _int16(9000 * voiced / 3 * syllables + rng.normal(0, 200, t.size)),
        "chirp": _int16(6000 * np.sin(glide)),
        "white_noise": _int16(rng.normal(0, 4000, t.size)),
    }


def random_inputs(n: int, seed: int) -> I8:
    """``n`` int8 inputs ``[n, 50, 40]``: normal with sd 16 (one sd of a feature), clipped."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.normal(0, 16, (n, *logmel.SHAPE))), -128, 127).astype(np.int8)


def random_params(calibration: I8, seed: int = SEED) -> dict[str, F64]:
    """A random float model (He-initialised, small positive biases), its embedding statistics
    measured on the dequantised ``calibration`` inputs."""
    rng = np.random.default_rng(seed)
    params: dict[str, F64] = {}
    for key, shape in PARAM_SHAPES.items():
        if key.endswith(".w"):
            fan_in = 9 if len(shape) == 3 else shape[1]
            params[key] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif key.endswith(".b"):
            params[key] = rng.normal(0.05, 0.1, shape)
    params["embed.mean"] = np.zeros(shape[0])
    params["embed.sd"] = np.ones(shape[0])
    pooled = forward_float(params, logmel.dequantise_input(calibration)).astype(np.float64)
    params["embed.mean"] = pooled.mean(axis=0)
    params["embed.sd"] = np.maximum(pooled.std(axis=0), 1e-3)
    return params


def make_model() -> tuple[Extractor, dict[str, F64], I8]:
    """The vectors' extractor, its float parameters and its calibration inputs."""
    clip_inputs = logmel.features_int8(np.stack(list(clips().values())))
    calibration = np.concatenate([clip_inputs, random_inputs(N_CALIBRATION, SEED + 1)])
    params = random_params(calibration)
    return quantise(params, calibration), params, calibration


def head_schedule(n_inputs: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Recording ``r`` uses embedding input ``r % n_inputs`` with label ``(r % n_inputs) % 3``."""
    idx = (np.arange(HEAD_RECORDINGS) % n_inputs).astype(np.int32)
    return idx, (idx % HEAD_CLASSES).astype(np.int32)


def _b(arr: npt.NDArray[np.generic], dtype: str) -> bytes:
    return np.ascontiguousarray(arr).astype(dtype).tobytes()


def render(extractor: Extractor) -> dict[str, bytes]:
    """Every file of ``vectors/dscnn/`` but the README, by name, for the vectors' extractor."""
    files: dict[str, bytes] = {}
    data = modelfile.to_bytes(extractor)
    manifest = modelfile.manifest_of(
        data, {"model": "random (for the shared vectors only)", "seed": SEED}
    )
    files[f"{MODEL_NAME}.bin"] = data
    files[f"{MODEL_NAME}.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    files["mel_table.f32"] = _b(logmel.mel_table(), "<f4")

    audio = clips()
    files["clips.txt"] = "".join(f"{name}\n" for name in audio).encode()
    inputs = []
    for name, clip in audio.items():
        aligned, _ = align.align(clip)
        power = mfcc.power_spectrum(mfcc.preemphasis(aligned))
        energy = logmel.band_energies(power)
        logs = logmel.log_energies(energy)
        feats = logmel.normalise(logs)
        q = logmel.quantise_input(feats)
        files[f"{name}.i16"] = _b(clip, "<i2")
        files[f"{name}_band_energy.f32"] = _b(energy, "<f4")
        files[f"{name}_log.f32"] = _b(logs, "<f4")
        files[f"{name}_logmel.f32"] = _b(feats, "<f4")
        files[f"{name}_input.i8"] = _b(q, "i1")
        inputs.append(q)

    rand = random_inputs(N_RANDOM_INPUTS, SEED + 2)
    rand[0] = np.random.default_rng(SEED + 3).integers(-128, 128, logmel.SHAPE)  # extremes
    embed_in = np.concatenate([np.stack(inputs), rand]).astype(np.int8)
    files["embed_in.i8"] = _b(embed_in, "i1")
    files["embed_q.i8"] = _b(extractor.embed_q_batch(embed_in), "i1")
    files["embed.f32"] = _b(extractor.embed_batch(embed_in), "<f4")

    layers_in = embed_in[[0, len(inputs)]]  # the first clip and the extreme random input
    files["layers_in.i8"] = _b(layers_in, "i1")
    for name, out in extractor.run_q(layers_in).items():
        files[f"layers_{name.replace('.', '_')}.i8"] = _b(out, "i1")

    files["augment_in.i8"] = _b(layers_in, "i1")
    files["augment.i8"] = _b(np.stack([head.augment(x) for x in layers_in]), "i1")
    x, states = 1, []
    for _ in range(16):
        x = head.xorshift32(x)
        states.append(x)
    files["xorshift_seed1.u32"] = _b(np.array(states), "<u4")

    files.update(_head_files(extractor, embed_in))
    return files


def _head_files(extractor: Extractor, embed_in: I8) -> dict[str, bytes]:
    idx, labels = head_schedule(len(embed_in))
    learner = head.Learner(extractor, HEAD_CLASSES, lr=LR)
    params, losses, orders, lengths, step_losses = [], [], [], [], []
    for i, y in zip(idx, labels, strict=True):
        rec = learner.record(embed_in[i], int(y))
        params.append(learner.params.copy())
        losses.append(rec.mean_loss)
        orders.append(rec.order)
        lengths.append(len(rec.order))
        step_losses.append(rec.losses)
    probs = np.stack([learner.probabilities(x) for x in embed_in])
    decisions = [head.decide(p) for p in probs]
    return {
        "head_input_index.i32": _b(idx, "<i4"),
        "head_labels.i32": _b(labels, "<i4"),
        "head_params.f32": _b(np.stack(params), "<f4"),
        "head_loss.f32": _b(np.array(losses, np.float32), "<f4"),
        "head_order_len.i32": _b(np.array(lengths), "<i4"),
        "head_order.i32": _b(np.concatenate(orders), "<i4"),
        "head_step_loss.f32": _b(np.concatenate(step_losses), "<f4"),
        "head_store_q.i8": _b(learner.store.embeddings, "i1"),
        "head_store_labels.i32": _b(learner.store.labels, "<i4"),
        "head_probs.f32": _b(probs, "<f4"),
        "head_decide.i32": _b(np.array([-1 if d is None else d for d in decisions]), "<i4"),
    }


def all_files() -> dict[Path, bytes]:
    """Every generated file (vectors and firmware tables), by absolute path."""
    extractor, _, _ = make_model()
    out = {VECTORS_DIR / name: data for name, data in render(extractor).items()}
    out.update(firmware_gen.render_all(extractor, VECTORS_DIR / "fw"))
    return out


def stale(files: dict[Path, bytes]) -> list[Path]:
    """The paths whose content on disk differs from ``files`` (or that are missing)."""
    return [p for p, data in files.items() if not p.is_file() or p.read_bytes() != data]


def main(argv: list[str] | None = None) -> int:
    """Write the vectors and tables, or with ``--check`` exit 1 naming every stale file."""
    parser = argparse.ArgumentParser(prog="python -m tinyfed.model.dscnn.vectors")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    files = all_files()
    if args.check:
        bad = stale(files)
        for p in bad:
            print(f"stale: {p.relative_to(REPO)} (run python -m tinyfed.model.dscnn.vectors)")
        if bad:
            return 1
        print(f"dscnn vectors and firmware tables up to date ({len(files)} files)")
        return 0
    for p, data in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    print(f"wrote {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
