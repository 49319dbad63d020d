"""Test audio made in code: the client's tone bursts (heard as speech by the energy VAD) and silence."""

import struct

from mockglot.testing.client import silence, tone, utterance

__all__ = ["parse_wav", "silence", "tone", "utterance"]


def parse_wav(content: bytes) -> tuple[tuple[int, ...], bytes]:
    """(format, channels, rate, byte rate, block align, bits) and the data chunk of a RIFF/WAVE file."""
    assert content[:4] == b"RIFF" and content[8:12] == b"WAVE"
    assert int.from_bytes(content[4:8], "little") == len(content) - 8
    chunks, position = {}, 12
    while position + 8 <= len(content):
        size = int.from_bytes(content[position + 4 : position + 8], "little")
        chunks[content[position : position + 4]] = content[position + 8 : position + 8 + size]
        position += 8 + size + (size & 1)
    return struct.unpack("<HHIIHH", chunks[b"fmt "][:16]), chunks[b"data"]
