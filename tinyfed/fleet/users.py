"""``tinyfed virtual-users``: the demo's scripted users, written out for boards run elsewhere.

The demo starts its virtual boards itself, each with a script of button presses and the
synthesized clips its user speaks. A fleet deployed with ``docker compose --profile virtual``
runs its virtual boards in their own containers, so the same users are written to a folder
first: the keyword corpus (espeak-ng, synthesized once and reused) and one script per board,
``board-N.txt``, whose clip paths are relative to the script (``corpus/WORD/...``), so the
folder can be mounted anywhere. A board started with ``--script DIR/board-N.txt`` and
``--local-steps`` equal to this command's then speaks ``--local-steps`` words per round and
waits for each new global model, as in the demo.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from tinyfed.data import dataset as ds
from tinyfed.errors import UsageError
from tinyfed.fleet import scenario as sc
from tinyfed.fleet.corpus import classes_of, ensure_corpus

log = logging.getLogger(__name__)

CORPUS_LINK = "corpus"  #: the corpus folder's name inside the output folder
INDEX_FILE = "users.json"  #: what was written, for people and for tools


@dataclass(frozen=True)
class UsersPlan:
    """What ``tinyfed virtual-users`` writes."""

    out: Path
    words: tuple[str, ...]
    silence: bool
    boards: int = 2
    rounds: int = 10
    local_steps: int = 10
    non_iid: bool = False
    per_word: int = 100
    seed: int = 0


def script_name(index: int) -> str:
    """The script of the ``index``-th board (1-based): ``board-1.txt``."""
    return f"board-{index}.txt"


def write_users(plan: UsersPlan) -> dict[str, object]:
    """Synthesize (or reuse) the corpus in ``plan.out/corpus`` and write one script per board.

    Returns the index written to ``plan.out/users.json``.

    Raises:
        UsageError: the output folder is a file, or the corpus cannot give every board a clip
            of each of its words (too few clips per word for that many boards).
    """
    out = plan.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    corpus_root = out / ".corpus-cache"
    corpus = ensure_corpus(
        plan.words,
        plan.silence,
        corpus_root,
        per_word=plan.per_word,
        seed=plan.seed,
    )
    link = out / CORPUS_LINK
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    # A relative link: the folder stays valid wherever it is mounted (a container's /virtual).
    link.symlink_to(corpus.relative_to(out), target_is_directory=True)
    data = ds.load(corpus, classes=classes_of(plan.words, plan.silence), splits=("train",))
    scenario = sc.build(
        data.select("train"),
        boards=plan.boards,
        rounds=plan.rounds,
        local_steps=plan.local_steps,
        non_iid=plan.non_iid,
        seed=plan.seed,
    )
    boards = []
    for board in scenario.boards:
        path = out / script_name(board.index)
        path.write_text(sc.script_text(scenario, board, CORPUS_LINK))
        boards.append(
            {
                "script": path.name,
                "board_id": board.board_id,
                "words": list(scenario.words_of(board)),
                "voices": len(board.voices),
                "presses": len(board.presses),
            }
        )
        log.info("wrote %s: %s", path, ", ".join(scenario.words_of(board)))
    index: dict[str, object] = {
        "classes": list(scenario.classes),
        "rounds": plan.rounds,
        "local_steps": plan.local_steps,
        "non_iid": plan.non_iid,
        "per_word": plan.per_word,
        "seed": plan.seed,
        "corpus": CORPUS_LINK,
        "boards": boards,
    }
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return index
