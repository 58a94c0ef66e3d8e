"""``tinyfed bench aggregate``: decode, validate and aggregate N updates, two ways.

* **tinyfed**: each payload goes through :func:`tinyfed.mqtt.contract.decode_update` and the
  :class:`~tinyfed.aggregator.rounds.RoundMachine` (round rules, weight cap, streaming FedAvg), then
  the round closes.
* **paper**: the same decoding, then the way the paper's server averages: every arriving model
  is ``np.vstack``-ed onto the stack of those already received, and one weighted
  ``np.average`` runs over the stack at the end.

Payloads are encoded before the clock starts (they stand for what the network delivers).
Throughput is measured without tracing; peak memory is measured in a second pass with
:mod:`tracemalloc` (numpy reports its buffers to it), as the peak above the start of the pass.
"""

from __future__ import annotations

import argparse
import logging
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyfed import model
from tinyfed.aggregator.rounds import RoundClosed, RoundMachine, RoundPolicy
from tinyfed.aggregator.strategies import F32, Strategy
from tinyfed.errors import UsageError
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import GlobalModel, HyperParams, LossSummary, ModelUpdate

LOCAL_STEPS = 10
PIPELINE = "paper"


@dataclass(frozen=True)
class Measure:
    """One way of aggregating: its speed, memory and result."""

    name: str
    seconds: float
    peak_bytes: int
    result: F32

    def updates_per_s(self, n: int) -> float:
        return n / self.seconds


@dataclass(frozen=True)
class BenchResult:
    """Both ways, on the same payloads."""

    updates: int
    tinyfed: Measure
    paper: Measure

    @property
    def speedup(self) -> float:
        return self.paper.seconds / self.tinyfed.seconds

    @property
    def max_abs_diff(self) -> float:
        return float(np.max(np.abs(self.tinyfed.result - self.paper.result)))


def make_payloads(n: int, seed: int = 1) -> tuple[GlobalModel, list[bytes]]:
    """Global model 0 and ``n`` encoded updates from distinct workers, local steps 0..10."""
    rng = np.random.default_rng(seed)
    base = model.init_params()
    g = GlobalModel(
        round=0, params=base, hyper=HyperParams(local_steps=LOCAL_STEPS), pipeline=PIPELINE
    )
    payloads = []
    for i in range(n):
        params = (base + rng.normal(0, 0.05, base.shape)).astype(np.float32)
        u = ModelUpdate(
            worker_id=f"w{i:05d}",
            base_round=0,
            local_steps=int(rng.integers(0, LOCAL_STEPS + 1)) if i else LOCAL_STEPS,
            params=params,
            upload_id=f"u{i:05d}",
            pipeline=PIPELINE,
            loss=LossSummary(count=LOCAL_STEPS, mean=0.2, last=0.1),
        )
        payloads.append(contract.encode_update(u))
    return g, payloads


def aggregate_streaming(g: GlobalModel, payloads: Sequence[bytes]) -> F32:
    """tinyfed's way: decode, judge and fold each update into the round as it arrives."""
    machine = RoundMachine(
        policy=RoundPolicy(min_workers=1, timeout_s=3600.0),
        strategy=Strategy("fedavg"),
        hyper=g.hyper,
        current=g,
        now=0.0,
    )
    for payload in payloads:
        update = contract.decode_update(payload)
        machine.update_received(update, 1.0, sender=update.worker_id)
    closed = [d for d in machine.tick(1e9) if isinstance(d, RoundClosed)]
    return closed[0].model.params


def aggregate_paper(g: GlobalModel, payloads: Sequence[bytes]) -> F32:
    """The paper's server: vstack every model as it arrives, one weighted average at the end."""
    stack: Any = None
    weights: list[int] = []
    for payload in payloads:
        update = contract.decode_update(payload)
        row = update.params[np.newaxis, :]
        stack = row if stack is None else np.vstack([stack, row])
        weights.append(update.local_steps)
    out: F32 = np.average(stack, axis=0, weights=weights).astype(np.float32)
    return out


def _measure(
    name: str, fn: Callable[[GlobalModel, Sequence[bytes]], F32], g: GlobalModel, p: list[bytes]
) -> Measure:
    t0 = time.perf_counter()
    result = fn(g, p)
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    try:
        fn(g, p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Measure(name, seconds, peak, result)


def run_bench(n: int) -> BenchResult:
    """Aggregate ``n`` updates both ways."""
    if n < 1:
        raise UsageError(f"--updates: must be at least 1, got {n}")
    g, payloads = make_payloads(n)
    return BenchResult(
        n,
        _measure("tinyfed", aggregate_streaming, g, payloads),
        _measure("paper", aggregate_paper, g, payloads),
    )


def _mb(n: float) -> float:
    return n / 1e6


def report(r: BenchResult) -> str:
    """The benchmark's printout; its last line is ``updates_per_s=... peak_mb=... speedup=...``."""
    n = r.updates
    lines = [
        f"aggregate {n} updates of the paper's model ({model.N_PARAMS:,} float32, "
        f"{model.MODEL_BYTES:,} bytes each): decode + validate + FedAvg",
    ]
    for m, how in ((r.tinyfed, "streaming FedAvg"), (r.paper, "vstack + np.average")):
        lines.append(
            f"  {m.name:8s} {how:20s} {m.updates_per_s(n):10,.0f} updates/s  "
            f"{m.seconds * 1e3:9.1f} ms  peak {_mb(m.peak_bytes):7.2f} MB "
            f"({m.peak_bytes / model.MODEL_BYTES:.1f} models)"
        )
    lines.append(f"  same global model: max |difference| = {r.max_abs_diff:.2e}")
    lines.append(
        f"updates_per_s={r.tinyfed.updates_per_s(n):.0f} "
        f"peak_mb={_mb(r.tinyfed.peak_bytes):.2f} speedup={r.speedup:.1f}"
    )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    logging.getLogger("aggregator").setLevel(logging.WARNING)  # no per-round log lines
    print(report(run_bench(args.updates)))
    return 0


def register_bench(subparsers: Any) -> None:
    """Add ``tinyfed bench aggregate``."""
    p = subparsers.add_parser(
        "aggregate",
        help="aggregate N updates: streaming FedAvg vs the paper's vstack + np.average",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--updates", type=int, default=1000, help="number of updates (default 1000)")
    p.set_defaults(func=main)


if __name__ == "__main__":  # ``python bench/aggregate.py ARGS`` is ``tinyfed bench aggregate ARGS``
    import sys

    from tinyfed import cli

    sys.exit(cli.main(["bench", "aggregate", *sys.argv[1:]]))
