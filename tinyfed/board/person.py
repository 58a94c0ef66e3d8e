"""The person at the board during an interactive self-test (asked to press and to look)."""

from __future__ import annotations

import asyncio
import sys
from typing import Protocol, TextIO


class Person(Protocol):
    """Someone at the board who can be told things and asked yes/no questions."""

    def say(self, text: str) -> None: ...

    async def ask(self, question: str) -> bool | None: ...


class TerminalPerson:
    """A person at this terminal: prompts on ``out``, answers read from ``inp``."""

    def __init__(self, out: TextIO, inp: TextIO = sys.stdin) -> None:
        self.out = out
        self.inp = inp

    def say(self, text: str) -> None:
        print(f">>> {text}", file=self.out, flush=True)

    async def ask(self, question: str) -> bool | None:
        print(f">>> {question} [y/n] ", end="", file=self.out, flush=True)
        line = await asyncio.to_thread(self.inp.readline)
        if not line:
            return None  # end of input
        return line.strip().lower() in ("y", "yes")


# ----------------------------------------------------------------------------- the sample
