"""Recordings (contract r2): what making a call's MP3 costs, against writing the same audio as a WAV.

    python bench/recording.py                 # a 60 s call, 7 repeats
    python bench/recording.py --seconds 600 --repeats 3

Both sides take the same two mu-law channels (customer tone and noise, agent half as long) in the same run:
- **WAV** (the baseline, what mockglot wrote before r2): the two channels as 16-bit stereo PCM in a WAV file
  (`codec.stereo` + `speech.wav.wav`);
- **MP3**: `speech.mp3.encode_stereo` (LAME through lameenc, 32 kbit/s, quality 7), what a recording is now.
Reported: the median time of each, the MP3/WAV ratio, and the MP3's real-time factor (encode time / call
length). The recording store runs the encoding off the event loop, so this is CPU, not a stall.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime

from mockglot.speech import codec, mp3, wav
from mockglot.testing.client import tone


def channels(seconds: int) -> tuple[bytes, bytes]:
    rng = random.Random(1)
    customer = (tone(1000, hz=300) + rng.randbytes(8000)) * (seconds // 2)
    return customer, tone(1000, hz=700) * (seconds // 2)


def timed(work, *args) -> float:
    started = time.perf_counter()
    work(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    left, right = channels(args.seconds)

    def as_wav(a: bytes, b: bytes) -> bytes:
        return wav.wav(codec.stereo(codec.mulaw_to_pcm(a), codec.mulaw_to_pcm(b)), mulaw=False, channels=2)

    wavs, mp3s = [], []
    for _ in range(args.repeats):
        wavs.append(timed(as_wav, left, right))
        mp3s.append(timed(mp3.encode_stereo, left, right))
    wav_s, mp3_s = statistics.median(wavs), statistics.median(mp3s)
    size = len(mp3.encode_stereo(left, right))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}, a {args.seconds} s call")
    print(f"WAV  {wav_s * 1000:8.1f} ms  ({', '.join(f'{t * 1000:.1f}' for t in wavs)})")
    print(f"MP3  {mp3_s * 1000:8.1f} ms  ({', '.join(f'{t * 1000:.1f}' for t in mp3s)}); {size} bytes")
    print(f"MP3/WAV {mp3_s / wav_s:.0f}x; MP3 real-time factor {mp3_s / args.seconds:.4f}")


if __name__ == "__main__":
    main()
