"""Test audio made in code: the client's tone bursts (heard as speech by the energy VAD) and silence."""

from mockglot.testing.client import silence, tone, utterance

__all__ = ["silence", "tone", "utterance"]
