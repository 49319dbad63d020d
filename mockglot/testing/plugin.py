"""The pytest plugin: a mockglot server for a test run, and a `mockglot` fixture per test."""
