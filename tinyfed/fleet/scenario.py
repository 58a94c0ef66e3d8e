"""Who says what to which board: the scripted users of a fleet run (pure, no I/O).

A scenario splits a corpus's **training** clips between the boards of a fleet:

* **voices**: every training voice (espeak-ng language + variant) belongs to exactly one board,
  so each board has its own users, as real boards in different homes would. The test voices
  belong to nobody: they score the global model.
* **words**: IID, every board hears every class. Non-IID (the paper's Fig. 8, "each word spoken
  to one board only"): the keywords are dealt to the boards in turn (keyword *k* to board
  *k mod n*), and ``_silence``, not a word, is heard by every board. With the paper's two boards
  and Montserrat / Pedraforca / silence, board 1 hears Montserrat and silence, board 2
  Pedraforca and silence; with three keywords and two boards, board 1 hears keywords 1 and 3,
  board 2 keyword 2. A board left without a keyword (more boards than keywords) gets keyword
  *i mod k*.
* **order**: each board's user speaks its words in turn (1, 2, 3, 1, 2, 3... as in the paper,
  :func:`tinyfed.data.dataset.alternating_order`), ``local_steps`` utterances per round, then
  waits until the board has received the next global model (the script's ``wait model``).
  That makes a run reproducible: every board trains exactly ``local_steps`` steps on every
  global model, whatever the timing of the gateways and the aggregator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinyfed.data import dataset as ds
from tinyfed.data.synth import SILENCE_CLASS
from tinyfed.errors import UsageError

#: The training buttons of keywords 1, 2, 3 (firmware/README.md, "Wiring").
BUTTONS = ("D2", "D3", "D4")
BOARD_ID_PREFIX = "74696e79666564"  #: "tinyfed" in ASCII: 7 of the 8 bytes of a board id
DEFAULT_HOLD_MS = 30  #: how long the scripted user holds a button (must exceed the 20 ms debounce)
DEFAULT_PACE_MS = 0  #: pause after each result before the next press


def board_id(index: int) -> str:
    """The 16-hex-digit board id of the ``index``-th board (1-based) of a scenario."""
    if not 1 <= index <= 255:
        raise UsageError(f"board index must be in 1..255, got {index}")
    return f"{BOARD_ID_PREFIX}{index:02x}"


def worker_id(board: str) -> str:
    """The worker id a gateway gives a board by default (``board-<board id>``)."""
    return f"board-{board}"


@dataclass(frozen=True)
class Press:
    """One utterance: press the class's button, the user speaks ``clip``."""

    label: int
    clip: str  #: path relative to the corpus folder (``WORD/VOICE_nohash_N.wav``)
    voice: str

    @property
    def button(self) -> str:
        return BUTTONS[self.label]


@dataclass(frozen=True)
class BoardPlan:
    """What one board's user does during a run."""

    index: int  #: 1-based
    board_id: str  #: 16 hex digits
    labels: tuple[int, ...]  #: the classes this board hears, in speaking order
    voices: tuple[str, ...]  #: the training voices that belong to this board
    presses: tuple[Press, ...]  #: ``rounds * local_steps`` utterances

    @property
    def worker_id(self) -> str:
        return worker_id(self.board_id)

    @property
    def name(self) -> str:
        return f"board {self.index}"


@dataclass(frozen=True)
class Scenario:
    """A fleet run: the classes, the rounds and each board's plan."""

    classes: tuple[str, ...]
    rounds: int
    local_steps: int
    non_iid: bool
    boards: tuple[BoardPlan, ...]

    def words_of(self, plan: BoardPlan) -> tuple[str, ...]:
        """The class names ``plan``'s board hears."""
        return tuple(self.classes[i] for i in plan.labels)


def label_split(classes: Sequence[str], n_boards: int, non_iid: bool) -> list[tuple[int, ...]]:
    """The labels each board hears (see the module docstring for the non-IID rule)."""
    if n_boards < 1:
        raise UsageError(f"a fleet needs at least one board, got {n_boards}")
    everything = tuple(range(len(classes)))
    if not non_iid:
        return [everything] * n_boards
    shared = tuple(i for i, c in enumerate(classes) if c == SILENCE_CLASS)
    keywords = [i for i, c in enumerate(classes) if c != SILENCE_CLASS]
    if not keywords:
        raise UsageError("non-IID needs at least one keyword besides silence")
    out = []
    for b in range(n_boards):
        mine = [k for j, k in enumerate(keywords) if j % n_boards == b]
        if not mine:
            mine = [keywords[b % len(keywords)]]
        out.append(tuple(sorted(mine + list(shared))))
    return out


def voice_split(voices: Sequence[str], n_boards: int, seed: int = 0) -> list[tuple[str, ...]]:
    """Deal the distinct ``voices`` to ``n_boards`` boards: disjoint, seeded, sorted per board."""
    distinct = sorted(set(voices))
    if len(distinct) < n_boards:
        raise UsageError(
            f"{len(distinct)} training voice(s) cannot give {n_boards} boards their own voices;"
            " synthesize more clips (--per-word)"
        )
    order = np.random.default_rng(seed).permutation(len(distinct))
    return [tuple(sorted(distinct[i] for i in order[b::n_boards])) for b in range(n_boards)]


def build(
    train: ds.Dataset,
    *,
    boards: int,
    rounds: int,
    local_steps: int,
    non_iid: bool = False,
    seed: int = 0,
) -> Scenario:
    """Plan a run on the training clips ``train`` (use ``Dataset.select("train")``).

    Raises:
        UsageError: bad counts, too few voices, or a board whose voices never say one of its
            words (the message says to synthesize more clips).
    """
    if rounds < 1 or local_steps < 1:
        raise UsageError(f"rounds and local steps must be at least 1, got {rounds}, {local_steps}")
    if len(train.classes) > len(BUTTONS):
        raise UsageError(f"a board has {len(BUTTONS)} keywords, got {len(train.classes)} classes")
    if np.any(train.split != "train"):
        raise UsageError("a scenario uses training clips only; pass Dataset.select('train')")
    labels_of = label_split(train.classes, boards, non_iid)
    voices_of = voice_split([str(v) for v in train.voice], boards, seed)
    plans = []
    for b in range(boards):
        mine = np.flatnonzero(np.isin(train.voice, voices_of[b]))
        sub_labels = train.labels[mine]
        for label in labels_of[b]:
            if not np.any(sub_labels == label):
                raise UsageError(
                    f"board {b + 1} has no training clip of {train.classes[label]!r} from its "
                    f"{len(voices_of[b])} voices; synthesize more clips (--per-word)"
                )
        order = ds.alternating_order(
            sub_labels, steps=rounds * local_steps, order=labels_of[b], seed=seed + b
        )
        presses = tuple(
            Press(int(train.labels[i]), train.paths[i], str(train.voice[i])) for i in mine[order]
        )
        plans.append(
            BoardPlan(
                index=b + 1,
                board_id=board_id(b + 1),
                labels=labels_of[b],
                voices=voices_of[b],
                presses=presses,
            )
        )
    return Scenario(
        classes=train.classes,
        rounds=rounds,
        local_steps=local_steps,
        non_iid=non_iid,
        boards=tuple(plans),
    )


def script_text(
    scenario: Scenario,
    plan: BoardPlan,
    clip_dir: str = "corpus",
    *,
    hold_ms: int = DEFAULT_HOLD_MS,
    pace_ms: int = DEFAULT_PACE_MS,
) -> str:
    """The virtual board's ``--script`` for ``plan``.

    Clips are named ``CLIP_DIR/WORD/VOICE_nohash_N.wav``; a relative ``clip_dir`` is relative
    to the script's folder (the orchestrator links the corpus there, so paths never hold the
    spaces a checkout folder may have). The user waits for the first global model, speaks
    ``local_steps`` words, waits for the next global model, and so on for every round.

    Raises:
        UsageError: a clip path holds whitespace (the script format splits on it).
    """
    words = ", ".join(scenario.words_of(plan))
    lines = [
        f"# {plan.name} ({plan.worker_id}): {words}; {len(plan.voices)} voices; "
        f"{scenario.rounds} rounds of {scenario.local_steps} steps",
        f"hold {hold_ms}",
        f"pace {pace_ms}",
        "wait model",
    ]
    for r in range(scenario.rounds):
        lines.append(f"# round {r}")
        chunk = plan.presses[r * scenario.local_steps : (r + 1) * scenario.local_steps]
        for p in chunk:
            path = f"{clip_dir}/{p.clip}"
            if any(c.isspace() for c in path) or "#" in path:
                raise UsageError(f"clip path {path!r} holds whitespace or '#'")
            lines.append(f"press {p.button} {path}")
        lines.append("wait model")
    return "\n".join(lines) + "\n"
