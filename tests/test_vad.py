"""The energy VAD: the same audio gives the same utterances however a client chunks it (offsets are counted in
samples), which is what makes a scripted call's partials and finals the same at any frame size."""

from __future__ import annotations

import math
import random
import struct

import pytest

from mockglot.engines.vad import EnergyVad, SpeechEnd, VadEvent


def speechlike(rng: random.Random) -> bytes:
    """Tone and noise bursts around the speech threshold, with pauses shorter and longer than the silence."""
    pcm = b""
    for _ in range(rng.randint(1, 30)):
        samples, amplitude = 8 * rng.choice([10, 20, 30, 60, 100, 200, 400, 700]), rng.choice([0, 100, 400, 600, 9000])
        pcm += struct.pack(
            f"<{samples}h",
            *(int(amplitude * (math.sin(i / 2.9) + rng.uniform(-0.3, 0.3))) for i in range(samples)),
        )
    return pcm + bytes(rng.choice([0, 1, 3]))  # and a stray odd byte or two


def heard(vad: EnergyVad, pcm: bytes, sizes: list[int]) -> list[VadEvent]:
    events: list[VadEvent] = []
    offset = 0
    while offset < len(pcm):
        size = sizes[len(events) % len(sizes)] if sizes else len(pcm)
        events += vad.feed(pcm[offset : offset + size])
        offset += size
    return events + vad.flush()


@pytest.mark.parametrize("seed", range(40))
def test_chunking_changes_no_boundary_and_progress_only_by_how_often_it_is_told(seed):
    rng = random.Random(seed)
    pcm = speechlike(rng)
    silence_ms = rng.choice([200, 500])
    frame_by_frame = heard(EnergyVad(silence_ms=silence_ms), pcm, [320])  # 20 ms at a time
    sizes = [rng.choice([1, 2, 160, 640, 1600, 2000, 3333, 16000]) for _ in range(7)]
    for chunked in (heard(EnergyVad(silence_ms=silence_ms), pcm, sizes), heard(EnergyVad(silence_ms), pcm, [])):
        assert [e for e in chunked if isinstance(e, SpeechEnd)] == [
            e for e in frame_by_frame if isinstance(e, SpeechEnd)
        ]
        remaining = iter(frame_by_frame)  # each progress a chunk reports is one a 20 ms frame reported, in order
        assert all(any(event == other for other in remaining) for event in chunked)
