"""The link client's errors, and which board ERROR codes mean "send it again"."""

from __future__ import annotations

from tinyfed.errors import TinyfedError
from tinyfed.link.spec import ErrorCode

#: ERROR codes that mean "your frame never arrived intact": the same command is sent again.
RETRYABLE_ERRORS = frozenset(
    {ErrorCode.BAD_CRC, ErrorCode.BAD_ENCODING, ErrorCode.OVERFLOW, ErrorCode.BAD_LENGTH}
)


class LinkError(TinyfedError):
    """A command failed after its retries, or the link closed under it."""


class LinkTimeoutError(LinkError):
    """The board did not answer in time, after every retry."""


class BoardError(LinkError):
    """The board answered ERROR; ``code`` is the :class:`~tinyfed.link.spec.ErrorCode`."""

    def __init__(self, code: int, text: str, command: str) -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"board refused {command}: {name} ({text})")
        self.code = code
        self.text = text


class BoardResetError(LinkError):
    """The board rebooted (a HELLO with a new boot id) while a command was running."""


class LinkClosedError(LinkError):
    """The transport closed (board unplugged, out of range); reopen and start again."""
