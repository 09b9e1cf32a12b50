"""Peers for the A2A interop tests: official-SDK servers run as subprocesses, and helpers."""
