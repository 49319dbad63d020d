"""WAV files of 8 kHz audio: mu-law as received (byte for byte), or 16-bit PCM; mono or one channel per speaker."""

from __future__ import annotations

import struct

from mockglot.speech.codec import SAMPLE_RATE_HZ

WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_PCM = 1


def wav(data: bytes, *, mulaw: bool, channels: int = 1) -> bytes:
    """A WAV file of `data` (interleaved when `channels` > 1): mu-law as it is, or 16-bit PCM."""
    fmt, width = (WAVE_FORMAT_MULAW, 1) if mulaw else (WAVE_FORMAT_PCM, 2)
    rate = SAMPLE_RATE_HZ
    block = width * channels
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * block, block, 8 * width)
    if mulaw:
        fmt_chunk += struct.pack("<H", 0)  # cbSize: non-PCM formats carry it, and a fact chunk
        extra = b"fact" + struct.pack("<II", 4, len(data) // block)
    else:
        extra = b""
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + extra
    body += b"data" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body
