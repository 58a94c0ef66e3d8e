"""Read and write WAV files as the board hears them: 16 kHz, mono, int16.

:func:`read_wav` accepts any PCM WAV (8-bit unsigned, 16/24/32-bit signed integer, 32/64-bit
IEEE float, plain or ``WAVE_FORMAT_EXTENSIBLE``; any sample rate and channel count), mixes it
down to mono by averaging the channels and resamples it to 16 kHz with a polyphase
Kaiser-windowed sinc filter (the same design as ``scipy.signal.resample_poly``, in numpy).
A small RIFF parser does the reading, so streamed files whose size fields were never filled in
(``espeak-ng --stdout`` writes ``0x7ffff000``) read too.
"""

from __future__ import annotations

import logging
import math
import struct
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.errors import UsageError

logger = logging.getLogger(__name__)

I16 = npt.NDArray[np.int16]
F64 = npt.NDArray[np.float64]

SAMPLE_RATE = 16_000  #: the board records at 16 kHz (docs/features.md)
CLIP_SAMPLES = 16_000  #: one second, what a button press records

_PCM = 0x0001
_IEEE_FLOAT = 0x0003
_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM"}

#: Resampling filter: half-length in taps of the slower rate (10, as scipy) and Kaiser beta.
_HALF_LEN_FACTOR = 10
_KAISER_BETA = 5.0
_BLOCK = 1 << 15  #: output samples computed per block, bounds memory on long files


class WavFormat:
    """What a WAV file's ``fmt`` chunk says.

    Attributes:
        tag: format tag (1 PCM, 3 IEEE float; the sub-format for extensible files).
        channels: number of interleaved channels.
        rate: sample rate in Hz.
        bits: bits per sample.
    """

    __slots__ = ("bits", "channels", "rate", "tag")

    def __init__(self, tag: int, channels: int, rate: int, bits: int) -> None:
        self.tag = tag
        self.channels = channels
        self.rate = rate
        self.bits = bits

    def __repr__(self) -> str:
        kind = "float" if self.tag == _IEEE_FLOAT else "int"
        return f"{self.bits}-bit {kind}, {self.channels} ch, {self.rate} Hz"


def decode_wav(data: bytes, name: str = "<bytes>") -> tuple[F64, WavFormat]:
    """Decode WAV bytes into float samples in [-1, 1].

    Args:
        data: the whole file.
        name: how errors name the file.

    Returns:
        ``(samples, fmt)`` with ``samples`` shaped ``[frames, channels]``.

    Raises:
        UsageError: not a WAV, corrupt, an unsupported encoding, or no samples.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        if data[:4] in (b"RIFX", b"RF64") and data[8:12] == b"WAVE":
            raise UsageError(f"{name}: unsupported WAV container {data[:4].decode()}")
        raise UsageError(f"{name}: not a WAV file (no RIFF/WAVE header)")
    fmt: WavFormat | None = None
    payload: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]  # clamps a streamed, never-filled-in size
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(body, name)
        elif chunk_id == b"data":
            payload = body
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise UsageError(f"{name}: corrupt WAV file (no fmt chunk)")
    if payload is None:
        raise UsageError(f"{name}: corrupt WAV file (no data chunk)")
    width = fmt.bits // 8
    frame = width * fmt.channels
    n = len(payload) // frame
    if n == 0:
        raise UsageError(f"{name}: WAV file is empty (0 samples)")
    raw = payload[: n * frame]
    samples = _decode_samples(raw, fmt).reshape(n, fmt.channels)
    return samples, fmt


def _parse_fmt(body: bytes, name: str) -> WavFormat:
    if len(body) < 16:
        raise UsageError(f"{name}: corrupt WAV file (fmt chunk of {len(body)} bytes)")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE:
        if len(body) < 26:
            raise UsageError(f"{name}: corrupt WAV file (short WAVE_FORMAT_EXTENSIBLE header)")
        (tag,) = struct.unpack_from("<H", body, 24)  # first two bytes of the sub-format GUID
    fmt = WavFormat(tag, channels, rate, bits)
    supported = (tag == _PCM and bits in (8, 16, 24, 32)) or (
        tag == _IEEE_FLOAT and bits in (32, 64)
    )
    if not supported:
        what = _FORMAT_NAMES.get(tag, f"format tag 0x{tag:04x}")
        if tag in (_PCM, _IEEE_FLOAT):
            what = f"{bits}-bit {'float' if tag == _IEEE_FLOAT else 'PCM'}"
        raise UsageError(
            f"{name}: unsupported WAV format ({what}); "
            "supported: 8/16/24/32-bit PCM and 32/64-bit float"
        )
    if channels < 1 or rate < 1:
        raise UsageError(f"{name}: corrupt WAV file ({channels} channels, {rate} Hz)")
    return fmt


def _decode_samples(raw: bytes, fmt: WavFormat) -> F64:
    if fmt.tag == _IEEE_FLOAT:
        floats = np.frombuffer(raw, dtype="<f4" if fmt.bits == 32 else "<f8")
        return np.nan_to_num(floats.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    if fmt.bits == 8:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if fmt.bits == 16:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    if fmt.bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float64) / float(1 << 23)
    return np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)


def read_wav(path: str | Path, rate: int = SAMPLE_RATE) -> I16:
    """Read a WAV file as int16 mono at ``rate`` Hz (16 kHz by default).

    Args:
        path: the file.
        rate: the sample rate to resample to.

    Returns:
        A 1-D int16 array; its length follows the file's duration, not padded or cut.

    Raises:
        UsageError: naming the file, if it cannot be read, is not a WAV, holds an unsupported
            encoding or no samples.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UsageError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    samples, fmt = decode_wav(data, str(p))
    mono = samples.mean(axis=1) if fmt.channels > 1 else samples[:, 0]
    if fmt.rate != rate:
        logger.debug("%s: resampling %s to %d Hz", p, fmt, rate)
        mono = resample(mono, fmt.rate, rate)
    return to_int16(mono)


def to_int16(x: npt.NDArray[np.floating]) -> I16:
    """Convert float samples in [-1, 1] to int16, rounding and clipping."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(
        np.int16
    )


def write_wav(path: str | Path, audio: npt.NDArray[np.int16], rate: int = SAMPLE_RATE) -> None:
    """Write int16 mono samples as a 16-bit PCM WAV file (a 44-byte header, then the samples).

    Args:
        path: the file to create or overwrite.
        audio: a 1-D int16 array.
        rate: the sample rate written in the header.

    Raises:
        ValueError: ``audio`` is not a 1-D int16 array.
    """
    arr = np.asarray(audio)
    if arr.dtype != np.int16 or arr.ndim != 1:
        raise ValueError(f"write_wav needs 1-D int16 samples, got {arr.dtype} {arr.shape}")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(arr.astype("<i2").tobytes())


def resample(x: npt.NDArray[np.floating], src_rate: int, dst_rate: int) -> F64:
    """Resample a 1-D signal by the rational factor ``dst_rate / src_rate``.

    Polyphase filtering with a Kaiser-windowed sinc low-pass (cut-off at the lower Nyquist
    frequency, 10 zero crossings each side, beta 5), aligned so that output sample ``n`` sits at
    input time ``n * src_rate / dst_rate``; equivalent to ``scipy.signal.resample_poly``.

    Args:
        x: the signal.
        src_rate: its sample rate in Hz.
        dst_rate: the wanted sample rate in Hz.

    Returns:
        ``ceil(len(x) * dst_rate / src_rate)`` float64 samples.
    """
    sig = np.asarray(x, dtype=np.float64)
    if src_rate == dst_rate:
        return sig.copy()
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    phases, half_len = _polyphase(up, down)
    taps = phases.shape[1]
    n_out = -(-len(sig) * up // down)
    # Pad so that every index i0 - j, j in [0, taps), is valid: taps - 1 zeros in front.
    padded = np.concatenate([np.zeros(taps - 1), sig, np.zeros(taps + 1)])
    out = np.empty(n_out)
    j = np.arange(taps)
    for start in range(0, n_out, _BLOCK):
        n = np.arange(start, min(start + _BLOCK, n_out), dtype=np.int64)
        t = n * down + half_len
        p, i0 = t % up, t // up
        idx = (i0 + taps - 1)[:, None] - j[None, :]
        np.clip(idx, 0, len(padded) - 1, out=idx)
        out[n] = np.einsum("nj,nj->n", phases[p], padded[idx])
    return out


@lru_cache(maxsize=16)
def _polyphase(up: int, down: int) -> tuple[F64, int]:
    """The filter split into ``up`` phases: ``phases[p, j] = up * h[p + j * up]``."""
    max_rate = max(up, down)
    half_len = _HALF_LEN_FACTOR * max_rate
    k = np.arange(2 * half_len + 1) - half_len
    h = np.sinc(k / max_rate) * np.kaiser(2 * half_len + 1, _KAISER_BETA)
    h *= up / h.sum()
    taps = -(-len(h) // up)
    h = np.concatenate([h, np.zeros(taps * up - len(h))])
    phases = h.reshape(taps, up).T.copy()
    phases.setflags(write=False)
    return phases, half_len
