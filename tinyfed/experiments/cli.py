"""``tinyfed experiment NAME``: the paper's figures, on one board or through the full stack.

Fig. 5 and Fig. 6 run on the reference network (:mod:`tinyfed.experiments.board`) unless
``--full-stack`` is given; Fig. 7 and Fig. 8, and ``--full-stack`` runs, go through virtual
boards, gateways, Mosquitto and the aggregator (:mod:`tinyfed.experiments.fleet`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tinyfed.experiments import board, fewshot
from tinyfed.features import pipelines
from tinyfed.help import HelpFormatter


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``tinyfed experiment``."""
    p = sub.add_parser(
        "experiment",
        help="reproduce the paper's figures (Fig. 5, 6 on one board; Fig. 7, 8 on two)",
        description=board.__doc__,
        epilog="examples:\n"
        "  tinyfed experiment fig5                      # both pipelines, 5 speaking orders\n"
        "  tinyfed experiment fig6 --model paper --pipeline paper  # exactly the paper\n"
        "  tinyfed experiment fig6 --out runs/fig6 --per-word 200\n"
        "  tinyfed experiment fig7 --orders 3          # two boards, IID, full stack\n"
        "  tinyfed experiment fig8 --orders 3          # non-IID: FedAvg against FedAvgM\n"
        "  tinyfed experiment fig5 --full-stack        # one virtual board through the stack\n"
        "  tinyfed experiment fewshot                  # accuracy against utterances per word\n"
        "  tinyfed experiment fewshot --quick --families paper",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "name",
        choices=("fig5", "fig6", "fig7", "fig8", "fewshot"),
        help="which figure; fig7 and fig8 (two boards) always run through the full stack; "
        "fewshot: accuracy against utterances per word, both families (docs/learning.md)",
    )
    p.add_argument(
        "--full-stack",
        action="store_true",
        help="run fig5/fig6 on virtual boards, gateways, Mosquitto and the aggregator "
        "instead of the reference network (docs/results.md)",
    )
    p.add_argument(
        "--strategies",
        help="full stack: aggregation strategies, comma-separated "
        "(default: the figure's; fig8 compares fedavg with fedavgm)",
    )
    p.add_argument(
        "--orders", type=int, default=1, help="full stack: speaking orders to run (seeds 0..N-1)"
    )
    p.add_argument(
        "--model",
        choices=("paper",),
        default="paper",
        help="fig5-fig8: the model family, the paper's 650-16-3 network (the only one the "
        "paper's figures have; fewshot compares families with --families)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: runs/NAME)")
    p.add_argument(
        "--pipeline",
        default=f"{pipelines.PAPER},{pipelines.CENTROID}",
        help="feature pipeline(s), comma-separated; 'paper' reproduces the paper",
    )
    p.add_argument(
        "--corpus-dir",
        type=Path,
        default=Path("runs/corpus"),
        help="where synthesized corpora are cached",
    )
    p.add_argument(
        "--per-word",
        type=int,
        default=300,
        help="clips per class to synthesize (fewshot: of the espeak-ng corpus; --quick: 60)",
    )
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="speaking orders to average over (fewshot: draws of training clips; --quick: 1)",
    )
    p.add_argument(
        "--ceiling-epochs", type=int, default=30, help="epochs of the offline ceiling run"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewshot: small corpora, 3 and 20 utterances, one repeat (well under a minute)",
    )
    p.add_argument(
        "--families", default="paper,dscnn", help="fewshot: model families, comma-separated"
    )
    p.add_argument(
        "--extractor",
        type=Path,
        default=fewshot.EXTRACTOR,
        help="fewshot: the dscnn family's pre-trained extractor (NAME.bin with NAME.json)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=fewshot.THRESHOLD,
        help="fewshot: the rejection threshold of the decision",
    )
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if args.name == "fewshot":
        return fewshot.command(args)
    if args.full_stack or args.name not in board.EXPERIMENTS:
        # The fleet (processes, MQTT) is imported only for the runs that need it.
        from tinyfed.experiments import fleet  # noqa: PLC0415

        return fleet.command(args)
    return board.command(args)
