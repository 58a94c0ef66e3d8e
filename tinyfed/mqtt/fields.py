"""The MQTT contract's limits and field checks, used by every decoder of the contract.

Each check takes a decoded value, the field's name and what is being decoded, and returns the
value in its Python type or raises :class:`ContractError` naming the field and the bad value
(shortened): decoders never raise anything else, whatever the payload.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

import msgpack

from tinyfed import model
from tinyfed.errors import ModelError, TinyfedError
from tinyfed.model import families

FORMAT_VERSION = 1  #: version of every payload below; bumped on any incompatible change
DEFAULT_PREFIX = "tinyfed"
#: Largest model payload accepted: the 41,868 model bytes plus generous room for metadata.
MAX_MODEL_PAYLOAD = 64 * 1024
#: Largest JSON payload accepted (a loss event is ~200 bytes, a round event at most ~50 KB).
MAX_JSON_PAYLOAD = 64 * 1024
#: Largest round, step, count or local-step value accepted. Such values end up in SQLite
#: INTEGER columns (8 bytes: 2**63 overflows) and numpy int32 arrays; 2**31 - 1 fits both
#: everywhere, and a fleet reaches it after 68 years of one step per second.
MAX_INT: Final = 2**31 - 1
#: Most workers listed by name in a round event's ``participants`` / ``dropped`` or the
#: aggregator status's ``expected`` / ``reported``; the ``*_count`` fields carry the totals.
MAX_METRICS: Final = 32  #: named figures a round event carries (``metrics``)
_METRIC_NAME: Final = re.compile(r"[a-z0-9_]+")
MAX_LISTED: Final = 100
#: Most rejections listed in a round event (``rejected_count`` carries the total).
MAX_LISTED_REJECTIONS: Final = 20
#: Reasons are truncated to this many characters by the encoders.
MAX_REASON: Final = 200
#: Longest free text (a reason) a decoder accepts.
MAX_TEXT: Final = 500
#: Longest upload id.
MAX_UPLOAD_ID: Final = 128
#: Longest ``arch``, ``pipeline`` or ``strategy`` label.
MAX_LABEL_TEXT: Final = 64
#: Longest ``transport``, ``firmware``, ``board_id`` or ``boot_id`` of a worker status.
MAX_INFO_TEXT: Final = 128
#: Largest class index (``label``, ``prediction``): one byte on the board.
MAX_CLASS: Final = 255
#: Most network outputs in a loss event.
MAX_OUTPUTS: Final = 16

_WORKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class ContractError(TinyfedError):
    """A payload or topic does not follow the contract; the message names the problem."""


def _show(value: Any, limit: int = 40) -> str:
    """A short repr of a (possibly huge) bad value for an error message."""
    if isinstance(value, dict | list | tuple):
        return f"a {type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_worker_id(worker_id: str) -> str:
    """Return ``worker_id`` if it is a valid topic level (letters, digits, ``_.-``, <= 64)."""
    if not isinstance(worker_id, str) or not _WORKER_ID.fullmatch(worker_id):
        raise ContractError(
            f"invalid worker id {_show(worker_id)}: use 1-64 letters, digits, '_', '.', '-'"
        )
    return worker_id


# ----------------------------------------------------------------------------- validation


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits_float(value: float) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _int_value(value: Any, name: str, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{what}: field {name!r} has type {type(value).__name__}")
    if value < lo:
        problem = "is negative" if value < 0 else f"is below {lo}"
        raise ContractError(f"{what}: field {name!r} {problem} ({_show(value)})")
    if value > hi:
        raise ContractError(f"{what}: field {name!r} is too large ({_show(value)} > {hi})")
    return int(value)


def _float_value(value: Any, name: str, what: str) -> float:
    if not _is_number(value):
        raise ContractError(f"{what}: field {name!r} has type {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ContractError(f"{what}: field {name!r} is too large ({_show(value)})") from None
    if not math.isfinite(number):
        raise ContractError(f"{what}: field {name!r} is not finite ({number})")
    return number


def _text_value(
    value: Any, name: str, what: str, lo: int, hi: int, *, pattern: re.Pattern[str] | None = None
) -> str:
    if not isinstance(value, str):
        raise ContractError(f"{what}: field {name!r} has type {type(value).__name__}")
    if not lo <= len(value) <= hi:
        raise ContractError(
            f"{what}: field {name!r} must have {lo}-{hi} characters, "
            f"got {len(value)} ({_show(value)})"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ContractError(
            f"{what}: field {name!r} is not valid Unicode ({_show(value)})"
        ) from None
    if pattern is not None and not pattern.fullmatch(value):
        raise ContractError(f"{what}: field {name!r} is malformed ({_show(value)})")
    return str(value)


def _worker_value(value: Any, name: str, what: str) -> str:
    try:
        return check_worker_id(value)
    except ContractError as exc:
        raise ContractError(f"{what}: field {name!r}: {exc}") from None


_MISSING: Final[Any] = object()


class _Fields:
    """Typed, range-checked access to one decoded map; every failure is a ContractError."""

    def __init__(self, obj: Any, what: str, path: str = "") -> None:
        if not isinstance(obj, dict):
            where = f"field {path.rstrip('.')!r}" if path else "payload"
            raise ContractError(f"{what}: {where} is not a map ({type(obj).__name__})")
        self.obj: dict[Any, Any] = obj
        self.what = what
        self.path = path

    def name(self, key: str) -> str:
        return self.path + key

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The raw value; ContractError if absent and there is no default."""
        if key in self.obj:
            return self.obj[key]
        if default is _MISSING:
            raise ContractError(f"{self.what}: missing field {self.name(key)!r}")
        return default

    def integer(
        self, key: str, *, lo: int = 0, hi: int = MAX_INT, default: int | None = None
    ) -> int:
        value = self.get(key, _MISSING if default is None else default)
        return _int_value(value, self.name(key), self.what, lo, hi)

    def opt_integer(self, key: str, *, lo: int = 0, hi: int = MAX_INT) -> int | None:
        value = self.get(key, None)
        return None if value is None else _int_value(value, self.name(key), self.what, lo, hi)

    def number(self, key: str, *, default: float | None = None) -> float:
        value = self.get(key, _MISSING if default is None else default)
        return _float_value(value, self.name(key), self.what)

    def opt_number(self, key: str) -> float | None:
        value = self.get(key, None)
        return None if value is None else _float_value(value, self.name(key), self.what)

    def text(
        self,
        key: str,
        *,
        lo: int = 0,
        hi: int,
        default: str | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> str:
        value = self.get(key, _MISSING if default is None else default)
        return _text_value(value, self.name(key), self.what, lo, hi, pattern=pattern)

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.get(key)
        if not isinstance(value, str) or value not in options:
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} is {_show(value)}, "
                f"expected one of {', '.join(options)}"
            )
        return value

    def upload_id(self, *, allow_empty: bool = False) -> str:
        """The ``upload_id`` field: 1-128 characters (0-128 with ``allow_empty``)."""
        value, lo = self.get("upload_id"), 0 if allow_empty else 1
        if isinstance(value, str) and not lo <= len(value) <= MAX_UPLOAD_ID:
            raise ContractError(
                f"{self.what}: field {self.name('upload_id')!r}: upload id must be "
                f"{lo}-{MAX_UPLOAD_ID} characters, got {len(value)} ({_show(value)})"
            )
        return _text_value(value, self.name("upload_id"), self.what, lo, MAX_UPLOAD_ID)

    def worker(self, key: str) -> str:
        return _worker_value(self.get(key), self.name(key), self.what)

    def items(self, key: str, *, hi: int | None = None, required: bool = False) -> list[Any]:
        """A list (empty when absent, unless ``required``) of at most ``hi`` entries."""
        value = self.get(key, _MISSING if required else [])
        if not isinstance(value, list):
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} has type {type(value).__name__}"
            )
        if hi is not None and len(value) > hi:
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} has {len(value)} entries, at most {hi}"
            )
        return value

    def sub(self, key: str) -> _Fields:
        return _Fields(self.get(key), self.what, f"{self.name(key)}.")

    def number_map(self, key: str) -> dict[str, float]:
        """A map (empty when absent) of at most :data:`MAX_METRICS` names (lower-case letters,
        digits, ``_``; 1-64 characters) to finite numbers."""
        value = self.get(key, {})
        if not isinstance(value, dict):
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} has type {type(value).__name__}"
            )
        if len(value) > MAX_METRICS:
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} has {len(value)} entries, "
                f"at most {MAX_METRICS}"
            )
        out: dict[str, float] = {}
        for name, number in value.items():
            where = f"{self.name(key)}.{name}" if isinstance(name, str) else self.name(key)
            _text_value(name, where, self.what, 1, MAX_LABEL_TEXT, pattern=_METRIC_NAME)
            out[name] = _float_value(number, where, self.what)
        return out

    def count(self, key: str, listed: int) -> int:
        """A ``*_count`` total (the number listed when absent), never below that number."""
        total = self.integer(key, default=listed)
        if total < listed:
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} is {total}, less than the {listed} listed"
            )
        return total


def _check_version(obj: dict[Any, Any], what: str) -> None:
    version = obj.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ContractError(f"{what}: format version {_show(version)}, expected {FORMAT_VERSION}")


def _params(f: _Fields, arch: str) -> model.F32:
    """The ``params`` field checked against the family that ``arch`` names."""
    try:
        family = families.by_arch(arch)
    except ModelError as exc:
        raise ContractError(f"{f.what}: field 'arch': {exc}") from None
    raw = f.get("params")
    if not isinstance(raw, bytes):
        raise ContractError(f"{f.what}: field 'params' has type {type(raw).__name__}")
    sha = f.text("sha256", lo=64, hi=64, pattern=_SHA256)
    if hashlib.sha256(raw).hexdigest() != sha.lower():
        raise ContractError(f"{f.what}: sha256 does not match the parameters (corrupted payload)")
    try:
        return family.from_bytes(raw)
    except ModelError as exc:
        raise ContractError(f"{f.what}: {exc}") from exc


def _unpack(payload: bytes, what: str) -> _Fields:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError(f"{what}: payload has type {type(payload).__name__}, expected bytes")
    if len(payload) > MAX_MODEL_PAYLOAD:
        raise ContractError(f"{what}: payload is {len(payload)} bytes, limit {MAX_MODEL_PAYLOAD}")
    try:
        obj = msgpack.unpackb(bytes(payload), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ContractError(f"{what}: not valid msgpack ({_show(str(exc), 120)})") from exc
    if not isinstance(obj, dict):
        raise ContractError(f"{what}: payload is not a map")
    _check_version(obj, what)
    return _Fields(obj, what)


def _json_load(payload: bytes, what: str) -> _Fields:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError(f"{what}: payload has type {type(payload).__name__}, expected bytes")
    if len(payload) > MAX_JSON_PAYLOAD:
        raise ContractError(f"{what}: payload is {len(payload)} bytes, limit {MAX_JSON_PAYLOAD}")
    try:
        obj = json.loads(bytes(payload).decode("utf-8"))
    # ValueError covers JSONDecodeError, UnicodeDecodeError and integers of over 4,300 digits;
    # RecursionError, deeply nested arrays.
    except (ValueError, RecursionError) as exc:
        raise ContractError(f"{what}: not valid JSON ({_show(str(exc), 120)})") from exc
    if not isinstance(obj, dict):
        raise ContractError(f"{what}: payload is not a JSON object")
    _check_version(obj, what)
    return _Fields(obj, what)


def _json_dump(obj: dict[str, Any]) -> bytes:
    return json.dumps({"v": FORMAT_VERSION, **obj}, separators=(",", ":"), allow_nan=False).encode()


def _clip(text: str, limit: int = MAX_REASON) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit(build: Callable[[int], bytes], what: str) -> bytes:
    """``build(limit)`` with the largest list limit (from :data:`MAX_LISTED`) that fits."""
    limit = MAX_LISTED
    while True:
        payload = build(limit)
        if len(payload) < MAX_JSON_PAYLOAD:
            return payload
        if limit == 0:
            raise ContractError(f"{what}: {len(payload)} bytes even without any list entries")
        limit //= 2
