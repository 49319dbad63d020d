"""mockglot: a local emulator of the Kallglot real-time voice translation API."""

__version__ = "0.1.0"
