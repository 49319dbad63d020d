"""MP3 recordings (contract r2): the audio the server received, encoded by LAME (the `lameenc` package).

Two mu-law channels become one stereo MP3 at 8 kHz (MPEG-2.5), 32 kbit/s constant bit rate: customer left,
agent right, the shorter channel padded with silence. Encoding takes about 1-3 ms per second of call, so the
recording store runs it off the event loop.
"""

from __future__ import annotations

import lameenc  # a C extension without type information (pyproject.toml: ignore_missing_imports)

from mockglot.speech.codec import SAMPLE_RATE_HZ, mulaw_to_pcm, stereo

BIT_RATE_KBPS = 32
QUALITY = 7  # LAME's fastest; 2 is its best (about twice as slow, no audible gain on telephone audio)


def encode_stereo(left_mulaw: bytes, right_mulaw: bytes) -> bytes:
    """An MP3 file of the two channels (left, right)."""
    encoder = lameenc.Encoder()
    encoder.set_channels(2)
    encoder.set_in_sample_rate(SAMPLE_RATE_HZ)
    encoder.set_out_sample_rate(SAMPLE_RATE_HZ)
    encoder.set_bit_rate(BIT_RATE_KBPS)
    encoder.set_quality(QUALITY)
    encoder.silence()
    return bytes(encoder.encode(stereo(mulaw_to_pcm(left_mulaw), mulaw_to_pcm(right_mulaw)))) + bytes(encoder.flush())
