"""Test audio made in code: tone bursts an energy VAD hears as speech, and mu-law silence."""

from __future__ import annotations

import math
import struct

from mockglot.speech.codec import pcm_to_mulaw

RATE = 8000


def tone(ms: int, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    samples = RATE * ms // 1000
    pcm = struct.pack(f"<{samples}h", *(int(amplitude * math.sin(2 * math.pi * hz * i / RATE)) for i in range(samples)))
    return pcm_to_mulaw(pcm)


def silence(ms: int) -> bytes:
    return b"\xff" * (RATE * ms // 1000)


def utterance(speech_ms: int = 1200, pause_ms: int = 700) -> bytes:
    """Speech followed by enough silence to end the utterance (the VAD waits 500 ms)."""
    return tone(speech_ms) + silence(pause_ms)
