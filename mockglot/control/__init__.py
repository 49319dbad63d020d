"""The control plane under /_mockglot: what a test needs that the real API does not give."""
