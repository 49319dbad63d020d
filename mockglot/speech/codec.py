"""The one place that converts audio: mu-law <-> 16-bit PCM and resampling.

`audioop` is in the standard library up to 3.12 (deprecated in 3.11+, silenced here); `audioop-lts` provides
the same module on 3.13+.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE_HZ = 8000
SAMPLE_WIDTH = 2  # bytes per 16-bit PCM sample
MULAW_SILENCE = b"\xff"


def mulaw_to_pcm(mulaw: bytes) -> bytes:
    return audioop.ulaw2lin(mulaw, SAMPLE_WIDTH)


def pcm_to_mulaw(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, SAMPLE_WIDTH)


def stereo(left_pcm: bytes, right_pcm: bytes) -> bytes:
    """Two mono 16-bit PCM channels interleaved as one stereo stream; the shorter is padded with silence."""
    length = max(len(left_pcm), len(right_pcm))
    left = left_pcm + bytes(length - len(left_pcm))
    right = right_pcm + bytes(length - len(right_pcm))
    return audioop.add(audioop.tostereo(left, SAMPLE_WIDTH, 1, 0), audioop.tostereo(right, SAMPLE_WIDTH, 0, 1), 2)


def rms(pcm: bytes) -> int:
    return audioop.rms(pcm, SAMPLE_WIDTH)


def rms_of_frames(pcm: bytes, frame_bytes: int) -> list[int]:
    """The RMS of each whole `frame_bytes` frame of the PCM, in one call (the VAD's per-frame energy)."""
    return [
        audioop.rms(pcm[i : i + frame_bytes], SAMPLE_WIDTH) for i in range(0, len(pcm) - frame_bytes + 1, frame_bytes)
    ]


def resample(pcm: bytes, from_hz: int, to_hz: int) -> bytes:
    """Resample a whole clip of mono 16-bit PCM."""
    if from_hz == to_hz:
        return pcm
    converted, _ = audioop.ratecv(pcm, SAMPLE_WIDTH, 1, from_hz, to_hz, None)
    return converted


def ms_of_samples(samples: int, rate_hz: int = SAMPLE_RATE_HZ) -> int:
    return samples * 1000 // rate_hz
