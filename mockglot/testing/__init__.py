"""Helpers for testing against mockglot: a server in a thread, and the pytest plugin."""
