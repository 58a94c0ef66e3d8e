"""Feature pipelines' speed on one core: clips per second for each pipeline (batch API).

Usage: ``.venv/bin/python bench/features.py [--clips N] [--repeat R]``. The process is pinned
to one CPU and BLAS/OpenMP are limited to one thread before numpy is imported. The last line is
``clips_per_s=<N>`` for the default pipeline.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from tinyfed.features.pipelines import DEFAULT_PIPELINE, PIPELINES  # noqa: E402


def _clips(n: int) -> np.ndarray:
    """Speech-like clips: a noisy tone burst at a random place in the second, plus noise."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    out = rng.normal(0, 50, (n, 16000))
    starts = rng.integers(0, 10000, n)
    for i, start in enumerate(starts):
        burst = np.sin(2 * np.pi * 300 * t[:6000]) * np.hanning(6000) * 8000
        out[i, start : start + 6000] += burst
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def measure(name: str, clips: np.ndarray, repeat: int) -> float:
    """Best-of-``repeat`` clips per second of one pipeline's batch computation."""
    pipeline = PIPELINES[name]
    pipeline.compute_batch(clips[:8])  # warm caches (filterbank, DCT matrix)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        pipeline.compute_batch(clips)
        best = min(best, time.perf_counter() - start)
    return len(clips) / best


def main() -> None:
    """Print clips/s for each pipeline, then ``clips_per_s=`` for the default one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clips", type=int, default=1000, help="clips per batch")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    clips = _clips(args.clips)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.system()} {platform.machine()}, pinned to CPU {cpus}, "
        f"{args.clips} clips x {args.repeat} runs"
    )
    rates = {}
    for name in PIPELINES:
        rates[name] = measure(name, clips, args.repeat)
        pipeline = PIPELINES[name]
        print(f"{name:10s} (id {pipeline.id}): {rates[name]:8.0f} clips/s on one core")
    print(f"clips_per_s={rates[DEFAULT_PIPELINE]:.0f}")


if __name__ == "__main__":
    main()
